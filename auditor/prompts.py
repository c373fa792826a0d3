"""How a question becomes a prompt, and an answer its completion (one format per audit)."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.errors import UserError


@dataclass(frozen=True)
class PromptFormat:
    """``template`` holds ``{question}``; a completion is ``answer_prefix + answer``.

    The default is the plain format of the embedded world and of base models:
    ``"Question: {q}\\nAnswer: {a}"``.
    """

    template: str = "Question: {question}\nAnswer:"
    answer_prefix: str = " "

    def __post_init__(self) -> None:
        if "{question}" not in self.template:
            raise UserError(f"prompt template {self.template!r} has no {{question}} placeholder")

    def prompt(self, question: str) -> str:
        return self.template.replace("{question}", question)

    def completion(self, answer: str) -> str:
        return self.answer_prefix + answer


DEFAULT_FORMAT = PromptFormat()
