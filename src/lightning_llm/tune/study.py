"""The study: SQLite storage in the study folder, one `tune` at a time on it, trials in `--workers` processes,
and a study killed mid-trial continuing where it stopped (the interrupted trial marked failed and retried).

Trials are taken with optuna's ask/tell under a file lock, so workers never start more than --n_trials.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

from lightning_llm.errors import UserError, user_error_in
from lightning_llm.tune.plan import Plan, TrialRun, legacy_settings_digest, yaml_value
from lightning_llm.tune.pruning import ReportToTrial

# User attributes of a trial (optuna keeps them in the study): what the table and best.yaml read back.
VALUES = "values"  # config key -> value the trial trained with (ratios applied, list items joined)
WORKER = "worker"  # the process that ran it (0: the `tune` command itself)
SECONDS = "seconds"
PRUNED_AT = "pruned_at_step"
DIVERGED_AT = "diverged_at_step"  # pruned, not failed: the sampler then learns to avoid such values
ERROR = "error"  # its run failed with this message: counted towards --n_trials, not retried
RETRY_OF = "retry_of"  # it repeats trial N, which a signal or a killed process interrupted
WORKER_EXIT_WAIT_S = 120  # after a stop, how long workers get to save and leave before they are killed


class Stopped(Exception):
    """A signal (Ctrl-C, SIGTERM) stopped this process's trial: the study stops; a rerun retries that trial."""


def load(plan: Plan, worker: int):
    """The study, its sampler seeded by the worker and the trials so far (a resumed study or a second
    worker must not propose the values already tried)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # tune prints one line per trial itself
    # SQLite serialises the workers' writes; a generous lock timeout instead of "database is locked"
    url = f"sqlite:///{(plan.study_dir / 'study.db').resolve()}"
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    try:
        trials_so_far = storage.get_n_trials(storage.get_study_id_from_name(plan.study_dir.name))
    except KeyError:
        trials_so_far = 0
    settings = plan.space.pruner
    pruner = optuna.pruners.NopPruner() if settings is None else optuna.pruners.MedianPruner(**settings)
    sampler = optuna.samplers.TPESampler(seed=plan.seed + 7919 * worker + trials_so_far, **plan.space.sampler)
    return optuna.create_study(
        storage=storage,
        study_name=plan.study_dir.name,
        direction=plan.direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


@contextlib.contextmanager
def open_study(plan: Plan) -> Iterator:
    """Create or continue the study; held exclusively while this `tune` runs. A study started with other
    settings is refused; trials left running by a killed `tune` are marked failed and queued again."""
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
        elif started_with not in (plan.settings_digest, legacy_settings_digest(plan.fit_args, plan.space)):
            raise UserError(
                f"the study in {plan.study_dir} was started with another config, flags or search space; rerun "
                "it with the same ones to continue it, or give this search another --study_name"
            )
        requeue_running(study, "was interrupted")
        yield study


def requeue_running(study, why: str) -> int:
    """Trials still marked running when no process runs them: failed, and their values queued again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        requeue(study, trial)
        print(f"trial {trial.number} {why}: marked failed, its values queued again", file=sys.stderr)
    return len(stale)


def requeue(study, trial) -> None:
    from optuna.trial import TrialState

    study.tell(trial.number, state=TrialState.FAIL)
    study.enqueue_trial(trial.params, user_attrs={RETRY_OF: trial.number}, skip_if_exists=False)


def counted(study) -> int:
    """Trials that count towards --n_trials: finished, pruned, failed with an error, or running now."""
    from optuna.trial import TrialState

    live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    trials = study.get_trials(deepcopy=False)
    return sum(t.state in live or (t.state == TrialState.FAIL and ERROR in t.user_attrs) for t in trials)


