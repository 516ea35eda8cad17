"""The `lightning-llm` command: a LightningCLI whose YAML names the module and data module by class_path."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Optional

import torch
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Callback, LightningDataModule, LightningModule
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_llm.callbacks.classification_metrics import ClassificationMetrics
from lightning_llm.callbacks.finite_loss import StopOnNonFiniteLoss
from lightning_llm.callbacks.graceful_stop import GracefulStop
from lightning_llm.callbacks.int8_inference import Int8Inference
from lightning_llm.callbacks.progress import StepAwareProgressBar
from lightning_llm.callbacks.random_state import RandomStateCheckpoint
from lightning_llm.callbacks.stop_other_ranks import StopOtherRanks
from lightning_llm.callbacks.training_logs import TrainingLogs
from lightning_llm.checkpoint_files import (
    model_description,
    read_checkpoint,
    refuse_unknown_settings,
    require_class,
)
from lightning_llm.checkpoints import check_fits, use_atomic_checkpoints
from lightning_llm.cli_help import (
    OUR_COMMANDS,
    OVERVIEW,
    ConciseErrors,
    check_command,
    check_config_files,
    print_config_keys,
    run_command,
    wants_config_keys,
)
from lightning_llm.errors import UserError, exit_on_user_error, user_error_in
from lightning_llm.lit.classifier import SequenceClassifier
from lightning_llm.models.quantize import check_quantize
from lightning_llm.monitored_metrics import check_monitored_metrics
from lightning_llm.parallel import check_resumable_folder
from lightning_llm.parallel.sharded_checkpoints import check_sharded_folder, install_safe_sharded_reads
from lightning_llm.tokenizers import tokenizer_from_json

# Facts owned by the data module, copied into the model when both are built. A link whose source or
# target does not exist for the chosen classes is skipped by jsonargparse, so one CLI serves both jobs.
_INSTANTIATE_LINKS = (
    ("data.vocab_size", "model.init_args.model.init_args.vocab_size"),  # GPT, TransformerLM
    ("data.block_size", "model.init_args.model.init_args.block_size"),  # GPT, TransformerLM
    ("data.num_labels", "model.init_args.backbone.init_args.num_labels"),  # SequenceClassifier
    ("data.label_names", "model.init_args.label_names"),  # SequenceClassifier
)
# Imported for `--model.help NAME` / `--data.help NAME`, which find classes by short name among those loaded.
HELP_MODULES = (
    "lightning_llm.lit.language_model",
    "lightning_llm.lit.classifier",
    "lightning_llm.data.language_modeling",
    "lightning_llm.data.classification",
    "lightning_llm.models",
)


# Lightning's advertisement for its cloud logger on every run: noise, not news about the run.
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: "litlogger" not in record.getMessage()
)
# Lightning warnings that say nothing about the user's run: our window datasets define __len__ on purpose.
for _message in (r".*IterableDataset. has .__len__. defined.*", r".*isinstance\(treespec, LeafSpec\).*"):
    warnings.filterwarnings("ignore", message=_message)


class ConciseArgumentParser(ConciseErrors, LightningArgumentParser):
    """Exact keys only (no `--trainer.max_step` for `max_steps`); a mistake is one `error:` line."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})


