"""BPE on text with very long runs without whitespace (a minified .json in a corpus folder).

Training cost grows with pre-token length x merges, so a pre-token holds at most MAX_RUN_CHARS characters;
text without longer runs keeps the ids it had, and tokenizers saved before the cap encode as they did.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from lightning_llm.data.corpus import FileCorpus
from lightning_llm.data.token_cache import build_or_load
from lightning_llm.tokenizers import MAX_RUN_CHARS, BPETokenizer, _tiktoken_twin, tokenizer_from_json

# The build takes about 12 s here; before the cap it ran past this (quadratic), so a regression fails, not hangs.
BUILD_TIMEOUT_S = 120
BUILD_IN_A_CHILD = """
import sys
from pathlib import Path
from lightning_llm.data.corpus import FileCorpus
from lightning_llm.data.token_cache import build_or_load
build_or_load(FileCorpus([Path(sys.argv[1])]), sys.argv[2], "bpe", 300)
"""
LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))
DIGITS = np.array(list("0123456789"))
PUNCTUATION = np.array(list('{}[]:,"\\/.-_'))
# Every run (letters, digits, punctuation, whitespace) shorter than MAX_RUN_CHARS.
NORMAL_TEXT = (
    "Hello, wörld! It's 2024; we'll see. def f(x):\n    return x ** 2  # ünïcode ✓ 字\n"
    "# ----------------------------------------\n\tvalue = [1, 22, 333]  {'key': \"ok\"}\r\n\n"
) * 20


def random_run(rng: np.random.Generator, alphabet: np.ndarray, length: int) -> str:
    return "".join(rng.choice(alphabet, length))


def short_fields(rng: np.random.Generator, count: int) -> str:
    keys = ["".join(key) for key in rng.choice(LETTERS, (count, 6))]
    return "".join(
        f'"{key}":{value},' for key, value in zip(keys, rng.integers(0, 10**6, count), strict=True)
    )


def minified_json(size: int, seed: int = 0) -> str:
    """One line of JSON-like text without whitespace: short fields and, after every 340 kB of them, a 1 MB run
    of random letters, of a repeated pair of letters ("abab...": the slowest for BPE training), of digits or
    of punctuation."""
    rng = np.random.default_rng(seed)
    long_runs = [
        lambda n: random_run(rng, LETTERS, n),
        lambda n: random_run(rng, LETTERS, 2) * (n // 2),
        lambda n: random_run(rng, DIGITS, n),
        lambda n: random_run(rng, PUNCTUATION, n),
    ]
    parts, length = ["{"], 1
    while length < size:
        blob = long_runs[len(parts) % len(long_runs)](1_000_000)
        parts.append(f'{short_fields(rng, 20_000)}"blob{len(parts)}":"{blob}",')
        length += len(parts[-1])
    return "".join(parts)[: size - 1] + "}"


def train_without_cap(texts: list[str], vocab_size: int) -> BPETokenizer:
    """`BPETokenizer.train` as it was before runs were capped: GPT-2's ByteLevel pre-tokenizer alone."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return BPETokenizer(tokenizer)


def test_an_11_mb_minified_line_builds_its_cache_in_seconds(tmp_path):
    text = minified_json(11_000_000)
    corpus_file = tmp_path / "minified.json"
    corpus_file.write_text(text, encoding="utf-8")
    build = [sys.executable, "-c", BUILD_IN_A_CHILD, str(corpus_file), str(tmp_path / "cache")]
    subprocess.run(build, check=True, timeout=BUILD_TIMEOUT_S)
    cache = build_or_load(FileCorpus([corpus_file]), tmp_path / "cache", "bpe", 300)  # the child's entry
    assert cache.tokenizer.decode(cache.tokens.tolist()) == text + "\n"  # the reader ends each file with one


def test_long_runs_are_cut_and_round_trip_with_the_same_ids_in_bulk():
    tokenizer = BPETokenizer.train([minified_json(400_000, seed=1), NORMAL_TEXT], vocab_size=400)
    pieces = tokenizer._tokenizer.pre_tokenizer.pre_tokenize_str("x" * (2 * MAX_RUN_CHARS + 5))
    assert [len(piece) for piece, _ in pieces] == [MAX_RUN_CHARS, MAX_RUN_CHARS, 5]
    assert _tiktoken_twin(tokenizer._tokenizer) is not None  # the fast bulk encoder cuts runs alike
    runs = ["ab" * 100, "é字" * 60, "1234567" * 20, "{[(-" * 30, "Ab " + " " * 120 + "x", "\n\t" * 70 + "y"]
    texts = [minified_json(200_000, seed=2), NORMAL_TEXT + " ".join(runs) + "it's", *runs]
    for text, ids in zip(texts, tokenizer.encode_many(texts), strict=True):
        np.testing.assert_array_equal(ids, tokenizer.encode(text))
        assert tokenizer.decode(ids) == text


def test_normal_text_keeps_the_merges_and_ids_of_a_tokenizer_without_the_cap():
    capped = BPETokenizer.train([NORMAL_TEXT] * 3, vocab_size=400)
    uncapped = train_without_cap([NORMAL_TEXT] * 3, vocab_size=400)
    assert json.loads(capped.to_json())["model"] == json.loads(uncapped.to_json())["model"]
    for text in (NORMAL_TEXT, "unseen 字 text <|endoftext|>"):
        np.testing.assert_array_equal(capped.encode(text), uncapped.encode(text))
        np.testing.assert_array_equal(capped.encode_many([text])[0], uncapped.encode(text))


def test_a_tokenizer_saved_before_the_cap_still_encodes_as_it_did():
    long_runs = "ab" * 2_000 + "7" * 300 + "-" * 300 + " " * 300 + "x"
    before = train_without_cap([NORMAL_TEXT, long_runs], vocab_size=400)
    loaded = tokenizer_from_json(before.to_json())
    assert _tiktoken_twin(loaded._tokenizer) is not None  # with GPT-2's own pattern: runs stay whole
    for text in (NORMAL_TEXT, long_runs):
        np.testing.assert_array_equal(loaded.encode(text), before.encode(text))
        np.testing.assert_array_equal(loaded.encode_many([text])[0], before.encode(text))
