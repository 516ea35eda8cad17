"""Before any trial: build the experiment once as `fit` would (without training), check the search space
against it, and fix what every trial shares: the metric and its direction, the study folder, the flags."""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from lightning_llm.callbacks.graceful_stop import GracefulStop
from lightning_llm.cli import LLMCLI, build_cli
from lightning_llm.cli_help import ConciseErrors, check_config_files, config_files
from lightning_llm.errors import UserError
from lightning_llm.monitored_metrics import validation_metrics
from lightning_llm.tune.space import SearchSpace

# Trials print one line each; the per-run banners (progress bar, model summary, device lines) would bury them.
QUIET_TRIALS = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


class TrialRun(LLMCLI):
    """`fit` as the CLI runs it, without the closing summary line or fit's resume hint after a signal: tune
    prints one line per trial, and how to continue the study."""

    def _run_subcommand(self, subcommand: str) -> None:
        for callback in self.trainer.callbacks:
            if isinstance(callback, GracefulStop):
                callback.announce = False
        LightningCLI._run_subcommand(self, subcommand)


class BuildOnly(LLMCLI):
    """The CLI of `fit` up to a built model, data module and trainer, with every check `fit` makes; no training."""

    def _run_subcommand(self, subcommand: str) -> None:
        pass


@dataclass(frozen=True)
class Plan:
    space: SearchSpace
    metric: str
    direction: str  # "minimize" or "maximize"
    study_dir: Path
    fit_args: list[str]
    trial_config: Namespace  # the fit config every trial starts from (experiment + flags + during_search)
    best_config_base: Namespace  # the same without during_search: what best.yaml starts from
    dump: Any  # writes a fit config as YAML (the fit parser's dump)
    seed: int
    settings_digest: str  # the experiment, flags and space: a resumed study must have the same

    def trial_args(self, number: int, values: Mapping[str, Any]) -> list[str]:
        """The `fit` command line of trial `number`: logged to <study>/trial_<number>/."""
        logger = [
            f"--trainer.logger.init_args.save_dir={self.study_dir}",
            "--trainer.logger.init_args.name=",
            f"--trainer.logger.init_args.version=trial_{number}",
        ]
        return [
            "fit",
            *QUIET_TRIALS,
            *self.fit_args,
            *flags(self.space.during_search),
            *flags(values),
            *logger,
        ]

    def best_config_yaml(self, values: Mapping[str, Any]) -> str:
        """The experiment (with the command line's flags) and a trial's values, as one file `fit` runs."""
        config = self.best_config_base.clone()
        for key, value in values.items():
            config[key] = value
        return self.dump(config)


def flags(values: Mapping[str, Any]) -> list[str]:
    """Config key -> value as `--key=value` flags, values in YAML (1.0e-05, not 1e-05: YAML reads that as text)."""
    return [f"--{key}={yaml_value(value)}" for key, value in values.items()]


def yaml_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).removesuffix("\n...\n").strip()


def prepare_plan(options, space: SearchSpace) -> Plan:
    """Every check before any trial runs: the config builds for fit, the space's keys exist in it and every
    value it can draw parses there, no flag typed on the command line is searched over, the metric is one
    the module logs, trials log to TensorBoard, and one trial is one process."""
    # tune builds each trial's CLI from its own arguments, which Lightning takes for a mix-up with sys.argv
    warnings.filterwarnings("ignore", message=r"LightningCLI's args parameter is intended")
    fit_args = options.fit_args
    check_config_files(["fit", *fit_args])
    check_typed_flags(space, fit_args)
    ConciseErrors.command, ConciseErrors.argv = "fit", ["fit", *fit_args]
    for name in ("lightning.pytorch", "lightning.fabric"):  # device banners and "Seed set", once per trial
        logging.getLogger(name).setLevel(logging.WARNING)
    # the user's own mistakes first; the best config starts from this one
    built = build_cli(["fit", *fit_args], cli_class=BuildOnly)
    fit_parser = built._parser("fit")
    best_base = built.config.fit
    metric, direction = objective(space, built)
    if built.trainer.world_size > 1 or built.trainer.num_nodes > 1:
        raise UserError(
            f"tune runs each trial in one process, and this config asks for {built.trainer.world_size} "
            "(trainer.devices / num_nodes / strategy); use --workers for trials side by side"
        )
    logger = best_base.get("trainer.logger")
    if not isinstance(logger, Namespace) or not str(logger.get("class_path", "")).endswith(
        "TensorBoardLogger"
    ):
        raise UserError(
            "tune logs every trial to TensorBoard (the HParams tab compares them), and this config's "
            "trainer.logger is not a TensorBoardLogger; set one (the shipped configs do)"
        )
    ConciseErrors.context = f"search space {space.path}: "
    try:
        trial_config = built.parser.parse_args(["fit", *fit_args, *flags(space.during_search)]).fit
        check_keys(space, trial_config)
        plan = Plan(
            space=space,
            metric=metric,
            direction=direction,
            study_dir=Path(logger.init_args.get("save_dir") or "logs")
            / "tune"
            / (options.study_name or space.path.stem),
            fit_args=list(fit_args),
            trial_config=trial_config,
            best_config_base=best_base,
            dump=lambda config: fit_parser.dump(config, skip_none=False),
            seed=_seed(trial_config.get("seed_everything")),
            settings_digest=settings_digest(fit_parser.dump(trial_config, skip_none=False), space),
        )
        for sampled in extreme_draws(space):  # a value of the wrong type fails now, not in trial 7
            built.parser.parse_args(plan.trial_args(0, space.values(sampled, trial_config)))
    finally:
        ConciseErrors.context = ""
    return plan


