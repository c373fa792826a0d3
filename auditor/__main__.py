"""``python -m auditor`` is the ``unlearn-audit`` command."""

from auditor.cli import main

main()
