"""`lightning-llm tune`: hyperparameter search with Optuna over the same configs `fit` trains.

    lightning-llm tune --config configs/gpt-shakespeare-char.yaml --search configs/search/gpt-shakespeare-char.yaml \
        --n_trials 20 --workers 2 --data.path ../shared/data/tinyshakespeare.txt

Every trial is `lightning-llm fit` with the experiment config, the command line's other flags, the space's
`during_search` settings and the trial's values. The study lives in SQLite beside the logs
(`<save_dir>/tune/<study_name>/study.db`): the same command after a kill continues it. The pieces:
space.py reads the search-space file, plan.py checks it against the config before any trial, study.py
runs trials (in `--workers` processes), report.py writes the table, best config and plots.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

from lightning_llm.errors import UserError, exit_on_user_error

USAGE = """usage: lightning-llm tune --config <experiment.yaml> --search <space.yaml> [--n_trials 20] [--workers 1]
                          [--study_name NAME] [--<config key> <value> ...]

Search hyperparameters with Optuna: each trial trains the experiment (as `fit` would) with values drawn
from the search space; validations report to the study by step, and poor trials stop early (pruning).

options:
  --config FILE       the experiment, as for fit (repeatable)
  --search FILE       the search space: config keys and their distributions (see configs/search/)
  --n_trials N        finished trials the study should hold (default 20); a rerun continues up to N
  --workers N         trials at once, each in its own process with one thread (default 1)
  --study_name NAME   the study's folder under <logger save_dir>/tune/ (default: the search file's name)
  --<key> <value>     any fit override, for every trial and the best config (e.g. --data.path ...)

Writes <save_dir>/tune/<study_name>/: study.db, trial_<n>/ (TensorBoard, with the HParams tab; checkpoints
kept for the best trial only), trials.md, best.yaml (`lightning-llm fit --config .../best.yaml` trains it)
and plots/*.png.
"""
# Set in the processes that `--workers` starts: they run trials of the study their parent prepared.
WORKER_ENV = "LIGHTNING_LLM_TUNE_WORKER"
_LOGGER_KEYS_TUNE_SETS = ("class_path", "init_args.name", "init_args.version")
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class TuneOptions:
    search: str
    n_trials: int
    workers: int
    study_name: str | None
    fit_args: list[str]  # --config files and overrides, in the order typed


def parse_options(argv: list[str]) -> TuneOptions:
    """tune's own options out of `argv`; everything else is fit's (checked when the config is parsed)."""
    own: dict[str, str] = {}
    fit_args: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        name, equals, value = arg.partition("=")
        if name in ("--search", "--n_trials", "--workers", "--study_name"):
            if not equals:
                if index + 1 >= len(argv):
                    raise UserError(f"tune {name} needs a value (`lightning-llm tune --help`)")
                value = argv[index + 1]
                index += 1
            if name in own:
                raise UserError(f"tune {name} is given twice ({own[name]} and {value}); give it once")
            own[name] = value
        else:
            fit_args.append(arg)
        index += 1
    if "--search" not in own:
        raise UserError(
            "tune needs --search <space.yaml> (see configs/search/) and --config <experiment.yaml>"
        )
    if not any(arg in ("--config", "-c") or arg.startswith("--config=") for arg in fit_args):
        raise UserError("tune needs --config <experiment.yaml>: the experiment whose settings it searches")
    # tune decides these for every trial (a fresh run, logged in the study's folder); the logger's save_dir
    # stays the user's: the study folder is under it
    refused = (
        "--ckpt_path",
        "--trainer.logger",
        *(f"--trainer.logger.{key}" for key in _LOGGER_KEYS_TUNE_SETS),
    )
    for arg in fit_args:
        name = arg.partition("=")[0]
        if name in refused:
            raise UserError(
                f"tune sets {name.removeprefix('--')} for each trial itself (a fresh run, logged in the study's "
                f"folder under the logger's save_dir); drop {name} from the command"
            )
    study_name = own.get("--study_name")
    if study_name is not None and not _STUDY_NAME.fullmatch(study_name):
        raise UserError(
            f"--study_name {study_name!r}: use letters, digits, '.', '_' and '-' (it names a folder)"
        )
    return TuneOptions(
        search=own["--search"],
        n_trials=_whole_number("--n_trials", own.get("--n_trials", "20")),
        workers=_whole_number("--workers", own.get("--workers", "1")),
        study_name=study_name,
        fit_args=fit_args,
    )


def _whole_number(name: str, text: str) -> int:
    try:
        number = int(text)
    except ValueError:
        number = 0
    if number < 1:
        raise UserError(f"tune {name} is {text!r}: give a whole number, 1 or more")
    if name == "--workers" and number > (os.cpu_count() or 1):
        raise UserError(
            f"tune --workers {number}: this machine has {os.cpu_count()} cores; use at most that many"
        )
    return number


def tune(argv: list[str]) -> None:
    """The command: prepare (every check before any trial), run the trials, write the report."""
    if not argv or any(arg in ("-h", "--help") for arg in argv):
        print(USAGE)
        return
    with exit_on_user_error():
        from lightning_llm.tune.plan import prepare_plan
        from lightning_llm.tune.report import write_report
        from lightning_llm.tune.space import load_search_space
        from lightning_llm.tune.study import coordinate, open_study, work

        options = parse_options(argv)
        plan = prepare_plan(options, load_search_space(options.search))
        worker = os.environ.get(WORKER_ENV)
        if worker is not None:  # a process of `--workers`: trials only
            index, token, parent = worker.split(":")
            return work(plan, options, int(index), token, int(parent))
        with open_study(plan) as study:
            finished = coordinate(plan, study, options, argv)
            write_report(study, plan)
    if not finished:
        raise SystemExit(130)  # stopped by a signal: scripts can tell


def main() -> None:  # pragma: no cover - `python -m lightning_llm.tune`
    tune(sys.argv[1:])
