"""Labelled texts (single sentences or sentence pairs) for fine-tuning a sequence classifier.

Sources are local TSV / CSV / JSONL files under `data_dir` (GLUE's TSV included) or a Hugging Face hub
dataset. Each split is tokenised once, batches are padded to their longest text, and an optional
length-grouped sampler puts texts of similar length together so that padding nearly vanishes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from lightning_llm.data.labelled_text import TextTable, read_hub_split, read_table
from lightning_llm.data.length_grouped_sampler import LengthGroupedSampler
from lightning_llm.data.loaders import ResumableLoader, loader_generator
from lightning_llm.errors import UserError
from lightning_llm.pretrained import pretrained_errors, resolve_pretrained

Split = Literal["train", "val", "test", "predict"]
# Columns that identify a row in predictions when `id_column` is not given (SST-2 test: `index`, hub: `idx`).
ID_COLUMNS = ("index", "idx", "id")


class TokenizedTexts(Dataset):
    """Token ids of one split, with labels (absent for unlabelled data) and, for prediction, each text's
    position in the input (`row`), its id and the text itself, so that predictions can be written in
    input order whatever order the batches come in."""

    def __init__(
        self,
        input_ids: list[list[int]],
        token_type_ids: list[list[int]] | None = None,
        labels: Sequence[int | float] | None = None,
        row_ids: list[str] | None = None,
        texts: list[str] | None = None,
    ) -> None:
        self.input_ids = input_ids
        self.token_type_ids = token_type_ids
        self.labels = labels
        self.row_ids = row_ids
        self.texts = texts

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.input_ids[index]}
        if self.token_type_ids is not None:
            item["token_type_ids"] = self.token_type_ids[index]
        if self.labels is not None:
            item["labels"] = self.labels[index]
        if self.row_ids is not None:
            item["row"] = index
            item["id"] = self.row_ids[index]
        if self.texts is not None:
            item["text"] = self.texts[index]
        return item

    @property
    def lengths(self) -> list[int]:
        """Tokens per text, for grouping by length."""
        return [len(ids) for ids in self.input_ids]


class PadToLongest:
    """Collate items into tensors padded to the longest text of the batch; rows, ids and texts stay lists."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        longest = max(len(item["input_ids"]) for item in items)
        input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), longest), dtype=torch.long)
        for row, item in enumerate(items):
            input_ids[row, : len(item["input_ids"])] = torch.as_tensor(item["input_ids"])
            attention_mask[row, : len(item["input_ids"])] = 1
        batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in items[0]:
            token_type_ids = torch.zeros((len(items), longest), dtype=torch.long)
            for row, item in enumerate(items):
                token_type_ids[row, : len(item["token_type_ids"])] = torch.as_tensor(item["token_type_ids"])
            batch["token_type_ids"] = token_type_ids
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([item["labels"] for item in items])
        for key in ("row", "id", "text"):
            if key in items[0]:
                batch[key] = [item[key] for item in items]
        return batch


