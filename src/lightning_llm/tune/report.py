"""After the trials: the study as a table (trials.md), the best trial's config as a file `fit` runs as is
(best.yaml), and Optuna's plots (optimisation history, parameter importances, slice) as PNG files."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from lightning_llm.atomic import atomic_write_text
from lightning_llm.tune.plan import Plan
from lightning_llm.tune.study import DIVERGED_AT, ERROR, PRUNED_AT, RETRY_OF, SECONDS, VALUES, WORKER


def write_report(study, plan: Plan) -> None:
    from optuna.trial import TrialState

    table = trials_table(study, plan)
    atomic_write_text(plan.study_dir / "trials.md", table)
    print(table, file=sys.stderr)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        print(f"no trial finished, so no best config; the trials are in {plan.study_dir}", file=sys.stderr)
        return
    best = study.best_trial
    best_config = plan.study_dir / "best.yaml"
    header = (
        f"# Trial {best.number} of the study in {plan.study_dir}: {plan.metric} {best.value:.4f} "
        f"(best of {len(complete)} finished trials).\n# lightning-llm fit --config {best_config}\n"
    )
    values = best.user_attrs[VALUES]
    atomic_write_text(best_config, header + plan.best_config_yaml(values))
    written = write_plots(study, plan.study_dir / "plots")
    print(
        f"best: trial {best.number}, {plan.metric} {best.value:.4f}; its config {best_config} "
        f"(lightning-llm fit --config {best_config}); plots: {', '.join(written) or 'none'}",
        file=sys.stderr,
    )


def trials_table(study, plan: Plan) -> str:
    """One row per trial: its state, the metric (best of its validations), where it stopped, its values."""
    trials = study.get_trials(deepcopy=False)
    retried = {trial.user_attrs.get(RETRY_OF) for trial in trials}
    keys = [parameter.key for parameter in plan.space.parameters]
    names = [
        _short_key(p.key) + (f" (x {_short_key(p.times)})" if p.times else "") for p in plan.space.parameters
    ]
    lines = [
        f"| trial | state | {plan.metric} | seconds | worker | " + " | ".join(names) + " |",
        "|---:|---|---:|---:|---:|" + "---:|" * len(keys),
    ]
    for trial in trials:
        state = trial.state.name.lower()
        if PRUNED_AT in trial.user_attrs:
            state = f"pruned at step {trial.user_attrs[PRUNED_AT]}"
        elif DIVERGED_AT in trial.user_attrs:
            state = f"diverged at step {trial.user_attrs[DIVERGED_AT]} (pruned)"
        elif trial.number in retried:
            state = "interrupted (retried)"
        elif ERROR in trial.user_attrs:
            state = f"failed: {trial.user_attrs[ERROR][:60]}"
        value = f"{trial.value:.4f}" if trial.value is not None else ""
        seconds = trial.user_attrs.get(SECONDS, "")
        cells = [_cell(trial.params.get(key)) for key in keys]
        worker = trial.user_attrs.get(WORKER, "")
        lines.append(
            f"| {trial.number} | {state} | {value} | {seconds} | {worker} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n"


def _short_key(key: str) -> str:
    return key.removeprefix("model.init_args.").removeprefix("data.init_args.")


def _cell(value) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_plots(study, folder: Path) -> list[str]:
    """The plots the study has enough trials for; returns the written file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    wanted = {"history": plots.plot_optimization_history, "slice": plots.plot_slice}
    if complete >= 2:  # importances compare finished trials
        wanted["importances"] = plots.plot_param_importances
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, plot in wanted.items():
        with warnings.catch_warnings():
            # optuna marks its matplotlib plots experimental; the slice plot's colour bar defeats tight_layout
            warnings.simplefilter("ignore")
            axes = plot(study)
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.set_size_inches(max(figure.get_size_inches()[0], 8), 5)
            figure.tight_layout()
        figure.savefig(folder / f"{name}.png", dpi=100)
        plt.close(figure)
        written.append(f"{folder / name}.png")
    return written
