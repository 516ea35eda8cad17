"""MiniLM fine-tuning speed on SST-2 by batching and precision, against the Hugging Face Trainer.

Project settings run `lightning-llm fit --config configs/minilm-sst2.yaml` (batch 32, fused AdamW, linear
warmup/decay) with the data module's batching: every batch padded to max_length 128 (the classic static
padding, added by the bench around the project's collate), random batches padded to their longest text
(`group_by_length: false`), and length-grouped batches (the config's default); in fp32 and bf16 autocast.
The peer is `transformers.Trainer` on the same pre-tokenised texts, weights and hyperparameters, with its
`group_by_length` sampler and `DataCollatorWithPadding`, in fp32 and bf16. Each setting is its own process;
after training, every model is scored on the same dev batches. bf16 runs train fewer examples (they are
slow on CPUs without native bf16), so their accuracy is not comparable.

    python bench/finetune_padding.py          # quick (`make bench` budget): QUICK settings, 128 examples each
    python bench/finetune_padding.py --full   # every setting: 4096 examples per fp32 one, 512 per bf16 one
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import deque
from typing import Any

from _common import Column, machine, report, run_child, threads_env

TARGET = 1.2  # the bar: the project's fastest accurate setting against the HF Trainer's best
BATCH_SIZE = 32  # configs/minilm-sst2.yaml
# name: (runner, batching, precision)
SETTINGS = {
    "project, pad to 128, fp32": ("project", "pad_to_max", "32-true"),
    "project, dynamic padding, fp32": ("project", "dynamic", "32-true"),
    "project, length-grouped, fp32": ("project", "grouped", "32-true"),
    "project, length-grouped, bf16": ("project", "grouped", "bf16-mixed"),
    "HF Trainer, group_by_length, fp32": ("hf", "grouped", "32-true"),
    "HF Trainer, group_by_length, bf16": ("hf", "grouped", "bf16-mixed"),
}
# Quick mode leaves out bf16 (slow on CPUs without native bf16 matmuls): it must fit `make bench`.
QUICK = [
    "project, pad to 128, fp32",
    "project, dynamic padding, fp32",
    "project, length-grouped, fp32",
    "HF Trainer, group_by_length, fp32",
]
COLUMNS: list[Column] = [
    ("setting", "setting", ""),
    ("examples", "trained examples", "d"),
    ("examples_per_s", "examples/s", ".1f"),
    ("examples_per_cpu_s", "examples/CPU-s", ".1f"),
    ("tokens_per_s", "text tokens/s", ".0f"),
    ("pad_fraction", "pad tokens", ".1%"),
    ("dev_accuracy", "dev accuracy", ".3f"),
    ("peak_rss_mb", "peak RSS MB", ".0f"),
    ("vs_hf_best", "tokens/s vs HF best", ".2f"),
    ("cpu_vs_hf_best", "vs HF best, CPU time", ".2f"),
]


class PadToLength:
    """Wraps the project's collate so that every batch is padded to `length` tokens (static padding)."""

    def __init__(self, collate: Any, length: int) -> None:
        self.collate, self.length = collate, length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        from torch.nn import functional as F

        batch = self.collate(items)
        extra = self.length - batch["input_ids"].shape[1]
        batch["input_ids"] = F.pad(batch["input_ids"], (0, extra), value=self.collate.pad_token_id)
        batch["attention_mask"] = F.pad(batch["attention_mask"], (0, extra), value=0)
        return batch


def project_run(batching: str, precision: str, steps: int, warmup: int) -> dict[str, Any]:
    from _minilm import BatchStats, LightningBatchStats, build_fit, dev_accuracy

    stats = BatchStats(warmup)
    overrides = ["--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0"]
    overrides += [
        "--trainer.precision",
        precision,
        "--data.init_args.group_by_length",
        str(batching == "grouped"),
    ]
    with tempfile.TemporaryDirectory() as logs:
        cli = build_fit(overrides, [LightningBatchStats(stats)], logs)
        datamodule = cli.datamodule
        if batching == "pad_to_max":
            make_loader = datamodule.train_dataloader

            def padded_loader() -> Any:
                loader = make_loader()
                loader.collate_fn = PadToLength(loader.collate_fn, datamodule.max_length)
                return loader

            datamodule.train_dataloader = padded_loader
        cli.trainer.fit(cli.model, datamodule=datamodule)
        return {**stats.summary(), "dev_accuracy": dev_accuracy(cli.model.model, datamodule)}


