"""Labelled texts (single sentences or sentence pairs) for fine-tuning a sequence classifier.

Each split's source is a TSV / CSV / JSONL file under `data_dir` (GLUE's TSV included) or a Hugging Face
dataset split (`hub:...`). Each split is tokenised once with the tokenizer of the model's backbone, batches
are padded to their longest text, and an optional length-grouped sampler puts texts of similar length
together so that padding nearly vanishes.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lightning_llm.data.labelled_text import TextTable, read_source
from lightning_llm.data.labels import class_ids, found_label_names, regression_targets, row_ids
from lightning_llm.data.length_grouped_sampler import LengthGroupedSampler
from lightning_llm.data.loaders import ResumableLoader, loader_generator
from lightning_llm.data.text_batches import PadToLongest, TokenizedTexts
from lightning_llm.errors import UserError
from lightning_llm.models.text_encoding import TextEncoder, UnencodableText

Split = Literal["train", "val", "test", "predict"]


class TextClassificationDataModule(LightningDataModule):
    """Texts with labels from TSV / CSV / JSONL files or a hub dataset, tokenised by the model's backbone."""

    def __init__(
        self,
        data_dir: str = "data/sst2",
        train: str = "train.tsv",
        val: str = "dev.tsv",
        test: str | None = None,
        predict: str | None = "test.tsv",
        text_column: str = "sentence",
        text_pair_column: str | None = None,
        label_column: str = "label",
        id_column: str | None = None,
        labels: list[str] | None = None,
        task: Literal["classification", "regression"] = "classification",
        max_length: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        group_by_length: bool = False,
        num_workers: int = 0,
    ) -> None:
        """
        Args:
            data_dir: Folder holding the split files named below.
            train: Training data: a file in `data_dir` whose format follows its extension (.tsv, .csv,
                .jsonl), or a Hugging Face dataset split, `hub:<dataset>[:<config>]:<split>` (e.g.
                `hub:glue:sst2:train`; needs the `datasets` package).
            val: Validation data, likewise.
            test: Labelled test data for `lightning-llm test`, if any.
            predict: Unlabelled data for `lightning-llm predict` (labels in it are ignored).
            text_column: Column with the text (the first sentence of a pair).
            text_pair_column: Column with the second sentence, for sentence-pair tasks (e.g. MRPC, MNLI).
            label_column: Column with the label (a class name, or a number for regression).
            id_column: Column copied into predictions to identify rows; by default `index`, `idx` or `id`
                when the predict data has one, else the row number.
            labels: The label set in class-id order; a label outside it is an error. By default the
                sorted distinct labels of the training split.
            task: `classification` (one label per text) or `regression` (one number per text).
            max_length: Longer texts are truncated to this many tokens (counted and reported per split);
                by default the longest input the backbone reads (its position limit).
            batch_size: Texts per training batch.
            eval_batch_size: Texts per validation / test / predict batch (default: `batch_size`).
            group_by_length: Batch texts of similar length together (shuffled in chunks), so batches carry
                less padding; validation, test and predict run in length order (predictions are still
                written in input order).
            num_workers: DataLoader worker processes (texts are tokenised up front, so 0 is usually best;
                a run resumed mid-epoch continues exactly with 0 workers on one device).

        The tokenizer is the model's: `setup` takes the backbone's from the trainer's module (or set
        `datamodule.tokenizer` yourself before using the loaders).
        """
        super().__init__()
        self.save_hyperparameters()
        if max_length is not None and max_length < 2:
            raise UserError(
                f"data.max_length is {max_length}: it must be at least 2 (or null: the backbone's limit)"
            )
        if num_workers < 0:
            raise UserError(
                f"data.num_workers is {num_workers}: it must be 0 (load in the main process) or more"
            )
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise UserError("batch_size and eval_batch_size must be positive; set them to 1 or more.")
        if labels is not None and task == "classification" and len(labels) < 2:
            raise UserError(f"labels must name at least two classes (got {labels}); or set task: regression.")
        if labels is not None and task == "regression":
            raise UserError(
                "data.labels names classes, but data.task is regression: leave labels out (or null)"
            )
        if labels is not None and len(set(labels)) != len(labels):
            raise UserError(f"labels {labels} contain duplicates; list each class once.")
        self.data_dir = data_dir
        self.sources: dict[Split, str | None] = {"train": train, "val": val, "test": test, "predict": predict}
        self.text_column = text_column
        self.text_pair_column = text_pair_column
        self.label_column = label_column
        self.id_column = id_column
        self.declared_labels = labels
        self.task = task
        self.max_length = max_length
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.group_by_length = group_by_length
        self.num_workers = num_workers
        self.tokenizer: TextEncoder | None = None
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
        return found_label_names(table, self.label_column)

    @property
    def num_labels(self) -> int:
        """Number of model outputs: classes, or 1 for regression."""
        return len(self.label_names)

    # Lightning hooks.

    def setup(self, stage: str) -> None:
        module_tokenizer = getattr(self.trainer.lightning_module, "tokenizer", None) if self.trainer else None
        if module_tokenizer is not None and module_tokenizer is not self.tokenizer:
            self.tokenizer = module_tokenizer
            self.datasets.clear()  # encoded by another model's tokenizer: this data module was reused
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
        world_size = self.trainer.world_size if self.trainer else 1
        if len(dataset) < self.batch_size * world_size:
            # every process takes its own batch_size texts of each step: fewer would make an empty epoch
            processes = f" x {world_size} processes" if world_size > 1 else ""
            raise UserError(
                f"data.batch_size {self.batch_size}{processes} is larger than the {len(dataset)} training texts; "
                "use a smaller data.batch_size, fewer processes or more training data"
            )
        # The order depends only on the seed given to `seed_everything` (torch's initial seed), the epoch
        # and the batches already done in it, so a run resumed mid-epoch sees the batches it would have seen.
        sampler = LengthGroupedSampler(
            dataset.lengths,
            self.batch_size,
            seed=torch.initial_seed(),
            chunk_batches=50 if self.group_by_length else 1,
            start_batch=self._batches_done_this_epoch,
            rank=self.trainer.global_rank if self.trainer else 0,
            world_size=world_size,
        )
        return ResumableLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            collate_fn=PadToLongest(self._encoder.pad_token_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _batches_done_this_epoch(self) -> int:
        # every process counts the same batches: each takes its slice of every global batch
        if self.trainer is None:
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
            collate_fn=PadToLongest(self._encoder.pad_token_id),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=loader_generator(),
            **kwargs,
        )

    @property
    def _encoder(self) -> TextEncoder:
        if self.tokenizer is None:
            raise UserError(
                "the classification data has no tokenizer: it uses the model's backbone's, taken when the "
                "Trainer sets it up (outside a Trainer, set datamodule.tokenizer = module.tokenizer)"
            )
        return self.tokenizer

    @cached_property
    def _max_length(self) -> int:
        limit = self._encoder.max_length
        if self.max_length is None:
            return limit
        if self.max_length > limit:
            raise UserError(
                f"data.max_length is {self.max_length} but the backbone reads at most {limit} tokens (its "
                f"position limit); set --data.max_length {limit} or less, or leave it out to use {limit}"
            )
        return self.max_length

    def _table(self, split: Split) -> TextTable:
        if split not in self._tables:
            source = self.sources[split]
            if source is None:
                raise UserError(f"no {split} data configured; set --data.{split}.")
            table = read_source(source, self.data_dir)
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
        try:
            encoded = self._encoder.encode(texts, pairs, self._max_length)
        except UnencodableText as error:
            raise UserError(f"{table.where(error.index)} ({error.opening}) {error.reason}") from None
        tokens = sum(len(ids) for ids in encoded.input_ids)
        rank_zero_info(
            f"{table.source}: {len(texts):,} texts, {tokens / len(texts):.1f} tokens on average, "
            f"{encoded.truncated:,} truncated to max_length {self._max_length}"
        )
        if split == "predict":
            return TokenizedTexts(
                encoded.input_ids, encoded.token_type_ids, row_ids=row_ids(table, self.id_column), texts=texts
            )
        return TokenizedTexts(encoded.input_ids, encoded.token_type_ids, labels=self._label_ids(table))

    def _label_ids(self, table: TextTable) -> list[int] | list[float]:
        if self.task == "regression":
            return regression_targets(table, self.label_column)
        return class_ids(table, self.label_column, self.label_names)