def _seed(seed: Any) -> int:
    return seed if isinstance(seed, int) and not isinstance(seed, bool) else 0


def extreme_draws(space: SearchSpace) -> list[dict[str, Any]]:
    """Draws that together use every end of every range and every choice."""
    longest = max([2, *(len(p.choices) for p in space.parameters)])
    draws = []
    for index in range(longest):
        draws.append(
            {
                p.key: p.choices[index % len(p.choices)]
                if p.kind == "categorical"
                else (p.low, p.high)[index % 2]
                for p in space.parameters
            }
        )
    return draws


def check_typed_flags(space: SearchSpace, fit_args: list[str]) -> None:
    """A flag on tune's command line that the space also sets would be replaced in every trial: refuse it."""
    set_by_space = {p.key for p in space.parameters} | set(space.during_search)
    set_by_space |= {key.rpartition(".")[0] for key in set_by_space if key.rpartition(".")[2].isdigit()}
    for arg in fit_args:
        key = arg.partition("=")[0].removeprefix("--")
        if arg.startswith("--") and key in set_by_space:
            raise UserError(
                f"--{key} is typed on the command line and also set by the search space {space.path}; "
                "drop one of them"
            )


def check_keys(space: SearchSpace, config: Namespace) -> None:
    """Each searched key, `times` reference and list item names something the config holds."""
    known = [key for key in config.keys() if not key.startswith("trainer.callbacks")]  # noqa: SIM118 - nested keys
    for parameter in space.parameters:
        for key in filter(None, (parameter.key, parameter.times)):
            head, _, tail = key.rpartition(".")
            if head and tail.isdigit():  # one item of a list
                items = config.get(head) if head in config else None
                if not isinstance(items, list | tuple) or int(tail) >= len(items):
                    raise UserError(
                        f"search space {space.path}: {key} is item {tail} of {head}, which the config holds as "
                        f"{items!r}; index an item that exists (from 0)"
                    )
                continue
            if key not in config or isinstance(config.get(key), Namespace):
                near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = (
                    f"; did you mean {near[0]}?"
                    if near
                    else "; `lightning-llm fit --config <config> --help` lists the keys"
                )
                raise UserError(f"search space {space.path}: {key} is not a setting of this config{hint}")
        if parameter.times is not None and not isinstance(config.get(parameter.times), int | float):
            searched = {p.key for p in space.parameters}
            if parameter.times not in searched:
                raise UserError(
                    f"search space {space.path}: {parameter.key} multiplies {parameter.times}, which is "
                    f"{config.get(parameter.times)!r} in the config; name a number"
                )


def objective(space: SearchSpace, built: LLMCLI) -> tuple[str, str]:
    """The metric and direction: the space's, else what the config's ModelCheckpoint monitors (and its mode)."""
    checkpoint = next(
        (c for c in built.trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor), None
    )
    metric = space.metric or (checkpoint.monitor if checkpoint else None)
    if metric is None:
        raise UserError(
            f"search space {space.path} names no metric, and the config has no ModelCheckpoint with a monitor; "
            "add `metric: val/loss` and `direction: minimize` (or the metric you want) to the space"
        )
    direction = space.direction
    if direction is None and checkpoint is not None and checkpoint.monitor == metric:
        direction = "minimize" if checkpoint.mode == "min" else "maximize"
    if direction is None:
        raise UserError(
            f"search space {space.path}: say whether {metric} should go down or up (direction: minimize or maximize)"
        )
    logged = validation_metrics(built.trainer, built.model)
    if logged is not None and metric not in logged:
        raise UserError(
            f"search space {space.path}: metric {metric} is never logged by this {type(built.model).__name__} "
            f"(its validation logs {', '.join(logged)}); choose one of those"
        )
    return metric, direction


def settings_digest(trial_config_yaml: str, space: SearchSpace) -> str:
    """What makes two tune commands the same study: the config trials start from, as parsed (so the spelling
    of a flag or which file set a key does not matter), and the space."""
    settings = yaml.safe_load(trial_config_yaml)
    settings.pop("config", None)  # the names of the files read, whose values are already in
    digest = hashlib.sha256(space.text.encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def legacy_settings_digest(fit_args: list[str], space: SearchSpace) -> str:
    """settings_digest before 2026-12-03 (files and flags as typed): studies started then still continue."""
    digest = hashlib.sha256(space.text.encode())
    for path in config_files(["fit", *fit_args]):
        digest.update(Path(path).read_bytes() if Path(path).is_file() else str(path).encode())
    digest.update("\0".join(fit_args).encode())
    return digest.hexdigest()[:16]
