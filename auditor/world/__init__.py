"""The embedded default world: fictitious people, their data files, and a cached tiny-model zoo.

>>> world = build_world()            # builds once (a few minutes on a laptop CPU), then reuses
>>> world.original, world.reference  # Hugging Face model directories
>>> world.file("forget")             # TOFU-style JSONL of the forget persons' facts
"""

from auditor.world.build import DATA_FILES, World, build_world, world_of
from auditor.world.spec import RECIPE_VERSION, WorldSpec
from auditor.world.templates import PROMPT_FORMAT, qa_completion, qa_prompt

__all__ = [
    "DATA_FILES",
    "PROMPT_FORMAT",
    "RECIPE_VERSION",
    "World",
    "WorldSpec",
    "build_world",
    "qa_completion",
    "qa_prompt",
    "world_of",
]