def hf_run(batching: str, precision: str, steps: int, warmup: int) -> dict[str, Any]:
    import yaml
    from _minilm import CONFIG, SST2, BatchStats, dev_accuracy
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from lightning_llm.data.classification import TextClassificationDataModule
    from lightning_llm.pretrained import resolve_pretrained

    config = yaml.safe_load(CONFIG.read_text())
    hparams = config["model"]["init_args"]
    path = resolve_pretrained(hparams["pretrained"])
    # The project's reader and tokeniser give the same ids a `datasets.map(tokenizer)` would: pre-tokenised.
    datamodule = TextClassificationDataModule(
        **{**config["data"]["init_args"], "data_dir": str(SST2), "tokenizer": hparams["pretrained"]}
    )
    datamodule.setup("fit")
    texts = datamodule.datasets["train"]
    train = [
        {"input_ids": ids, "labels": label} for ids, label in zip(texts.input_ids, texts.labels, strict=True)
    ]
    stats = BatchStats(warmup)
    masks: deque = deque()  # collated batches, oldest first (the loader may run ahead of the steps)
    padding = DataCollatorWithPadding(AutoTokenizer.from_pretrained(path))

    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = padding(items)
        masks.append(batch["attention_mask"])
        return batch

    class Timing(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stats.batch_start(state.global_step, masks.popleft())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stats.batch_end(state.global_step - 1)

    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(datamodule.label_names))
    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(
            output_dir=output,
            per_device_train_batch_size=BATCH_SIZE,
            learning_rate=hparams["learning_rate"],
            weight_decay=hparams["weight_decay"],
            warmup_steps=hparams["warmup_ratio"],  # a float below 1 is a ratio
            lr_scheduler_type="linear",
            max_grad_norm=config["trainer"]["gradient_clip_val"],
            max_steps=steps,
            train_sampling_strategy="group_by_length" if batching == "grouped" else "random",
            bf16=precision == "bf16-mixed",
            use_cpu=True,
            seed=config["seed_everything"],
            logging_steps=config["trainer"]["log_every_n_steps"],
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
        )
        trainer = Trainer(
            model=model, args=arguments, train_dataset=train, data_collator=collate, callbacks=[Timing()]
        )
        trainer.train()
    return {
        **stats.summary(),
        "dev_accuracy": dev_accuracy(model, datamodule),
        "optimizer": str(arguments.optim),
    }


def run_setting(name: str, examples: int, warmup: int) -> dict[str, Any]:
    runner, batching, precision = SETTINGS[name]
    steps = warmup + max(1, examples // BATCH_SIZE)
    run = project_run if runner == "project" else hf_run
    return run(batching, precision, steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="enough examples for stable figures")
    parser.add_argument(
        "--examples", type=int, help="timed training examples per fp32 setting (256, --full 4096)"
    )
    parser.add_argument("--bf16-examples", type=int, help="timed examples per bf16 setting (32, --full 512)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps of each setting")
    parser.add_argument("--settings", nargs="*", choices=list(SETTINGS), help="default: QUICK, --full all")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's, one per core)")
    parser.add_argument(
        "--one", choices=list(SETTINGS), help=argparse.SUPPRESS
    )  # internal: one setting, here
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_setting(args.one, args.examples, args.warmup)))
        return
    examples = args.examples or (4096 if args.full else 128)
    bf16_examples = args.bf16_examples or (512 if args.full else 32)
    before = machine()
    if args.threads is not None:
        before["torch_threads"] = args.threads
    rows = []
    for name in args.settings or (list(SETTINGS) if args.full else QUICK):
        count = bf16_examples if SETTINGS[name][2] == "bf16-mixed" else examples
        argv = [__file__, "--one", name, "--examples", str(count), "--warmup", str(args.warmup)]
        result = run_child(argv, threads_env(args.threads))
        print(f"{name}: {result}", file=sys.stderr)
        rows.append({"setting": name, **result})
    measured = [row for row in rows if "error" not in row]
    hf = [row for row in measured if row["setting"].startswith("HF")]
    project = [row for row in measured if row["setting"].startswith("project")]
    # Speeds compare by text tokens/s: a run of a few hundred examples draws different lengths in each
    # sampler, and over a whole epoch (the same texts for all) examples/s is proportional to it.
    hf_best = max(hf, key=lambda row: row["tokens_per_s"], default=None)
    # "Accurate" settings: trained on as many examples as the HF best, so their dev accuracies compare.
    comparable = [row for row in project if hf_best is None or row["examples"] == hf_best["examples"]]
    project_best = max(comparable, key=lambda row: row["tokens_per_s"], default=None)
    for row in measured:
        if hf_best:
            row["vs_hf_best"] = row["tokens_per_s"] / hf_best["tokens_per_s"]
            # Per CPU second of each process: the ratio without the other jobs of a shared machine.
            row["cpu_vs_hf_best"] = row["examples_per_cpu_s"] / hf_best["examples_per_cpu_s"]
    ratio = project_best["vs_hf_best"] if project_best and hf_best else None
    accurate = project_best is not None and hf_best is not None
    accurate = accurate and project_best["dev_accuracy"] >= hf_best["dev_accuracy"]
    print(
        f"\nMiniLM-L6 fine-tuning on SST-2 train, batch {BATCH_SIZE}, {args.warmup} untimed steps per setting, "
        f"{before['torch_threads']} threads, load {before['load_average_1m']}; dev accuracy on 872 dev texts\n"
    )
    report(
        "finetune_padding",
        args.full,
        rows,
        COLUMNS,
        machine=before,
        project_best=project_best and project_best["setting"],
        hf_best=hf_best and hf_best["setting"],
        project_over_hf=ratio,
        target_ratio=TARGET,
        accuracy_at_least_hf=accurate,
        target_met=ratio is not None and ratio >= TARGET and accurate,
    )
    if ratio is not None:
        print(
            f"fastest project setting / fastest HF setting: {ratio:.2f}x (target {TARGET}x); dev accuracy "
            f"{project_best['dev_accuracy']:.3f} vs {hf_best['dev_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
