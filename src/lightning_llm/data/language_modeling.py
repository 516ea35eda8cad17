"""LightningDataModule for pretraining: corpus -> tokenizer + token cache (memmap) -> (x, y) windows."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from lightning_llm.data.corpus import STDLIB, FileCorpus, HubCorpus, resolve_files
from lightning_llm.data.hub import is_hub_source
from lightning_llm.data.loaders import ResumableLoader, loader_generator
from lightning_llm.data.prepared import PREFIX, PreparedFolder
from lightning_llm.data.token_cache import TokenCache, build_or_load
from lightning_llm.data.windows import FixedWindows, ShuffledWindowBatches, keep_batch
from lightning_llm.errors import UserError
from lightning_llm.tokenizers import Tokenizer

PREPARED_VERSION = "prepared_version"  # beside litdata's loader state in a checkpoint
MIN_BPE_VOCAB = 257  # every byte, plus <|endoftext|>: a smaller size would silently become this one
DEFAULT_TOKENIZER, DEFAULT_BPE_VOCAB, DEFAULT_VAL_FRACTION = "char", 4096, 0.1


def check_corpus_settings(
    tokenizer: str | None, bpe_vocab_size: int | None, val_fraction: float | None
) -> None:
    """The tokenizer and split settings as set (None: unset; a prepared folder's tokenizer is not known yet), as
    fit's data module and `prepare` take them."""
    if tokenizer is not None and tokenizer not in ("char", "bpe"):
        raise UserError(f"data.tokenizer is {tokenizer!r}: use 'char' or 'bpe'")
    if tokenizer == "char" and bpe_vocab_size is not None:
        raise UserError(char_with_bpe_size(bpe_vocab_size, "data.tokenizer is char"))
    if bpe_vocab_size is not None and bpe_vocab_size < MIN_BPE_VOCAB:
        raise UserError(
            f"data.bpe_vocab_size is {bpe_vocab_size}: byte-level BPE needs at least {MIN_BPE_VOCAB} "
            "(256 bytes and the end-of-text token)"
        )
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise UserError(f"data.val_fraction is {val_fraction}: it must lie strictly between 0 and 1")


def char_with_bpe_size(bpe_vocab_size: int, why: str) -> str:
    return (
        f"data.bpe_vocab_size is {bpe_vocab_size}, but {why} (one id per character): leave data.bpe_vocab_size "
        "unset (null), or set --data.tokenizer bpe"
    )


class LanguageModelingDataModule(pl.LightningDataModule):
    """Token windows from a text corpus, for next-token prediction.

    Args:
        path: Text file(s), glob(s) or director(ies); "stdlib" (the default) is this Python's own
            standard-library sources, a real code corpus present on every machine, without its tests and
            generated tables (the encodings package's table codecs such as cp1252.py and mac_roman.py,
            pydoc_data/topics.py, _sysconfigdata_*.py, stringprep.py, re/_casefix.py, html/entities.py).
            A table (.tsv, .csv, .jsonl) contributes only its `text_column`, one row per line; other files
            their whole text. Or one Hugging Face dataset split, `hub:<dataset>[:<config>]:<split>` (e.g.
            `hub:wikitext:wikitext-2-raw-v1:train`; needs the `hub` extra). Or a folder written by
            `lightning-llm prepare`, `prepared:<folder>`: its chunks are streamed (litdata), and the tokenizer,
            split and vocabulary come from it (tokenizer, bpe_vocab_size and val_fraction left unset take the
            folder's; a different value set here is refused).
        text_column: The column holding the text, in table files (.tsv, .csv, .jsonl) of `path` and in
            a hub dataset; the other columns (labels, ids) and the header are left out.
        tokenizer: "char" (one id per character, the default) or "bpe" (byte-level BPE trained on the corpus).
        bpe_vocab_size: Vocabulary size of the BPE tokenizer (default 4096).
        block_size: Context length of each training window; the model's block size is linked to it.
        batch_size: Windows per batch (per device).
        val_fraction: The last fraction of the token stream is held out for validation (default 0.1).
        val_windows: Number of fixed validation windows, evenly spaced over the validation tokens.
        eval_batch_size: Windows per validation / test batch (default: batch_size). The loss is token-weighted
            over the same windows whatever the batching, and larger batches evaluate faster on a CPU.
        cache_dir: Where the tokenizer and the encoded corpus are kept, keyed by content and settings.
        seed: Seed of the training windows; the same seed gives the same batches.
        num_workers: DataLoader workers; batches are gathered from a memmap, so 0 is usually fastest.
    """

    def __init__(
        self,
        path: str | list[str] = STDLIB,
        text_column: str = "text",
        tokenizer: str | None = None,
        bpe_vocab_size: int | None = None,
        block_size: int = 256,
        batch_size: int = 12,
        val_fraction: float | None = None,
        val_windows: int = 1000,
        eval_batch_size: int | None = None,
        cache_dir: str = ".cache/lightning-llm",
        seed: int = 1337,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        # Unset means the default, or a prepared folder's own setting: only what is set is held against it.
        self.corpus_settings_set = {
            key: value
            for key, value in (
                ("tokenizer", tokenizer),
                ("bpe_vocab_size", bpe_vocab_size),
                ("val_fraction", val_fraction),
            )
            if value is not None
        }
        self.prepared = (
            PreparedFolder(path.removeprefix(PREFIX), cache_dir)
            if isinstance(path, str) and path.startswith(PREFIX)
            else None
        )
        # without a folder, unset is the default; with one, the folder's tokenizer is checked later
        as_set = DEFAULT_TOKENIZER if tokenizer is None and self.prepared is None else tokenizer
        check_corpus_settings(as_set, bpe_vocab_size, val_fraction)
        tokenizer = DEFAULT_TOKENIZER if tokenizer is None else tokenizer
        bpe_vocab_size = DEFAULT_BPE_VOCAB if bpe_vocab_size is None else bpe_vocab_size
        val_fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
        if num_workers < 0:
            raise UserError(
                f"data.num_workers is {num_workers}: it must be 0 (load in the main process) or more"
            )
        for name, value in (
            ("block_size", block_size),
            ("batch_size", batch_size),
            ("val_windows", val_windows),
            ("eval_batch_size", batch_size if eval_batch_size is None else eval_batch_size),
        ):
            if value < 1:
                raise UserError(f"data.{name} is {value}: it must be at least 1")
        self.save_hyperparameters()
        self.path = path
        self.tokenizer_kind = tokenizer
        self.bpe_vocab_size = bpe_vocab_size
        self.block_size = block_size
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.val_windows = val_windows
        self.eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
        self.cache_dir = cache_dir
        self.seed = seed
        self.num_workers = num_workers
        self.text_column = text_column
        self._cache: TokenCache | None = None
        self._prepared_tokenizer: Tokenizer | None = None
        self._train_loader = None  # the streaming loader, whose position the checkpoint keeps
        self._loader_state: dict | None = None  # a checkpoint's position, for the next streaming loader

    # --- the corpus, prepared on first use (the CLI reads vocab_size right after __init__) ---
    @property
    def cache(self) -> TokenCache:
        if self._cache is None:
            corpus = (
                HubCorpus(self.path, self.text_column)
                if is_hub_source(self.path)
                else FileCorpus(resolve_files(self.path), text_column=self.text_column)
            )
            self._cache = build_or_load(corpus, self.cache_dir, self.tokenizer_kind, self.bpe_vocab_size)
            self._check_fits()
        return self._cache

    @property
    def tokenizer(self) -> Tokenizer:
        if self.prepared is None:
            return self.cache.tokenizer
        if self._prepared_tokenizer is None:
            self._check_prepared()
            self._prepared_tokenizer = self.prepared.tokenizer()
        return self._prepared_tokenizer

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def tokenizer_file(self) -> Path:
        return (
            self.prepared.local / "tokenizer.json" if self.prepared is not None else self.cache.tokenizer_file
        )

    def _check_prepared(self) -> None:
        """The prepared folder's settings are the run's: one left unset takes the folder's, a different one set
        here is refused, not ignored."""
        manifest = self.prepared.manifest()
        for key, value in self.corpus_settings_set.items():
            if key == "bpe_vocab_size" and manifest["tokenizer"] == "char":
                raise UserError(char_with_bpe_size(value, f"{self.prepared} holds a character tokenizer"))
            if manifest.get(key) != value:
                raise UserError(
                    f"data.{key} is {value!r}, but {self.prepared} was prepared with {manifest.get(key)!r}; leave "
                    f"data.{key} unset (null: the folder decides it) or set {manifest.get(key)}, or prepare again"
                )
        self.tokenizer_kind = manifest["tokenizer"]
        self.bpe_vocab_size = manifest["bpe_vocab_size"] or self.bpe_vocab_size
        self.val_fraction = manifest["val_fraction"]
        self._log_corpus_settings()
        tokens = manifest["tokens"]
        for split, needed in (
            ("train", self.batch_size * (self.block_size + 1)),
            ("val", self.block_size + 1),
        ):
            if tokens[split] < needed:
                raise UserError(
                    f"{self.prepared} holds {tokens[split]} {split} tokens, fewer than the {needed} one batch needs; "
                    "use a smaller data.block_size or data.batch_size, or a larger corpus"
                )

    def _log_corpus_settings(self) -> None:
        """The settings in use, not the unset ones, in the run's hyperparameters (the HParams tab)."""
        self.hparams.update(
            tokenizer=self.tokenizer_kind, bpe_vocab_size=self.bpe_vocab_size, val_fraction=self.val_fraction
        )

    @property
    def split_index(self) -> int:
        return int(len(self.cache.tokens) * (1.0 - self.val_fraction))

    @property
    def train_tokens(self):
        return self.cache.tokens[: self.split_index]

    @property
    def val_tokens(self):
        if self.prepared is not None:
            self.tokenizer  # noqa: B018 - checks the folder's settings first
            return self.prepared.val_tokens()
        return self.cache.tokens[self.split_index :]

    def _check_fits(self) -> None:
        n_train, n_val = self.split_index, len(self._cache.tokens) - self.split_index
        for split, n in (("training", n_train), ("validation", n_val)):
            if n < self.block_size + 1:
                raise UserError(
                    f"the {split} split has {n} tokens, fewer than one window of block_size + 1 = "
                    f"{self.block_size + 1}; use a larger corpus, a smaller data.block_size or another "
                    "data.val_fraction"
                )
        # the fewest whole windows an epoch can tile (its random phase may skip up to block_size tokens)
        train_windows = (n_train - 2 * self.block_size) // self.block_size + 1
        if self.batch_size > train_windows:
            raise UserError(
                f"data.batch_size {self.batch_size} is larger than the {train_windows} training windows of "
                f"{self.block_size + 1} tokens; use a smaller data.batch_size or data.block_size, or a larger corpus"
            )

    def prepare_data(self) -> None:
        if self.prepared is None:
            self.cache  # noqa: B018 - builds the cache once, on rank 0 of each node

    # --- loaders ---
    def _batches_trained(self) -> int:
        """Global index of the next training batch: optimizer steps so far times gradient accumulation."""
        if self.trainer is None:
            return 0
        return self.trainer.global_step * self.trainer.accumulate_grad_batches

    def train_dataloader(self) -> DataLoader:
        if self.prepared is not None:
            from lightning_llm.data.streaming import training_loader

            self.tokenizer  # noqa: B018 - checks the folder's settings first
            loader = training_loader(
                self.prepared.train,
                self.block_size,
                self.batch_size,
                self.seed,
                self.num_workers,
                self.prepared.chunk_cache,
            )
            if self._loader_state is not None:
                self._check_resumable(self._loader_state)
                # the same content, wherever it lies now: litdata would refuse another path or cache folder
                here = loader.dataset
                self._loader_state.get("dataset", {}).update(
                    input_dir_path=here.input_dir.path,
                    input_dir_url=here.input_dir.url,
                    cache_dir_path=here.cache_dir.path,
                )
                loader.load_state_dict(self._loader_state)
                self._loader_state = None
            self._train_loader = loader
            return loader
        dataset = ShuffledWindowBatches(
            self.train_tokens,
            self.block_size,
            self.batch_size,
            self.seed,
            rank=self.trainer.global_rank if self.trainer else 0,
            world_size=self.trainer.world_size if self.trainer else 1,
            start_batch=self._batches_trained,
        )
        return ResumableLoader(dataset, batch_size=None, num_workers=self.num_workers, collate_fn=keep_batch)

    def val_dataloader(self) -> DataLoader:
        dataset = FixedWindows(self.val_tokens, self.block_size, self.val_windows)
        return DataLoader(
            dataset,
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            collate_fn=keep_batch,
            generator=loader_generator(),
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def _check_resumable(self, state: dict) -> None:
        """A checkpoint's stream position only means something for the same windows in the same order."""
        version = state.get(PREPARED_VERSION)
        if version is not None and version != self.prepared.version:
            raise UserError(
                f"{self.prepared} was prepared again since the checkpoint streamed it: its windows differ; start "
                "a new run without --ckpt_path, or resume from the folder as it was"
            )
        saved = state.get("dataset") or {}
        block_size = (saved.get("item_loader") or {}).get("block_size")
        for key, then, now in (
            ("seed", saved.get("seed"), self.seed),
            ("block_size", block_size, self.block_size + 1),
        ):
            if then is not None and then != now:
                value = then if key == "seed" else then - 1
                raise UserError(
                    f"the checkpoint streamed {self.prepared} with data.{key} {value}: resume with --data.{key} "
                    f"{value}, or start a new run without --ckpt_path"
                )

    # --- the streaming loader's position, kept in checkpoints (Lightning calls these with the checkpoint) ---
    def state_dict(self) -> dict:
        if self._train_loader is None:
            return {}
        return {"train_loader": {**self._train_loader.state_dict(), PREPARED_VERSION: self.prepared.version}}

    def load_state_dict(self, state_dict: dict) -> None:
        self._loader_state = state_dict.get("train_loader")
