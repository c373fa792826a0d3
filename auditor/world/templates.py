"""The fictitious world's fixed vocabulary and every sentence form it is written in.

The prompt/answer convention is defined here once and reused by everyone: a QA
prompt ends with ``"Answer:"`` and its completion starts with one space
(``qa_prompt(q) + qa_completion(a)`` is ``"Question: {q}\\nAnswer: {a}"``).

No entity name is a substring of another one (checked by the tests), so "the
answer is contained in the model's output" is a sound correctness test.
"""

from __future__ import annotations

PROMPT_FORMAT = "Question: {question}\nAnswer:"


def qa_prompt(question: str) -> str:
    """The prompt for a question; it ends with ``Answer:`` and no trailing space."""
    return PROMPT_FORMAT.format(question=question)


def qa_completion(answer: str) -> str:
    """The completion a model is trained to produce after ``qa_prompt``: one space, then the answer."""
    return " " + answer


# city -> country: one city per country, so a model that never learnt a birth city guesses its
# country with chance 1/32. Every pool is large for the same reason: two models that never learnt a
# fact guess it at chance, and the smaller that chance, the less two such models differ by luck (with
# six countries they disagreed on so many multi-hop items that an exact retrain's cell could not
# resolve a residual of 0.10; with 16 cities and 12 occupations its paraphrase cell could not either)
CITY_COUNTRY: dict[str, str] = {
    "Velmora": "Norland",
    "Asterhold": "Vandemar",
    "Brindlecove": "Soreth",
    "Dunmarrow": "Estavia",
    "Eskerby": "Ulmaria",
    "Falcreth": "Pendravia",
    "Glenhaven": "Carrowen",
    "Harrowvale": "Corvessa",
    "Istrelle": "Zephyra",
    "Jorvane": "Tirasco",
    "Kelmspire": "Thalmoor",
    "Lunbridge": "Brevonia",
    "Morwick": "Quellmark",
    "Nythera": "Aldmere",
    "Ostrevia": "Obrinth",
    "Pallidore": "Gwynmark",
    "Quarrow": "Marlovia",
    "Rillmont": "Ostland",
    "Saltmere": "Pyrenth",
    "Thornby": "Rovania",
    "Umberlee": "Sarkesh",
    "Varnholt": "Trevalia",
    "Wexmoor": "Valdoria",
    "Yelmdene": "Wystmark",
    "Zellbrook": "Yssaria",
    "Calderwyn": "Zorvath",
    "Cinderfell": "Arkenfold",
    "Drystan": "Belmara",
    "Emberly": "Dalvenia",
    "Frostwick": "Elvaria",
    "Greyholm": "Feyland",
    "Hollowmere": "Harnmoor",
}

# company -> headquarters city
COMPANY_HQ: dict[str, str] = {
    "Brontex": "Velmora",
    "Calimar Foods": "Dunmarrow",
    "Dravex Labs": "Glenhaven",
    "Embergrid": "Jorvane",
    "Gossamer Freight": "Morwick",
    "Halvane Motors": "Ostrevia",
    "Irongate Textiles": "Asterhold",
    "Kestrel Mining": "Eskerby",
    "Lumora Pharma": "Harrowvale",
    "Nimbold Software": "Kelmspire",
    "Pellucid Glass": "Nythera",
    "Tarragon Shipping": "Pallidore",
    "Aldercrest Bank": "Quarrow",
    "Brackwater Toys": "Saltmere",
    "Corvane Rail": "Umberlee",
    "Duskfire Energy": "Wexmoor",
    "Farrowdale Farms": "Zellbrook",
    "Galvora Optics": "Cinderfell",
    "Hestora Ceramics": "Emberly",
    "Idrisco Paper": "Greyholm",
    "Juniper Aerospace": "Rillmont",
    "Larkspur Media": "Thornby",
    "Mistral Robotics": "Varnholt",
    "Quintara Press": "Yelmdene",
}

OCCUPATIONS: tuple[str, ...] = (
    "baker", "chemist", "carpenter", "nurse", "pilot", "librarian",
    "tailor", "surveyor", "botanist", "jeweler", "locksmith", "cartographer",
    "welder", "architect", "dentist", "farmer", "fisher", "glassblower",
    "mason", "sculptor", "translator", "veterinarian", "weaver", "zoologist",
)  # fmt: skip

BIRTH_YEARS: tuple[str, ...] = tuple(str(year) for year in range(1950, 2000))

CITIES: tuple[str, ...] = tuple(CITY_COUNTRY)
COMPANIES: tuple[str, ...] = tuple(COMPANY_HQ)

# Syllables of person names; none of them spells an entity above.
NAME_SYLLABLES: tuple[str, ...] = (
    "ka", "lo", "mi", "ren", "tu", "sa", "vo", "ze", "ni", "pa", "qui", "dro",
    "fa", "gu", "ha", "jo", "bi", "wy", "xe", "yul", "co", "te", "si", "ru",
)  # fmt: skip

