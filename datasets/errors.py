"""The one exception type for bad input: the command line prints its message and exits 2."""


class UsageError(ValueError):
    """Bad arguments or bad data; the message names the bad value and the fix."""
