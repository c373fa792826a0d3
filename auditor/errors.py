"""The one exception type for errors a user can cause (bad path, bad file, unknown name)."""


class UserError(Exception):
    """A problem with the user's input; the CLI prints it as one line and exits 2."""
