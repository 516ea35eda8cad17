"""GPTClassifier: a GPT pretrained by `lightning-llm fit`, pooled at the last real token, with a new head."""

# Fixtures imported from gpt_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from gpt_fixtures import gpt_checkpoints as checkpoints  # noqa: F401

from lightning_llm.checkpoints import load_module
from lightning_llm.errors import UserError
from lightning_llm.lit.language_model import LanguageModel
from lightning_llm.models.gpt_classifier import GPTClassifier, GPTTextEncoder, _longest_first
from lightning_llm.models.text_encoding import UnencodableText
from lightning_llm.tokenizers import CharTokenizer

TEXTS = ["the fox", "a lazy dog", "seven kings 3."]  # distinct lengths in characters and in BPE tokens


def padded_batch(classifier: GPTClassifier) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Rows of different lengths, and the same rows padded on the right with pad_token_id, with their mask."""
    rows = [
        torch.as_tensor(classifier.tokenizer.text_tokenizer.encode(text))[: classifier.block_size]
        for text in TEXTS
    ]
    longest = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), longest), classifier.pad_token_id)
    attention_mask = torch.zeros(len(rows), longest, dtype=torch.long)
    for i, row in enumerate(rows):
        input_ids[i, : len(row)] = row
        attention_mask[i, : len(row)] = 1
    return rows, input_ids, attention_mask


@pytest.mark.parametrize("pooling", ["last", "mean"])
@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_padded_batch_gives_each_row_its_own_logits(checkpoints, kind, pooling):
    classifier = GPTClassifier(str(checkpoints[kind]), num_labels=3, pooling=pooling).eval()
    rows, input_ids, attention_mask = padded_batch(classifier)
    assert len({len(row) for row in rows}) == len(rows)  # the lengths differ, so padding is exercised
    with torch.no_grad():
        batched = classifier(input_ids, attention_mask)  # (B, 3)
        alone = torch.cat([classifier(row[None]) for row in rows])  # (B, 3)
    assert batched.shape == (len(rows), 3)
    torch.testing.assert_close(batched, alone, atol=1e-6, rtol=0)


def test_pad_token_is_endoftext_for_bpe_and_zero_for_characters(checkpoints):
    bpe = GPTClassifier(str(checkpoints["bpe"]))
    special = {
        token["content"]: token["id"]
        for token in json.loads(bpe.tokenizer.text_tokenizer.to_json())["added_tokens"]
    }
    assert bpe.pad_token_id == special["<|endoftext|>"]
    assert GPTClassifier(str(checkpoints["char"])).pad_token_id == 0


def test_backbone_reproduces_the_pretrained_language_model(checkpoints):
    path = checkpoints["bpe"]
    gpt = load_module(LanguageModel, path).model.eval()
    classifier = GPTClassifier(str(path)).eval()
    ids = torch.as_tensor(classifier.tokenizer.text_tokenizer.encode(TEXTS[2]))[
        None, : classifier.block_size
    ]  # (1, T)
    with torch.no_grad():
        expected, _ = gpt(ids)  # (1, T, vocab)
        logits = gpt.lm_head(classifier.hidden_states(ids))  # (1, T, vocab)
    torch.testing.assert_close(logits, expected, atol=1e-6, rtol=0)
    # the language-model head is not carried: only the transformer and the new head hold state
    assert {name.split(".")[0] for name in classifier.state_dict()} == {"transformer", "head"}
    assert sum(p.numel() for p in classifier.parameters()) == gpt.num_params(non_embedding=False) + sum(
        p.numel() for p in classifier.head_parameters()
    )


def snapshot(classifier: GPTClassifier) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in classifier.named_parameters()}


def train_a_few_steps(classifier: GPTClassifier) -> None:
    classifier.train()
    trainable = [p for p in classifier.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.1)
    _, input_ids, attention_mask = padded_batch(classifier)
    labels = torch.tensor([0, 1, 0])
    for _ in range(3):
        loss = F.cross_entropy(classifier(input_ids, attention_mask), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize(
    ("mode", "frozen_prefixes"),
    [
        ("backbone", ("transformer.",)),
        ("lower_layers", ("transformer.wte.", "transformer.wpe.", "transformer.h.0.")),
    ],
)
def test_frozen_parameters_stay_bit_identical_while_the_rest_trains(checkpoints, mode, frozen_prefixes):
    classifier = GPTClassifier(str(checkpoints["char"]))
    frozen = classifier.freeze(mode, frozen_layers=1)
    names = {name for name, p in classifier.named_parameters() if any(p is q for q in frozen)}
    assert names == {name for name, _ in classifier.named_parameters() if name.startswith(frozen_prefixes)}
    before = snapshot(classifier)
    train_a_few_steps(classifier)
    after = snapshot(classifier)
    for name in before:
        if name in names:
            assert torch.equal(before[name], after[name]), f"{name} is frozen but changed"
        else:
            assert not torch.equal(before[name], after[name]), f"{name} trains but did not change"
    assert all(p.requires_grad for p in classifier.head_parameters())


def test_freeze_none_makes_everything_trainable_again(checkpoints):
    classifier = GPTClassifier(str(checkpoints["char"]))
    classifier.freeze("backbone")
    assert classifier.freeze("none") == []
    assert all(p.requires_grad for p in classifier.parameters())


def one_line_error(error: pytest.ExceptionInfo, *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_missing_checkpoint_is_one_clear_error():
    with pytest.raises(UserError) as error:
        GPTClassifier("no-such.ckpt")
    one_line_error(error, "no-such.ckpt", "does not exist")


def test_classifier_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "classifier.ckpt"
    hparams = {
        "_class_path": "lightning_llm.lit.classifier.SequenceClassifier",
        "pretrained": "bert-base-uncased",
    }
    torch.save({"hyper_parameters": hparams, "state_dict": {}}, path)
    with pytest.raises(UserError) as error:
        GPTClassifier(str(path))
    one_line_error(error, "SequenceClassifier", "not a LanguageModel")


def test_network_other_than_gpt_is_refused_by_name(checkpoints, tmp_path):
    saved = torch.load(checkpoints["char"], weights_only=True)
    saved["hyper_parameters"]["model"]["class_path"] = "lightning_llm.models.TransformerLM"
    path = tmp_path / "transformer-lm.ckpt"
    torch.save(saved, path)
    with pytest.raises(UserError) as error:
        GPTClassifier(str(path))
    one_line_error(error, "lightning_llm.models.TransformerLM", "not a GPT")


def test_input_longer_than_block_size_names_both_lengths(checkpoints):
    classifier = GPTClassifier(str(checkpoints["char"]))
    too_long = torch.zeros(2, classifier.block_size + 1, dtype=torch.long)
    with pytest.raises(ValueError) as error:
        classifier(too_long)
    one_line_error(error, str(classifier.block_size + 1), f"block_size {classifier.block_size}")


def test_too_many_frozen_layers_names_both_numbers(checkpoints):
    classifier = GPTClassifier(str(checkpoints["char"]))
    with pytest.raises(ValueError) as error:
        classifier.freeze("lower_layers", frozen_layers=5)
    one_line_error(error, "frozen_layers is 5", "2 blocks")
    assert all(p.requires_grad for p in classifier.parameters())  # nothing half-frozen


def test_left_padding_and_empty_rows_are_refused(checkpoints):
    classifier = GPTClassifier(str(checkpoints["char"]))
    input_ids = torch.ones(2, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="row 1 of attention_mask is not right-padded"):
        classifier(input_ids, torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1]]))
    with pytest.raises(ValueError, match="row 0 of attention_mask has no tokens"):
        classifier(input_ids, torch.tensor([[0, 0, 0, 0], [1, 1, 0, 0]]))


@pytest.mark.parametrize(
    ("lengths", "budget", "kept"),
    [
        ((3, 4), 10, (3, 4)),
        ((10, 2), 6, (4, 2)),
        ((2, 10), 6, (2, 4)),
        ((9, 8), 7, (4, 3)),
        ((5, 5), 4, (2, 2)),
    ],
)
def test_pairs_are_cut_from_the_longer_text_first(lengths, budget, kept):
    first, second = (list(range(length)) for length in lengths)
    cut_first, cut_second = _longest_first(first, second, budget)
    assert (len(cut_first), len(cut_second)) == kept
    assert cut_first == first[: kept[0]] and cut_second == second[: kept[1]]  # each keeps its opening tokens


def test_a_pair_too_long_for_the_block_keeps_both_texts(checkpoints):
    encoder = GPTClassifier(str(checkpoints["char"])).tokenizer
    long_text = "the quick brown fox jumps over the lazy dog " * 3
    encoded = encoder.encode([long_text], ["a dog"], max_length=16)
    ids = encoded.input_ids[0]
    assert len(ids) == 16 and encoded.truncated == 1
    assert ids[-5:] == encoder.text_tokenizer.encode("a dog").tolist()  # the second text is whole


@pytest.mark.parametrize(("text", "reason"), [("", "is empty"), ("caf\u00e9 \u2603", "cannot be encoded")])
def test_a_text_that_cannot_be_encoded_is_named_by_index(checkpoints, text, reason):
    encoder = GPTClassifier(str(checkpoints["char"])).tokenizer
    with pytest.raises(UnencodableText) as error:
        encoder.encode(["a good film", text], None, max_length=16)
    assert error.value.index == 1 and reason in error.value.reason


def test_importing_the_model_does_not_import_lightning():
    code = "import sys, lightning_llm.models.gpt_classifier; print('lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_pairs_need_a_line_break_in_a_char_vocabulary():
    """The separator itself cannot be encoded: the error says so, not that the first text failed."""
    encoder = GPTTextEncoder(CharTokenizer("abc ").to_json(), block_size=16)
    assert encoder.encode(["ab"], None, max_length=16).input_ids == [
        encoder.text_tokenizer.encode("ab").tolist()
    ]
    with pytest.raises(UserError, match="no line break, which joins the two texts of a pair"):
        encoder.encode(["ab"], ["ca"], max_length=16)
