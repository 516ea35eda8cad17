import numpy as np
import pytest

from lightning_llm.errors import UserError
from lightning_llm.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer, tokenizer_from_json

TEXT = "Hello, wörld! def f(x):\n    return x ** 2  # ünïcode ✓\n" * 20


def test_char_round_trip_and_order():
    tok = CharTokenizer.train([TEXT])
    ids = tok.encode(TEXT)
    assert tok.decode(ids) == TEXT
    assert tok.vocab_size == len(set(TEXT))
    assert tok.chars == sorted(set(TEXT))


def test_char_unknown_character_names_it():
    tok = CharTokenizer.train(["abc"])
    with pytest.raises(UserError, match="never saw.*'z'"):
        tok.encode("abz")


def test_bpe_round_trip_and_vocab_size():
    tok = BPETokenizer.train([TEXT] * 5, vocab_size=300)
    assert tok.vocab_size <= 300
    for text in (TEXT, "unseen 字 text"):
        assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(TEXT)) < len(TEXT)  # merges compress


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_json_round_trip(kind, tmp_path):
    tok = CharTokenizer.train([TEXT]) if kind == "char" else BPETokenizer.train([TEXT], vocab_size=280)
    path = tmp_path / "tokenizer.json"
    path.write_text(tok.to_json(), encoding="utf-8")
    again = load_tokenizer(path)
    assert type(again) is type(tok)
    np.testing.assert_array_equal(again.encode(TEXT), tok.encode(TEXT))
    assert tokenizer_from_json(tok.to_json()).vocab_size == tok.vocab_size


def test_empty_corpus_is_refused():
    with pytest.raises(UserError, match="empty"):
        CharTokenizer.train([""])


def test_bpe_bulk_encoding_gives_the_ids_of_encode():
    texts = [TEXT, "unseen 字 text <|endoftext|> 😀\r\n\t  x", "", "   \n\n  def   g():"]
    tok = BPETokenizer.train([TEXT] * 5, vocab_size=300)
    for text, ids in zip(texts, tok.encode_many(texts), strict=True):
        np.testing.assert_array_equal(ids, tok.encode(text))
