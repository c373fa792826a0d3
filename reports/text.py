"""Text safety and number formatting shared by the renderers.

Model outputs may hold anything: ANSI escapes, HTML, bidi overrides, lone surrogates.
``visible`` turns every invisible or control character into a printable marker such as
``\\x1b`` so a reviewer sees it and no terminal, browser or XML parser acts on it.
"""

from __future__ import annotations

import math
import re
from typing import Any

from markupsafe import Markup, escape

# C0 controls except tab and newline, DEL and C1 controls, bidi and zero-width marks,
# line/paragraph separators, lone surrogates and the XML-invalid non-characters.
_HIDDEN = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069"
    "\ufeff\ufff9-\ufffb\ufffe\uffff\ud800-\udfff]"
)


def _marker(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def as_text(value: Any) -> str:
    """Any JSON value as text; ``None`` as the empty string."""
    return "" if value is None else value if isinstance(value, str) else str(value)


def visible(value: Any) -> str:
    """``value`` as text with every control or invisible character replaced by its escape."""
    return _HIDDEN.sub(lambda m: _marker(m.group()), as_text(value))


def show(value: Any) -> Markup:
    """HTML-escaped ``value`` with control characters shown as highlighted escapes."""
    text = as_text(value)
    parts: list[str] = []
    last = 0
    for match in _HIDDEN.finditer(text):
        parts.append(escape(text[last : match.start()]))
        parts.append(Markup('<span class="ctl">{}</span>').format(_marker(match.group())))
        last = match.end()
    parts.append(escape(text[last:]))
    return Markup("").join(parts)


def finite(value: Any) -> float | None:
    """``value`` as a float when it is a finite number, else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals; an em dash when missing or not finite."""
    number = finite(value)
    return "\u2014" if number is None else f"{number:.{digits}f}"


def fmt_ci(low: Any, high: Any, digits: int = 2) -> str:
    """``[low, high]``, or an empty string when either bound is missing."""
    if finite(low) is None or finite(high) is None:
        return ""
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "\u2026"
