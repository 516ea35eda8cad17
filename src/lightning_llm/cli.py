"""The `lightning-llm` command: a LightningCLI whose YAML names the module and data module by class_path."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_llm.callbacks.finite_loss import StopOnNonFiniteLoss
from lightning_llm.callbacks.graceful_stop import GracefulStop
from lightning_llm.callbacks.random_state import RandomStateCheckpoint
from lightning_llm.checkpoints import check_fits, read_checkpoint, use_atomic_checkpoints
from lightning_llm.errors import UserError, exit_on_user_error

# Facts owned by the data module, copied into the model when both are built. A link whose source or
# target does not exist for the chosen classes is skipped by jsonargparse, so one CLI serves both jobs.
_INSTANTIATE_LINKS = (
    ("data.vocab_size", "model.init_args.model.init_args.vocab_size"),  # GPT
    ("data.block_size", "model.init_args.model.init_args.block_size"),  # GPT
    ("data.vocab_size", "model.init_args.model.init_args.ntoken"),  # TransformerLM
    ("data.block_size", "model.init_args.model.init_args.max_len"),  # TransformerLM
    ("data.num_labels", "model.init_args.num_labels"),  # SequenceClassifier
    ("data.label_names", "model.init_args.label_names"),  # SequenceClassifier
)
# The classifier's tokenizer is the one that belongs to its pretrained weights.
_PARSE_LINKS = (("model.init_args.pretrained", "data.init_args.tokenizer"),)


# The lines of a jsonargparse error that name the mistake; the rest repeats the whole config back.
_TELLING = re.compile(
    r"not accepted|not expected|Unrecognized|does not exist|No such file|Unknown|not found|Invalid"
)


# Lightning warnings that say nothing about the user's run: our window datasets define __len__ on purpose.
for _message in (r".*IterableDataset. has .__len__. defined.*", r".*isinstance\(treespec, LeafSpec\).*"):
    warnings.filterwarnings("ignore", message=_message)


class ConciseArgumentParser(LightningArgumentParser):
    """Prints a config mistake as one short message instead of the usage text and the whole config."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        telling = [line.strip() for line in message.splitlines() if _TELLING.search(line)]
        summary = "; ".join(dict.fromkeys(telling)) or message.strip().splitlines()[0]
        print(f"error: {summary}\n(run `{self.prog} --help` to list every valid key)", file=sys.stderr)
        raise SystemExit(2)


class LLMCLI(LightningCLI):
    """LightningCLI with the links between data and model, and the TensorBoard logger by default."""

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is not None and config.get("ckpt_path") == "last":
            resume_last_run(config)

    def after_instantiate_classes(self) -> None:
        use_atomic_checkpoints(self.trainer)
        ckpt_path = self.config.get(self.subcommand, {}).get("ckpt_path") if self.subcommand else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            path = Path(ckpt_path)
            if path.is_dir():  # a sharded FSDP / FSDP2 checkpoint: the strategy loads and checks its shards
                if not (path / "meta.pt").is_file():
                    raise UserError(
                        f"checkpoint folder {path} is not a sharded Lightning checkpoint (no meta.pt)"
                    )
            else:  # a wrong checkpoint fails here with one sentence, not deep inside Lightning's restore
                check_fits(read_checkpoint(ckpt_path), self.model, ckpt_path)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for source, target in _INSTANTIATE_LINKS:
            parser.link_arguments(source, target, apply_on="instantiate")
        for source, target in _PARSE_LINKS:
            parser.link_arguments(source, target, apply_on="parse")
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "logs", "name": "default", "default_hp_metric": False},
                }
            }
        )


def resume_last_run(config) -> None:
    """`--ckpt_path last`: the newest `last.ckpt` of this run's logger folder; logging continues in that version."""
    logger = config.get("trainer.logger")
    init_args = logger.get("init_args") if logger is not None and hasattr(logger, "get") else None
    if init_args is None:
        return  # no logger folder to search: leave "last" to Lightning (ModelCheckpoint with a dirpath)
    root = Path(init_args.get("save_dir") or ".") / (init_args.get("name") or "")
    version = init_args.get("version")
    pattern = (
        f"{version if isinstance(version, str) else f'version_{version}'}" if version is not None else "*"
    )
    found = sorted(root.glob(f"{pattern}/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(
            f"--ckpt_path last: no last.ckpt under {root}/{pattern}/checkpoints; train first, or pass a path"
        )
    newest = found[-1]
    config["ckpt_path"] = str(newest)
    init_args["version"] = newest.parent.parent.name
    print(f"Resuming from {newest}", file=sys.stderr)


def build_cli(args: list[str] | None, run: bool = True, callbacks: Sequence[Callback] = ()) -> LLMCLI:
    """The project's LightningCLI (`run=False` builds model, data and trainer without running a subcommand);
    `callbacks` join the ones every run gets."""
    return LLMCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        trainer_defaults={
            "callbacks": [GracefulStop(), StopOnNonFiniteLoss(), RandomStateCheckpoint(), *callbacks]
        },
        parser_class=ConciseArgumentParser,
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run the CLI (`generate` and `consolidate` are ours, the rest Lightning's); a `UserError` ends it with one line, exit status 2."""
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["generate"]:
        from lightning_llm.generate import main as generate_main

        return generate_main(argv[1:])
    if argv[:1] == ["consolidate"]:
        from lightning_llm.consolidate import main as consolidate_main

        return consolidate_main(argv[1:])
    with exit_on_user_error():
        build_cli(args if args is None else argv)


if __name__ == "__main__":
    main()