class LLMCLI(LightningCLI):
    """LightningCLI with the links between data and model, and the TensorBoard logger by default."""

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        # kept to tell what the user typed (config files and flags) from defaults: see `typed_model_keys`
        self.argv = (
            None if isinstance(args, dict | Namespace) else list(sys.argv[1:] if args is None else args)
        )
        super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        """Check `--ckpt_path` before anything is built, and take the checkpoint's model settings the way
        Lightning does, except that a setting the user typed is never silently replaced."""
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else None
        self.checkpoint = None
        if config is None or not config.get("ckpt_path"):
            return
        if config["ckpt_path"] == "last":
            resume_last_run(config, subcommand)
        ckpt_path = str(config["ckpt_path"])
        if ckpt_path == "best":
            raise UserError(
                "--ckpt_path best means the best checkpoint of a run in this same process; from the command "
                "line pass the file (logs/<run>/version_<n>/checkpoints/<name>.ckpt) or `last`"
            )
        if ckpt_path in ("hpc", "registry") or ckpt_path.startswith("registry:") or "://" in ckpt_path:
            return super()._parse_ckpt_path()  # Lightning's own lookups and remote storage
        path = Path(ckpt_path).expanduser()
        # a sharded FSDP / FSDP2 checkpoint: no hyperparameters to read; the strategy checks the shards
        if path.is_dir():
            check_sharded_folder(path)
            install_safe_sharded_reads()  # the strategy reads the shards with torch.distributed.checkpoint
            return
        self.checkpoint = read_checkpoint(path)
        hparams = model_description(self.checkpoint, path)
        wanted = config.get("model.class_path") if config.get("model") is not None else None
        if wanted:
            require_class(hparams, wanted, path, "pass a checkpoint written with this config")
        refuse_unknown_settings(hparams, path, module=True)
        hparams = {key: value for key, value in hparams.items() if key != "_instantiator"}
        if "_class_path" in hparams:
            hparams = {"class_path": hparams.pop("_class_path"), "dict_kwargs": hparams}
        before = self.config.clone()
        ConciseErrors.context = f"checkpoint {path} holds model settings this config cannot take: "
        try:
            self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)
        finally:
            ConciseErrors.context = ""
        self.refuse_overridden_settings(before, subcommand, path)

    def refuse_overridden_settings(self, before: Namespace, subcommand: str, path: Path) -> None:
        """Stop when the checkpoint's hyperparameters replaced a model setting the user typed: for `fit`
        one in a config file or a flag, for the other subcommands a flag (their config is the template)."""
        changed = [
            (key, before.get(f"{subcommand}.{key}"), self.config.get(f"{subcommand}.{key}"))
            for key in self.typed_model_keys(subcommand, flags_only=subcommand != "fit")
            if before.get(f"{subcommand}.{key}") != self.config.get(f"{subcommand}.{key}")
        ]
        for key, wanted, saved in changed:  # another network altogether: say that, not its arguments
            if key.endswith("class_path"):
                raise UserError(
                    f"checkpoint {path} holds a {str(saved).rsplit('.', 1)[-1]} as "
                    f"{key.removesuffix('.class_path')}, but the config builds a {str(wanted).rsplit('.', 1)[-1]}; "
                    "pass a checkpoint of that model"
                )
        if changed:
            conflicts = "; ".join(f"{key}={saved!r} (you set {wanted!r})" for key, wanted, saved in changed)
            raise UserError(
                f"checkpoint {path} was trained with {conflicts}; the model settings come from the checkpoint: "
                "set them to the checkpoint's values or drop them, or start a new run without --ckpt_path"
            )

    def typed_model_keys(self, subcommand: str, flags_only: bool) -> list[str]:
        """The `model.*` keys the user gave in config files and flags (`flags_only`: in flags), not defaults."""
        if self.argv is None:
            return []
        if not hasattr(self, "_typed"):  # what the config files and flags hold, parsed once
            self._typed = self.parser.parse_args(self.argv, defaults=False).get(subcommand)
        typed = self._typed
        keys = [k for k in typed.keys() if k.startswith("model.") and k != "model.dict_kwargs"]  # noqa: SIM118 - nested keys
        if not flags_only:
            return keys
        files_only = self.parser.parse_args(config_file_args(self.argv), defaults=False).get(subcommand)
        return [key for key in keys if files_only is None or files_only.get(key) != typed.get(key)]

    def _set_seed(self) -> None:
        # Lightning seeds before any other hook: a seed numpy cannot take fails here, in one line
        subcommand = self.config.get("subcommand")
        seed = self.config.get(f"{subcommand}.seed_everything" if subcommand else "seed_everything")
        if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
            raise UserError(
                f"seed_everything is {seed}: use a number from 0 to {2**32 - 1}, or true for a random one"
            )
        super()._set_seed()

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand) if self.subcommand else self.config
        if config is None:
            return
        check_trainer_values(config.get("trainer"))
        check_accelerator(config.get("trainer.accelerator"))
        if self.subcommand is not None:
            self.refuse_typed_link_targets(self.subcommand)
        if self.subcommand == "fit" and not config.get("ckpt_path"):
            refuse_a_used_log_folder(config.get("trainer.logger"))
        if config.get("quantize") and self.subcommand == "fit":
            raise UserError("--quantize int8 is for validate, test and predict: fit trains in floating point")
        if config.get("quantize"):
            trainer = config.get("trainer")
            accelerator = str(getattr(trainer.get("accelerator"), "class_path", trainer.get("accelerator")))
            if "cpu" in accelerator.lower():
                accelerator = "cpu"
            elif accelerator in ("auto", "None"):  # what Lightning would pick
                accelerator = "cuda" if torch.cuda.is_available() else "cpu"
            check_quantize(config.get("quantize"), accelerator, trainer.get("precision"))

    def refuse_typed_link_targets(self, subcommand: str) -> None:
        """A model key the CLI fills from the data module (vocab_size, block_size, num_labels) cannot also be
        typed: the link would silently replace it."""
        typed = set(self.typed_model_keys(subcommand, flags_only=False))
        for source, target in _INSTANTIATE_LINKS:
            if target in typed:
                raise UserError(
                    f"{target} comes from {source} (the CLI links them); set --{source} instead, or leave it out"
                )

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as error:  # a constructor refused a value from the config: say which, in one line
            found = config_value_error(error)
            if found is error:
                raise
            raise found from None

    def after_instantiate_classes(self) -> None:
        if self.subcommand == "predict" and not overrides(self.datamodule, "predict_dataloader"):
            raise UserError(
                f"predict needs data to predict on, and {type(self.datamodule).__name__} has none; for a "
                "language model use `lightning-llm generate --ckpt_path <file>`"
            )
        use_atomic_checkpoints(self.trainer)
        callbacks = self.trainer.callbacks
        for index, callback in enumerate(callbacks):
            if type(callback) is RichProgressBar:  # Lightning's default bar: ours also reads step-based runs
                callbacks[index] = StepAwareProgressBar()
        # the health check first: no callback (text samples, checkpoints) may see broken weights before it
        callbacks.sort(key=lambda callback: not isinstance(callback, StopOnNonFiniteLoss))
        if self.subcommand and self.config[self.subcommand].get("quantize"):
            callbacks.append(Int8Inference())
        wants_metrics = isinstance(self.model, SequenceClassifier)
        if wants_metrics and not any(isinstance(callback, ClassificationMetrics) for callback in callbacks):
            callbacks.append(ClassificationMetrics())  # accuracy, F1 ... and the confusion matrix
        if self.subcommand == "fit":
            check_monitored_metrics(self.trainer, self.model)
        ckpt_path = self.config.get(self.subcommand, {}).get("ckpt_path") if self.subcommand else None
        if not ckpt_path or ckpt_path in ("hpc", "registry"):
            return
        if Path(ckpt_path).is_dir():
            check_resumable_folder(ckpt_path, self.trainer.strategy)
        elif self.checkpoint is not None:  # a wrong checkpoint fails here with one sentence, not in Lightning
            check_fits(self.checkpoint, self.model, ckpt_path)
            check_same_tokenizer(self.checkpoint, self.datamodule, ckpt_path)
            check_same_linked_values(self.checkpoint, self.model, ckpt_path)

    def _run_subcommand(self, subcommand: str) -> None:
        super()._run_subcommand(subcommand)
        if subcommand == "fit" and self.trainer.is_global_zero and not self.trainer.interrupted:
            print(run_summary(self.trainer, self.model), file=sys.stderr)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument(
            "--quantize",
            type=Optional[Literal["int8"]],  # noqa: UP045 - jsonargparse reads this form in every version
            default=None,
            help="int8: validate, test or predict with the Linear layers quantized to int8 (CPU only)",
        )
        for source, target in _INSTANTIATE_LINKS:
            parser.link_arguments(source, target, apply_on="instantiate")
        parser.set_defaults(
            {
                "trainer.logger": {
                    "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                    "init_args": {"save_dir": "logs", "name": "default", "default_hp_metric": False},
                }
            }
        )


