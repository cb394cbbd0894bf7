"""The one exception type a user can cause; the CLI prints its message on one line."""


class L2MError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""
