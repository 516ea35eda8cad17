"""The study: SQLite storage in the study folder, one `tune` at a time on it, trials in `--workers` processes,
and a study killed mid-trial continuing where it stopped (the interrupted trial marked failed and retried)."""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from lightning_llm.errors import UserError, user_error_in
from lightning_llm.tune.plan import Plan, yaml_value
from lightning_llm.tune.pruning import ReportToTrial

_INTERRUPTED = "interrupted"  # user attribute of a trial whose process died: retried, not counted
_ERROR = "error"  # user attribute of a trial whose run failed with a message: counted, not retried


class TrialFailed(Exception):
    """A trial's run ended in a user error (the message is in the trial's `error` attribute)."""


class Stopped(Exception):
    """SIGINT or SIGTERM stopped a trial (GracefulStop): the study stops, and a rerun retries that trial."""


def storage_url(plan: Plan) -> str:
    return f"sqlite:///{(plan.study_dir / 'study.db').resolve()}"


def load(plan: Plan, worker: int):
    """The study, with a sampler seeded per worker (two workers must not propose the same values)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # tune prints one line per trial itself
    pruner_settings = plan.space.pruner
    pruner = (
        optuna.pruners.NopPruner()
        if pruner_settings is None
        else optuna.pruners.MedianPruner(**{"n_startup_trials": 2, **pruner_settings})
    )
    sampler = optuna.samplers.TPESampler(seed=plan.seed + worker, **plan.space.sampler)
    # SQLite serialises the workers' writes; a generous lock timeout instead of "database is locked"
    storage = optuna.storages.RDBStorage(storage_url(plan), engine_kwargs={"connect_args": {"timeout": 60}})
    return optuna.create_study(
        storage=storage,
        study_name=plan.study_dir.name,
        direction=plan.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


@contextlib.contextmanager
def open_study(plan: Plan, options) -> Iterator:
    """Create or continue the study; held exclusively while this `tune` runs. A study started with other
    settings is refused; trials left running by a killed `tune` are marked failed and queued again."""
    from optuna.trial import TrialState

    plan.study_dir.mkdir(parents=True, exist_ok=True)
    with open(plan.study_dir / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another `lightning-llm tune` is running the study in {plan.study_dir}; wait for it, or give "
                "this one another --study_name"
            ) from None
        study = load(plan, worker=0)
        started_with = study.user_attrs.get("settings")
        if started_with is None:
            study.set_user_attr("settings", plan.settings_digest)
            study.set_user_attr("metric", plan.metric)
        elif started_with != plan.settings_digest:
            raise UserError(
                f"the study in {plan.study_dir} was started with another config, flags or search space; rerun "
                "it with the same ones to continue it, or give this search another --study_name"
            )
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study._storage.set_trial_user_attr(trial._trial_id, _INTERRUPTED, True)
            study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False)
            print(
                f"trial {trial.number} was interrupted: marked failed, its values queued again",
                file=sys.stderr,
            )
        yield study


def counted(study) -> int:
    """Trials that count towards --n_trials: finished, pruned, failed with an error, or running now."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False)
    return sum(t.state in live or (t.state == TrialState.FAIL and _ERROR in t.user_attrs) for t in trials)


def run_trials(
    plan: Plan, options, worker: int, study=None, argv: list[str] | None = None, token: str = ""
) -> None:
    """Trials until the study holds --n_trials; worker 0 starts the other workers, lets them finish their
    set-up so that all start together, and waits for them at the end."""
    import torch

    if study is None:
        study = load(plan, worker)
    helpers = []
    if worker == 0 and options.workers > 1:
        token = uuid.uuid4().hex
        helpers = [start_worker(plan, index, argv or [], token) for index in range(1, options.workers)]
    if options.workers > 1:
        torch.set_num_threads(1)  # one core per trial: the processes run side by side
    if worker > 0:
        study.set_user_attr(f"worker_{worker}_ready", token)
    try:
        wait_until_ready(study, helpers, token)
        while counted(study) < options.n_trials:
            study.optimize(lambda trial: run_one(plan, trial, worker), n_trials=1, catch=(TrialFailed,))
    except Stopped as stopped:
        study.enqueue_trial(stopped.args[0], user_attrs={"retry_of": stopped.args[1]}, skip_if_exists=False)
        print("tune stopped by a signal; the same command continues the study", file=sys.stderr)
        for process in helpers:
            process.send_signal(signal.SIGTERM)  # they stop their trials the same way
    finally:
        for index, process in enumerate(helpers, start=1):
            if process.wait() != 0:
                print(
                    f"worker {index} ended with exit status {process.returncode}; see "
                    f"{plan.study_dir / f'worker_{index}.log'}",
                    file=sys.stderr,
                )