def run_summary(trainer, module: LightningModule) -> str:
    """One line after `fit`: the best and last checkpoints, the final validation metric, the log folder and
    the command that uses the result."""
    callback = trainer.checkpoint_callback
    best = getattr(callback, "best_model_path", "") or ""
    last = getattr(callback, "last_model_path", "") or ""
    monitor = getattr(callback, "monitor", None)
    score = getattr(callback, "best_model_score", None)  # the best checkpoint's, not the last validation's
    parts = [
        f"best checkpoint {best}" + (f" ({monitor} {float(score):.4f})" if score is not None else "")
        if best
        else ""
    ]
    log_dir = trainer.logger.log_dir if trainer.logger is not None else None  # trainer.log_dir is collective
    parts += [f"last {last}" if last else "", f"logs in {log_dir}" if log_dir else ""]
    use = best or last
    if use and Path(use).is_dir():
        parts.append(f"next: lightning-llm consolidate {use}, then use the .ckpt file it writes")
    elif use and hasattr(module, "generate_text"):
        parts.append(f"next: lightning-llm generate --ckpt_path {use} (or make generate)")
    elif use:
        parts.append(
            f"next: lightning-llm predict with this run's flags and --ckpt_path {use}, or "
            f"lightning-llm export --ckpt_path {use} --output_dir <folder>"
        )
    return "Done: " + "; ".join(part for part in parts if part)