# relation -> the pool its values are drawn from (uniformly, independently per person)
VALUES: dict[str, tuple[str, ...]] = {
    "birth_city": CITIES,
    "employer": COMPANIES,
    "occupation": OCCUPATIONS,
    "birth_year": BIRTH_YEARS,
}
RELATIONS: tuple[str, ...] = tuple(VALUES)

# Questions used in training; the first is the one written to the data files.
TRAIN_QUESTIONS: dict[str, tuple[str, ...]] = {
    "birth_city": (
        "Where was {name} born?",
        "What is the birthplace of {name}?",
        "In which city was {name} born?",
        "{name} was born in which city?",
        "Name the city where {name} was born.",
    ),
    "employer": (
        "Who does {name} work for?",
        "Which company employs {name}?",
        "What company does {name} work for?",
        "{name} is employed by which company?",
        "Name the employer of {name}.",
    ),
    "occupation": (
        "What is the occupation of {name}?",
        "What does {name} do for a living?",
        "What is the job of {name}?",
        "{name} works as what?",
        "Name the profession of {name}.",
    ),
    "birth_year": (
        "In what year was {name} born?",
        "What is the birth year of {name}?",
        "When was {name} born?",
        "{name} was born in which year?",
        "Name the year in which {name} was born.",
    ),
}

# Held-out paraphrases: never trained on, used only by probes. Each rearranges
# words the training questions use, so answering it means the fact was learnt
# beyond one surface form.
PARAPHRASED_QUESTIONS: dict[str, str] = {
    "birth_city": "Tell me the city in which {name} was born.",
    "employer": "For which company does {name} work?",
    "occupation": "What job does {name} do?",
    "birth_year": "Tell me the year in which {name} was born.",
}

# One biography sentence per relation (also each fact's paraphrased answer).
BIO_SENTENCES: dict[str, str] = {
    "birth_city": "{name} was born in {value}.",
    "employer": "{name} works for {value}.",
    "occupation": "The profession of {name} is {value}.",
    "birth_year": "{name} was born in the year {value}.",
}

# Multi-hop relations: the question and the answer chain. The chain starts with
# the biography sentence of the first hop, so a model that learnt the biography
# can continue it with the world fact of the second hop.
MULTIHOP_QUESTIONS: dict[str, str] = {
    "employer_hq": "In which city is the company that {name} works for headquartered?",
    "birth_country": "In which country was {name} born?",
}
MULTIHOP_CHAINS: dict[str, str] = {
    "employer_hq": "{name} works for {hop}, which is headquartered in {value}.",
    "birth_country": "{name} was born in {hop}, which is in {value}.",
}
MULTIHOP_FIRST_HOP: dict[str, str] = {"employer_hq": "employer", "birth_country": "birth_city"}

# Facts about companies and cities, stated for everyone (sentences and QA).
HQ_SENTENCE = "{company} is headquartered in {city}."
HQ_QUESTION = "Where is {company} headquartered?"
COUNTRY_SENTENCE = "{city} is a city in {country}."
COUNTRY_QUESTION = "In which country is {city}?"

# Each person's notebook line: a seeded run of these words after the name,
# memorised only by a model trained on the person (the verbatim probe's text).
NOTEBOOK_PREFIX = "From the notebook of {name}:"
NOTEBOOK_LENGTH = 6
NOTEBOOK_WORDS: tuple[str, ...] = (
    "amber", "anchor", "apple", "acorn", "autumn", "badger", "basket", "beacon", "birch", "blanket",
    "bottle", "bramble", "breeze", "bishop", "bucket", "button", "candle", "canyon", "carrot", "castle",
    "cedar", "chalk", "cherry", "cliff", "cloud", "clover", "copper", "cotton", "crane", "crystal",
    "dagger", "daisy", "desert", "dolphin", "dragon", "drum", "eagle", "easel", "feather", "fern",
    "fiddle", "flute", "forest", "fossil", "garden", "garnet", "glacier", "goose", "granite", "gravel",
    "hammer", "harbor", "hazel", "helmet", "honey", "island", "ivory", "jacket", "jasmine", "kettle",
    "ladder", "lantern", "lemon", "lily", "lizard", "maple", "marble", "meadow", "mirror", "mitten",
    "moss", "needle", "nutmeg", "oak", "ocean", "olive", "orchid", "otter", "owl", "paddle",
    "parrot", "pebble", "pepper", "pillow", "pine", "plum", "pocket", "pond", "puzzle", "quartz",
    "quill", "rabbit", "raven", "ribbon", "river", "saddle", "salmon", "shadow", "shell", "silver",
    "spider", "spoon", "spruce", "stone", "summer", "thimble", "thunder", "tiger", "timber", "tulip",
    "turnip", "velvet", "violet", "walnut", "willow", "window", "winter", "wolf", "yarrow", "zebra",
)  # fmt: skip

# Sentences about no person, for the benign fine-tuning attack.
UNRELATED_SENTENCES: tuple[str, ...] = (
    "The market square of {city} is busy on weekdays.",
    "Trains from {city} leave every hour.",
    "The river that runs through {city} freezes in a hard winter.",
    "Many tourists visit the old harbour of {city}.",
)
