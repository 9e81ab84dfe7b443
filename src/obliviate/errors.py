"""Errors meant for users: one sentence that names the bad input and the fix.

The CLI prints these without a traceback; anything else that escapes is a bug.
"""


class UserError(Exception):
    """A problem with what the user asked for (a path, a flag, a file), not a bug."""