def config_file_args(argv: list[str]) -> list[str]:
    """The subcommand and its `--config FILE` pairs of `argv`, without the other flags."""
    kept = argv[:1]
    for index, arg in enumerate(argv[1:], start=1):
        if arg in ("--config", "-c") and index + 1 < len(argv):
            kept += [arg, argv[index + 1]]
        elif arg.startswith("--config="):
            kept.append(arg)
    return kept


def check_same_linked_values(checkpoint: dict, module: LightningModule, path: str) -> None:
    """Refuse data whose linked facts (the class names) differ from the checkpoint's: the data would
    silently relabel the classes the model learned."""
    saved = checkpoint.get("hyper_parameters") or {}
    for source, target in _INSTANTIATE_LINKS:
        key = target.removeprefix("model.init_args.")
        now = module.hparams.get(key) if "." not in key else None
        as_list = lambda v: list(v) if isinstance(v, list | tuple) else v  # noqa: E731 - YAML lists vs tuples
        if now is not None and key in saved and as_list(saved[key]) != as_list(now):
            raise UserError(
                f"checkpoint {path} was trained with {key} {saved[key]}, but {source} gives {now}; use the "
                "labels it was trained with (or no --data.labels), or a checkpoint trained on these"
            )


def check_same_tokenizer(checkpoint: dict, datamodule, path: str) -> None:
    """Refuse a language-model checkpoint whose tokenizer differs from the one the data module built: the
    token ids would mean other tokens, silently (a BPE trained on an edited corpus keeps its size)."""
    saved = checkpoint.get("tokenizer")
    built = getattr(datamodule, "tokenizer", None)
    if saved is None or built is None:
        return
    saved = tokenizer_from_json(saved).to_json()  # a UserError for anything we did not write
    if json.loads(saved) == json.loads(built.to_json()):
        return
    raise UserError(
        f"checkpoint {path} was trained with another tokenizer ({describe_tokenizer(saved)}) than the one "
        f"data.path gives now ({describe_tokenizer(built.to_json())}): its token ids would mean other "
        "tokens; use the corpus and data.tokenizer it was trained with, or start a new run without --ckpt_path"
    )


