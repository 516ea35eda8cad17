"""GPT <-> GPT-2: exports `transformers` loads with the same logits, tokens and greedy text; imports back."""

# Fixtures imported from gpt_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bert_fixtures import classifier_overrides, write_sst_like
from gpt_fixtures import gpt_checkpoints as checkpoints  # noqa: F401
from lm_helpers import tiny_lm_overrides, write_tiny_corpus

from lightning_llm.checkpoints import load_module
from lightning_llm.cli import main
from lightning_llm.errors import UserError
from lightning_llm.lit.classifier import SequenceClassifier
from lightning_llm.lit.language_model import LanguageModel
from lightning_llm.models.gpt import GPT
from lightning_llm.models.gpt2_format import (
    from_gpt2,
    gpt2_tokenizer,
    project_tokenizer,
    save_gpt2,
    to_gpt2,
    to_gpt2_classifier,
)
from lightning_llm.models.gpt_classifier import PAIR_SEPARATOR, GPTClassifier
from lightning_llm.tokenizers import BPETokenizer, CharTokenizer

REPO = Path(__file__).resolve().parents[1]
TEXT = "The quick brown fox\njumps over  the lazy dog.\n\nSeven kings, 3 queens: a tale."
# the tiny corpus's words (gpt_fixtures): every character here is in the char checkpoint's vocabulary
CORPUS_TEXT = "the quick brown fox\n jumps over the lazy dog.\n\n"
TOLERANCE = 1e-4


def load_hf(folder: Path, auto: str = "AutoModelForCausalLM"):
    import transformers

    return getattr(transformers, auto).from_pretrained(folder), transformers.AutoTokenizer.from_pretrained(
        folder
    )


