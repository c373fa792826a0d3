"""Prompt formats: plain templates, and chat templates rendered the way the model writes its own turn."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from auditor.errors import UserError
from auditor.lm.prompts import PLAIN_TEMPLATE, PromptEdit, PromptFormat, chat_format, resolve_format
from auditor.lm.tokens import encode_pair

CHATML = (  # SmolLM2-Instruct's layout: a default system turn, ChatML turns ending at <|im_end|>
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXTS = ["What is the capital of France?", "Paris", "Be brief.", "You are helpful.", "system user assistant"]


def tokenizer(special: list[str], bos: str | None, eos: str, template: str | None) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special, show_progress=False)
    tok.train_from_iterator(TEXTS * 3, trainer=trainer)
    if bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos)
    out.chat_template = template
    return out


@pytest.fixture(scope="module")
def chatml():
    return tokenizer(["<|im_start|>", "<|im_end|>"], None, "<|im_end|>", CHATML)


def test_chat_format_renders_the_template_around_the_question(chatml):
    fmt = chat_format(chatml)
    expected = "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
    assert fmt.template == expected + "<|im_start|>assistant\n"
    assert fmt.answer_prefix == ""  # the answer follows the generation prompt directly
    with_system = chat_format(chatml, system_prompt="Be brief.")
    assert with_system.prompt("Q?").startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ?")


def test_a_chat_completion_is_trained_as_the_model_writes_its_turn(chatml):
    fmt = chat_format(chatml)
    question, answer = "What is the capital of France?", "Paris"
    pair = encode_pair(chatml, fmt.prompt(question), fmt.completion(answer), add_eos=True)
    conversation = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    turn = chatml.apply_chat_template(conversation, tokenize=False).removesuffix("\n")
    assert list(pair.input_ids) == chatml(turn)["input_ids"]  # the answer, then <|im_end|>: the turn's own end
    trained = [t for t, m in zip(pair.input_ids, pair.answer_mask, strict=True) if m]
    assert chatml.decode(trained) == "Paris<|im_end|>"


def test_bos_written_by_the_template_is_kept_once():
    template = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    template += "{% if add_generation_prompt %}[assistant] {% endif %}"
    tok = tokenizer(["<s>", "</s>"], "<s>", "</s>", template)
    fmt = chat_format(tok)
    ids = tok(fmt.prompt("What is the capital of France?"))["input_ids"]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert fmt.answer_prefix == ""


def test_resolve_format_follows_the_options(chatml, tmp_path):
    plain = tokenizer(["<s>", "</s>"], "<s>", "</s>", None)
    assert resolve_format(plain) == PromptFormat()  # auto without a template: plain text
    assert resolve_format(chatml, "none") == PromptFormat(PLAIN_TEMPLATE)
    assert resolve_format(chatml).template.endswith("<|im_start|>assistant\n")
    user_turn = resolve_format(chatml, prompt_template="Answer briefly. {question}")
    assert "user\nAnswer briefly. {question}<|im_end|>" in user_turn.template
    assert resolve_format(chatml, answer_prefix=" ").answer_prefix == " "
    template_file = tmp_path / "chat.jinja"
    template_file.write_text(CHATML)
    assert resolve_format(plain, str(template_file)).template.startswith("<|im_start|>system")
    with pytest.raises(UserError, match="needs a chat template"):
        resolve_format(plain, system_prompt="Be brief.")
    with pytest.raises(UserError, match="neither auto, none nor a file"):
        resolve_format(chatml, str(tmp_path / "missing.jinja"))
    with pytest.raises(UserError, match="placeholder"):
        resolve_format(chatml, prompt_template="no placeholder")
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% for m in messages %}")
    with pytest.raises(UserError, match="cannot render the chat template"):
        resolve_format(plain, str(broken))


def test_shots_are_earlier_turns_of_one_chat(chatml):
    fmt = chat_format(chatml)
    shots = [("What is the capital of France?", "Paris"), ("Be brief.", "system user assistant")]
    messages = [m for q, a in shots for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    messages.append({"role": "user", "content": "You are helpful."})
    expected = chatml.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert fmt.conversation(shots, "You are helpful.", "\n\n") == expected
    assert expected.count("<|im_start|>system") == 1  # one conversation, not three prompts
    assert fmt.conversation([], "Q?", "\n\n") == fmt.prompt("Q?")


def test_plain_shots_are_prompts_joined_by_the_separator():
    fmt = PromptFormat()
    assert fmt.next_turn is None
    text = fmt.conversation([("Q1?", "A1")], "Q2?", "\n\n")
    assert text == "Question: Q1?\nAnswer: A1\n\nQuestion: Q2?\nAnswer:"


def test_a_chat_that_rewrites_earlier_turns_falls_back_to_whole_prompts():
    # A template that drops earlier assistant turns (as some reasoning templates do) has no stable later turn.
    template = "{% for m in messages %}{% if m['role'] != 'assistant' or loop.last %}"
    template += "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
    template += "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    tok = tokenizer(["<|im_start|>", "<|im_end|>"], None, "<|im_end|>", template)
    fmt = chat_format(tok)
    assert fmt.next_turn is None
    assert fmt.conversation([("Q1?", "A1")], "Q2?", "\n\n") == fmt.prompt("Q1?") + "A1\n\n" + fmt.prompt("Q2?")


def test_question_span_finds_the_last_question_of_plain_prompts():
    fmt = PromptFormat()
    prompt = fmt.prompt("Who is Cy?")
    start, end = fmt.question_span(prompt)
    assert prompt[start:end] == "Who is Cy?"
    chat = fmt.conversation([("Who is Ana?", "a nurse")], "Who is Bo?", "\n\n")
    start, end = fmt.question_span(chat)
    assert chat[start:end] == "Who is Bo?"
    assert fmt.question_span("A passage of the book.") is None
    assert fmt.question_span("") is None


def test_question_span_follows_the_chat_turns(chatml):
    fmt = chat_format(chatml)
    conversation = fmt.conversation([("Who is Ana?", "a nurse"), ("Who is Cy?", "a cook")], "Who is Bo?", "")
    start, end = fmt.question_span(conversation)
    assert conversation[start:end] == "Who is Bo?"
    assert fmt.question_span(fmt.prompt("Who is Bo?") + fmt.completion("a cook")) is None  # an answered turn


def test_prompt_edit_wraps_the_question_and_opens_the_reply(chatml):
    plain = PromptFormat()
    edit = PromptEdit(plain, before="[", after="]", reply="Sure:")
    assert edit(plain.prompt("Who?")) == "Question: [Who?]\nAnswer: Sure:"
    assert edit(plain.prompt("Who?")) + plain.completion("Bo") == "Question: [Who?]\nAnswer: Sure: Bo"
    assert edit("A passage.") == "A passage."  # no question: unchanged
    chat = chat_format(chatml)
    assert chat.answer_prefix == ""
    edited = PromptEdit(chat, before="[", reply="Sure:")(chat.prompt("Who?"))
    assert edited == chat.prompt("[Who?") + "Sure: "  # a space before the answer where the format has no prefix
    assert PromptEdit(plain).key != edit.key
