"""Errors meant for users: one sentence that names the bad input and the fix.

The CLI prints these without a traceback; anything else that escapes is a bug.
"""


class UserError(Exception):
    """A problem with what the user asked for (a path, a flag, a file), not a bug."""


class Stopped(Exception):
    """A run stopped on request (a `stop` callback said so) between two steps or stages; what it finished is
    kept on disk, and the same call with resume=True continues it."""
