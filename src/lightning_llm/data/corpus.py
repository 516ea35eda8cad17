"""Where pretraining text comes from: files, globs, directories, the Python standard library, or the HF hub.

A `Corpus` yields its text in chunks of about `chunk_chars` characters cut at line ends, so no plain text
file is ever held whole in memory, and gives a fingerprint of its content for cache keys. A table (TSV, CSV
or JSONL) gives only one column's values, one row per line, and is read whole by `read_table`.
"""

from __future__ import annotations

import glob
import hashlib
import re
import sysconfig
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

from lightning_llm.data.hub import describe_hub_source, is_hub_source, load_hub_split
from lightning_llm.data.labelled_text import SUFFIXES as TABLE_SUFFIXES
from lightning_llm.data.labelled_text import read_table
from lightning_llm.data.text_encoding import binary_file_error, detect_encoding
from lightning_llm.errors import UserError

STDLIB = "stdlib"  # the embedded default: this interpreter's own standard-library sources
TEXT_SUFFIXES = (".txt", ".py", ".md", ".rst", ".json", ".jsonl", ".csv", ".tsv", ".html", ".xml", ".c", ".h")
CORPUS_FILE_FIX = "convert it to UTF-8 (e.g. with iconv), or remove it from data.path if it is not text"
# Tests, vendored packages and the IDE's sources would crowd out the library's own code.
STDLIB_EXCLUDED_PARTS = frozenset({"test", "tests", "site-packages", "dist-packages", "idlelib", "lib2to3"})
# Tables of data, mostly generated, not code anyone wrote: samples would copy their rows. (The encodings package's table
# codecs, cp*.py, mac_*.py, iso8859_*.py and the like, are found by their content: see `is_codec_table`.)
STDLIB_GENERATED_FILES = (
    "pydoc_data/topics.py",  # the language reference as one dict of strings, dumped by Sphinx (0.7 MB)
    "_sysconfigdata_*.py",  # this build's compiler settings
    "stringprep.py",  # RFC 3454 tables
    "re/_casefix.py",  # a Unicode case table
    "html/entities.py",  # 2,000 entity names and code points
)
CODEC_TABLE = re.compile(r"^(decoding_table|decoding_map) = ", flags=re.M)


