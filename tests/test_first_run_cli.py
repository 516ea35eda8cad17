"""What a new user meets first on the command line: exact keys with a did-you-mean, help that leads to the
keys of the config in hand, a progress bar that reads step-based runs, and one line when a run ends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lm_helpers import SHAKESPEARE_CONFIG, tiny_lm_overrides

from lightning_llm.callbacks.progress import StepAwareProgressBar
from lightning_llm.cli import main


def exit_code_and_output(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(args)
    captured = capsys.readouterr()
    return exited.value.code or 0, captured.out, captured.err


def lm_args(corpus: Path, *extra: str) -> list[str]:
    return ["fit", "--config", str(SHAKESPEARE_CONFIG), *tiny_lm_overrides(corpus), *extra]


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("--trainer.max_step", "--trainer.max_steps"),  # a prefix argparse would have expanded silently
        ("--trainer.max_stpes", "--trainer.max_steps"),
        ("--model.init_args.learning_rat", "--model.init_args.learning_rate"),
        ("--model.init_args.model.init_args.n_layr", "--model.init_args.model.init_args.n_layer"),
        ("--data.block_siz", "--data.block_size"),
    ],
)
def test_an_inexact_key_is_refused_with_the_closest_one(typed, meant, tiny_corpus, capsys):
    code, _, err = exit_code_and_output(lm_args(tiny_corpus, typed, "10"), capsys)
    assert code == 2
    assert f"did you mean {meant}?" in err
    assert "lightning-llm fit" in err and "--help" in err  # the command that lists the valid keys


def test_generate_refuses_a_prefix_of_its_options(capsys):
    code, _, err = exit_code_and_output(["generate", "--max_new_tok", "3"], capsys)
    assert code == 2 and "did you mean --max_new_tokens?" in err and "lightning-llm generate --help" in err


def test_help_lists_every_command(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "generate", "consolidate"):
        assert f"\n  {command} " in out
    assert "--config <experiment>.yaml --help" in out


def test_help_with_a_config_lists_its_model_and_data_keys_with_the_configs_values(capsys):
    main(["fit", "--config", str(SHAKESPEARE_CONFIG), "--help"])
    out = capsys.readouterr().out
    assert "model.init_args.model: lightning_llm.models.GPT" in out
    assert "--model.init_args.learning_rate\n      Peak learning rate" in out
    assert "--model.init_args.model.init_args.n_layer" in out and "--data.init_args.block_size" in out
    learning_rate = out.split("--model.init_args.learning_rate", 1)[1].split("--model", 1)[0]
    assert "(default: 0.001)" in learning_rate  # the config's value, not the class default 6e-4


def test_model_help_finds_the_module_by_its_short_name(capsys):
    code, out, _ = exit_code_and_output(["fit", "--model.help", "LanguageModel"], capsys)
    assert code == 0 and "--model.learning_rate" in out


def test_a_step_based_run_shows_no_negative_epoch_count():
    class Trainer:
        max_epochs, max_steps = -1, 2000

    bar = StepAwareProgressBar()
    bar._trainer = Trainer()
    assert bar._get_train_description(0).strip() == "Epoch 0"


def test_fit_ends_with_one_line_naming_the_checkpoints_and_the_next_command(tiny_corpus, capsys):
    main(lm_args(tiny_corpus, "--trainer.max_steps", "4", "--trainer.val_check_interval", "2"))
    summary = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Done: ")]
    assert len(summary) == 1
    line = summary[0]
    assert "best checkpoint logs/gpt-shakespeare-char/version_0/checkpoints/step4-val" in line
    named, shown = re.search(r"-val(\d+\.\d+)\.ckpt \(val/loss (\d+\.\d+)\)", line).groups()
    assert abs(float(named) - float(shown)) < 1e-3  # the best checkpoint's loss, not the last validation's
    assert "last logs/gpt-shakespeare-char/version_0/checkpoints/last.ckpt" in line
    assert "logs in logs/gpt-shakespeare-char/version_0" in line
    assert "next: lightning-llm generate --ckpt_path" in line


def test_help_with_a_config_naming_a_missing_class_is_one_error(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  class_path: lightning_llm.nope.Nope\n")
    code, _, err = exit_code_and_output(["fit", "--config", str(config), "--help"], capsys)
    assert code == 2 and "error: model.class_path 'lightning_llm.nope.Nope' cannot be imported" in err
