"""Hugging Face hub datasets, named the same way in both pipelines: `hub:<dataset>[:<config>]:<split>`.

Needs the `hub` extra (`datasets>=4`, which no longer runs dataset loading scripts, so reading a hub dataset
runs no code from it)."""

from __future__ import annotations

import importlib
from typing import Any

from lightning_llm.errors import UserError

HUB_PREFIX = "hub:"
HUB_FORM = "hub:<dataset>:<split> or hub:<dataset>:<config>:<split>, e.g. hub:glue:sst2:validation"


def is_hub_source(source: object) -> bool:
    return isinstance(source, str) and source.startswith(HUB_PREFIX)


def parse_hub_source(source: str) -> tuple[str, str | None, str]:
    """(dataset, config or None, split) of `hub:<dataset>[:<config>]:<split>`."""
    parts = source[len(HUB_PREFIX) :].split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise UserError(f"hub source {source!r} must be {HUB_FORM}")
    dataset, *config, split = parts
    return dataset, (config[0] if config else None), split


def load_hub_split(source: str) -> Any:
    """The `datasets.Dataset` of one split named by `source`; a UserError when it cannot be loaded."""
    dataset, config, split = parse_hub_source(source)
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise UserError(
            f"reading the hub dataset {dataset!r} needs the 'datasets' package; install it with: "
            "pip install 'lightning-llm[hub]' (or use local files)"
        ) from None
    name = f"{dataset}/{config}" if config else dataset
    try:
        return datasets.load_dataset(dataset, config, split=split)
    except (ValueError, KeyError, FileNotFoundError) as error:
        raise UserError(f"cannot load split {split!r} of hub dataset {name!r}: {error}") from None


def describe_hub_source(source: str) -> str:
    dataset, config, split = parse_hub_source(source)
    return (
        f"hub dataset {dataset}/{config} split {split!r}"
        if config
        else f"hub dataset {dataset} split {split!r}"
    )