def next_trial(study, plan: Plan, n_trials: int):
    """A new trial (a queued one first), or None when the study holds --n_trials; one process at a time."""
    with open(plan.study_dir / ".ask.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return study.ask() if counted(study) < n_trials else None


def run_trials(plan: Plan, study, n_trials: int, worker: int) -> bool:
    """This process's trials until the study holds n_trials; False when a signal stopped one."""
    while (trial := next_trial(study, plan, n_trials)) is not None:
        try:
            run_one(plan, study, trial, worker)
        except (Stopped, KeyboardInterrupt):
            requeue(study, trial)
            return False
        keep_checkpoints_of_the_best(study, plan)
    return True


def coordinate(plan: Plan, study, options, argv: list[str]) -> bool:
    """The `tune` command's trials, beside --workers - 1 more processes; False when a signal stopped it."""
    import torch

    token = uuid.uuid4().hex
    workers = [start_worker(plan, index, argv, token) for index in range(1, options.workers)]
    if options.workers > 1:
        torch.set_num_threads(1)  # one core per trial: the processes run side by side
    try:
        wait_until_ready(study, workers, token)
        finished = run_trials(plan, study, options.n_trials, worker=0)
    except BaseException:
        stop(workers)
        raise
    if not finished:
        print("tune stopped by a signal; the same command continues the study", file=sys.stderr)
        stop(workers)
    for index, process in enumerate(workers, start=1):
        if process.wait() != 0:
            log = plan.study_dir / f"worker_{index}.log"
            print(f"worker {index} ended with exit status {process.returncode}; see {log}", file=sys.stderr)
    if finished and requeue_running(study, "was left running by a worker that died"):
        finished = run_trials(plan, study, options.n_trials, worker=0)
    return finished


def work(plan: Plan, options, worker: int, token: str, parent: int) -> None:
    """A process of --workers: trials of the study its parent opened, until the study is full."""
    die_with_parent(parent)
    study = load(plan, worker)
    study.set_user_attr(f"worker_{worker}_ready", token)
    if not run_trials(plan, study, options.n_trials, worker):
        raise SystemExit(130)


def wait_until_ready(study, workers: list[subprocess.Popen], token: str) -> None:
    """Until every worker has built its experiment (or died: its log says why), so that all start together."""
    waiting = dict(enumerate(workers, start=1))
    while waiting:
        ready = study.user_attrs
        for index, process in list(waiting.items()):
            if ready.get(f"worker_{index}_ready") == token or process.poll() is not None:
                del waiting[index]
        time.sleep(0.2 if waiting else 0)


def stop(workers: list[subprocess.Popen]) -> None:
    """SIGTERM: each worker's trial saves and stops (GracefulStop); one that does not leave in time is killed."""
    for process in workers:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + WORKER_EXIT_WAIT_S
    for process in workers:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()


def start_worker(plan: Plan, index: int, argv: list[str], token: str) -> subprocess.Popen:
    """Another process on the same study: the same command, one thread."""
    from lightning_llm.tune import WORKER_ENV

    env = {**os.environ, WORKER_ENV: f"{index}:{token}:{os.getpid()}", "OMP_NUM_THREADS": "1"}
    with open(plan.study_dir / f"worker_{index}.log", "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "lightning_llm", "tune", *argv],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def die_with_parent(parent: int) -> None:
    """A worker ends with its `tune` (Linux: SIGKILL when the parent dies), leaving no trial running unseen."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        raise SystemExit(1)


def keep_checkpoints_of_the_best(study, plan: Plan) -> None:
    """Trials are compared by their metric and `best.yaml` retrains the winner: only the best trial's
    checkpoints are worth their disk (MBs to GBs per trial); the others' go once another trial leads."""
    from optuna.trial import TrialState

    finished = study.get_trials(
        deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    )
    complete = [trial for trial in finished if trial.state == TrialState.COMPLETE]
    best = study.best_trial.number if complete else None
    for trial in finished:
        folder = plan.study_dir / f"trial_{trial.number}" / "checkpoints"
        if trial.number != best and folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


def run_one(plan: Plan, study, trial, worker: int) -> None:
    """One trial: fit with the trial's values, reporting each validation; its best value goes to the study."""
    from optuna.trial import TrialState

    from lightning_llm.callbacks.finite_loss import Diverged
    from lightning_llm.callbacks.graceful_stop import GracefulStop
    from lightning_llm.cli import build_cli

    values = plan.space.values({p.key: p.sample(trial) for p in plan.space.parameters}, plan.trial_config)
    trial.set_user_attr(VALUES, values)
    trial.set_user_attr(WORKER, worker)
    reporter = ReportToTrial(trial, plan.metric, plan.direction)
    shown = ", ".join(f"{key.rsplit('.', 1)[-1]}={_short(value)}" for key, value in values.items())
    where = f"worker {worker}, " if worker else ""
    start = time.perf_counter()

    def fail(reason: str) -> None:
        trial.set_user_attr(ERROR, reason)
        study.tell(trial, state=TrialState.FAIL)
        print(f"trial {trial.number} failed: {reason} ({where}{shown})", file=sys.stderr)

    try:
        cli = build_cli(plan.trial_args(trial.number, values), callbacks=[reporter], cli_class=TrialRun)
    except SystemExit as exit_:
        if exit_.code != 2:  # Lightning exits 1 after Ctrl-C outside the training loop
            raise Stopped from None
        return fail("its settings did not parse (the error line above)")
    except Exception as error:
        found = user_error_in(error)
        if found is None:
            study.tell(trial, state=TrialState.FAIL)
            raise
        if isinstance(found, Diverged):
            trial.set_user_attr(DIVERGED_AT, found.step)
            trial.set_user_attr(SECONDS, round(time.perf_counter() - start, 1))
            study.tell(trial, state=TrialState.PRUNED)
            print(
                f"trial {trial.number} diverged at step {found.step}: pruned ({where}{shown})",
                file=sys.stderr,
            )
            return
        return fail(" ".join(str(found).split()))
    if cli.trainer.interrupted or any(
        isinstance(c, GracefulStop) and c.received for c in cli.trainer.callbacks
    ):
        raise Stopped
    seconds = time.perf_counter() - start
    trial.set_user_attr(SECONDS, round(seconds, 1))
    if reporter.best is None or not math.isfinite(reporter.best):
        return fail(f"the run logged no finite {plan.metric}")
    if reporter.pruned_at is not None:
        trial.set_user_attr(PRUNED_AT, reporter.pruned_at)
        study.tell(trial, state=TrialState.PRUNED)
        print(
            f"trial {trial.number} pruned at step {reporter.pruned_at} ({where}{seconds:.0f} s; {shown})",
            file=sys.stderr,
        )
        return
    study.tell(trial, reporter.best)
    print(
        f"trial {trial.number}: {plan.metric} {reporter.best:.4f} ({where}{seconds:.0f} s; {shown})",
        file=sys.stderr,
    )


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else yaml_value(value)
