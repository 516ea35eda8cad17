"""configs/trainer/*.yaml layer on every experiment config; the CPU-runnable ones run both LightningModules."""

# Fixtures imported from bert_fixtures come back as test parameters of the same name, by design.
# ruff: noqa: F811

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bert_fixtures import sst_like_dir, tiny_bert  # noqa: F401
from lm_helpers import tiny_lm_overrides

from lightning_llm.cli import main

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
        "strategy.class_path": "lightning.pytorch.strategies.ModelParallelStrategy",
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
    return [
        "--config",
        str(REPO / "configs" / "minilm-sst2.yaml"),
        "--model.init_args.pretrained",
        str(tiny_bert),
        "--data.data_dir",
        str(sst_like_dir),
        "--data.batch_size",
        "4",
        "--trainer.logger.init_args.save_dir",
        "logs",
    ]


# SequenceClassifier uses a fused AdamW, and minilm-sst2.yaml clips gradients: Lightning 2.6 refuses to
# clip a fused optimizer under bf16-mixed until the classifier overrides configure_gradient_clipping
# (lightning_llm.parallel.clip_gradients, as LanguageModel does).
CLASSIFIER_BF16 = pytest.mark.xfail(
    reason="SequenceClassifier needs configure_gradient_clipping -> lightning_llm.parallel.clip_gradients",
    raises=RuntimeError,
    strict=False,
)


@pytest.mark.parametrize(
    "stack",
    [pytest.param(name, marks=CLASSIFIER_BF16) if "bf16" in name else name for name in CPU_STACKS],
)
def test_classifier_runs_under_cpu_presets(stack, sst_like_dir, tiny_bert):
    args = ["fit", *classifier_args(sst_like_dir, tiny_bert), *preset_args(CPU_STACKS[stack])]
    main([*args, "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1"])


def test_classifier_trains_under_the_ddp_preset_on_two_cpu_processes(sst_like_dir, tiny_bert):
    args = ["fit", *classifier_args(sst_like_dir, tiny_bert), *preset_args(["ddp"])]
    args += ["--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.max_epochs", "1"]
    args += ["--trainer.limit_val_batches", "1", "--trainer.enable_progress_bar", "false"]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "lightning_llm", *args], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Starting with 2 processes" in done.stderr + done.stdout
    assert list(Path("logs/minilm-sst2/version_0/checkpoints").glob("*.ckpt"))