def stdlib_sources() -> list[Path]:
    """The running interpreter's standard-library `*.py` files, sorted; tests, site-packages and generated
    tables (`STDLIB_GENERATED_FILES` and the encodings package's table codecs) left out."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        f
        for f in root.rglob("*.py")
        if not STDLIB_EXCLUDED_PARTS & set(f.relative_to(root).parts[:-1])
        and not is_generated_table(f.relative_to(root), root)
    )
    if not files:
        raise UserError(
            f"no standard-library sources found under {root}; pass --data.path with your own text"
        )
    return files


def is_generated_table(relative: Path, root: Path) -> bool:
    """True for a standard-library file (path relative to `root`) that holds a generated table, not code."""
    if any(relative.match(pattern) for pattern in STDLIB_GENERATED_FILES):
        return True
    return relative.parts[0] == "encodings" and is_codec_table(root / relative)


def is_codec_table(file: Path) -> bool:
    """A codec module built around a 256-entry decoding table (most were written by Tools/unicode/gencodec.py)."""
    return CODEC_TABLE.search(file.read_text(encoding="utf-8", errors="replace")) is not None


def resolve_files(path: str | Sequence[str]) -> list[Path]:
    """Expand files, globs and directories (searched recursively for text files) into a sorted file list."""
    patterns = [path] if isinstance(path, str) else list(path)
    if not patterns:
        raise UserError("data.path is an empty list: name at least one file, glob or directory")
    files: list[Path] = []
    for pattern in patterns:
        if pattern == STDLIB:
            files.extend(stdlib_sources())
            continue
        if is_hub_source(pattern):
            raise UserError(
                f"data.path lists the hub dataset {pattern!r} among other sources; a hub dataset is read alone: "
                "set data.path to that one source"
            )
        candidate = Path(pattern).expanduser()
        if candidate.is_dir():
            found = sorted(
                f for f in candidate.rglob("*") if f.is_file() and f.suffix.lower() in TEXT_SUFFIXES
            )
            if not found:
                raise UserError(
                    f"directory {candidate} holds no text files ({', '.join(TEXT_SUFFIXES)}); "
                    "point data.path at a file or a directory of text"
                )
            files.extend(found)
        elif candidate.is_file():
            files.append(candidate)
        elif candidate.exists():  # a pipe or a device would never end, or never start
            raise not_a_text_file(candidate)
        elif glob.has_magic(pattern):
            matches = sorted(
                Path(f) for f in glob.glob(str(candidate), recursive=True) if not Path(f).is_dir()
            )
            if not matches:
                raise UserError(f"the glob {pattern!r} matches no files; check the pattern in data.path")
            for match in matches:
                if not match.is_file():
                    raise not_a_text_file(match)
            files.extend(matches)
        else:
            raise UserError(
                f"data path {pattern} does not exist; check data.path (a file, glob or directory)"
            )
    seen: dict[Path, Path] = {}
    for file in files:  # a list naming a file twice, or a glob through a symlink loop, would repeat its text
        first = seen.setdefault(file.resolve(), file)
        if first is not file:
            raise UserError(
                f"data.path names {file.resolve()} more than once ({first}, {file}); name each file once"
            )
    return files


def not_a_text_file(path: Path) -> UserError:
    return UserError(
        f"data path {path} is not a regular file (a pipe or a device?); point data.path at text files"
    )


def is_table(file: Path) -> bool:
    """A TSV, CSV or JSONL file: the corpus takes one column of it, not its whole text."""
    return file.suffix.lower() in TABLE_SUFFIXES


def table_texts(file: Path, column: str) -> list[str]:
    """The values of `column` in the table `file`, one per row; every way it can hold no usable text is one
    `UserError` naming the file (and the line, for one bad row) and the fix."""
    table = read_table(file)  # an encoding that does not decode is its error, naming the line
    if not table.columns and not table.rows:
        raise UserError(
            f"the table {file} is empty (no header, no rows); give it a {column!r} column and rows of text, "
            "or remove it from data.path"
        )
    table.require_column(column, "text_column")  # names the columns it has and --data.text_column
    if not table.rows:
        raise UserError(
            f"the table {file} has a header but no rows; add rows of text or remove it from data.path"
        )
    texts = table.values(column, "text_column")
    for index, text in enumerate(texts):
        if not isinstance(text, str):  # JSONL: a number, a list or an object is not text
            raise UserError(
                f"{table.where(index)} holds {type(text).__name__} {short_repr(text)} in column {column!r}, "
                "not text; write it as a string or set --data.text_column to the column that holds the text"
            )
    if not any(text.strip() for text in texts):
        raise UserError(
            f"column {column!r} of {file} holds no text in its {len(texts)} row(s) (only empty values); "
            "set --data.text_column to the column that holds the text"
        )
    return texts


def short_repr(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class FileCorpus:
    """Text files read in order, each in the encoding its byte-order mark names (UTF-8 without one);
    bytes that do not decode are replaced (U+FFFD), counted and reported; a binary file is refused.

    A table file (`.tsv`, `.csv`, `.jsonl`) contributes only the values of `text_column`, one row per line
    (its header, labels and other columns are left out); tables are strict UTF-8 (a byte that does not
    decode is an error naming the line), as the classification data reads them.
    """

    def __init__(self, files: Sequence[Path], chunk_chars: int = 1 << 20, text_column: str = "text") -> None:
        self.files = list(files)
        self.chunk_chars = chunk_chars
        self.text_column = text_column
        self.replaced_bytes = 0

    def describe(self) -> str:
        size = f"{len(self.files)} file(s), {sum(f.stat().st_size for f in self.files) / 1e6:.1f} MB"
        return size + (f", column {self.text_column!r} of the tables" if self._tables() else "")

    def _tables(self) -> list[Path]:
        return [file for file in self.files if is_table(file)]

    def fingerprint(self) -> str:
        digest = hashlib.blake2b(digest_size=16)
        if self._tables():  # the column chosen is part of the text; a corpus without tables keeps its old key
            digest.update(f"\0text_column={self.text_column}\0".encode())
        for file in self.files:
            digest.update(f"\0{file.stat().st_size}\0".encode())
            with open(file, "rb") as handle:
                while block := handle.read(1 << 22):
                    digest.update(block)
        return digest.hexdigest()

    def texts(self) -> Iterator[str]:
        """Chunks of text; files are joined with a newline so one file's last line never runs into the next."""
        self.replaced_bytes = 0
        # Every file checked first: a binary file in a folder, or a table without the column, is refused
        # before any tokenizer work. Tables are read whole here, so they must fit in memory.
        encodings = {
            file: detect_encoding(file, CORPUS_FILE_FIX) for file in self.files if not is_table(file)
        }
        tables = {file: table_texts(file, self.text_column) for file in self._tables()}
        empty = True
        for file in self.files:
            table = file in tables
            chunks = (
                self._table_chunks(tables.pop(file)) if table else self._file_chunks(file, encodings[file])
            )
            for chunk in chunks:
                if not table:  # a table that does not decode is an error, so a U+FFFD there is the text's own
                    self.replaced_bytes += chunk.count("\ufffd")
                empty = empty and not chunk.strip()
                yield chunk
            yield "\n"
        if empty:
            names = ", ".join(str(f) for f in self.files[:3])
            raise UserError(f"the corpus is empty (only whitespace in {names}); give data.path some text")
        if self.replaced_bytes:
            warnings.warn(
                f"{self.replaced_bytes} byte(s) that are not UTF-8 were replaced by U+FFFD while reading the corpus",
                stacklevel=2,
            )

    def _table_chunks(self, texts: list[str]) -> Iterator[str]:
        """A table's texts, each ending a line, in chunks of about `chunk_chars` (like a text file's)."""
        chunk: list[str] = []
        size = 0
        for text in texts:
            chunk.append(text + "\n")
            size += len(text) + 1
            if size >= self.chunk_chars:
                yield "".join(chunk)
                chunk, size = [], 0
        if chunk:
            yield "".join(chunk)

    def _file_chunks(self, file: Path, encoding: str) -> Iterator[str]:
        """One file decoded incrementally, in chunks of about `chunk_chars` that end at a line end."""
        with open(file, encoding=encoding, errors="replace", newline="") as handle:
            while chunk := handle.read(self.chunk_chars):
                chunk += handle.readline()
                if encoding == "utf-8" and "\0" in chunk:  # a NUL past the sniffed start: not text either
                    raise binary_file_error(file, CORPUS_FILE_FIX)
                yield chunk


