"""Read rows of text (with or without labels) from TSV, CSV or JSONL files, or from a Hugging Face dataset.

Files are UTF-8, or UTF-8/16/32 with a byte-order mark (stripped, so a CSV header's first column keeps its
name); anything else is one error naming the file, the line and the fix.

The result is a `TextTable`: plain rows plus where they came from, so that every complaint about a value
can name the file and the line.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_llm.data.hub import describe_hub_source, is_hub_source, load_hub_split
from lightning_llm.data.text_encoding import open_text
from lightning_llm.errors import UserError

SUFFIXES = (".tsv", ".csv", ".jsonl")
TABLE_FILE_FIX = "re-save it as UTF-8 (in a spreadsheet or editor: Save As, encoding UTF-8)."


@dataclass(frozen=True)
class TextTable:
    """Rows read from one source; `lines[i]` is where row `i` starts (1-based), for error messages."""

    source: str
    columns: list[str]
    rows: list[dict[str, Any]]
    lines: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, index: int) -> str:
        """The place of row `index` in words, e.g. `data/sst2/dev.tsv line 12`."""
        line = self.lines[index]
        return f"{self.source} line {line}" if line else f"{self.source} row {index}"

    def require_column(self, column: str, option: str) -> None:
        """Raise `UserError` naming the columns that exist when `column` is not one of them."""
        if column not in self.columns:
            raise UserError(
                f"{self.source} has no column {column!r} (it has {', '.join(map(repr, self.columns))}); "
                f"set --data.{option} to one of those."
            )

    def values(self, column: str, option: str) -> list[Any]:
        """Every row's value in `column`; a row without one is a `UserError` naming its line."""
        self.require_column(column, option)
        values = []
        for index, row in enumerate(self.rows):
            value = row.get(column)
            if value is None:
                raise UserError(
                    f"{self.where(index)} has no value in column {column!r}; fix or remove that row."
                )
            values.append(value)
        return values


def read_source(source: str, data_dir: str | Path) -> TextTable:
    """Read one split's source: a file under `data_dir` (or an absolute path), or a Hugging Face dataset split
    written `hub:<dataset>:<split>` or `hub:<dataset>:<config>:<split>` (e.g. `hub:glue:sst2:validation`)."""
    if not is_hub_source(source):
        return read_table(Path(data_dir).expanduser() / Path(source).expanduser())
    loaded = load_hub_split(source)
    rows: list[dict[str, Any]] = list(loaded)
    return TextTable(
        source=describe_hub_source(source),
        columns=list(loaded.column_names),
        rows=rows,
        lines=[0] * len(rows),
    )


def read_table(path: Path) -> TextTable:
    """Read a TSV (GLUE style, no quoting), CSV or JSONL file whose format follows from its extension."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(
            f"cannot read {str(path)!r}: the extension must be one of {', '.join(SUFFIXES)} "
            "(rename the file or convert it)."
        )
    if not path.is_file():
        raise UserError(f"data file {str(path)!r} does not exist; check --data.data_dir and the file name.")
    if suffix == ".jsonl":
        return _read_jsonl(path)
    return _read_delimited(path, delimiter="\t" if suffix == ".tsv" else ",")


def _read_delimited(path: Path, delimiter: str) -> TextTable:
    # GLUE's TSV files hold unescaped quotes inside sentences, so tab-separated files are read unquoted.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    with open_text(path, TABLE_FILE_FIX, newline="") as file:
        reader = csv.DictReader(file, delimiter=delimiter, quoting=quoting)
        columns = list(reader.fieldnames or [])  # reads the header, so line_num now counts it
        repeated = sorted({name for name in columns if columns.count(name) > 1})
        if repeated:  # csv would keep the last of the same-named columns without a word
            raise UserError(f"{path} has the column(s) {repeated} more than once in its header; rename them")
        rows, lines = [], []
        line = reader.line_num + 1
        for row in reader:
            if None in row:  # csv puts fields beyond the header under the key None
                raise UserError(
                    f"{path} line {line} has {len(columns) + len(row[None])} fields but the header has "
                    f"{len(columns)}; a text holding a {'tab' if delimiter == chr(9) else 'comma'} must be "
                    "quoted (CSV) or the row fixed"
                )
            rows.append(row)
            lines.append(line)
            line = reader.line_num + 1
    return TextTable(source=str(path), columns=columns, rows=rows, lines=lines)


def _read_jsonl(path: Path) -> TextTable:
    rows, lines, columns = [], [], {}
    with open_text(path, TABLE_FILE_FIX) as file:
        for number, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as error:
                raise UserError(
                    f"{path} line {number} is not valid JSON ({error.msg}); fix that line."
                ) from None
            if not isinstance(row, dict):
                raise UserError(f"{path} line {number} is not a JSON object; write one object per line.")
            rows.append(row)
            lines.append(number)
            columns.update(dict.fromkeys(row))
    return TextTable(source=str(path), columns=list(columns), rows=rows, lines=lines)
