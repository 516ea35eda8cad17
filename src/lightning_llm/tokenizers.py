"""Tokenizers behind one small protocol: a character-level one and byte-level BPE trained with HF `tokenizers`.

Both save to a single JSON file, so a checkpoint can carry its tokenizer and generation needs nothing else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from lightning_llm.errors import UserError

END_OF_TEXT = "<|endoftext|>"
# GPT-2's pre-tokenizer pattern: the one HF `pre_tokenizers.ByteLevel(use_regex=True)` splits words with.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
# Runs of letters, digits, punctuation or whitespace are cut into pre-tokens of at most this many characters:
# BPE training time grows with pre-token length x merges, so one long run (minified JSON) never finished.
# Longer than real words; from 57 on, tiktoken's regex leaves its fast path (1.2-1.7x slower encoding).
MAX_RUN_CHARS = 48
# GPT-2's pattern with every run bounded: the same pieces as GPT2_PATTERN wherever no run is longer.
CAPPED_GPT2_PATTERN = GPT2_PATTERN.replace("+", f"{{1,{MAX_RUN_CHARS}}}")
# Text is encoded in batches of about this many characters: enough for every core, and a bounded memory.
BATCH_CHARS = 4 << 20


@runtime_checkable
class Tokenizer(Protocol):
    """What the data module, the LightningModule and `generate` need from a tokenizer."""

    vocab_size: int

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def to_json(self) -> str: ...


class CharTokenizer:
    """One id per character seen in the corpus, in code-point order (as nanoGPT's shakespeare_char)."""

    def __init__(self, chars: Iterable[str]) -> None:
        self.chars = sorted(set(chars))
        self.vocab_size = len(self.chars)
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)  # sorted: binary search

    @classmethod
    def train(cls, texts: Iterable[str]) -> CharTokenizer:
        seen: set[str] = set()
        for text in texts:
            seen.update(text)
        if not seen:
            raise UserError("the corpus is empty: there are no characters to build a tokenizer from")
        return cls(seen)

    def encode(self, text: str) -> np.ndarray:
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codepoints, codepoints)
        ids_in_range = np.minimum(ids, self.vocab_size - 1)
        unknown = self._codepoints[ids_in_range] != codepoints
        if unknown.any():
            missing = sorted({chr(c) for c in codepoints[unknown]})
            shown = ", ".join(repr(c) for c in missing[:10])
            raise UserError(
                f"the text has {len(missing)} character(s) this character tokenizer never saw in its corpus "
                f"({shown}); use only characters of the training corpus"
            )
        return ids.astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_json(self) -> str:
        return json.dumps({"type": "char", "chars": "".join(self.chars)}, ensure_ascii=False)


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained with HF `tokenizers`; any text encodes, nothing is unknown."""

    def __init__(self, tokenizer) -> None:  # a tokenizers.Tokenizer
        self._tokenizer = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self._bulk_encoder: Any = None  # built at the first encode_many: False when there is none

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        tokenizer = HFTokenizer(models.BPE())
        tokenizer.pre_tokenizer = _capped_byte_level()
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            special_tokens=[END_OF_TEXT],
            show_progress=False,
        )
        tokenizer.train_from_iterator(texts, trainer=trainer)
        return cls(tokenizer)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        from tokenizers import Tokenizer as HFTokenizer

        return cls(HFTokenizer.from_str(text))

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.int64)

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Encode in parallel threads, with the same ids as `encode`. For corpora: `tiktoken` encodes the
        same byte-level BPE about 9x faster than HF `tokenizers`, so it does when it is installed."""
        if self._bulk_encoder is None:
            self._bulk_encoder = _tiktoken_twin(self._tokenizer) or False
        if self._bulk_encoder:
            twin = self._bulk_encoder

            def encode_one(text: str) -> np.ndarray:
                # Straight into an array (no list of Python ints); tiktoken releases the GIL meanwhile.
                return twin.encode_to_numpy(text, allowed_special="all").astype(np.int64)

            with ThreadPoolExecutor(max(1, min(len(texts), os.cpu_count() or 1))) as pool:
                return list(pool.map(encode_one, texts))
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.int64) for e in encodings]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tokenizer.decode(list(ids))

    def to_json(self) -> str:
        return self._tokenizer.to_str()


