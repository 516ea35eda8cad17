"""The one exception type for mistakes a user can fix; the CLI prints it as a single line."""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(ValueError):
    """A bad input (path, file content, config value, checkpoint) with a message naming the fix."""


# Rank 0's failure kills the other ranks first, so their copy of its error never prints; theirs alone does.
OTHER_RANK_PRINT_DELAY_S = 3.0

# File-system faults a user can fix (space, permissions, a file where a folder belongs); others are bugs.
_FIXABLE_OS_ERRORS = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is used up: free space or write elsewhere",
    errno.EROFS: "the file system is read-only: write elsewhere",
    errno.EACCES: "permission denied: write elsewhere or fix the permissions",
    errno.EPERM: "permission denied: write elsewhere or fix the permissions",
    errno.ENOTDIR: "a file stands where a folder belongs: move it or choose another folder",
    errno.EISDIR: "a folder stands where a file belongs: move it or choose another name",
    errno.EEXIST: "a file stands where a folder belongs: move it or choose another folder",
    errno.ENOENT: "no such file or folder: check the path",
}


def user_error_in(error: BaseException) -> UserError | None:
    """The UserError `error` is or was caused by (jsonargparse wraps errors raised in __init__), or a fixable
    file-system fault in words; None for anything else."""
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:  # a chain can loop back on itself
        seen.add(id(cause))
        if isinstance(cause, UserError):
            return cause
        if isinstance(cause, OSError) and cause.errno in _FIXABLE_OS_ERRORS:
            return UserError(f"{cause.filename or 'a file'}: {_FIXABLE_OS_ERRORS[cause.errno]}")
        cause = cause.__cause__ or cause.__context__
    return None


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """End with `error: <message>` and exit status 2 when a UserError (or a fixable file-system fault) is
    raised, or is the cause of one."""
    try:
        yield
    except Exception as error:
        found = user_error_in(error)
        if found is None:
            raise
        if process_rank() > 0:
            time.sleep(OTHER_RANK_PRINT_DELAY_S)
        print(f"error: {' '.join(str(found).split())}", file=sys.stderr)  # one line, whatever the message
        raise SystemExit(2) from None


def process_rank() -> int:
    """This process's rank in a distributed run (torchrun's RANK; Lightning's LOCAL_RANK for the processes
    it starts, so on several nodes each node's first process counts as 0); 0 outside one."""
    for name in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0
