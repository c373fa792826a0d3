"""``python -m auditor`` is the ``unlearn-audit`` command."""

from auditor.cli import main

if __name__ == "__main__":  # worker processes (spawn) import this module without running the command
    main()
