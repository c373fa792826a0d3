"""How a question becomes a prompt, and an answer its completion (one format per audit).

A chat model is asked the way it was trained: its tokenizer's chat template is
rendered once around placeholders, which gives the text before and after the
question and the text between the end of the prompt and the answer. Every
probe, attack and method then uses that one format, so answers are generated,
scored and trained exactly as the model writes its own turn (ending at EOS,
which chat tokenizers set to the end-of-turn token). Rendering a two-question
chat gives the text of a later turn too, so few-shot context is written as
earlier turns of one conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from auditor.errors import UserError

PLAIN_TEMPLATE = "Question: {question}\nAnswer:"  # the embedded world's format, and a base model's
CHAT_USER_TEMPLATE = "{question}"  # a chat model's user turn: the question alone
_QUESTION = "\ue000question\ue000"  # private-use placeholders no template produces by itself
_ANSWER = "\ue001answer\ue001"
_FIRST = "\ue002first\ue002"  # an earlier question of the same chat


@dataclass(frozen=True)
class PromptFormat:
    """``template`` holds ``{question}``; a completion is ``answer_prefix + answer``.

    The default is the plain format of the embedded world and of base models:
    ``"Question: {q}\\nAnswer: {a}"``.
    """

    template: str = PLAIN_TEMPLATE
    answer_prefix: str = " "
    next_turn: str | None = None  # a question after an answered one, in the same chat (holds ``{question}``)

    def __post_init__(self) -> None:
        if "{question}" not in self.template:
            raise UserError(f"prompt template {self.template!r} has no {{question}} placeholder")

    @property
    def key(self) -> dict[str, str | None]:
        """Every field, for the keys of cached results computed in this format."""
        return asdict(self)

    def prompt(self, question: str) -> str:
        return self.template.replace("{question}", question)

    def completion(self, answer: str) -> str:
        return self.answer_prefix + answer

    def question_span(self, prompt: str) -> tuple[int, int] | None:
        """Where the last question of a prompt made by this format lies: ``prompt[start:end]``; None for a text
        that is no question prompt (a verbatim passage, an empty prompt). A format with nothing around the
        question takes the whole prompt for one."""
        if not prompt:
            return None
        spans = []
        for template in (self.template, self.next_turn or self.template):
            opening, closing = template.split("{question}", 1)
            end = len(prompt) - len(closing)
            if not prompt.endswith(closing) or end < 0:
                continue
            start = prompt.rfind(opening, 0, end) if opening else 0
            if start != -1:
                spans.append((start + len(opening), end))
        return max(spans, default=None)

    def conversation(self, shots: Sequence[tuple[str, str]], question: str, separator: str) -> str:
        """Answered ``(question, answer)`` shots, then ``question``: earlier turns of one chat when the format
        has ``next_turn``, else whole prompts with their completions, each followed by ``separator``."""
        if self.next_turn is None or not shots:
            return "".join(self.prompt(q) + self.completion(a) + separator for q, a in shots) + self.prompt(question)
        turns = [self.next_turn.replace("{question}", q) + self.completion(a) for q, a in shots[1:]]
        first = self.prompt(shots[0][0]) + self.completion(shots[0][1])
        return first + "".join(turns) + self.next_turn.replace("{question}", question)


DEFAULT_FORMAT = PromptFormat()


@dataclass(frozen=True)
class PromptEdit:
    """What a prompt-level attack changes in every question a model is asked: text ``before`` and ``after`` the
    question inside its turn, and a ``reply`` that opens the model's answer (prefix injection).

    Prompts that hold no question (``PromptFormat.question_span``) pass unchanged.
    """

    fmt: PromptFormat
    before: str = ""
    after: str = ""
    reply: str = ""

    def __call__(self, prompt: str) -> str:
        span = self.fmt.question_span(prompt)
        if span is None:
            return prompt
        start, end = span
        edited = prompt[:start] + self.before + prompt[start:end] + self.after + prompt[end:]
        if not self.reply:
            return edited
        # the answer follows the reply as it follows the prompt: after the format's answer prefix, else a space
        return edited + self.fmt.answer_prefix + self.reply + ("" if self.fmt.answer_prefix else " ")

    @property
    def key(self) -> str:
        """The edit as text, for fingerprints."""
        return repr((self.before, self.after, self.reply))


def chat_format(
    tokenizer, user_template: str = CHAT_USER_TEMPLATE, system_prompt: str | None = None, template: str | None = None
) -> PromptFormat:
    """The format of a chat model: ``template`` (default: the tokenizer's chat template) rendered around a user
    turn made from ``user_template`` and, when given, a system turn."""
    if "{question}" not in user_template:
        raise UserError(f"prompt template {user_template!r} has no {{question}} placeholder")
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    first, user = _user(user_template, _FIRST), _user(user_template, _QUESTION)
    answered = [first, {"role": "assistant", "content": _ANSWER}]

    def render(messages: list[dict], generation: bool) -> str:
        return tokenizer.apply_chat_template(
            system + messages, tokenize=False, add_generation_prompt=generation, chat_template=template
        )

    try:
        prompt, turn, chat = render([user], True), render(answered, False), render([*answered, user], True)
    except Exception as exc:  # jinja errors, a template that rejects a system turn, ...
        raise UserError(f"cannot render the chat template: {str(exc).splitlines()[0]}") from None
    if prompt.count(_QUESTION) != 1:
        raise UserError("the chat template does not place the user's message exactly once")
    # The text between the generation prompt and the answer; empty when the template writes the turn otherwise.
    opening = prompt.replace(_QUESTION, _FIRST)
    prefix = turn[len(opening) : turn.index(_ANSWER)] if turn.startswith(opening) and _ANSWER in turn else ""
    # A later question of the same chat: what follows an answer; None when the chat does not begin as one turn.
    head = opening + prefix + _ANSWER
    next_turn = chat[len(head) :] if chat.startswith(head) and chat.count(_QUESTION) == 1 else None
    bos = tokenizer.bos_token
    if bos and prompt.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        prompt = prompt[len(bos) :]  # the tokenizer adds BOS itself: keep it once
    return PromptFormat(
        template=prompt.replace(_QUESTION, "{question}"),
        answer_prefix=prefix,
        next_turn=next_turn.replace(_QUESTION, "{question}") if next_turn else None,
    )


def _user(user_template: str, placeholder: str) -> dict:
    return {"role": "user", "content": user_template.replace("{question}", placeholder)}


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
    return fmt if answer_prefix is None else replace(fmt, answer_prefix=answer_prefix)
