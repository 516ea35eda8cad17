"""Write what `predict_step` returns to a CSV or JSONL file, one line per input row, in input order."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from lightning_llm.atomic import atomic_open
from lightning_llm.errors import UserError

FORMATS = (".csv", ".jsonl")


class PredictionWriter(BasePredictionWriter):
    """Collect the predictions of `lightning-llm predict` and write them once, atomically, at the end.

    `predict_step` must return, per batch, a dict of equally long lists (columns), e.g.
    `{"row": [...], "id": [...], "text": [...], "label": [...], "probability": [...]}`; the file gets one
    line per entry, columns in that order. A `row` column (each entry's position in the input) puts the
    lines back in input order and is not written; without it, lines follow the dataloader's order.
    """

    def __init__(self, output_file: str = "predictions.csv", overwrite: bool = False) -> None:
        """
        Args:
            output_file: Where to write; `.csv` or `.jsonl`, chosen by the extension. Folders are created.
            overwrite: Replace an existing `output_file`; without it an existing file is an error.
        """
        super().__init__(write_interval="epoch")
        if Path(output_file).suffix.lower() not in FORMATS:
            raise UserError(
                f"prediction file {output_file!r} must end in {' or '.join(FORMATS)}; change output_file."
            )
        self.output_file = output_file
        self.overwrite = overwrite

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # before any prediction is computed: a place that cannot take the file fails now, not at the end
        path = Path(self.output_file)
        if path.is_dir():
            raise UserError(f"prediction file {path} is a folder; set output_file to a file name")
        if path.exists() and not self.overwrite:
            raise UserError(
                f"prediction file {path} already exists; move it away, or set overwrite: true for the "
                "PredictionWriter in the config"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        if not os.access(path.parent, os.W_OK):
            raise UserError(
                f"cannot write prediction file {path}: its folder is not writable; change output_file"
            )

    def write_on_epoch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        predictions: Sequence[Any],
        batch_indices: Sequence[Any],
    ) -> None:
        # With several predict dataloaders Lightning nests one list per dataloader; rows are written in turn.
        batches = predictions
        if batches and isinstance(batches[0], list):
            batches = [batch for dataloader in batches for batch in dataloader]
        rows = [row for batch in batches for row in _rows(batch)]
        if rows and "row" in rows[0]:
            rows.sort(key=lambda row: row["row"])
            rows = [{name: value for name, value in row.items() if name != "row"} for row in rows]
        path = Path(self.output_file)
        write_rows(path, rows)
        rank_zero_info(f"wrote {len(rows):,} predictions to {path}")


def _rows(columns: dict[str, list]) -> list[dict[str, Any]]:
    lengths = {len(values) for values in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"predict_step returned columns of different lengths: {sorted(lengths)}")
    count = lengths.pop() if lengths else 0
    return [{name: values[index] for name, values in columns.items()} for index in range(count)]


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write rows to `path` (CSV or JSONL by extension) through a temporary file in the same folder, so the
    file is either the old one or complete, never half written."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as file:
        if path.suffix.lower() == ".jsonl":
            for row in rows:
                file.write(json.dumps(row, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]) if rows else [])
            writer.writeheader()
            writer.writerows(rows)
