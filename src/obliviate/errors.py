"""Errors meant for users: one sentence that names the bad input and the fix.

The CLI prints these without a traceback; anything else that escapes is a bug.
"""

from __future__ import annotations

import errno

# What the operating system said, and what the user can do about it.
_OS_FIXES = {
    errno.EACCES: "permission denied; choose a folder you can write to, or change its permissions",
    errno.EPERM: "operation not permitted; choose a folder you can write to, or change its permissions",
    errno.EROFS: "the file system is read-only; choose a folder on a writable disk",
    errno.ENOSPC: "no space left on the device; free some space or choose a folder on another disk",
    errno.EDQUOT: "the disk quota is exceeded; free some space or choose a folder on another disk",
    errno.ENAMETOOLONG: "a file name is too long; choose a shorter --out or target name",
}


class UserError(Exception):
    """A problem with what the user asked for (a path, a flag, a file), not a bug."""


def os_error_sentence(e: OSError) -> str | None:
    """One sentence for an OS error a user can fix (permissions, a full or read-only disk, a long name),
    naming the file; None for any other error, which is a bug and keeps its traceback."""
    fix = _OS_FIXES.get(e.errno)
    if fix is None:
        return None
    return f"{e.filename}: {fix}." if e.filename else f"{fix[0].upper()}{fix[1:]}."


class Stopped(Exception):
    """A run stopped on request (a `stop` callback said so) between two steps or stages; what it finished is
    kept on disk, and the same call with resume=True continues it."""
