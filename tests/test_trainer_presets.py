"""configs/trainer/*.yaml layer on every experiment config; the CPU-runnable ones run both LightningModules."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from bert_fixtures import classifier_overrides, sst_like_dir, tiny_bert  # noqa: F401
from lm_helpers import tiny_lm_overrides

from lightning_llm.checkpoints import load_module
from lightning_llm.cli import main
from lightning_llm.consolidate import consolidate
from lightning_llm.lit.classifier import SequenceClassifier
from lightning_llm.models.hf_encoder import HFEncoderClassifier

REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted((REPO / "configs").glob("*.yaml"))
PRESETS = sorted((REPO / "configs" / "trainer").glob("*.yaml"))
# What each preset must set, read back from the merged config.
EXPECTED = {
    "cpu": {"accelerator": "cpu", "devices": 1, "precision": "32-true"},
    "gpu": {"accelerator": "gpu", "devices": 1},
    "debug": {"fast_dev_run": 2},
    "bf16": {"precision": "bf16-mixed"},
    "ddp": {"strategy.class_path": "lightning.pytorch.strategies.DDPStrategy", "num_nodes": 1},
    "fsdp": {
        "strategy.class_path": "lightning.pytorch.strategies.FSDPStrategy",
        "strategy.init_args.state_dict_type": "sharded",
        "strategy.init_args.sharding_strategy": "FULL_SHARD",
    },
    "fsdp2": {
        "strategy.class_path": "lightning_llm.parallel.FSDP2Strategy",
        "strategy.init_args.save_distributed_checkpoint": True,
    },
}


def test_every_preset_is_known():
    assert {p.stem for p in PRESETS} == set(EXPECTED)


def lookup(config: dict, dotted: str):
    for key in dotted.split("."):
        config = config[key]
    return config


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
@pytest.mark.parametrize("experiment", EXPERIMENTS, ids=lambda p: p.stem)
def test_preset_parses_with_every_experiment(experiment, preset, capsys):
    with pytest.raises(SystemExit) as printed:
        main(["fit", "--config", str(experiment), "--config", str(preset), "--print_config"])
    assert printed.value.code == 0, capsys.readouterr().err
    merged = yaml.safe_load(capsys.readouterr().out)
    for key, value in EXPECTED[preset.stem].items():
        actual = lookup(merged["trainer"], key)
        assert str(actual) == str(value), f"{preset.stem} + {experiment.stem}: trainer.{key} is {actual!r}"
    # The experiment's own settings survive the layering (the model, data and callbacks are untouched).
    assert merged["model"]["class_path"] == yaml.safe_load(experiment.read_text())["model"]["class_path"]


def test_fsdp_preset_wraps_the_block_class_of_every_model(capsys):
    with pytest.raises(SystemExit):
        main(
            ["fit", "--config", str(EXPERIMENTS[0]), "--config", str(REPO / "configs/trainer/fsdp.yaml")]
            + ["--print_config"]
        )
    policy = yaml.safe_load(capsys.readouterr().out)["trainer"]["strategy"]["init_args"]["auto_wrap_policy"]
    assert set(policy) >= {
        "lightning_llm.models.gpt.Block",
        "torch.nn.TransformerEncoderLayer",
        "transformers.BertLayer",
    } or set(policy) >= {
        "lightning_llm.models.gpt.Block",
        "torch.nn.modules.transformer.TransformerEncoderLayer",
        "transformers.models.bert.modeling_bert.BertLayer",
    }


# --- the presets that run on a CPU, with both LightningModules ---

CPU_STACKS = {
    "cpu": ["cpu"],
    "cpu+bf16": ["cpu", "bf16"],
    "debug": ["debug"],
}


def preset_args(names: list[str]) -> list[str]:
    return [arg for name in names for arg in ("--config", str(REPO / "configs" / "trainer" / f"{name}.yaml"))]


@pytest.mark.parametrize("stack", CPU_STACKS, ids=str)
def test_language_model_runs_under_cpu_presets(stack, tiny_corpus):
    args = [
        "fit",
        "--config",
        str(REPO / "configs/gpt-shakespeare-char.yaml"),
        *preset_args(CPU_STACKS[stack]),
    ]
    args += tiny_lm_overrides(tiny_corpus)
    args += [
        "--trainer.max_steps",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.val_check_interval",
        "2",
    ]
    main(args)


def classifier_args(sst_like_dir: Path, tiny_bert: Path) -> list[str]:
    return classifier_overrides(sst_like_dir, tiny_bert)


@pytest.mark.parametrize("stack", CPU_STACKS, ids=str)
def test_classifier_runs_under_cpu_presets(stack, sst_like_dir, tiny_bert):
    args = ["fit", *classifier_args(sst_like_dir, tiny_bert), *preset_args(CPU_STACKS[stack])]
    main([*args, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"])


def test_classifier_trains_sharded_under_fsdp2_on_two_cpu_processes(sst_like_dir, tiny_bert):
    """FSDP2 (+ bf16-mixed, activation checkpointing, clipping) on 2 gloo processes; the sharded checkpoint
    consolidates into one file that loads strictly into a plain single-process SequenceClassifier."""
    args = ["fit", *classifier_args(sst_like_dir, tiny_bert), *preset_args(["fsdp2", "bf16"])]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_epochs", "1"]
    args += ["--model.init_args.activation_checkpointing", "true", "--trainer.enable_progress_bar", "false"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lightning_llm", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout
    # Lightning warns when an epoch-level metric is logged per process without sync_dist: val/loss is synced
    # (val/acc and the rest come from torchmetrics, whose compute() already gathers every process's counts)
    assert "self.log('val/loss', ..., sync_dist=True)" not in done.stderr, done.stderr[-2000:]
    # the config keeps the best checkpoint and last.ckpt: both are shard folders of the same final step
    [sharded] = [
        p for p in Path("logs/minilm-sst2/version_0/checkpoints").glob("*.ckpt") if p.name != "last.ckpt"
    ]
    assert sharded.is_dir() and len(list(sharded.glob("*.distcp"))) == 2

    merged = consolidate(str(sharded), "classifier.ckpt", optimizer=False)
    # 72 training rows, batch 4 per rank: each of the 2 ranks reads its own half, 9 steps an epoch
    assert torch.load(merged, weights_only=True)["global_step"] == 9
    plain = SequenceClassifier(HFEncoderClassifier(str(tiny_bert), num_labels=2))
    plain.load_state_dict(torch.load(merged, weights_only=True)["state_dict"], strict=True)
    loaded = load_module(SequenceClassifier, merged)
    batch = {"input_ids": torch.tensor([[2, 5, 11, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()._logits(batch), plain.eval()._logits(batch), rtol=0, atol=0)
