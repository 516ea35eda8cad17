"""Files that readers see whole or not at all: write under a temp name in the same folder, then rename.

A process killed mid-write leaves only a `.tmp-<name>.*` file beside the target, never a half-written
target; the next writer of that folder deletes such leftovers (`remove_stale_temp_files`).
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TEMP_PREFIX = ".tmp-"


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **open_kwargs) -> Iterator[IO]:
    """Open a temp file beside `path` for writing; on a clean exit it is flushed to disk and renamed to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # same folder, so the rename is atomic; "x" keeps the user's umask (mkstemp would force 0600)
    temporary = path.with_name(f"{TEMP_PREFIX}{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    try:
        with open(temporary, mode.replace("w", "x"), **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.filename == str(
            temporary
        ):  # name the file the user asked for
            error.filename = str(path)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def remove_stale_temp_files(directory: str | Path, target: str = "") -> None:
    """Delete temp files a killed writer left in `directory` (only those for `target` when it is given)."""
    for leftover in Path(directory).glob(f"{TEMP_PREFIX}{target}*"):
        leftover.unlink(missing_ok=True)
