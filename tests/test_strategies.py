"""Scale-out on CPU: DDP and FSDP2 (2 processes, gloo) match one process; sharded checkpoints resume and
consolidate; bf16-mixed and torch.compile train; activation checkpointing changes no numbers.

Equivalence: 2 ranks x batch B see exactly the windows of 1 process x batch 2B at every step (rank r of
world W takes windows (position * W + r) * B ... of the same shuffled order, see data/windows.py), the loss
is a mean over equally many tokens per rank, and DDP / FSDP2 average the gradients. So the runs differ
only by float32 summation order (all-reduce of two half-batch gradients vs one full-batch gradient);
after 8 AdamW steps at lr 1e-2 parameters and logits agree to 1e-5 absolute (measured max ~2e-7).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lm_helpers import tiny_lm_overrides, write_tiny_corpus
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lightning_llm.checkpoints import load_module
from lightning_llm.cli import main
from lightning_llm.consolidate import consolidate
from lightning_llm.data.language_modeling import LanguageModelingDataModule
from lightning_llm.lit.language_model import LanguageModel
from lightning_llm.models import GPT
from lightning_llm.parallel import parallelize, repeated_blocks

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "gpt-shakespeare-char.yaml"
PRESETS = REPO / "configs" / "trainer"
STEPS = 8
TOLERANCE = {"rtol": 0.0, "atol": 1e-5}  # float32, different reduction order; see the module docstring


class SaveProbeLogits(Callback):
    """At the end of training every rank runs the model on a fixed input (a collective under FSDP2);
    rank 0 saves the logits."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logits = probe_logits(pl_module)
        if trainer.is_global_zero:
            torch.save(logits.cpu(), self.path)


def probe_logits(module: LanguageModel) -> torch.Tensor:
    vocab = module.tokenizer.vocab_size
    probe = (torch.arange(32).view(2, 16) * 7 % vocab).to(module.device)  # (2, 16)
    was_training = module.training
    module.eval()
    with torch.no_grad():
        logits, _ = module.model(probe)
    module.train(was_training)
    return logits.detach().float()


def fit_args(root: Path, name: str, batch_size: int, steps: int = STEPS) -> list[str]:
    """A 2-layer GPT on a tiny corpus, one checkpoint and one validation at the last step."""
    args = ["fit", "--config", str(CONFIG), *tiny_lm_overrides(root / "corpus.txt")]
    args += ["--data.cache_dir", str(root / "cache"), "--data.batch_size", str(batch_size)]
    args += ["--model.init_args.model.init_args.n_layer", "2", "--model.init_args.learning_rate", "1e-2"]
    # no biases: the attention key bias gets an exactly-zero gradient, which Adam turns from rounding noise
    # into full-size steps, so processes that sum in another order would drift apart there
    args += ["--model.init_args.model.init_args.bias", "false"]
    args += ["--model.init_args.warmup_steps", "2", "--model.init_args.decay_steps", str(STEPS)]
    args += ["--trainer.max_steps", str(steps), "--trainer.val_check_interval", str(steps)]
    args += ["--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.num_sanity_val_steps", "0", "--trainer.callbacks.max_new_tokens", "8"]
    args += ["--trainer.logger.init_args.save_dir", str(root / "logs")]
    args += ["--trainer.logger.init_args.version", name]
    probe = str(root / f"{name}.logits.pt")
    args += ["--trainer.callbacks+=test_strategies.SaveProbeLogits", "--trainer.callbacks.path", probe]
    return args


def run_dir(root: Path, name: str) -> Path:
    return root / "logs" / "gpt-shakespeare-char" / name


def run_in_subprocess(args: list[str], command: list[str] | None = None) -> subprocess.CompletedProcess:
    """`python -m lightning_llm ...`: Lightning's launcher starts rank 1 with the same command line."""
    env = os.environ | {
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
    }
    command = command or [sys.executable, "-m", "lightning_llm"]
    done = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def state_dict(ckpt: Path) -> dict[str, torch.Tensor]:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def val_loss(run: Path) -> float:
    events = EventAccumulator(str(run))
    events.Reload()
    return events.Scalars("val/loss")[-1].value


