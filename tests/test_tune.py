"""`lightning-llm tune`: the search-space file's checks, and a tiny study through the real command line that
prunes a hopeless trial, survives kill -9 (finished trials kept, the interrupted one retried), runs two
workers on one study, and writes a best config that `fit` trains."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import yaml
from cli_runner import CLI_ENV, run_cli
from lm_helpers import SHAKESPEARE_CONFIG, tiny_lm_overrides, write_tiny_corpus
from optuna.trial import TrialState

from lightning_llm.errors import UserError
from lightning_llm.tune import parse_options
from lightning_llm.tune.space import join_list_items, load_search_space

GOOD_LR, HOPELESS_LR = 3.0e-3, 1.0e-7
LR = "model.init_args.learning_rate"
SPACE = f"""
during_search:
  trainer.max_steps: 30
  trainer.val_check_interval: 5
pruner: {{n_startup_trials: 1, n_warmup_steps: 20}}
parameters:
  {LR}: {{type: categorical, choices: [{GOOD_LR}, {HOPELESS_LR}]}}
  model.init_args.min_lr: {{type: float, low: 0.05, high: 0.2, times: {LR}}}
  model.init_args.betas.1: {{type: float, low: 0.95, high: 0.99}}
"""


def space_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_a_good_space_reads_with_ratios_and_list_items(tmp_path: Path):
    space = load_search_space(space_file(tmp_path, SPACE))
    assert [p.key for p in space.parameters] == [LR, "model.init_args.min_lr", "model.init_args.betas.1"]
    values = space.values(
        {LR: 0.002, "model.init_args.min_lr": 0.1, "model.init_args.betas.1": 0.97},
        {"model.init_args.betas": [0.9, 0.99]},
    )
    assert values == {
        LR: 0.002,
        "model.init_args.min_lr": pytest.approx(0.0002),
        "model.init_args.betas": [0.9, 0.97],
    }
    assert join_list_items({"a.0": 1, "a.1": 2}, {"a": [0, 0, 3]}) == {"a": [1, 2, 3]}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("parameters: {x: {type: float, low: 2.0, high: 1.0}}", ("low 2.0 is above high 1.0", "swap")),
        (
            "parameters: {x: {type: normal, low: 0, high: 1}}",
            ("x needs a distribution", "float, int or categorical"),
        ),
        ("parameters: {x: {type: float, low: 0.0, high: 1.0, log: true}}", ("log scale needs low > 0",)),
        ("parameters: {x: {type: int, low: 0.5, high: 3}}", ("low is 0.5", "finite int")),
        ("parameters: {x: {type: float, low: 0.1, high: 1.0, lgo: true}}", ("no setting 'lgo'",)),
        ("parameters: {x: {type: categorical, choices: []}}", ("needs choices",)),
        ("parameters: {x: {type: float, low: .nan, high: 1.0}}", ("low is nan",)),
        ("parameters: {}", ("`parameters:` must map",)),
        ("paramters: {x: {type: float, low: 0.1, high: 1.0}}", ("unknown section 'paramters'",)),
        ("direction: down\nparameters: {x: {type: float, low: 0.1, high: 1.0}}", ("minimize or maximize",)),
        (
            "pruner: {patience: 3}\nparameters: {x: {type: float, low: 0.1, high: 1.0}}",
            ("no setting 'patience'",),
        ),
        ("parameters: {x: {type: float, low: 0.1, high: 1.0}}\nparameters: {}", ("given twice",)),
        (
            "during_search: {x: 1}\nparameters: {x: {type: float, low: 0.1, high: 1.0}}",
            ("both searched and fixed",),
        ),
        ("- a list", ("must be a mapping",)),
        (
            "parameters: {a: {type: float, low: 1, high: 2}, b: {type: float, low: 1, high: 2, times: a}, "
            "c: {type: float, low: 1, high: 2, times: b}}",
            ("b, which is itself a ratio",),
        ),
        (
            "parameters: {a: {type: categorical, choices: [x, y]}, b: {type: float, low: 1, high: 2, times: a}}",
            ("whose choices are not all numbers",),
        ),
        (
            "parameters: {trainer.logger.init_args.version: {type: int, low: 1, high: 2}}",
            ("tune sets trainer.logger",),
        ),
        (
            "during_search: {ckpt_path: x.ckpt}\nparameters: {a: {type: int, low: 1, high: 2}}",
            ("tune sets ckpt_path",),
        ),
        ("parameters: [", ("not valid YAML",)),
    ],
)
def test_a_bad_space_is_one_error_naming_the_key(tmp_path: Path, text: str, says: tuple[str, ...]):
    with pytest.raises(UserError) as raised:
        load_search_space(space_file(tmp_path, text))
    for fragment in says:
        assert fragment in str(raised.value), str(raised.value)


@pytest.fixture
def lightning_log_levels():
    """tune quiets Lightning's loggers for its whole process; a test that plans in-process restores them."""
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def test_a_study_is_known_by_its_settings_not_by_how_they_were_typed(
    tmp_path: Path, monkeypatch, lightning_log_levels
):
    from lightning_llm.tune.plan import prepare_plan

    monkeypatch.chdir(tmp_path)
    corpus = write_tiny_corpus(tmp_path / "corpus.txt")
    space = space_file(tmp_path, SPACE)
    args = tune_args(corpus, space, n_trials=1)[1:]

    def digest(typed: list[str]) -> str:
        return prepare_plan(parse_options(typed), load_search_space(space)).settings_digest

    at = args.index("--data.block_size")
    joined = [*args[:at], f"--data.block_size={args[at + 1]}", *args[at + 2 :]]  # one argument, not two
    assert digest(joined) == digest(args)
    assert digest([*args[: at + 1], "32", *args[at + 2 :]]) != digest(args)


