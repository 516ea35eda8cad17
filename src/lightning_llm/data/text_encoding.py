"""How a text file is encoded, told from its first bytes: a byte-order mark names UTF-8, UTF-16 or UTF-32;
without one the file must be UTF-8, and NUL bytes mean it is not (binary, or UTF-16/32 without a BOM).

The corpus and the labelled tables share this, so both read the same files the same way.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from lightning_llm.errors import UserError

# UTF-32 LE before UTF-16 LE: its BOM (FF FE 00 00) starts with UTF-16 LE's (FF FE).
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# Binary files and BOM-less UTF-16 show NUL bytes at once; reading only the start keeps this cheap.
SNIFF_BYTES = 1 << 14
READABLE_NAMES = {"utf-8": "UTF-8", "utf-8-sig": "UTF-8", "utf-16": "UTF-16", "utf-32": "UTF-32"}


def detect_encoding(path: Path, fix: str) -> str:
    """The Python codec for `path` (`utf-8-sig`, `utf-16` and `utf-32` strip the BOM they find).

    A file without a BOM whose start holds a NUL byte is a `UserError` ending in `fix`, the remedy in the
    caller's words (e.g. "convert it to UTF-8 or remove it from data.path").
    """
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    for mark, encoding in BYTE_ORDER_MARKS:
        if head.startswith(mark):
            return encoding
    if b"\0" in head:
        raise binary_file_error(path, fix)
    return "utf-8"


def binary_file_error(path: Path, fix: str) -> UserError:
    """The error for a file holding NUL characters: binary, or UTF-16/32 saved without a byte-order mark."""
    return UserError(
        f"{path} holds NUL bytes and no byte-order mark, so it is binary or UTF-16/UTF-32 without a BOM; {fix}"
    )


@contextmanager
def open_text(path: Path, fix: str, newline: str | None = None) -> Iterator[TextIO]:
    """`path` opened for reading in its detected encoding; a byte that does not decode, wherever the
    caller reads it, becomes one `UserError` naming the file, the line (when it can be found) and `fix`."""
    encoding = detect_encoding(path, fix)
    with open(path, encoding=encoding, newline=newline) as handle:
        try:
            yield handle
        except UnicodeDecodeError as error:
            raise undecodable_error(path, encoding, error, fix) from None


def undecodable_error(path: Path, encoding: str, error: UnicodeDecodeError, fix: str) -> UserError:
    name = READABLE_NAMES.get(encoding, encoding)
    line = first_undecodable_line(path) if name == "UTF-8" else None
    where = f"{path} line {line}" if line else str(path)
    hint = " (it may be Latin-1 or Windows-1252)" if name == "UTF-8" else ""
    return UserError(f"{where} is not valid {name}{hint}: {error.reason}; {fix}")


def first_undecodable_line(path: Path) -> int | None:
    """The 1-based number of the first line that is not UTF-8 (splitting bytes at `\\n` is safe in UTF-8)."""
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None
