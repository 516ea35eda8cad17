"""The command line as a user meets it: configs, training, generation, and one clear error per mistake."""

from pathlib import Path

import pytest
import yaml
from lm_helpers import tiny_lm_overrides
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_llm.cli import main
from lightning_llm.generate import main as generate_main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
LM_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if "language_model" in p.read_text())


def model_class(config: Path) -> str:
    return yaml.safe_load(config.read_text())["model"]["init_args"]["model"]["class_path"].rsplit(".", 1)[-1]


@pytest.mark.parametrize("config", LM_CONFIGS, ids=lambda p: p.stem)
def test_every_lm_config_parses_and_runs_fast_dev_run(config, tiny_corpus, capsys):
    tokenizer = yaml.safe_load(config.read_text())["data"]["init_args"].get("tokenizer", "char")
    args = ["--config", str(config), *tiny_lm_overrides(tiny_corpus, model_class(config), tokenizer)]
    with pytest.raises(SystemExit) as printed:
        main(["fit", *args, "--print_config"])
    assert printed.value.code == 0
    assert "class_path: lightning_llm.lit.language_model.LanguageModel" in capsys.readouterr().out
    main(["fit", *args, "--trainer.fast_dev_run", "2", "--trainer.precision", "32-true"])


def test_fit_then_generate_from_the_checkpoint(tiny_corpus, capsys):
    config = CONFIGS / "gpt-shakespeare-char.yaml"
    args = ["fit", "--config", str(config), *tiny_lm_overrides(tiny_corpus), "--trainer.max_steps", "6"]
    args += ["--trainer.val_check_interval", "3", "--trainer.log_every_n_steps", "2"]
    main(args)
    run_dir = Path("logs/gpt-shakespeare-char/version_0")
    assert (run_dir / "config.yaml").is_file()
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert {"train/loss", "val/loss", "val/ppl", "train/lr", "train/tokens_per_sec"} <= set(
        events.Tags()["scalars"]
    )
    assert "samples/text/text_summary" in events.Tags()["tensors"]
    capsys.readouterr()
    main(["generate", "--ckpt_path", str(ckpt), "--prompt", "the ", "--max_new_tokens", "12", "--seed", "1"])
    first = capsys.readouterr().out
    assert first.startswith("the ") and len(first.strip()) >= 4
    generate_main(["--ckpt_path", str(ckpt), "--prompt", "the ", "--max_new_tokens", "12", "--seed", "1"])
    assert capsys.readouterr().out == first  # same seed, same text


def run_error(args, capsys) -> str:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code not in (0, None)
    return capsys.readouterr().err


def lm_args(corpus) -> list[str]:
    return ["fit", "--config", str(CONFIGS / "gpt-shakespeare-char.yaml"), *tiny_lm_overrides(corpus)]


def test_missing_path_is_one_clear_error(tiny_corpus, tmp_path, capsys):
    err = run_error([*lm_args(tiny_corpus), "--data.path", str(tmp_path / "nope.txt")], capsys)
    assert "error: data path" in err and "nope.txt does not exist" in err and "Traceback" not in err


def test_empty_file_is_one_clear_error(tiny_corpus, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    err = run_error([*lm_args(tiny_corpus), "--data.path", str(empty)], capsys)
    assert "error: the corpus is empty" in err and "Traceback" not in err


def test_directory_without_text_is_one_clear_error(tiny_corpus, tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"\x89PNG")
    err = run_error([*lm_args(tiny_corpus), "--data.path", str(tmp_path / "images")], capsys)
    assert "holds no text files" in err and "Traceback" not in err


def test_config_key_typo_is_one_clear_error(tiny_corpus, tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    text = (CONFIGS / "gpt-shakespeare-char.yaml").read_text().replace("learning_rate:", "learnig_rate:")
    config.write_text(text)
    err = run_error(["fit", "--config", str(config), *tiny_lm_overrides(tiny_corpus)], capsys)
    assert "learnig_rate" in err and "Traceback" not in err


def test_prompt_with_unseen_characters_is_one_clear_error(tiny_corpus, capsys):
    main([*lm_args(tiny_corpus), "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"])
    ckpt = Path("logs/gpt-shakespeare-char/version_0/checkpoints/last.ckpt")
    err = run_error(["generate", "--ckpt_path", str(ckpt), "--prompt", "Zürich ✓"], capsys)
    assert "never saw" in err and "'✓'" in err and "Traceback" not in err


def test_missing_checkpoint_is_one_clear_error(capsys):
    err = run_error(["generate", "--ckpt_path", "missing.ckpt"], capsys)
    assert "checkpoint missing.ckpt does not exist" in err