def assert_same_parameters(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name], tensor, **TOLERANCE, msg=lambda m, n=name: f"{n}: {m}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """One process, global batch 8, STEPS steps: the run every distributed run must reproduce."""
    root = tmp_path_factory.mktemp("strategies")
    write_tiny_corpus(root / "corpus.txt")
    sys.path.insert(0, str(REPO / "tests"))  # the probe callback is named `test_strategies.SaveProbeLogits`
    main(fit_args(root, "single", batch_size=8))
    return root


def test_ddp_two_processes_match_one_process(reference):
    root = reference
    args = fit_args(root, "ddp", batch_size=4) + ["--config", str(PRESETS / "ddp.yaml")]
    run_in_subprocess([*args, "--trainer.accelerator", "cpu", "--trainer.devices", "2"])
    single, ddp = run_dir(root, "single"), run_dir(root, "ddp")
    assert_same_parameters(
        state_dict(ddp / "checkpoints" / "last.ckpt"), state_dict(single / "checkpoints" / "last.ckpt")
    )
    assert val_loss(ddp) == pytest.approx(val_loss(single), abs=1e-5)
    torch.testing.assert_close(
        torch.load(root / "ddp.logits.pt"), torch.load(root / "single.logits.pt"), **TOLERANCE
    )


# Activation checkpointing on, so it composes with sharding (and keeps parameter names through resume).
FSDP2 = ["--config", str(PRESETS / "fsdp2.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "2"]
FSDP2 += ["--model.init_args.activation_checkpointing", "true"]


@pytest.fixture(scope="module")
def fsdp2_half(reference) -> Path:
    """FSDP2 on 2 ranks x batch 4 for the first half of the steps: a sharded checkpoint folder."""
    run_in_subprocess(fit_args(reference, "fsdp2", batch_size=4, steps=STEPS // 2) + FSDP2)
    return run_dir(reference, "fsdp2") / "checkpoints" / "last.ckpt"


def test_fsdp2_saves_one_shard_per_rank_and_consolidates(fsdp2_half, tmp_path):
    assert fsdp2_half.is_dir() and len(list(fsdp2_half.glob("*.distcp"))) == 2
    merged = torch.load(consolidate(str(fsdp2_half), str(tmp_path / "half.ckpt")), weights_only=True)
    assert merged["global_step"] == STEPS // 2 and "tokenizer" in merged and merged["optimizer_states"]
    assert not [key for key in merged["state_dict"] if "_checkpoint_wrapped" in key or "_fsdp" in key]


def test_fsdp2_resumes_matches_one_process_and_consolidates_to_identical_logits(reference, fsdp2_half):
    root = reference
    run_in_subprocess([*fit_args(root, "fsdp2", batch_size=4), *FSDP2, "--ckpt_path", str(fsdp2_half)])
    single_file = consolidate(str(fsdp2_half), str(root / "fsdp2.ckpt"), optimizer=False)
    assert torch.load(single_file, weights_only=True)["global_step"] == STEPS
    assert_same_parameters(
        state_dict(single_file), state_dict(run_dir(root, "single") / "checkpoints/last.ckpt")
    )
    assert val_loss(run_dir(root, "fsdp2")) == pytest.approx(val_loss(run_dir(root, "single")), abs=1e-5)

    # One process, no distributed setup: the consolidated file loads into a plain model, gives the
    # sharded model's logits, and generates text.
    module = load_module(LanguageModel, single_file)
    torch.testing.assert_close(probe_logits(module), torch.load(root / "fsdp2.logits.pt"), rtol=0, atol=1e-6)
    torch.testing.assert_close(probe_logits(module), torch.load(root / "single.logits.pt"), **TOLERANCE)
    text = module.generate_text("the ", max_new_tokens=10, temperature=0, seed=0)
    assert text.startswith("the ") and len(text) == 14


# --- one process: bf16-mixed, compile, activation checkpointing ---


def tiny_module(corpus: Path, **kwargs) -> tuple[LanguageModel, LanguageModelingDataModule]:
    dm = LanguageModelingDataModule(
        path=str(corpus), block_size=16, batch_size=8, cache_dir="cache", val_windows=16
    )
    model = GPT(vocab_size=dm.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32)
    return LanguageModel(model, learning_rate=3e-3, warmup_steps=2, decay_steps=100, **kwargs), dm


def trainer(**kwargs) -> pl.Trainer:
    options = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return pl.Trainer(**(options | kwargs))


class RecordGradNorms(Callback):
    """The total gradient norm the optimizer steps with (after clipping)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.norms: list[float] = []

        def record(optimizer, args, kwargs) -> None:
            grads = [
                p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None
            ]
            self.norms.append(torch.nn.utils.get_total_norm(grads).item())

        trainer.optimizers[0].register_step_pre_hook(record)


def test_bf16_mixed_on_cpu_trains_the_loss_falls_and_gradients_are_clipped(tiny_corpus):
    pl.seed_everything(0)
    module, dm = tiny_module(tiny_corpus)
    norms = RecordGradNorms()
    # Lightning alone refuses to clip with a fused optimizer under mixed precision (an fp16 concern).
    run = trainer(
        precision="bf16-mixed", max_steps=40, limit_val_batches=2, gradient_clip_val=0.1, callbacks=[norms]
    )
    before = run.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    run.fit(module, datamodule=dm)
    after = run.validate(module, datamodule=dm, verbose=False)[0]["val/loss"]
    assert run.precision == "bf16-mixed" and run.optimizers[0].defaults["fused"]
    assert after < before - 0.5, (before, after)
    assert len(norms.norms) == 40 and max(norms.norms) <= 0.1 * 1.001


