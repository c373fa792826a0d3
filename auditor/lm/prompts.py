"""How a question becomes a prompt, and an answer its completion (one format per audit).

A chat model is asked the way it was trained: its tokenizer's chat template is
rendered once around placeholders, which gives the text before and after the
question and the text between the end of the prompt and the answer. Every
probe, attack and method then uses that one format, so answers are generated,
scored and trained exactly as the model writes its own turn (ending at EOS,
which chat tokenizers set to the end-of-turn token).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from auditor.errors import UserError

PLAIN_TEMPLATE = "Question: {question}\nAnswer:"  # the embedded world's format, and a base model's
CHAT_USER_TEMPLATE = "{question}"  # a chat model's user turn: the question alone
_QUESTION = "\ue000question\ue000"  # private-use placeholders no template produces by itself
_ANSWER = "\ue001answer\ue001"


@dataclass(frozen=True)
class PromptFormat:
    """``template`` holds ``{question}``; a completion is ``answer_prefix + answer``.

    The default is the plain format of the embedded world and of base models:
    ``"Question: {q}\\nAnswer: {a}"``.
    """

    template: str = PLAIN_TEMPLATE
    answer_prefix: str = " "

    def __post_init__(self) -> None:
        if "{question}" not in self.template:
            raise UserError(f"prompt template {self.template!r} has no {{question}} placeholder")

    def prompt(self, question: str) -> str:
        return self.template.replace("{question}", question)

    def completion(self, answer: str) -> str:
        return self.answer_prefix + answer


DEFAULT_FORMAT = PromptFormat()


def chat_format(
    tokenizer, user_template: str = CHAT_USER_TEMPLATE, system_prompt: str | None = None, template: str | None = None
) -> PromptFormat:
    """The format of a chat model: ``template`` (default: the tokenizer's chat template) rendered around a user
    turn made from ``user_template`` and, when given, a system turn."""
    if "{question}" not in user_template:
        raise UserError(f"prompt template {user_template!r} has no {{question}} placeholder")
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    user = [{"role": "user", "content": user_template.replace("{question}", _QUESTION)}]
    try:
        prompt = tokenizer.apply_chat_template(
            system + user, tokenize=False, add_generation_prompt=True, chat_template=template
        )
        turn = tokenizer.apply_chat_template(
            system + user + [{"role": "assistant", "content": _ANSWER}], tokenize=False, chat_template=template
        )
    except Exception as exc:  # jinja errors, a template that rejects a system turn, ...
        raise UserError(f"cannot render the chat template: {str(exc).splitlines()[0]}") from None
    if prompt.count(_QUESTION) != 1:
        raise UserError("the chat template does not place the user's message exactly once")
    # The text between the generation prompt and the answer; empty when the template writes the turn otherwise.
    prefix = turn[len(prompt) : turn.index(_ANSWER)] if turn.startswith(prompt) and _ANSWER in turn else ""
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        prompt = prompt[len(bos) :]  # the tokenizer adds BOS itself: keep it once
    return PromptFormat(template=prompt.replace(_QUESTION, "{question}"), answer_prefix=prefix)


def resolve_format(
    tokenizer,
    chat_template: str = "auto",
    prompt_template: str | None = None,
    system_prompt: str | None = None,
    answer_prefix: str | None = None,
) -> PromptFormat:
    """The format an audit uses, from the command-line choices.

    ``chat_template``: ``auto`` (the tokenizer's template when it has one),
    ``none`` (plain text), or a file holding a Jinja chat template.
    ``prompt_template`` is the whole prompt in plain mode and the user turn in
    chat mode; ``answer_prefix`` overrides what precedes each answer.
    """
    if chat_template == "none":
        chat = None
    elif chat_template == "auto":
        chat = tokenizer.chat_template if getattr(tokenizer, "chat_template", None) else None
    else:
        path = Path(chat_template)
        if not path.is_file():
            raise UserError(f"--chat-template: {chat_template} is neither auto, none nor a file")
        chat = path.read_text(encoding="utf-8")
    if chat is None:
        if system_prompt:
            raise UserError("--system-prompt needs a chat template (the model's, or --chat-template FILE)")
        fmt = PromptFormat(template=prompt_template or PLAIN_TEMPLATE)
    else:
        fmt = chat_format(tokenizer, prompt_template or CHAT_USER_TEMPLATE, system_prompt, chat)
    return fmt if answer_prefix is None else PromptFormat(fmt.template, answer_prefix)
