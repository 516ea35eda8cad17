"""Bad inputs to the real command line, one table: each ends with exit status 2, one `error:` line naming the
thing and the fix, no traceback, and no file that existed before changed (checkpoints, cache, corpus).

Every case runs against one workspace holding a trained tiny GPT; a new option brings its bad values here.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_runner import changed_files, error_line, run_cli, snapshot
from lm_helpers import SHAKESPEARE_CONFIG, tiny_lm_overrides, write_tiny_corpus

REPO = Path(__file__).resolve().parents[1]
MINILM_CONFIG = REPO / "configs" / "minilm-sst2.yaml"
LAST = "logs/gpt-shakespeare-char/trained/checkpoints/last.ckpt"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def lm_fit(*extra: str, corpus: str = "corpus.txt") -> list[str]:
    return ["fit", "--config", str(SHAKESPEARE_CONFIG), *tiny_lm_overrides(Path(corpus)), *QUIET, *extra]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder with a corpus, a 2-step GPT checkpoint (BPE) and the broken files the cases hand over."""
    root = tmp_path_factory.mktemp("hostile")
    write_tiny_corpus(root / "corpus.txt")
    trained = run_cli(
        lm_fit("--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--data.tokenizer", "bpe")
        + ["--trainer.logger.init_args.version", "trained"],
        root,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    last = root / LAST
    (root / "truncated.ckpt").write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (root / "notes.ckpt").write_text("not a checkpoint\n")
    (root / "plain-folder").mkdir()
    (root / "a-file").write_text("a file where a folder belongs\n")
    # another module's checkpoint: a classifier's hyperparameters, handed to the language model
    torch.save(
        {
            "hyper_parameters": {"_class_path": "lightning_llm.lit.classifier.SequenceClassifier"},
            "state_dict": {},
        },
        root / "classifier.ckpt",
    )
    # the same corpus edited: BPE trains another tokenizer of the same size on it
    edited = (root / "corpus.txt").read_text().replace("fox", "cat").replace("dog", "owl")
    (root / "edited.txt").write_text(edited)
    return root


@dataclass(frozen=True)
class BadInput:
    name: str
    args: Callable[[], list[str]]
    says: tuple[str, ...]  # fragments the error line must hold: the thing, and the fix


def generate(*extra: str) -> list[str]:
    return ["generate", "--ckpt_path", LAST, "--max_new_tokens", "4", *extra]


BPE = ("--data.tokenizer", "bpe")
CASES = [
    # checkpoints handed to the wrong command, or not checkpoints at all
    BadInput("truncated-ckpt-to-fit", lambda: lm_fit("--ckpt_path", "truncated.ckpt"), ("truncated.ckpt", "corrupt")),
    BadInput("text-file-as-ckpt", lambda: lm_fit("--ckpt_path", "notes.ckpt"), ("notes.ckpt", "corrupt")),
    BadInput("ckpt-best-from-the-cli", lambda: lm_fit("--ckpt_path", "best"), ("--ckpt_path best", "last")),
    BadInput("device-as-ckpt", lambda: lm_fit("--ckpt_path", "/dev/null"), ("/dev/null", "not a regular file")),
    BadInput("missing-ckpt", lambda: lm_fit("--ckpt_path", "nowhere.ckpt"), ("nowhere.ckpt", "does not exist")),
    BadInput("folder-to-generate", lambda: ["generate", "--ckpt_path", "plain-folder"], ("plain-folder", "consolidate")),
    BadInput("plain-folder-to-fit", lambda: lm_fit("--ckpt_path", "plain-folder"), ("plain-folder",)),
    BadInput(
        "classifier-ckpt-to-lm-fit",
        lambda: lm_fit("--ckpt_path", "classifier.ckpt", *BPE),
        ("SequenceClassifier", "LanguageModel", "checkpoint written with this config"),
    ),
    BadInput(
        "lm-ckpt-to-classifier-predict",
        lambda: ["predict", "--config", str(MINILM_CONFIG), "--ckpt_path", LAST],
        ("holds a LanguageModel", "SequenceClassifier"),
    ),
    # settings the checkpoint would silently replace, and a tokenizer that no longer matches
    BadInput(
        "typed-flag-the-checkpoint-overrides",
        lambda: lm_fit("--ckpt_path", LAST, *BPE, "--model.init_args.learning_rate", "0.5"),
        ("model.init_args.learning_rate=0.001", "you set 0.5", "without --ckpt_path"),
    ),
    BadInput(
        "resume-on-an-edited-corpus",
        lambda: lm_fit("--ckpt_path", LAST, *BPE, "--trainer.max_steps", "4", corpus="edited.txt"),
        ("another tokenizer", "fingerprint", "the corpus and data.tokenizer it was trained with"),
    ),
    # values out of range
    BadInput("learning-rate-zero", lambda: lm_fit("--model.init_args.learning_rate", "0"), ("model.learning_rate",)),
    BadInput("learning-rate-negative", lambda: lm_fit("--model.init_args.learning_rate", "-1"), ("learning_rate",)),
    BadInput("beta-above-one", lambda: lm_fit("--model.init_args.betas", "[0.9, 1.5]"), ("model.betas", "[0, 1)")),
    BadInput("min-lr-above-peak", lambda: lm_fit("--model.init_args.min_lr", "1.0"), ("model.min_lr",)),
    BadInput(
        "heads-that-do-not-divide-the-width",
        lambda: lm_fit("--model.init_args.model.init_args.n_head", "3"),
        ("n_embd (16)", "n_head (3)"),
    ),
    BadInput("dropout-one", lambda: lm_fit("--model.init_args.model.init_args.dropout", "1.0"), ("dropout",)),
    BadInput("block-size-zero", lambda: lm_fit("--data.block_size", "0"), ("data.block_size",)),
    BadInput("a-device-this-machine-lacks", lambda: lm_fit("--trainer.accelerator", "gpu"), ("trainer.accelerator",)),
    # the parser's own complaints keep their reason
    BadInput("not-a-number", lambda: lm_fit("--trainer.max_steps", "abc"), ("trainer.max_steps", "int", "abc")),
    BadInput(
        "unknown-class-path",
        lambda: lm_fit("--model.init_args.model.class_path", "lightning_llm.models.Nope"),
        ("lightning_llm.models.Nope", "no attribute 'Nope'"),
    ),
    # generate's sampling options
    BadInput("negative-new-tokens", lambda: generate("--max_new_tokens", "-5"), ("--max_new_tokens", "-5")),
    BadInput("no-samples", lambda: generate("--num_samples", "0"), ("--num_samples",)),
    BadInput("top-p-above-one", lambda: generate("--top_p", "1.5"), ("--top_p", "(0, 1]")),
    BadInput("negative-temperature", lambda: generate("--temperature", "-1"), ("--temperature",)),
    BadInput("top-k-zero", lambda: generate("--top_k", "0"), ("--top_k",)),
    BadInput("generate-on-a-missing-gpu", lambda: generate("--device", "cuda"), ("--device", "cpu")),
    BadInput("generate-on-no-device", lambda: generate("--device", "toaster"), ("toaster",)),
    # file-system faults: a file where a folder belongs, for every folder the run writes
    BadInput("log-folder-is-a-file", lambda: lm_fit("--trainer.logger.init_args.save_dir", "a-file"), ("a-file",)),
    BadInput("cache-folder-is-a-file", lambda: lm_fit("--data.cache_dir", "a-file/cache"), ("a-file",)),
    # training that blows up stops before it saves broken weights
    BadInput(
        "exploding-learning-rate",
        lambda: lm_fit(
            "--model.init_args.learning_rate", "1e30", "--trainer.gradient_clip_val", "null",
            "--trainer.max_steps", "20", "--trainer.val_check_interval", "2", *BPE,
        ),
        ("became", "at step", "learning_rate"),
    ),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
def test_bad_input_ends_in_one_error_line(case: BadInput, workspace: Path):
    before = snapshot(workspace)
    line = error_line(run_cli(case.args(), workspace))
    for fragment in case.says:
        assert fragment in line, f"{fragment!r} missing from: {line}"
    assert changed_files(before, workspace) == []


def test_a_blown_up_run_keeps_only_checkpoints_of_finite_weights(workspace: Path, tmp_path: Path):
    """After the stop, every checkpoint the run wrote loads with finite weights, and the message names it."""
    run = shutil.copytree(workspace, tmp_path / "run")
    args = lm_fit("--model.init_args.learning_rate", "3", "--trainer.gradient_clip_val", "null", *BPE)
    args += ["--trainer.max_steps", "200", "--trainer.val_check_interval", "1"]
    args += ["--trainer.logger.init_args.version", "blown"]
    line = error_line(run_cli(args, run))
    written = sorted((run / "logs/gpt-shakespeare-char/blown/checkpoints").glob("*.ckpt"))
    for path in written:
        weights = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.isfinite(tensor).all() for tensor in weights.values()), path
    assert ("newest checkpoint" in line) == bool(written), line