def test_compile_on_cpu_trains_and_its_checkpoint_loads_uncompiled(tiny_corpus, tmp_path):
    pl.seed_everything(0)
    module, dm = tiny_module(tiny_corpus, compile=True)
    run = trainer(max_steps=3, limit_val_batches=0)
    run.fit(module, datamodule=dm)
    assert all(block._compiled_call_impl is not None for block in module.model.blocks)
    run.save_checkpoint(tmp_path / "compiled.ckpt")
    keys = state_dict(tmp_path / "compiled.ckpt").keys()
    assert not [key for key in keys if "_orig_mod" in key or "_checkpoint_wrapped" in key]

    plain = LanguageModel.load_from_checkpoint(
        tmp_path / "compiled.ckpt", model=GPT(dm.vocab_size, 16, 1, 2, 32), weights_only=True
    )
    assert all(block._compiled_call_impl is None for block in plain.model.blocks)
    x, y = next(iter(dm.train_dataloader()))
    # The training graph (train mode, grad on, same shapes) is reused: no new compilation.
    compiled_logits = module.train().model(x, y)[0].detach()
    plain_logits = plain.train().model(x, y)[0].detach()
    torch.testing.assert_close(plain_logits, compiled_logits, rtol=0, atol=1e-5)
    with torch.compiler.set_stance("force_eager"):  # the same weights, run eagerly: bit for bit
        torch.testing.assert_close(plain_logits, module.model(x, y)[0].detach(), rtol=0, atol=0)


def test_activation_checkpointing_keeps_names_and_gradients(tiny_corpus):
    torch.manual_seed(0)
    plain = GPT(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
    checkpointed = GPT(vocab_size=40, block_size=16, n_layer=2, n_head=2, n_embd=16)
    checkpointed.load_state_dict(plain.state_dict())
    parallelize(checkpointed, activation_checkpointing=True)
    assert "CheckpointWrapper" in type(checkpointed.blocks[0]).__name__
    assert checkpointed.state_dict().keys() == plain.state_dict().keys()
    x = torch.randint(0, 40, (4, 16))
    for model in (plain, checkpointed):
        model(x, x)[1].backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, rtol=0, atol=0, msg=name)
    parallelize(checkpointed, activation_checkpointing=True)  # a second configure_model: no double wrap
    assert "CheckpointWrapper" not in type(checkpointed.blocks[0]._checkpoint_wrapped_module).__name__


def test_repeated_blocks_of_gpt_transformer_lm_and_bert():
    from transformers import BertConfig, BertForSequenceClassification

    from lightning_llm.models import TransformerLM

    gpt = GPT(vocab_size=20, block_size=8, n_layer=3, n_head=2, n_embd=8)
    assert repeated_blocks(gpt) is gpt.transformer.h
    lm = TransformerLM(vocab_size=20, d_model=8, nhead=2, d_hid=16, nlayers=2, block_size=8)
    assert repeated_blocks(lm) is lm.encoder.layers
    bert = BertForSequenceClassification(
        BertConfig(
            vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=20
        )
    )
    assert repeated_blocks(bert) is bert.bert.encoder.layer
    with pytest.raises(ValueError, match="no `blocks` ModuleList"):
        repeated_blocks(torch.nn.Linear(2, 2))


def test_consolidate_reads_fsdp1_folders_and_refuses_files(tmp_path, capsys):
    """FSDPStrategy's sharded folders keep the weights under `model` (FSDP2's under `state_dict`)."""
    import torch.distributed.checkpoint as dcp

    def consolidate_main(args: list[str]) -> None:
        main(["consolidate", *args])  # `lightning-llm consolidate ...`

    folder = tmp_path / "last.ckpt"
    weights = {"model.w": torch.arange(6.0).view(2, 3)}
    dcp.save(
        {"model": weights, "optimizer_0": {"state": {"model.w": {"step": torch.tensor(3.0)}}}},
        checkpoint_id=folder,
        no_dist=True,
    )
    torch.save({"global_step": 3, "hyper_parameters": {}}, folder / "meta.pt")
    consolidate_main([str(folder)])
    merged = torch.load(tmp_path / "last.consolidated.ckpt", weights_only=True)
    torch.testing.assert_close(merged["state_dict"]["model.w"], weights["model.w"])
    assert merged["global_step"] == 3 and merged["optimizer_states"][0]["state"]["model.w"]["step"] == 3
    for bad in (tmp_path / "last.consolidated.ckpt", tmp_path / "missing"):
        with pytest.raises(SystemExit) as exited:
            consolidate_main([str(bad)])
        assert exited.value.code == 2
    assert "needs no consolidation" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        consolidate_main([str(folder)])  # the output exists: refuse rather than overwrite
    assert "already exists" in capsys.readouterr().err