def max_logit_difference(hf_model, gpt: GPT, vocab: int) -> float:
    idx = torch.randint(0, vocab, (3, gpt.block_size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return float((hf_model(idx).logits - gpt(idx)[0]).abs().max())


def assert_same_greedy_text(hf_model, gpt: GPT, prompt: torch.Tensor) -> None:
    """Greedy continuations to the block size agree; transformers stops early at `<|endoftext|>` only."""
    new = gpt.block_size - prompt.size(1)
    ours = gpt.generate(prompt, new, temperature=0)[0].tolist()
    theirs = hf_model.generate(prompt, max_new_tokens=new, do_sample=False)[0].tolist()
    assert theirs == ours[: len(theirs)]
    assert len(theirs) == len(ours) or theirs[-1] == hf_model.generation_config.eos_token_id


@pytest.mark.parametrize("kind", ["char", "bpe"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_gpt_exports_as_gpt2_with_the_same_logits_tokens_and_greedy_text(bias, kind, tmp_path):
    import transformers

    torch.manual_seed(0)
    tokenizer = CharTokenizer.train([TEXT]) if kind == "char" else BPETokenizer.train([TEXT] * 20, 300)
    # a larger init than GPT-2's so the logits are far from uniform and a mapping error shows
    gpt = GPT(
        tokenizer.vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=16, bias=bias, init_std=0.3
    ).eval()
    save_gpt2(to_gpt2(gpt), gpt2_tokenizer(tokenizer, gpt.block_size), tmp_path)
    hf_model, hf_tokenizer = load_hf(tmp_path)
    assert isinstance(hf_model, transformers.GPT2LMHeadModel)
    assert max_logit_difference(hf_model, gpt, tokenizer.vocab_size) <= TOLERANCE
    ids = hf_tokenizer(TEXT)["input_ids"]
    assert ids == tokenizer.encode(TEXT).tolist()
    assert hf_tokenizer.decode(ids) == TEXT
    assert_same_greedy_text(hf_model, gpt, torch.as_tensor(tokenizer.encode("The q"))[None])


def test_an_unknown_character_fails_to_encode_as_in_the_project(tmp_path):
    save_gpt2(to_gpt2(GPT(5, 8, 1, 1, 4)), gpt2_tokenizer(CharTokenizer("abcde"), 8), tmp_path)
    _, hf_tokenizer = load_hf(tmp_path)
    with pytest.raises(Exception, match="Missing"):
        hf_tokenizer("abz")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_pretrained_checkpoint_exports_and_imports_back(kind, checkpoints):
    module = load_module(LanguageModel, checkpoints[kind]).eval()
    gpt, tokenizer = module.model, module.tokenizer
    main(["export", "--ckpt_path", str(checkpoints[kind]), "--output_dir", "exported"])
    hf_model, hf_tokenizer = load_hf(Path("exported"))
    assert type(hf_model).__name__ == "GPT2LMHeadModel"
    assert max_logit_difference(hf_model, gpt, tokenizer.vocab_size) <= TOLERANCE
    ids = hf_tokenizer(CORPUS_TEXT)["input_ids"]
    assert ids == tokenizer.encode(CORPUS_TEXT).tolist() and hf_tokenizer.decode(ids) == CORPUS_TEXT
    assert_same_greedy_text(hf_model, gpt, torch.as_tensor(tokenizer.encode("the "))[None])
    # and back: the same network and the same tokenizer
    imported = from_gpt2("exported")
    assert max_logit_difference(hf_model, imported, tokenizer.vocab_size) <= TOLERANCE
    assert project_tokenizer("exported").encode(CORPUS_TEXT).tolist() == ids
    # an earlier export is replaced, files and all
    main(["export", "--ckpt_path", str(checkpoints[kind]), "--output_dir", "exported", "--overwrite", "true"])
    assert {p.name for p in Path("exported").iterdir()} >= {"generation_config.json", "tokenizer.json"}


@pytest.mark.parametrize("activation", ["gelu", "gelu_new"])
def test_random_gpt2_imports_with_the_same_logits(activation, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50, n_positions=12, n_embd=16, n_layer=2, n_head=2, activation_function=activation
    )
    config.initializer_range = 0.3  # far from uniform logits, so a mapping error shows
    hf_model = GPT2LMHeadModel(config).eval()
    hf_model.save_pretrained(tmp_path)
    for source in (hf_model, tmp_path):
        gpt = from_gpt2(source)
        assert max_logit_difference(hf_model, gpt, 50) <= TOLERANCE
    # exported again under the activation it came with
    again = to_gpt2(gpt)
    assert again.config.activation_function == activation
    assert max_logit_difference(again, gpt, 50) <= TOLERANCE


def test_gpt2_settings_a_gpt_cannot_compute_are_named():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=8, n_positions=4, n_embd=4, n_layer=1, n_head=1))
    model.config.activation_function = "relu"
    with pytest.raises(UserError, match="activation_function 'relu'.*gelu"):
        from_gpt2(model)
    with pytest.raises(UserError, match="no config.json"):
        from_gpt2("nowhere")


def padded_inputs(texts: list[str], classifier: GPTClassifier) -> tuple[torch.Tensor, torch.Tensor]:
    """The project's right-padded batch for texts: token ids and attention mask (B, T)."""
    rows = [classifier.tokenizer.text_tokenizer.encode(text).tolist() for text in texts]
    width = max(map(len, rows))
    ids = torch.tensor([row + [classifier.pad_token_id] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return ids, mask


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_gpt_classifier_exports_with_the_same_logits_for_padded_batches(kind, checkpoints, tmp_path):
    import transformers

    torch.manual_seed(0)
    classifier = GPTClassifier(str(checkpoints[kind]), num_labels=3).eval()
    torch.nn.init.normal_(classifier.head.bias, std=1.0)  # GPT-2's score has no bias: this one is folded
    labels = ["neg", "neutral", "pos"]
    text_tokenizer = classifier.tokenizer.text_tokenizer
    save_gpt2(to_gpt2_classifier(classifier, labels), gpt2_tokenizer(text_tokenizer, 16, pad=True), tmp_path)
    hf_model, hf_tokenizer = load_hf(tmp_path, "AutoModelForSequenceClassification")
    # texts ending in the character the project pads with (id 0): GPT-2 must not take it for padding
    texts = ["the fox", "a lazy dog jumps", "over" + (text_tokenizer.decode([0]) if kind == "char" else "")]
    ids, mask = padded_inputs(texts, classifier)
    batch = hf_tokenizer(texts, padding=True, return_tensors="pt")
    assert batch["attention_mask"].tolist() == mask.tolist()
    with torch.no_grad():
        theirs = hf_model(**batch).logits
        ours = classifier(ids, mask)
    assert float((theirs - ours).abs().max()) <= TOLERANCE
    classify = transformers.pipeline("text-classification", model=str(tmp_path))
    assert [result["label"] for result in classify(texts)] == [labels[i] for i in ours.argmax(-1).tolist()]


def test_mean_pooling_and_an_unfoldable_head_bias_are_refused(checkpoints):
    with pytest.raises(UserError, match="pooling 'mean' cannot be exported.*pooling last"):
        to_gpt2_classifier(GPTClassifier(str(checkpoints["char"]), pooling="mean"), ["0", "1"])
    classifier = GPTClassifier(str(checkpoints["char"]), num_labels=2)
    with torch.no_grad():  # two equal rows cannot give two different biases
        classifier.head.weight[1] = classifier.head.weight[0]
        classifier.head.bias.copy_(torch.tensor([0.0, 1.0]))
    with pytest.raises(UserError, match="bias cannot be exported exactly"):
        to_gpt2_classifier(classifier, ["0", "1"])


def test_fine_tuned_gpt_classifier_exports_for_the_pipeline(checkpoints, tmp_path):
    from transformers import pipeline

    write_sst_like(tmp_path / "sst")
    config = REPO / "configs" / "gpt-sst2-finetune.yaml"
    args = classifier_overrides(tmp_path / "sst", checkpoints["bpe"], config, batch_size=4)
    args += ["--data.max_length", "16", "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false"]
    main(["fit", *args, "--model.init_args.learning_rate", "1e-2", "--model.init_args.lora", "{r: 2}"])
    checkpoint = Path("logs/gpt-sst2-finetune/version_0/checkpoints/last.ckpt")
    main(["export", "--ckpt_path", str(checkpoint), "--output_dir", "exported"])
    module = load_module(SequenceClassifier, checkpoint).eval()
    texts = ["a good film", "boring and long", "the worst movie", "great fun"]
    with torch.no_grad():
        probabilities = [
            module(torch.as_tensor(module.tokenizer.text_tokenizer.encode(t))[None]) for t in texts
        ]
    probabilities = torch.cat(probabilities).softmax(-1)  # (4, 2)
    results = pipeline("text-classification", model="exported")(texts)
    assert [r["label"] for r in results] == [module.label_names[i] for i in probabilities.argmax(-1).tolist()]
    assert [r["score"] for r in results] == pytest.approx(probabilities.max(-1).values.tolist(), abs=1e-5)


def test_transformer_lm_checkpoint_is_refused(tmp_path, capsys):
    corpus = write_tiny_corpus(tmp_path / "corpus.txt")
    config = REPO / "configs" / "transformer-lm-shakespeare-char.yaml"
    args = ["fit", "--config", str(config), *tiny_lm_overrides(corpus, "TransformerLM")]
    main([*args, "--trainer.max_steps", "1", "--trainer.enable_progress_bar", "false"])
    checkpoint = next(Path("logs").rglob("last.ckpt"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        main(["export", "--ckpt_path", str(checkpoint), "--output_dir", "exported"])
    assert exited.value.code == 2
    assert "TransformerLM network, which is not GPT-2 shaped" in capsys.readouterr().err
    assert not Path("exported").exists() and not list(Path(".").glob(".exported*"))


def test_importing_the_format_does_not_import_lightning():
    code = "import sys, lightning_llm.models.gpt2_format; print('lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_an_exported_gpt_classifier_joins_sentence_pairs_as_the_project_does(kind, checkpoints, tmp_path):
    """A pair is first + line break + second, cut longest-first to max_length, in `transformers` as here."""
    classifier = GPTClassifier(str(checkpoints[kind]), num_labels=2).eval()
    encoder, text_tokenizer = classifier.tokenizer, classifier.tokenizer.text_tokenizer
    save_gpt2(
        to_gpt2_classifier(classifier, ["no", "yes"]),
        gpt2_tokenizer(text_tokenizer, 16, pad=True, pair_separator=PAIR_SEPARATOR),
        tmp_path,
    )
    _, hf_tokenizer = load_hf(tmp_path, "AutoModelForSequenceClassification")
    firsts, seconds = ["the fox", "a lazy dog jumps over the quick brown fox"], ["jumps", "the dog"]
    ours = encoder.encode(firsts, seconds, max_length=16).input_ids
    theirs = hf_tokenizer(firsts, seconds, truncation=True, max_length=16)["input_ids"]
    assert theirs == ours
    single = hf_tokenizer(firsts, truncation=True, max_length=16)["input_ids"]
    assert single == encoder.encode(firsts, None, max_length=16).input_ids
