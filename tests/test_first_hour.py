"""The first hour: `make generate` names its checkpoint, the default corpus holds code (not generated
tables), samples keep the prompt's spacing, and `predict` from a fine-tuned checkpoint reports no
missing head."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import torch
from bert_fixtures import classifier_overrides, sst_like_dir, tiny_bert  # noqa: F401
from cli_runner import run_cli
from lm_helpers import lm_fit_args
from torch import nn

import lightning_llm.lit.classifier as classifier_module
from lightning_llm.cli import main
from lightning_llm.data.corpus import CODEC_TABLE, stdlib_sources
from lightning_llm.generate import CHOICE_ENV
from lightning_llm.lit.language_model import LanguageModel
from lightning_llm.models.sampling import GenerateMixin
from lightning_llm.tokenizers import BPETokenizer

REPO = Path(__file__).resolve().parents[1]


# A. `generate` says which checkpoint it samples from; `make generate` picks a validated one.


def generate_stderr(ckpt: Path, capsys) -> str:
    main(["generate", "--ckpt_path", str(ckpt), "--prompt", "ROMEO:", "--max_new_tokens", "3"])
    return capsys.readouterr().err


def test_generate_names_the_checkpoint_its_step_and_val_loss(tiny_corpus, capsys, monkeypatch):
    main(lm_fit_args(tiny_corpus, steps=8, version="run"))  # validates at steps 4 and 8
    checkpoints = Path("logs/gpt-shakespeare-char/run/checkpoints")
    [best] = checkpoints.glob("step*-val*.ckpt")
    step, val_loss = re.fullmatch(r"step(\d+)-val(\d+\.\d+)\.ckpt", best.name).groups()

    assert f"checkpoint {best}: step {step}, val loss {val_loss}\n" in generate_stderr(best, capsys)
    # last.ckpt's name holds no loss: it comes from ModelCheckpoint's state (the step-8 validation)
    last_line = generate_stderr(checkpoints / "last.ckpt", capsys)
    assert re.search(r"checkpoint \S+last\.ckpt: step 8, val loss \d+\.\d{3}\n", last_line)

    monkeypatch.setenv(CHOICE_ENV, "make chose it: the lowest val loss")
    assert f"val loss {val_loss} (make chose it: the lowest val loss)\n" in generate_stderr(best, capsys)


def make_generate_dry_run(folder: Path) -> str:
    """`make -n generate` in `folder`, with the repository's Makefile and an up-to-date install stamp."""
    shutil.copy(REPO / "Makefile", folder)
    shutil.copy(REPO / "pyproject.toml", folder)
    (folder / ".venv").mkdir(exist_ok=True)
    (folder / ".venv/.installed").touch()
    result = subprocess.run(["make", "-n", "generate"], cwd=folder, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def fake_checkpoint(path: str, age_s: float) -> None:
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.touch()
    stamp = time.time() - age_s
    os.utime(file, (stamp, stamp))


def test_make_generate_picks_the_lowest_val_loss_of_the_newest_validated_run(tmp_path):
    fake_checkpoint("logs/gpt-pycode/version_0/checkpoints/step2000-val3.900.ckpt", age_s=300)  # older run
    fake_checkpoint("logs/gpt-pycode/version_1/checkpoints/step500-val4.500.ckpt", age_s=200)
    fake_checkpoint("logs/gpt-pycode/version_1/checkpoints/step1000-val4.200.ckpt", age_s=150)
    fake_checkpoint("logs/gpt-pycode/version_1/checkpoints/step1500-val10.300.ckpt", age_s=100)
    fake_checkpoint("logs/gpt-pycode/version_1/checkpoints/last.ckpt", age_s=100)
    fake_checkpoint("logs/gpt-pycode/version_2/checkpoints/last.ckpt", age_s=10)  # a 10-step accident
    command = make_generate_dry_run(tmp_path)
    assert '--ckpt_path "logs/gpt-pycode/version_1/checkpoints/step1000-val4.200.ckpt"' in command
    assert f'{CHOICE_ENV}="make chose it: the lowest val loss of the newest run that validated' in command

    assert (
        '--ckpt_path "x.ckpt"'
        in subprocess.run(
            ["make", "-n", "generate", "CKPT=x.ckpt"], cwd=tmp_path, capture_output=True, text=True
        ).stdout
    )


def test_make_generate_falls_back_to_the_newest_last_ckpt_before_any_validation(tmp_path):
    fake_checkpoint("logs/gpt-shakespeare-char/version_0/checkpoints/last.ckpt", age_s=100)
    fake_checkpoint("logs/gpt-pycode/version_0/checkpoints/last.ckpt", age_s=10)
    command = make_generate_dry_run(tmp_path)
    assert '--ckpt_path "logs/gpt-pycode/version_0/checkpoints/last.ckpt"' in command
    assert "no run has validated yet" in command


# B. The default corpus is the library's code, not its generated tables.


def test_the_stdlib_corpus_leaves_out_generated_tables():
    files = stdlib_sources()
    names = {"/".join(f.parts[-2:]) for f in files}
    assert not [f for f in files if CODEC_TABLE.search(f.read_text(encoding="utf-8", errors="replace"))]
    assert not {"encodings/cp1252.py", "encodings/mac_roman.py", "encodings/iso8859_1.py"} & names
    assert not {"pydoc_data/topics.py", "html/entities.py"} & names
    assert {"encodings/utf_8.py", "encodings/idna.py", "json/decoder.py"} <= names  # codecs as code stay


# C. No doubled space after a prompt that ends in one.

CODE = "".join(
    f"def {name}(value):\n    return {name}  # {name}\n\n" for name in ("read", "write", "parse") * 20
)


class AlwaysNext(GenerateMixin, nn.Module):
    """A stand-in language model that always predicts one token: the most likely one after "def" in code."""

    block_size = 16

    def __init__(self, vocab_size: int, token: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(vocab_size).index_fill(0, torch.tensor(token), 10.0))

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.logits.expand(*idx.shape, -1), None


def test_a_prompt_ending_in_a_space_continues_with_one_space():
    tokenizer = BPETokenizer.train([CODE], vocab_size=300)
    assert tokenizer.decode(tokenizer.encode("def ")[-1:]) == " "  # the cause: the space is a token alone
    name = int(tokenizer.encode("def read")[-1])  # " read": code has the space inside the name's token
    module = LanguageModel(AlwaysNext(tokenizer.vocab_size, name))
    module.tokenizer = tokenizer
    unhealed = module.model.generate(torch.as_tensor(tokenizer.encode("def "))[None], 1, temperature=0)
    assert tokenizer.decode(unhealed[0].tolist()) == "def  read"  # what the sample did before

    # " read" takes the place of the prompt's " ", then come the 2 new tokens: as many tokens as before
    assert module.generate_text("def ", max_new_tokens=2, temperature=0) == "def read read read"
    for seed in range(5):  # sampled, the prompt is kept whole as well, and the same seed gives the same text
        text = module.generate_text("def ", max_new_tokens=3, temperature=1.0, seed=seed)
        assert text.startswith("def ") and text == module.generate_text("def ", 3, 1.0, seed=seed)


def test_prompts_that_do_not_end_in_whitespace_are_not_healed():
    tokenizer = BPETokenizer.train([CODE], vocab_size=300)
    name = int(tokenizer.encode("def read")[-1])
    module = LanguageModel(AlwaysNext(tokenizer.vocab_size, name))
    module.tokenizer = tokenizer
    # a prompt ending in a word, or in the end-of-text token, goes on from exactly that token
    assert module.generate_text("def read", max_new_tokens=1, temperature=0) == "def read read"
    assert module.generate_text("x\n<|endoftext|>", max_new_tokens=1, temperature=0) == "x\n read"


# D. `predict` from a fine-tuned checkpoint reports no missing head; training from scratch does.


def test_the_new_head_is_reported_only_where_no_checkpoint_restores_it(sst_like_dir, tiny_bert, monkeypatch):
    reported: list[str] = []
    monkeypatch.setattr(classifier_module, "rank_zero_info", reported.append)
    args = classifier_overrides(sst_like_dir, tiny_bert, batch_size=8)
    main(["fit", *args, "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"])
    assert len(reported) == 1 and "classifier.bias, classifier.weight" in reported[0]

    predicted = run_cli(["predict", *args, "--ckpt_path", "last"], cwd=Path.cwd())
    output = predicted.stdout + predicted.stderr
    assert predicted.returncode == 0, output[-3000:]
    assert Path("predictions/minilm-sst2.csv").is_file()
    assert "MISSING" not in output and "classifier.weight" not in output, output[-3000:]
