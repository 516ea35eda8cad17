"""Encode a corpus once into a flat token file (`np.memmap`) keyed by corpus content and tokenizer settings.

Layout: `<cache_dir>/<key>/{tokenizer.json, tokens.bin, meta.json}`. Every file is written to a temp name
and renamed, and `meta.json` is written last, so a directory with a `meta.json` is complete; a run
killed mid-write leaves only a temp file, which the next run deletes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_llm.atomic import atomic_open, atomic_write_text, remove_stale_temp_files
from lightning_llm.errors import UserError
from lightning_llm.tokenizers import Tokenizer, encode_stream, load_tokenizer, train_tokenizer

CACHE_FORMAT = 1
# BPE learns its merges from at most this much text, spread evenly over a bigger corpus: its word counts grow
# with the text it sees, so memory and time would grow with the corpus; the frequent merges are all in there.
BPE_TRAIN_CHARS = 64 << 20


@dataclass
class TokenCache:
    """A finished cache entry: the tokenizer and the corpus as one array of token ids."""

    directory: Path
    tokenizer: Tokenizer
    tokens: np.memmap

    @property
    def tokenizer_file(self) -> Path:
        return self.directory / "tokenizer.json"


def cache_key(fingerprint: str, settings: dict) -> str:
    text = json.dumps({"format": CACHE_FORMAT, "corpus": fingerprint, **settings}, sort_keys=True)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32)


def build_or_load(corpus, cache_dir: str | Path, tokenizer_kind: str, vocab_size: int) -> TokenCache:
    """Return the cache entry for this corpus and tokenizer, encoding the corpus only when it is missing."""
    settings = {"tokenizer": tokenizer_kind, "vocab_size": vocab_size if tokenizer_kind == "bpe" else None}
    directory = Path(cache_dir).expanduser() / cache_key(corpus.fingerprint(), settings)
    if (directory / "meta.json").is_file():
        cached = _load(directory)
        if cached is not None:
            return cached
        print(
            f"the token cache {directory} is incomplete or damaged: encoding the corpus again",
            file=sys.stderr,
        )
    directory.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(directory / ".lock"):  # a second run building the same entry waits, then loads it
        cached = _load(directory) if (directory / "meta.json").is_file() else None
        return (
            cached if cached is not None else _build(corpus, directory, tokenizer_kind, vocab_size, settings)
        )


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing); the OS releases it if the process dies."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # say why nothing happens while the other run encodes
            print(f"waiting for another run to finish building {path.parent} ...", file=sys.stderr)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build(corpus, directory: Path, tokenizer_kind: str, vocab_size: int, settings: dict) -> TokenCache:
    """Encode the corpus into `directory`, under the lock: temp files left there are a killed run's."""
    meta_file = directory / "meta.json"
    remove_stale_temp_files(directory)
    started = time.perf_counter()
    tokenizer = train_tokenizer(tokenizer_kind, training_texts(corpus, tokenizer_kind), vocab_size)
    atomic_write_text(directory / "tokenizer.json", tokenizer.to_json())
    dtype = token_dtype(tokenizer.vocab_size)
    n_tokens = 0
    with atomic_open(directory / "tokens.bin", "wb") as handle:
        for ids in encode_stream(tokenizer, corpus.texts()):
            handle.write(ids.astype(dtype).tobytes())
            n_tokens += len(ids)
    meta = {
        "format": CACHE_FORMAT,
        "corpus": corpus.describe(),
        "n_tokens": n_tokens,
        "dtype": dtype.name,
        "vocab_size": tokenizer.vocab_size,
        "seconds_to_build": round(time.perf_counter() - started, 2),
        **settings,
    }
    atomic_write_text(meta_file, json.dumps(meta, indent=2))
    return _load(directory)


def training_texts(corpus, tokenizer_kind: str) -> Iterator[str]:
    """The texts a tokenizer is trained on: all of them, except that BPE on a corpus of more than
    `BPE_TRAIN_CHARS` gets an even sample of that size (a char tokenizer must see every character)."""
    files = getattr(corpus, "files", None)
    size = sum(f.stat().st_size for f in files) if files else None
    if tokenizer_kind != "bpe" or size is None or size <= BPE_TRAIN_CHARS:
        yield from corpus.texts()
        return
    share = BPE_TRAIN_CHARS / size
    seen = taken = 0
    for text in corpus.texts():  # read to the end all the same: the corpus checks and warns as it goes
        seen += len(text)
        if taken < seen * share:
            taken += len(text)
            yield text


def _load(directory: Path) -> TokenCache | None:
    """The cache entry in `directory`, or None when it is incomplete or inconsistent (then it is rebuilt)."""
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        tokens_file = directory / "tokens.bin"
        dtype = np.dtype(meta["dtype"])
        if (
            meta.get("format") != CACHE_FORMAT
            or tokens_file.stat().st_size != meta["n_tokens"] * dtype.itemsize
        ):
            return None
        tokenizer = load_tokenizer(directory / "tokenizer.json")
    except (OSError, ValueError, KeyError, UserError):
        return None
    if meta["n_tokens"] == 0:
        raise UserError(f"the corpus encodes to zero tokens (cache {directory}); give data.path some text")
    tokens = np.memmap(tokens_file, dtype=dtype, mode="r")
    return TokenCache(directory, tokenizer, tokens)
