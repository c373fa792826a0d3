"""Bundled unlearning methods and known-answer controls.

``ENTRIES`` maps each registered name to its lazy ``"module:Class"`` location.
"""

ENTRIES: dict[str, str] = {}
