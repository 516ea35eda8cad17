"""The search-space file of `lightning-llm tune`: which config keys to search, over what, and how.

    metric: val/loss          # optional: by default what the config's ModelCheckpoint monitors, and its mode
    direction: minimize
    during_search:            # settings for the trials only (shorter runs); the best config leaves them out
      trainer.max_steps: 500
    pruner: {n_startup_trials: 2, n_warmup_steps: 100}   # optuna's MedianPruner; `pruner: none` turns it off
    sampler: {n_startup_trials: 8}                        # optuna's TPESampler: random trials before TPE
    parameters:               # the same dotted keys as command-line overrides
      model.init_args.learning_rate: {type: float, low: 3.0e-4, high: 3.0e-3, log: true}
      model.init_args.min_lr: {type: float, low: 0.03, high: 0.3, log: true, times: model.init_args.learning_rate}
      model.init_args.warmup_steps: {type: int, low: 0, high: 200, step: 50}
      model.init_args.betas.1: {type: float, low: 0.95, high: 0.999}   # one item of a list
      model.init_args.model.init_args.bias: {type: categorical, choices: [true, false]}

`times: <key>` searches a ratio: the value given to the config is the sampled number times that key's value
in the same trial. A key ending in `.<n>` sets item n of the list the config holds there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lightning_llm.cli_help import UniqueKeyLoader
from lightning_llm.errors import UserError

DIRECTIONS = ("minimize", "maximize")


class SpaceLoader(UniqueKeyLoader):
    """The config files' loader, reading 1e-4 as a number too (YAML 1.1 wants 1.0e-4 and reads 1e-4 as text)."""


SpaceLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)
_TOP_KEYS = {"metric", "direction", "during_search", "pruner", "sampler", "parameters"}
_FIELDS = {
    "float": {"type", "low", "high", "log", "step", "times"},
    "int": {"type", "low", "high", "log", "step", "times"},
    "categorical": {"type", "choices"},
}
_PRUNER_KEYS = {"n_startup_trials", "n_warmup_steps"}
_SAMPLER_KEYS = {"n_startup_trials"}


