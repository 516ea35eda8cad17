"""Labels and row ids read from a labelled table: class names in id order, label ids, regression targets."""

from __future__ import annotations

from lightning_llm.data.labelled_text import TextTable
from lightning_llm.errors import UserError

# Columns that identify a row in predictions when `id_column` is not given (SST-2 test: `index`, hub: `idx`).
ID_COLUMNS = ("index", "idx", "id")


def label_texts(table: TextTable, column: str) -> list[str]:
    """Every row's class label as text without surrounding whitespace: `1` and `1 ` are one class."""
    labels = []
    for index, value in enumerate(table.values(column, "label_column")):
        label = str(value).strip()
        if not label:
            raise UserError(
                f"{table.where(index)}: the label in column {column!r} is empty; "
                "write the row's class or remove the row."
            )
        labels.append(label)
    return labels


def found_label_names(table: TextTable, column: str) -> list[str]:
    """The distinct labels of `table` in class-id order: numbers by value ("2" before "10"), then names."""
    found = set(label_texts(table, column))
    if len(found) < 2:
        raise UserError(
            f"{table.source} has only the label(s) {sorted(found)}; a classifier needs "
            "two or more classes (or set task: regression)."
        )
    return sorted(found, key=_label_sort_key)


def class_ids(table: TextTable, column: str, label_names: list[str]) -> list[int]:
    """Each row's class id: its label's position in `label_names`."""
    ids = {name: position for position, name in enumerate(label_names)}
    label_ids = []
    for index, label in enumerate(label_texts(table, column)):
        if label not in ids:
            raise UserError(
                f"{table.where(index)}: label {label!r} is not one of the labels {label_names}; "
                "fix the row or add it to --data.labels."
            )
        label_ids.append(ids[label])
    return label_ids


def regression_targets(table: TextTable, column: str) -> list[float]:
    """Each row's label as a number."""
    numbers = []
    for index, value in enumerate(table.values(column, "label_column")):
        try:
            numbers.append(float(value))
        except ValueError:
            raise UserError(
                f"{table.where(index)}: label {value!r} is not a number, which regression needs; "
                "fix the row or set task: classification."
            ) from None
    return numbers


def row_ids(table: TextTable, id_column: str | None) -> list[str]:
    """Each row's id for predictions: `id_column`, else the first of ID_COLUMNS present, else the row number."""
    column = id_column or next((name for name in ID_COLUMNS if name in table.columns), None)
    if column is None:
        return [str(index) for index in range(len(table))]
    return [str(value) for value in table.values(column, "id_column")]


def _label_sort_key(label: str) -> tuple[int, float, str]:
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