def test_options_are_split_between_tune_and_fit():
    options = parse_options(["--config", "a.yaml", "--search=s.yaml", "--n_trials", "3", "--data.path", "x"])
    assert (options.search, options.n_trials, options.workers) == ("s.yaml", 3, 1)
    assert options.fit_args == ["--config", "a.yaml", "--data.path", "x"]
    for argv, says in [
        (["--config", "a.yaml"], "needs --search"),
        (["--search", "s.yaml"], "needs --config"),
        (["--config", "a", "--search", "s", "--n_trials", "0"], "1 or more"),
        (["--config", "a", "--search", "s", "--workers", "999"], "cores"),
        (["--config", "a", "--search", "s", "--ckpt_path", "x.ckpt"], "drop --ckpt_path"),
        (["--config", "a", "--search", "s", "--trainer.logger.init_args.version=3"], "drop --trainer.logger"),
        (["--config", "a", "--search", "s", "--search", "t"], "given twice"),
        (["--config", "a", "--search", "s", "--study_name", "../up"], "names a folder"),
    ]:
        with pytest.raises(UserError, match=says):
            parse_options(argv)


# --- a tiny study through the real command line ---------------------------------------------------------


def tune_args(corpus: Path, space: Path, n_trials: int, workers: int = 1) -> list[str]:
    tiny = tiny_lm_overrides(corpus)
    tiny = tiny[: tiny.index("--trainer.logger.init_args.save_dir")]  # the study folder is tune's to choose
    return ["tune", "--config", str(SHAKESPEARE_CONFIG), *tiny, "--search", str(space), "--n_trials", str(n_trials),
            "--workers", str(workers)]  # fmt: skip


def study_trials(folder: Path) -> list:
    storage = f"sqlite:///{folder / 'study.db'}"
    return optuna.load_study(study_name=folder.name, storage=storage).get_trials(deepcopy=False)


def trials_so_far(folder: Path) -> list:
    """While `tune` runs: the study's trials, or none before it has created the study."""
    try:
        return study_trials(folder)
    except (KeyError, sqlalchemy.exc.OperationalError):  # no study yet, or its tables half made
        return []


