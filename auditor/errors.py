"""The one exception type for errors a user can cause (bad path, bad file, unknown name), and the exit codes."""

EXIT_PASS, EXIT_GATE_FAILED, EXIT_USAGE, EXIT_INCONCLUSIVE, EXIT_RUNTIME = 0, 1, 2, 3, 4


class UserError(Exception):
    """A problem with the user's input; the CLI prints it as one line and exits 2."""