@dataclass(frozen=True)
class Distribution:
    """One searched key: `float`/`int` between `low` and `high` (`log` scale, `step`), or `categorical`."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    times: str | None = None  # the sampled number multiplies this key's value

    def sample(self, trial) -> Any:
        """The trial's number for this key (before `times`), under the key's own name in the study."""
        if self.kind == "categorical":
            return trial.suggest_categorical(self.key, list(self.choices))
        suggest = trial.suggest_float if self.kind == "float" else trial.suggest_int
        return suggest(
            self.key, self.low, self.high, log=self.log, **({"step": self.step} if self.step else {})
        )

    @property
    def list_item(self) -> tuple[str, int] | None:
        """`betas.1` -> ("betas", 1): the key sets one item of a list."""
        head, _, tail = self.key.rpartition(".")
        return (head, int(tail)) if head and tail.isdigit() else None


@dataclass(frozen=True)
class SearchSpace:
    path: Path
    parameters: tuple[Distribution, ...]
    metric: str | None = None
    direction: str | None = None
    during_search: Mapping[str, Any] = field(default_factory=dict)
    pruner: Mapping[str, int] | None = field(default_factory=dict)  # None: no pruning
    sampler: Mapping[str, int] = field(default_factory=dict)
    text: str = ""  # the file as read: a resumed study must have been started with the same one

    def values(self, sampled: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
        """Config key -> value for one trial: `sampled` by the study, `times` applied, list items put in
        the list the config holds (`base` gives the config's values of keys the trial does not set)."""
        values: dict[str, Any] = {}
        for parameter in self.parameters:
            value = sampled[parameter.key]
            if parameter.times is not None:
                factor = sampled.get(parameter.times, base.get(parameter.times))
                value = value * factor
            values[parameter.key] = value
        return join_list_items(values, base)


def join_list_items(values: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """`{"betas.1": 0.97}` with the config's betas [0.9, 0.99] -> `{"betas": [0.9, 0.97]}`."""
    joined: dict[str, Any] = {}
    for key, value in values.items():
        head, _, tail = key.rpartition(".")
        if head and tail.isdigit():
            items = list(joined.get(head, base[head]))
            items[int(tail)] = value
            joined[head] = items
        else:
            joined[key] = value
    return joined


def load_search_space(path: str | Path) -> SearchSpace:
    """Read and check a search-space file; every mistake is one error naming the file and the key."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--search {path} does not exist; pass a search-space YAML (see configs/search/)")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        spec = yaml.load(text, Loader=SpaceLoader)  # noqa: S506 - a safe loader that refuses repeated keys
    except yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        raise UserError(f"--search {path} is not valid YAML ({reason}); fix the file") from None
    if not isinstance(spec, dict):
        raise UserError(
            f"--search {path} must be a mapping with a `parameters:` section; see configs/search/"
        )
    where = f"search space {path}"
    unknown = set(spec) - _TOP_KEYS
    if unknown:
        raise UserError(
            f"{where}: unknown section {sorted(unknown)[0]!r}; it may hold {', '.join(sorted(_TOP_KEYS))}"
        )
    parameters = spec.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise UserError(f"{where}: `parameters:` must map config keys to distributions; it is {parameters!r}")
    distributions = tuple(_distribution(where, key, body) for key, body in parameters.items())
    by_key = {distribution.key: distribution for distribution in distributions}
    for distribution in distributions:
        target = by_key.get(distribution.times) if distribution.times else None
        if distribution.times is not None and distribution.times == distribution.key:
            raise UserError(f"{where}: {distribution.key} cannot be a multiple of itself (times:)")
        if target is not None and target.times is not None:
            raise UserError(
                f"{where}: {distribution.key} multiplies {target.key}, which is itself a ratio; multiply "
                "a key that takes its value as drawn"
            )
        if (
            target is not None
            and target.kind == "categorical"
            and not all(_is_number(c) for c in target.choices)
        ):
            raise UserError(
                f"{where}: {distribution.key} multiplies {target.key}, whose choices are not all numbers"
            )
    direction = spec.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise UserError(f"{where}: direction is {direction!r}; use minimize or maximize")
    metric = spec.get("metric")
    if metric is not None and not (isinstance(metric, str) and metric.strip()):
        raise UserError(f"{where}: metric is {metric!r}; name a logged metric such as val/loss")
    during_search = spec.get("during_search") or {}
    if not isinstance(during_search, dict):
        raise UserError(f"{where}: during_search must map config keys to values; it is {during_search!r}")
    for key in [*parameters, *during_search]:
        if key == "ckpt_path" or (
            key.startswith("trainer.logger") and key != "trainer.logger.init_args.save_dir"
        ):
            raise UserError(
                f"{where}: tune sets {key} for each trial itself (a fresh run in the study's folder); remove it"
            )
    overlap = set(during_search) & set(parameters)
    if overlap:
        raise UserError(
            f"{where}: {sorted(overlap)[0]} is both searched and fixed in during_search; keep one"
        )
    return SearchSpace(
        path=path,
        parameters=distributions,
        metric=metric,
        direction=direction,
        during_search=during_search,
        pruner=_counts(where, "pruner", spec.get("pruner", {}), _PRUNER_KEYS, allow_none=True),
        sampler=_counts(where, "sampler", spec.get("sampler", {}), _SAMPLER_KEYS, allow_none=False),
        text=text,
    )


def _distribution(where: str, key: Any, body: Any) -> Distribution:
    if not isinstance(key, str) or not key or key.startswith(("-", ".")) or " " in key:
        raise UserError(
            f"{where}: {key!r} is not a config key; write dotted keys such as model.init_args.learning_rate"
        )
    if not isinstance(body, dict) or body.get("type") not in _FIELDS:
        raise UserError(
            f"{where}: {key} needs a distribution such as {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}} "
            "(type float, int or categorical)"
        )
    kind = body["type"]
    unknown = set(body) - _FIELDS[kind]
    if unknown:
        raise UserError(
            f"{where}: {key} ({kind}) has no setting {sorted(unknown)[0]!r}; it takes {', '.join(sorted(_FIELDS[kind]))}"
        )
    if kind == "categorical":
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: {key} (categorical) needs choices: [a, b, ...]")
        if any(not isinstance(choice, bool | int | float | str) and choice is not None for choice in choices):
            raise UserError(f"{where}: {key}: choices must be numbers, strings, true/false or null")
        return Distribution(key, kind, choices=tuple(choices))
    number = float if kind == "float" else int
    low, high = body.get("low"), body.get("high")
    for name, value in (("low", low), ("high", high)):
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (kind == "int" and not isinstance(value, int)):
            raise UserError(f"{where}: {key}: {name} is {value!r}; give a finite {kind}")
    if low > high:
        raise UserError(f"{where}: {key}: low {low} is above high {high}; swap them")
    log = body.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: {key}: log is {log!r}; use true or false")
    if log and low <= 0:
        raise UserError(f"{where}: {key}: a log scale needs low > 0 (it is {low})")
    step = body.get("step")
    if step is not None:
        if (
            not isinstance(step, int | float)
            or isinstance(step, bool)
            or step <= 0
            or (kind == "int" and not isinstance(step, int))
        ):
            raise UserError(f"{where}: {key}: step is {step!r}; give a positive {kind}")
        if log:
            raise UserError(f"{where}: {key}: choose log or step, not both (optuna takes one)")
    times = body.get("times")
    if times is not None and not isinstance(times, str):
        raise UserError(f"{where}: {key}: times is {times!r}; name the config key whose value it multiplies")
    return Distribution(key, kind, number(low), number(high), log, step, times=times)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _counts(where: str, name: str, value: Any, allowed: set[str], allow_none: bool) -> dict[str, int] | None:
    if value in ("none", None) and allow_none:
        return None
    if not isinstance(value, dict) or set(value) - allowed:
        extra = sorted(set(value) - allowed)[0] if isinstance(value, dict) else None
        what = f"has no setting {extra!r}" if extra else f"is {value!r}"
        raise UserError(
            f"{where}: {name} {what}; it takes {', '.join(sorted(allowed))}"
            + (" (or none)" if allow_none else "")
        )
    for key, count in value.items():
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise UserError(f"{where}: {name}.{key} is {count!r}; give a whole number, 0 or more")
    return dict(value)