class TextClassificationDataModule(LightningDataModule):
    """Texts with labels from TSV / CSV / JSONL files or a hub dataset, tokenised for a BERT-style model."""

    def __init__(
        self,
        data_dir: str = "data/sst2",
        train_file: str = "train.tsv",
        val_file: str = "dev.tsv",
        test_file: str | None = None,
        predict_file: str | None = "test.tsv",
        text_column: str = "sentence",
        text_pair_column: str | None = None,
        label_column: str = "label",
        id_column: str | None = None,
        labels: list[str] | None = None,
        task: Literal["classification", "regression"] = "classification",
        tokenizer: str | None = None,
        max_length: int = 128,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        group_by_length: bool = False,
        num_workers: int = 0,
        hub_dataset: str | None = None,
        hub_config: str | None = None,
        train_split: str = "train",
        val_split: str = "validation",
        test_split: str | None = None,
        predict_split: str | None = "test",
    ) -> None:
        """
        Args:
            data_dir: Folder holding the files below (ignored with `hub_dataset`).
            train_file: Training file in `data_dir`; the format follows the extension (.tsv, .csv, .jsonl).
            val_file: Validation file in `data_dir`.
            test_file: Labelled test file in `data_dir` for `lightning-llm test`, if any.
            predict_file: Unlabelled file in `data_dir` for `lightning-llm predict` (its labels are ignored).
            text_column: Column with the text (the first sentence of a pair).
            text_pair_column: Column with the second sentence, for sentence-pair tasks (e.g. MRPC, MNLI).
            label_column: Column with the label (a class name, or a number for regression).
            id_column: Column copied into predictions to identify rows; by default `index`, `idx` or `id`
                when the predict file has one, else the row number.
            labels: The label set in class-id order; a label outside it is an error. By default the
                sorted distinct labels of the training split.
            task: `classification` (one label per text) or `regression` (one number per text).
            tokenizer: Tokenizer to load (hub id, folder or `package:<module>`); the CLI copies the
                model's `pretrained` here.
            max_length: Longer texts are truncated to this many tokens (counted and reported per split).
            batch_size: Texts per training batch.
            eval_batch_size: Texts per validation / test / predict batch (default: `batch_size`).
            group_by_length: Batch texts of similar length together (shuffled in chunks), so batches carry
                less padding; validation, test and predict run in length order (predictions are still
                written in input order).
            num_workers: DataLoader worker processes (texts are tokenised up front, so 0 is usually best;
                a run resumed mid-epoch continues exactly with 0 workers on one device).
            hub_dataset: Hugging Face dataset name (e.g. `glue`), read instead of local files; needs the
                `datasets` package.
            hub_config: The dataset's configuration (e.g. `sst2`).
            train_split: Hub split for training.
            val_split: Hub split for validation.
            test_split: Hub split for `lightning-llm test`, if any.
            predict_split: Hub split for `lightning-llm predict`.
        """
        super().__init__()
        self.save_hyperparameters()
        if max_length < 2:
            raise UserError(f"max_length must be at least 2 (got {max_length}); it counts [CLS] and [SEP].")
        if num_workers < 0:
            raise UserError(
                f"data.num_workers is {num_workers}: it must be 0 (load in the main process) or more"
            )
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise UserError("batch_size and eval_batch_size must be positive; set them to 1 or more.")
        if labels is not None and task == "classification" and len(labels) < 2:
            raise UserError(f"labels must name at least two classes (got {labels}); or set task: regression.")
        if labels is not None and len(set(labels)) != len(labels):
            raise UserError(f"labels {labels} contain duplicates; list each class once.")
        self.data_dir = data_dir
        self.sources: dict[Split, str | None] = {
            "train": train_split if hub_dataset else train_file,
            "val": val_split if hub_dataset else val_file,
            "test": test_split if hub_dataset else test_file,
            "predict": predict_split if hub_dataset else predict_file,
        }
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.id_column = id_column
        self.declared_labels = labels
        self.task = task
        self.tokenizer_name = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.hub_dataset = hub_dataset
        self.hub_config = hub_config
        self.datasets: dict[Split, TokenizedTexts] = {}
        self._tables: dict[Split, TextTable] = {}

    # Facts the CLI copies into the model right after this object is built.

    @cached_property
    def label_names(self) -> list[str]:
        """Class names in class-id order (for regression: the label column's name)."""
        if self.task == "regression":
            return [self.label_column]
        if self.declared_labels is not None:
            return list(self.declared_labels)
        table = self._table("train")
        # Check the text columns too while the file is open: a typo then fails before the model loads.
        table.require_column(self.text_column, "text_column")
        if self.text_pair_column is not None:
            table.require_column(self.text_pair_column, "text_pair_column")
        found = set(self._label_texts(table))
        if len(found) < 2:
            raise UserError(
                f"{table.source} has only the label(s) {sorted(found)}; a classifier needs "
                "two or more classes (or set task: regression)."
            )
        return sorted(found, key=_label_sort_key)

    @property
    def num_labels(self) -> int:
        """Number of model outputs: classes, or 1 for regression."""
        # The CLI reads this right after building the data module and before the model: resolving the
        # tokenizer (= the model's `pretrained`) here turns a wrong path into one error line, not a traceback.
        _ = self._tokenizer_path
        return len(self.label_names)

    # Lightning hooks.

    def setup(self, stage: str) -> None:
        splits: dict[str, tuple[Split, ...]] = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("predict",),
        }
        for split in splits[stage]:
            if split not in self.datasets:
                self.datasets[split] = self._tokenize(split)
                self._tables.pop(split, None)  # the rows are no longer needed once tokenised

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        if len(dataset) < self.batch_size:
            raise UserError(
                f"data.batch_size {self.batch_size} is larger than the {len(dataset)} training texts; "
                "use a smaller data.batch_size or more training data"
            )
        # The order depends only on the seed given to `seed_everything` (torch's initial seed), the epoch
        # and the batches already done in it, so a run resumed mid-epoch sees the batches it would have seen.
        sampler = LengthGroupedSampler(
            dataset.lengths,
            self.batch_size,
            seed=torch.initial_seed(),
            chunk_batches=50 if self.group_by_length else 1,
            start_batch=self._batches_done_this_epoch,
        )
        return ResumableLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=PadToLongest(self._tokenizer.pad_token_id or 0),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _batches_done_this_epoch(self) -> int:
        # With several processes Lightning wraps the sampler and deals its indices out by position, so a
        # skip here would misalign them: a distributed run resumed mid-epoch restarts that epoch's order.
        if self.trainer is None or self.trainer.world_size > 1:
            return 0
        return self.trainer.fit_loop.epoch_loop.batch_progress.current.completed

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader(self.datasets["val"])

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.datasets["test"])

    def predict_dataloader(self) -> DataLoader:
        # Batches carry each text's input position (`row`), so the writer restores the input order even
        # when they run in length order.
        return self._eval_loader(self.datasets["predict"])

    # Reading and tokenising.

    def _eval_loader(self, dataset: TokenizedTexts) -> DataLoader:
        if not self.group_by_length:
            return self._loader(dataset, self.eval_batch_size)
        # Metrics do not depend on order, so evaluate in length order: almost no padding.
        lengths = dataset.lengths
        order = sorted(range(len(dataset)), key=lambda index: lengths[index])
        return self._loader(dataset, self.eval_batch_size, sampler=order)

    def _loader(self, dataset: TokenizedTexts, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            collate_fn=PadToLongest(self._tokenizer.pad_token_id or 0),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=loader_generator(),
            **kwargs,
        )

    @cached_property
    def _tokenizer_path(self) -> str | None:
        return None if self.tokenizer_name is None else resolve_pretrained(self.tokenizer_name)

    @cached_property
    def _tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        if self._tokenizer_path is None:
            raise UserError(
                "no tokenizer given; set --model.init_args.pretrained (the CLI copies it) or --data.tokenizer."
            )
        # transformers v5 tokenizers are backed by the Rust `tokenizers` library (fast) by default.
        with pretrained_errors("data.tokenizer", self.tokenizer_name):
            return AutoTokenizer.from_pretrained(self._tokenizer_path, trust_remote_code=False)

    def _table(self, split: Split) -> TextTable:
        if split not in self._tables:
            source = self.sources[split]
            if source is None:
                option = f"{split}_split" if self.hub_dataset else f"{split}_file"
                raise UserError(f"no {split} data configured; set --data.{option}.")
            if self.hub_dataset:
                table = read_hub_split(self.hub_dataset, self.hub_config, source)
            else:
                table = read_table(Path(self.data_dir).expanduser() / source)
            if len(table) == 0:
                raise UserError(f"{table.source} has no rows; give a {split} file with at least one text.")
            self._tables[split] = table
        return self._tables[split]

    def _tokenize(self, split: Split) -> TokenizedTexts:
        table = self._table(split)
        texts = [str(text) for text in table.values(self.text_column, "text_column")]
        pairs = None
        if self.text_pair_column is not None:
            pairs = [str(text) for text in table.values(self.text_pair_column, "text_pair_column")]
        encoded = self._tokenizer(texts, pairs, truncation=False, return_attention_mask=False)
        input_ids = encoded["input_ids"]
        token_type_ids = encoded.get("token_type_ids") if pairs is not None else None
        # Tokenise without truncation first, so that the texts which lose tokens can be counted.
        too_long = [index for index, ids in enumerate(input_ids) if len(ids) > self.max_length]
        if too_long:
            shortened = self._tokenizer(
                [texts[index] for index in too_long],
                [pairs[index] for index in too_long] if pairs is not None else None,
                truncation=True,
                max_length=self.max_length,
                return_attention_mask=False,
            )
            for position, index in enumerate(too_long):
                input_ids[index] = shortened["input_ids"][position]
                if token_type_ids is not None:
                    token_type_ids[index] = shortened["token_type_ids"][position]
        tokens = sum(len(ids) for ids in input_ids)
        rank_zero_info(
            f"{table.source}: {len(texts):,} texts, {tokens / len(texts):.1f} tokens on average, "
            f"{len(too_long):,} truncated to max_length {self.max_length}"
        )
        if split == "predict":
            return TokenizedTexts(input_ids, token_type_ids, row_ids=self._row_ids(table), texts=texts)
        return TokenizedTexts(input_ids, token_type_ids, labels=self._label_ids(table))

    def _label_ids(self, table: TextTable) -> list[int] | list[float]:
        if self.task == "regression":
            numbers = []
            for index, value in enumerate(table.values(self.label_column, "label_column")):
                try:
                    numbers.append(float(value))
                except ValueError:
                    raise UserError(
                        f"{table.where(index)}: label {value!r} is not a number, which regression needs; "
                        "fix the row or set task: classification."
                    ) from None
            return numbers
        ids = {name: position for position, name in enumerate(self.label_names)}
        label_ids = []
        for index, label in enumerate(self._label_texts(table)):
            if label not in ids:
                raise UserError(
                    f"{table.where(index)}: label {label!r} is not one of the labels {self.label_names}; "
                    "fix the row or add it to --data.labels."
                )
            label_ids.append(ids[label])
        return label_ids

    def _label_texts(self, table: TextTable) -> list[str]:
        """Every row's class label as text without surrounding whitespace: `1` and `1 ` are one class."""
        labels = []
        for index, value in enumerate(table.values(self.label_column, "label_column")):
            label = str(value).strip()
            if not label:
                raise UserError(
                    f"{table.where(index)}: the label in column {self.label_column!r} is empty; "
                    "write the row's class or remove the row."
                )
            labels.append(label)
        return labels

    def _row_ids(self, table: TextTable) -> list[str]:
        if self.id_column is not None:
            return [str(value) for value in table.values(self.id_column, "id_column")]
        column = next((name for name in ID_COLUMNS if name in table.columns), None)
        if column is None:
            return [str(index) for index in range(len(table))]
        return [str(value) for value in table.values(column, "id_column")]


def _label_sort_key(label: str) -> tuple[int, float, str]:
    # Numeric labels sort by value ("2" before "10"); names sort alphabetically after them.
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)
