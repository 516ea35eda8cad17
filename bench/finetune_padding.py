"""MiniLM fine-tuning speed on SST-2 by batching and precision, against the Hugging Face Trainer.

Project settings run `lightning-llm fit --config configs/minilm-sst2.yaml` (batch 32, fused AdamW, linear
warmup/decay) with the data module's batching: every batch padded to max_length 128 (the classic static
padding, added by the bench around the project's collate), random batches padded to their longest text
(`group_by_length: false`), and length-grouped batches (the config's default); in fp32 and bf16 autocast.
The peer is `transformers.Trainer` on the same pre-tokenised texts, weights and hyperparameters, with its
`group_by_length` sampler and `DataCollatorWithPadding`, in fp32 and bf16. Each setting is its own process;
after training, every model is scored on the same dev batches.

Every setting trains one epoch over the same random sample of SST-2's training texts, each with its own
sampler, and every step is timed: so examples/s compare like a whole epoch's would (a run over a few
batches of different texts would not: a step's cost depends on its lengths and has a large fixed part,
the optimizer over 22.7M parameters). The slow settings (pad to 128, and bf16 on CPUs without native
bf16) train a smaller sample; only settings with the same sample compare.

    python bench/finetune_padding.py          # quick (`make bench` budget): QUICK settings, 256 examples
    python bench/finetune_padding.py --full   # every setting: 4096 examples, 512 for the slow ones
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from collections import deque
from typing import Any

from harness import machine, report, run_child, script_parser, table_columns, threads_env

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
COLUMNS = table_columns(
    "setting: {setting}",
    "trained examples: {examples:d}",
    "examples/s: {examples_per_s:.1f}",
    "examples/CPU-s: {examples_per_cpu_s:.1f}",
    "text tokens/s: {tokens_per_s:.0f}",
    "pad tokens: {pad_fraction:.1%}",
    "dev accuracy: {dev_accuracy:.3f}",
    "peak RSS MB: {peak_rss_mb:.0f}",
    "vs HF best: {vs_hf_best:.2f}",
    "vs HF best, CPU time: {cpu_vs_hf_best:.2f}",
)


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


def training_sample(size: int, count: int) -> list[int]:
    """The same `count` of `size` training texts for every setting (a seeded sample, in file order)."""
    return sorted(random.Random(0).sample(range(size), count))


def project_run(batching: str, precision: str, examples: int, score: bool) -> dict[str, Any]:
    from _minilm import BatchStats, LightningBatchStats, build_fit, dev_accuracy

    from lightning_llm.data.classification import TokenizedTexts

    steps = examples // BATCH_SIZE
    stats = BatchStats(0)
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
        setup = datamodule.setup

        def setup_on_sample(stage: str) -> None:
            setup(stage)
            texts = datamodule.datasets["train"]
            if len(texts) > examples:
                keep = training_sample(len(texts), examples)
                datamodule.datasets["train"] = TokenizedTexts(
                    [texts.input_ids[i] for i in keep],
                    [texts.token_type_ids[i] for i in keep] if texts.token_type_ids else None,
                    [texts.labels[i] for i in keep],
                )

        datamodule.setup = setup_on_sample
        if batching == "pad_to_max":
            make_loader = datamodule.train_dataloader

            def padded_loader() -> Any:
                loader = make_loader()
                loader.collate_fn = PadToLength(loader.collate_fn, datamodule.max_length)
                return loader

            datamodule.train_dataloader = padded_loader
        cli.trainer.fit(cli.model, datamodule=datamodule)
        accuracy = dev_accuracy(cli.model.model, datamodule) if score else None
        return {**stats.summary(), "dev_accuracy": accuracy}


def hf_run(batching: str, precision: str, examples: int, score: bool) -> dict[str, Any]:
    import yaml
    from _minilm import CONFIG, BatchStats, dev_accuracy, pretokenised_sst2
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    config = yaml.safe_load(CONFIG.read_text())
    hparams = config["model"]["init_args"]
    datamodule, path = pretokenised_sst2()
    texts = datamodule.datasets["train"]
    train = [
        {"input_ids": texts.input_ids[i], "labels": texts.labels[i]}
        for i in training_sample(len(texts), examples)
    ]
    steps = examples // BATCH_SIZE
    stats = BatchStats(0)
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
        "dev_accuracy": dev_accuracy(model, datamodule) if score else None,
        "optimizer": str(arguments.optim),
    }


def run_setting(name: str, examples: int, score: bool) -> dict[str, Any]:
    runner, batching, precision = SETTINGS[name]
    run = project_run if runner == "project" else hf_run
    return run(batching, precision, examples, score)


def is_slow(name: str) -> bool:
    _, batching, precision = SETTINGS[name]
    return batching == "pad_to_max" or precision == "bf16-mixed"


def main() -> None:
    parser = script_parser(__doc__, full="enough examples for stable figures")
    parser.add_argument("--examples", type=int, help="training sample per setting (256, --full 4096)")
    parser.add_argument("--slow-examples", type=int, help="sample for pad to 128 and bf16 (64, --full 512)")
    parser.add_argument("--settings", nargs="*", choices=list(SETTINGS), help="default: QUICK, --full all")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: torch's, one per core)")
    parser.add_argument(
        "--one", choices=list(SETTINGS), help=argparse.SUPPRESS
    )  # internal: one setting, here
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_setting(args.one, args.examples, args.full)))
        return
    examples = args.examples or (4096 if args.full else 256)
    slow_examples = args.slow_examples or (512 if args.full else 64)
    before = machine()
    if args.threads is not None:
        before["torch_threads"] = args.threads
    rows = []
    for name in args.settings or (list(SETTINGS) if args.full else QUICK):
        count = slow_examples if is_slow(name) else examples
        argv = [__file__, "--one", name, "--examples", str(count), *(["--full"] if args.full else [])]
        result = run_child(argv, threads_env(args.threads))
        print(f"{name}: {result}", file=sys.stderr)
        rows.append({"setting": name, **result})
    measured = [row for row in rows if "error" not in row]
    hf = [row for row in measured if row["setting"].startswith("HF")]
    project = [row for row in measured if row["setting"].startswith("project")]
    hf_best = max(hf, key=lambda row: row["examples_per_s"], default=None)
    # "Accurate" settings: trained on as many examples as the HF best, so their dev accuracies compare.
    comparable = [row for row in project if hf_best is None or row["examples"] == hf_best["examples"]]
    project_best = max(comparable, key=lambda row: row["examples_per_s"], default=None)
    for row in measured:
        if hf_best and row["examples"] == hf_best["examples"]:
            row["vs_hf_best"] = row["examples_per_s"] / hf_best["examples_per_s"]
            # Per CPU second of each process: the ratio without the other jobs of a shared machine.
            row["cpu_vs_hf_best"] = row["examples_per_cpu_s"] / hf_best["examples_per_cpu_s"]
    ratio = project_best["vs_hf_best"] if project_best and hf_best else None
    accurate = project_best is not None and hf_best is not None and args.full
    accurate = accurate and project_best["dev_accuracy"] >= hf_best["dev_accuracy"]
    print(
        f"\nMiniLM-L6 fine-tuning, one epoch over the same {examples} SST-2 training texts ({slow_examples} for "
        f"the slow settings), batch {BATCH_SIZE}, every step timed, "
        f"{before['torch_threads']} threads, load {before['load_average_1m']}; "
        + (
            "dev accuracy on 872 dev texts\n"
            if args.full
            else "dev accuracy in --full only (a few steps teach nothing)\n"
        )
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
        accuracies = "accuracy compared in --full (HF groups lengths less on a sample this small)"
        if args.full:
            accuracies = f"dev accuracy {project_best['dev_accuracy']:.3f} vs {hf_best['dev_accuracy']:.3f}"
        print(f"fastest project setting / fastest HF setting: {ratio:.2f}x (target {TARGET}x); {accuracies}")


if __name__ == "__main__":
    main()
