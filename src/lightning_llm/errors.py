"""The one exception type for mistakes a user can fix; the CLI prints it as a single line."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A bad input (path, file content, config value, checkpoint) with a message naming the fix."""


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """End with `error: <message>` and exit status 2 when a UserError is raised, or is the cause of one."""
    try:
        yield
    except Exception as error:  # jsonargparse wraps errors raised in __init__: find the UserError inside
        cause: BaseException | None = error
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        print(f"error: {cause}", file=sys.stderr)
        raise SystemExit(2) from None