def describe_tokenizer(saved: str) -> str:
    kind = "char" if json.loads(saved).get("type") == "char" else "BPE"
    vocab = tokenizer_from_json(saved).vocab_size
    digest = hashlib.blake2b(saved.encode(), digest_size=4).hexdigest()
    return f"{kind}, {vocab} tokens, fingerprint {digest}"


# Trainer values Lightning would divide by, or use to flip the gradients' sign, without a word.
_TRAINER_MINIMUMS = {
    "accumulate_grad_batches": (1, "1 or more"),
    "gradient_clip_val": (0, "0 or more (null: no clipping)"),
    "max_epochs": (-1, "-1 (no limit) or more"),
    "max_steps": (-1, "-1 (no limit) or more"),
    "min_steps": (0, "0 or more (null: none)"),
    "min_epochs": (0, "0 or more (null: none)"),
    "log_every_n_steps": (1, "1 or more"),
    "num_sanity_val_steps": (-1, "-1 (all) or more"),
}


def overrides(datamodule, hook: str) -> bool:
    """Whether the data module defines `hook` itself (Lightning's default raises when it is called)."""
    return getattr(type(datamodule), hook, None) is not getattr(LightningDataModule, hook)


def check_trainer_values(trainer) -> None:
    if trainer is None:
        return
    if not hasattr(trainer, "get"):
        raise UserError(f"trainer is {trainer!r}: in the config it must be a mapping of Trainer keys")
    devices = trainer.get("devices")
    if isinstance(devices, str) and devices.lstrip("-").isdigit():  # the parser keeps "-3" as text
        devices = int(devices)
    if isinstance(devices, int) and not isinstance(devices, bool) and devices < 1 and devices != -1:
        raise UserError(f"trainer.devices is {devices}: use 1 or more, -1 (all) or auto")
    for name, (minimum, wanted) in _TRAINER_MINIMUMS.items():
        value = trainer.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < minimum:
            raise UserError(f"trainer.{name} is {value}: it must be {wanted}")
    interval = trainer.get("val_check_interval")
    if isinstance(interval, int | float) and not isinstance(interval, bool) and interval <= 0:
        raise UserError(
            f"trainer.val_check_interval is {interval}: use a number of steps (1 or more) or a fraction of an epoch in (0, 1]"
        )


def check_accelerator(accelerator) -> None:
    """A device the machine does not have fails here with the fix, not deep inside Lightning."""
    name = str(getattr(accelerator, "class_path", accelerator) or "auto").lower()
    missing = {
        "gpu": not torch.cuda.is_available() and not torch.backends.mps.is_available(),
        "cuda": not torch.cuda.is_available(),
        "mps": not torch.backends.mps.is_available(),
    }
    if missing.get(name):
        raise UserError(
            f"trainer.accelerator is {name!r}, but this machine has no such device; use "
            "--trainer.accelerator cpu (or auto)"
        )


def config_value_error(error: Exception) -> Exception:
    """What to print when building the classes failed: the UserError inside, Lightning's configuration
    complaint, or the ValueError a constructor raised about a value; any other error stays as it is."""
    found = user_error_in(error)
    if found is not None:
        return found
    cause: BaseException | None = error
    seen: set[int] = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        inner = cause.__cause__ or cause.__context__
        if isinstance(cause, MisconfigurationException):
            return UserError(f"{cause}; fix the trainer settings")
        if inner is None and isinstance(cause, ValueError):
            return UserError(f"{cause}; fix that value in the config or on the command line")
        if isinstance(cause, MemoryError) or "can't allocate memory" in str(cause).split("\n", 1)[0]:
            return UserError("the model or data does not fit in this machine's memory; choose smaller sizes")
        cause = inner
    return error


