"""Built-in attacks of unlearn-audit (a plugin package: imports the auditor core only).

``ENTRIES`` maps each registered name to its lazy ``"module:Class"`` location.
"""

ENTRIES: dict[str, str] = {}