class HubCorpus:
    """One text column of a Hugging Face dataset split, `hub:<dataset>[:<config>]:<split>` (needs the `hub`
    extra: `pip install lightning-llm[hub]`)."""

    def __init__(self, source: str, text_column: str) -> None:
        self.name = describe_hub_source(source)
        self.dataset = load_hub_split(source)
        if text_column not in self.dataset.column_names:
            raise UserError(
                f"{self.name} has no column {text_column!r} (it has {', '.join(map(repr, self.dataset.column_names))}); "
                "set --data.text_column to one of those"
            )
        self.text_column = text_column

    def describe(self) -> str:
        return f"{self.name} ({len(self.dataset)} rows, column {self.text_column!r})"

    def fingerprint(self) -> str:
        content = (
            getattr(self.dataset, "_fingerprint", None)
            or hashlib.blake2b("".join(self.texts()).encode(), digest_size=16).hexdigest()
        )
        # the dataset's fingerprint covers every column: the one read must change the key too
        return hashlib.blake2b(f"{content}\0{self.text_column}".encode(), digest_size=16).hexdigest()

    def texts(self) -> Iterator[str]:
        for index, row in enumerate(self.dataset):
            text = row[self.text_column]
            if not isinstance(text, str):
                raise UserError(
                    f"{self.name} row {index} holds {type(text).__name__} {short_repr(text)} in column "
                    f"{self.text_column!r}, not text; set --data.text_column to the column that holds the text"
                )
            yield text + "\n"