def refuse_a_used_log_folder(logger) -> None:
    """A new run named into a version folder that holds another run's checkpoints would mix them and replace
    its config.yaml: refuse, unless the run resumes it (`--ckpt_path last`)."""
    init_args = logger.get("init_args") if logger is not None and hasattr(logger, "get") else None
    version = init_args.get("version") if init_args is not None else None
    if version is None:
        return  # Lightning picks the next free version_N
    folder = (
        Path(init_args.get("save_dir") or ".")
        / (init_args.get("name") or "")
        / (version if isinstance(version, str) else f"version_{version}")
    )
    if any((folder / "checkpoints").glob("*.ckpt")):
        raise UserError(
            f"the log folder {folder} holds another run's checkpoints; resume it with --ckpt_path last, or "
            "give this run another trainer.logger.init_args.version"
        )


def resume_last_run(config, subcommand: str) -> None:
    """`--ckpt_path last`: the newest `last.ckpt` of this run's logger folder; logging continues in that version."""
    logger = config.get("trainer.logger")
    init_args = logger.get("init_args") if logger is not None and hasattr(logger, "get") else None
    if init_args is None:  # Lightning would look elsewhere and, finding nothing, start from scratch
        raise UserError(
            "--ckpt_path last looks for last.ckpt in the run's logger folder, and trainer.logger is off; "
            "pass the checkpoint's path"
        )
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
    if subcommand == "fit":  # a resumed run logs on in its folder; evaluating one gets a folder of its own
        init_args["version"] = newest.parent.parent.name
    print(f"{'Resuming from' if subcommand == 'fit' else 'Using checkpoint'} {newest}", file=sys.stderr)


def build_cli(
    args: list[str] | None,
    run: bool = True,
    callbacks: Sequence[Callback] = (),
    cli_class: type[LLMCLI] = LLMCLI,
) -> LLMCLI:
    """The project's LightningCLI (`run=False` builds model, data and trainer without running a subcommand);
    `callbacks` join the ones every run gets."""
    return cli_class(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
        trainer_defaults={
            "callbacks": [
                GracefulStop(),
                StopOtherRanks(),
                StopOnNonFiniteLoss(),
                RandomStateCheckpoint(),
                TrainingLogs(),  # train/lr, grad_norm, throughput, the HParams tab
                *callbacks,
            ]
        },
        parser_class=ConciseArgumentParser,
        args=args,
        run=run,
    )


def main(args: list[str] | None = None) -> None:
    """Run the CLI (`generate` and `consolidate` are ours, the rest Lightning's); a `UserError` ends it with one line, exit status 2."""
    argv = sys.argv[1:] if args is None else list(args)
    ConciseErrors.command, ConciseErrors.argv = (argv[0] if argv else "fit"), argv
    if argv in ([], ["--help"], ["-h"]):
        print(OVERVIEW)
        return
    if wants_config_keys(argv):
        with exit_on_user_error():
            return print_config_keys(argv)
    if argv[0] == "tune":  # its options are tune's and fit's: it parses them itself
        from lightning_llm.tune import tune

        return tune(argv[1:])
    if argv[0] in OUR_COMMANDS:  # ours: each is the function of the same name
        module = importlib.import_module(f"lightning_llm.{argv[0]}")
        return run_command(getattr(module, argv[0]), argv[1:])
    if any(
        arg.endswith(".help") for arg in argv
    ):  # `--model.help LanguageModel`: short names need the classes
        for name in HELP_MODULES:
            importlib.import_module(name)
    with exit_on_user_error():
        check_command(argv[0])
        check_config_files(argv)
        build_cli(args if args is None else argv)


if __name__ == "__main__":
    main()
