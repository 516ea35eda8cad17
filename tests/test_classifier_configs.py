"""Every shipped classifier config parses and runs fast_dev_run, with a tiny BERT saved to a temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from bert_fixtures import classifier_overrides, sst_like_dir, tiny_bert  # noqa: F401
from gpt_fixtures import gpt_checkpoints  # noqa: F401

from lightning_llm.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CLASSIFIER_CONFIGS = sorted(p for p in CONFIGS.glob("*.yaml") if "SequenceClassifier" in p.read_text())


def test_the_classifier_configs_are_found():
    assert {p.name for p in CLASSIFIER_CONFIGS} >= {"bert-sst2.yaml", "minilm-sst2.yaml"}


@pytest.mark.parametrize("config", CLASSIFIER_CONFIGS, ids=lambda p: p.stem)
def test_every_classifier_config_parses_and_runs_fast_dev_run(
    config,
    sst_like_dir,  # noqa: F811
    tiny_bert,  # noqa: F811
    gpt_checkpoints,  # noqa: F811
    capsys,
):
    pretrained = gpt_checkpoints["bpe"] if "GPTClassifier" in config.read_text() else tiny_bert
    args = classifier_overrides(sst_like_dir, pretrained, config)
    with pytest.raises(SystemExit) as printed:
        main(["fit", *args, "--print_config"])
    assert printed.value.code == 0
    assert "lightning_llm.lit.classifier.SequenceClassifier" in capsys.readouterr().out
    main(
        [
            "fit",
            *args,
            "--trainer.fast_dev_run",
            "2",
            "--trainer.precision",
            "32-true",
            "--trainer.accelerator",
            "cpu",
        ]
    )
