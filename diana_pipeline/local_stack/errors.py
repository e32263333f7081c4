"""The one error type of the local stack: its message is what the user reads."""


class StackError(RuntimeError):
    """The local stack could not do what was asked; the message says why and what to do."""