def start_tune_until(args: list[str], cwd: Path, reached) -> subprocess.Popen:
    """`tune` started in the background, returned once `reached(trials)` holds (or it ended, or 4 minutes)."""
    running = subprocess.Popen(
        [sys.executable, "-m", "lightning_llm", *args], cwd=cwd, env={**os.environ, **CLI_ENV},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    folder = cwd / "logs" / "tune" / "space"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and running.poll() is None and not reached(trials_so_far(folder)):
        time.sleep(0.1)
    return running


def test_a_study_prunes_survives_kill_9_and_its_best_config_trains(tmp_path: Path):
    corpus = write_tiny_corpus(tmp_path / "corpus.txt")
    space = space_file(tmp_path, SPACE)
    folder = tmp_path / "logs" / "tune" / "space"
    folder.mkdir(parents=True)
    # the learning rates in a known order: good, hopeless, good; the rest sampled
    queued = optuna.create_study(
        study_name="space", storage=f"sqlite:///{folder / 'study.db'}", direction="minimize"
    )
    for learning_rate in (GOOD_LR, HOPELESS_LR, GOOD_LR):
        queued.enqueue_trial({LR: learning_rate})
    args = tune_args(corpus, space, n_trials=3)

    # first run: killed with SIGKILL while trial 1 runs
    first = start_tune_until(
        args, tmp_path, lambda t: len(t) > 1 and t[1].state == TrialState.RUNNING and t[1].intermediate_values
    )
    assert first.poll() is None, first.stderr.read()[-3000:]
    first.send_signal(signal.SIGKILL)
    first.wait()
    before = study_trials(folder)
    assert before[0].state == TrialState.COMPLETE and before[1].state == TrialState.RUNNING

    # the same command continues: trial 0 kept, trial 1 failed and retried, two workers now
    resumed = run_cli(tune_args(corpus, space, n_trials=3, workers=2), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "trial 1 was interrupted" in resumed.stderr
    after = study_trials(folder)
    assert (after[0].state, after[0].value) == (TrialState.COMPLETE, before[0].value)
    assert after[1].state == TrialState.FAIL
    retry = next(trial for trial in after if trial.user_attrs.get("retry_of") == 1)
    assert retry.params[LR] == HOPELESS_LR and retry.params == before[1].params
    assert retry.state == TrialState.PRUNED, "the hopeless learning rate was not pruned"
    finished = [trial for trial in after if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and len(after) == 4  # two workers, and still exactly --n_trials
    assert {trial.user_attrs["worker"] for trial in after[2:]} == {0, 1}  # both processes ran trials of it

    # what the study leaves: a table, plots, TensorBoard runs per trial, and a config fit trains as is
    table = (folder / "trials.md").read_text()
    assert "pruned at step" in table and "interrupted (retried)" in table
    complete = [trial for trial in after if trial.state == TrialState.COMPLETE]
    plots = {"history.png", "slice.png"} | ({"importances.png"} if len(complete) > 1 else set())
    assert {path.name for path in (folder / "plots").glob("*.png")} == plots
    assert list((folder / "trial_0").glob("events.out.tfevents.*"))
    best_trial = min((t for t in after if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    kept = {path.parent.parent.name for path in folder.glob("trial_*/checkpoints/*.ckpt")}
    assert kept == {f"trial_{best_trial.number}"}  # the other trials' checkpoints are deleted
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["model"]["init_args"]["learning_rate"] == best_trial.params[LR]
    assert best["model"]["init_args"]["min_lr"] == pytest.approx(
        best_trial.params["model.init_args.min_lr"] * GOOD_LR
    )
    assert best["model"]["init_args"]["betas"] == [
        0.9,
        pytest.approx(best_trial.params["model.init_args.betas.1"]),
    ]
    assert best["trainer"]["max_steps"] == 2000  # during_search's 30 steps were for the trials only
    assert best["trainer"]["enable_progress_bar"] is not False  # nor is the trials' quiet output
    trained = run_cli(
        [
            "fit",
            "--config",
            str(folder / "best.yaml"),
            "--trainer.max_steps",
            "2",
            "--trainer.val_check_interval",
            "2",
        ],
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (tmp_path / "logs" / "gpt-shakespeare-char" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_a_diverging_trial_is_pruned_so_the_sampler_learns_from_it(tmp_path: Path):
    corpus = write_tiny_corpus(tmp_path / "corpus.txt")
    space = SPACE.replace(f"[{GOOD_LR}, {HOPELESS_LR}]", "[1.0e18]")  # NaN within a few steps
    done = run_cli(tune_args(corpus, space_file(tmp_path, space), n_trials=1), tmp_path)
    (trial,) = study_trials(tmp_path / "logs" / "tune" / "space")
    assert trial.state == TrialState.PRUNED and trial.user_attrs["diverged_at_step"] >= 1, done.stderr[-3000:]
    assert done.returncode == 0 and "no trial finished, so no best config" in done.stderr
    assert f"trial 0 diverged at step {trial.user_attrs['diverged_at_step']}: pruned" in done.stderr
    table = (tmp_path / "logs" / "tune" / "space" / "trials.md").read_text()
    assert "diverged at step" in table


def test_ctrl_c_stops_the_study_and_the_same_command_retries_the_trial(tmp_path: Path):
    corpus = write_tiny_corpus(tmp_path / "corpus.txt")
    args = tune_args(corpus, space_file(tmp_path, SPACE), n_trials=2)
    folder = tmp_path / "logs" / "tune" / "space"
    running = start_tune_until(args, tmp_path, lambda trials: trials and trials[0].intermediate_values)
    running.send_signal(signal.SIGINT)
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 130, stderr[-3000:]
    assert "the same command continues the study" in stderr
    assert "--ckpt_path last" not in stderr  # fit's hint would resume one trial, not the study
    interrupted, queued = study_trials(folder)
    assert interrupted.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert queued.user_attrs["retry_of"] == 0
    assert queued.system_attrs["fixed_params"] == interrupted.params  # optuna's record of queued values