def wait_until_ready(study, helpers: list[subprocess.Popen], token: str) -> None:
    """Until every started worker has built its experiment (or died: its log says why)."""
    waiting = dict(enumerate(helpers, start=1))
    while waiting:
        ready = study.user_attrs
        for index, process in list(waiting.items()):
            if ready.get(f"worker_{index}_ready") == token or process.poll() is not None:
                del waiting[index]
        time.sleep(0.2 if waiting else 0)


def start_worker(plan: Plan, index: int, argv: list[str], token: str) -> subprocess.Popen:
    """Another process on the same study: the same command, one thread, dying with this one."""
    from lightning_llm.tune import WORKER_ENV

    env = {**os.environ, WORKER_ENV: f"{index}:{token}", "OMP_NUM_THREADS": "1"}
    log = open(plan.study_dir / f"worker_{index}.log", "a")  # noqa: SIM115 - the child holds it
    return subprocess.Popen(
        [sys.executable, "-m", "lightning_llm", "tune", *argv],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,
    )


def _die_with_parent() -> None:
    """Linux: the worker gets SIGKILL when `tune` dies, so a killed study leaves no trial running unseen."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def run_one(plan: Plan, trial, worker: int) -> float:
    """One trial: fit with the trial's values, reporting each validation; the best value is the result."""
    import optuna

    from lightning_llm.callbacks.graceful_stop import GracefulStop
    from lightning_llm.cli import build_cli
    from lightning_llm.tune.plan import TrialRun

    values = plan.space.values({p.key: p.sample(trial) for p in plan.space.parameters}, plan.trial_config)
    trial.set_user_attr("config", {key: yaml_value(value) for key, value in values.items()})
    trial.set_user_attr("worker", worker)
    reporter = ReportToTrial(trial, plan.metric, plan.direction)
    shown = ", ".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in values.items())
    start = time.perf_counter()
    try:
        cli = build_cli(plan.trial_args(trial.number, values), callbacks=[reporter], cli_class=TrialRun)
    except (Exception, SystemExit) as error:
        found = user_error_in(error) if isinstance(error, Exception) else None
        if found is None and isinstance(error, Exception):
            raise
        reason = (
            " ".join(str(found).split()) if found else "its settings did not parse (the error line above)"
        )
        trial.set_user_attr(_ERROR, reason)
        print(f"trial {trial.number} failed: {reason} ({shown})", file=sys.stderr)
        raise TrialFailed(reason) from None
    seconds = time.perf_counter() - start
    if any(isinstance(callback, GracefulStop) and callback.received for callback in cli.trainer.callbacks):
        trial.set_user_attr(_INTERRUPTED, True)
        raise Stopped(trial.params, trial.number)
    trial.set_user_attr("seconds", round(seconds, 1))
    if reporter.best is None or not math.isfinite(reporter.best):
        reason = f"the run logged no finite {plan.metric}"
        trial.set_user_attr(_ERROR, reason)
        print(f"trial {trial.number} failed: {reason} ({shown})", file=sys.stderr)
        raise TrialFailed(reason)
    where = f"worker {worker}, " if worker else ""
    if reporter.pruned_at is not None:
        trial.set_user_attr("pruned_at_step", reporter.pruned_at)
        print(
            f"trial {trial.number} pruned at step {reporter.pruned_at} ({where}{seconds:.0f} s; {shown})",
            file=sys.stderr,
        )
        raise optuna.TrialPruned(f"pruned at step {reporter.pruned_at}")
    print(
        f"trial {trial.number}: {plan.metric} {reporter.best:.4f} ({where}{seconds:.0f} s; {shown})",
        file=sys.stderr,
    )
    return reporter.best


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else yaml_value(value)