def _capped_byte_level() -> Any:
    """GPT-2's byte-level pre-tokenizer with runs cut at MAX_RUN_CHARS: `Split` cuts the words, `ByteLevel`
    maps their bytes. Inside the tokenizer, so training, `encode` and its saved JSON all cut alike."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CAPPED_GPT2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _twin_pattern(pre_tokenizer: dict) -> str | None:
    """The pattern tiktoken must split words with to match this saved HF pre-tokenizer, or None if none does."""
    if pre_tokenizer == json.loads(_capped_byte_level().__getstate__()):  # the JSON `to_str` writes for it
        return CAPPED_GPT2_PATTERN
    # Tokenizers trained before runs were capped: ByteLevel splits with GPT-2's own pattern.
    plain = pre_tokenizer.get("type") == "ByteLevel" and pre_tokenizer.get("use_regex", True)
    return GPT2_PATTERN if plain and not pre_tokenizer.get("add_prefix_space") else None


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's map from the printable characters byte-level BPE writes its tokens in back to the bytes."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    others = [byte for byte in range(256) if byte not in printable]
    return {chr(byte): byte for byte in printable} | {chr(256 + n): byte for n, byte in enumerate(others)}


def _tiktoken_twin(tokenizer) -> Any:
    """A `tiktoken.Encoding` giving exactly the ids of this HF byte-level BPE, or None (no tiktoken, or a
    tokenizer it cannot stand in for: another pre-tokenizer, a normalizer, dropout, ...)."""
    try:
        import tiktoken
    except ImportError:
        return None
    spec = json.loads(tokenizer.to_str())
    model = spec.get("model") or {}
    pattern = _twin_pattern(spec.get("pre_tokenizer") or {})
    if (
        spec.get("normalizer") is not None
        or pattern is None
        or model.get("type") != "BPE"
        or model.get("dropout") is not None
        or model.get("continuing_subword_prefix")
        or model.get("end_of_word_suffix")
        or any(not added.get("special") for added in spec.get("added_tokens", []))
    ):
        return None
    alphabet = _byte_level_alphabet()
    special = {added["content"]: added["id"] for added in spec.get("added_tokens", [])}
    try:
        ranks = {
            bytes(alphabet[c] for c in token): id
            for token, id in model["vocab"].items()
            if token not in special
        }
    except KeyError:  # a token outside the byte-level alphabet
        return None
    # tiktoken merges the pair whose result has the lowest id; HF the pair merged first in training. They agree
    # when ids grow with the merge order, as they do for a tokenizer trained by `BPETokenizer.train`.
    merged_ids = [
        model["vocab"].get("".join(merge) if isinstance(merge, list) else merge.replace(" ", ""))
        for merge in model.get("merges", [])
    ]
    if (
        None in merged_ids
        or merged_ids != sorted(merged_ids)
        or len(ranks) + len(special) != tokenizer.get_vocab_size()
    ):
        return None
    try:
        twin = tiktoken.Encoding(
            "lightning-llm-bpe", pat_str=pattern, mergeable_ranks=ranks, special_tokens=special
        )
    except ValueError:
        return None
    return twin


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Build the tokenizer named by `kind` ('char' or 'bpe') from a stream of texts."""
    if kind == "char":
        return CharTokenizer.train(texts)
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size)
    raise UserError(f"unknown tokenizer {kind!r}: use 'char' or 'bpe'")


def tokenizer_from_json(text: str) -> Tokenizer:
    """Rebuild a tokenizer saved by `to_json` (either kind); anything else is a UserError."""
    try:
        data = json.loads(text)
        if data.get("type") == "char":
            return CharTokenizer(data["chars"])
        if data.get("model", {}).get("type") != "BPE":
            raise ValueError("neither a character nor a byte-level BPE tokenizer")
        return BPETokenizer.from_json(text)
    except Exception as error:  # json, the tokenizers library and bad field types all fail differently
        if isinstance(error, UserError):
            raise
        raise UserError(
            f"the saved tokenizer is not one this project writes ({type(error).__name__}: "
            f"{' '.join(str(error).split())[:120]}); use a checkpoint or cache written by `lightning-llm fit`"
        ) from None


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tokenizer file {path} does not exist")
    return tokenizer_from_json(path.read_text(encoding="utf-8"))


def encode_stream(
    tokenizer: Tokenizer, texts: Iterable[str], batch_chars: int = BATCH_CHARS
) -> Iterator[np.ndarray]:
    """Encode a stream of texts, about `batch_chars` characters at a time (BPE: in parallel threads), so
    memory stays flat whatever the corpus size."""
    if not isinstance(tokenizer, BPETokenizer):
        for text in texts:
            yield tokenizer.encode(text)
        return
    pending: list[str] = []
    pending_chars = 0
    for text in texts:
        pending.append(text)
        pending_chars += len(text)
        if pending_chars >= batch_chars:
            yield from tokenizer.encode_many(pending)
            pending, pending_chars = [], 0
    if pending:
        yield from tokenizer.encode_many(pending)
