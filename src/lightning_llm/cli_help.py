"""What the command line says when asked for help or given a wrong key: the overview of every command, the
keys of the config in hand, and one-line errors with the closest valid key."""

from __future__ import annotations

import contextlib
import difflib
import importlib
import re
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import yaml
from jsonargparse import ArgumentParser, auto_cli

from lightning_llm.errors import UserError, exit_on_user_error

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# Each is the function of the same name in its module.
OUR_COMMANDS = ("generate", "consolidate", "export", "serve", "tune", "prepare")
COMMANDS = (*LIGHTNING_COMMANDS, *OUR_COMMANDS)
OVERVIEW = """usage: lightning-llm COMMAND [options]

Commands:
  fit          Train a model: lightning-llm fit --config configs/<experiment>.yaml [--key value ...]
  validate     Evaluate a checkpoint on the validation data: validate --config ... --ckpt_path <file or last>
  test         Evaluate a checkpoint on the test data: test --config ... --ckpt_path <file or last>
  predict      Write predictions for unlabelled data: predict --config ... --ckpt_path <file or last>
  generate     Sample text from a language-model checkpoint: generate --ckpt_path <file> --prompt "def "
  consolidate  Merge a sharded (FSDP) checkpoint folder into one file: consolidate <folder>
  export       A checkpoint as a Hugging Face folder (GPT-2 format for GPTs): export --ckpt_path <file> --output_dir <dir>
  serve        A checkpoint behind HTTP (POST /predict, GET /health): serve --ckpt_path <file> --port 8000
  prepare      Tokenise a corpus once, in parallel, for streaming: prepare --data.path <files> --output_dir <dir>
  tune         Search hyperparameters with Optuna: tune --config <experiment>.yaml --search configs/search/<space>.yaml

Help on the keys:
  lightning-llm fit --config <experiment>.yaml --help   the model and data keys of that config, with defaults
  lightning-llm fit --help                              every trainer key
  lightning-llm generate --help                         generate's options (likewise consolidate, export)
"""
# The lines of a jsonargparse error that name the mistake; the rest repeats the whole config back.
_TELLING = re.compile(
    r"not accepted|not expected|Unrecognized|does not exist|No such file|Unknown|not found|Invalid|required"
)
# Lines of a jsonargparse error that echo values or list type alternatives instead of saying what is wrong.
_ECHO = re.compile(r"^-? ?(Given value|Subtypes:|Errors:|Expected a <class 'NoneType'>)")


def concise_error(message: str) -> str:
    """One line out of a jsonargparse error: the key and the reason, without the echoed config."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    key = re.match(r'Parser key "([^"]+)":\s*(.*)', lines[0]) if lines else None
    if key is not None:  # `Parser key "trainer.max_steps":` followed by indented reasons
        reasons = [key.group(2), *(line for line in lines[1:] if not _ECHO.match(line))]
        reason = " ".join(r.lstrip("- ") for r in reasons if r)
        return re.sub(r"Expected an? <class '([\w.]+)'>", r"expected \1", f"{key.group(1)}: {reason}")[:400]
    telling = [line for line in lines if _TELLING.search(line)]
    return "; ".join(dict.fromkeys(telling)) or (lines[0] if lines else "invalid arguments")


def unknown_key(message: str) -> str | None:
    """The key an error complains about as unknown, as the user wrote it (`--trainer.max_stpes`, `n_layr`)."""
    found = re.search(r"unrecognized arguments: (\S+)", message) or re.search(
        r"Option '([^']+)' is not accepted", message
    )
    return found.group(1).split("=", 1)[0] if found else None


def closest_key(key: str, parser: ArgumentParser, argv: list[str]) -> str | None:
    """The valid option of `parser` nearest to `key`, written with the prefix the user typed
    (`--model.init_args.learning_rat` -> `--model.init_args.learning_rate`)."""
    options = [option for option in parser._option_string_actions if option.startswith("--")]
    match = difflib.get_close_matches(key if key.startswith("--") else f"--{key}", options, n=1, cutoff=0.75)
    if not match:
        return None
    typed = next((a.split("=", 1)[0] for a in argv if a.split("=", 1)[0].endswith(f".{key}")), None)
    return f"{typed[: -len(key)]}{match[0][2:]}" if typed else match[0]


# Keys renamed so that both pipelines say the same thing the same way: an old config names the new key.
RENAMED_KEYS = {
    "val_batch_size": "data.eval_batch_size (as in the classifier)",
    "hf_dataset": "data.path hub:<dataset>[:<config>]:<split> (as in the classifier's splits)",
    "hf_config": "data.path hub:<dataset>:<config>:<split>",
    "hf_split": "data.path hub:<dataset>[:<config>]:<split>",
}


def renamed_key(key: str | None) -> str | None:
    if key is None:
        return None
    renamed = RENAMED_KEYS.get(key.lstrip("-").rsplit(".", 1)[-1])
    return f"; that key is now {renamed}" if renamed else None


class ConciseErrors:
    """Mixed into an argument parser: a mistake prints as one `error:` line with the closest valid key and
    the command that lists the valid ones, instead of the usage text and the whole config."""

    command = "fit"  # the subcommand being parsed and its arguments, for the hints (set by `cli.main`)
    argv: list[str] = []
    context = ""  # what is being parsed when it is not what the user typed (a checkpoint's settings)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        key = unknown_key(message)
        suggestion = closest_key(key, self, self.argv) if key else None  # type: ignore[arg-type]
        near = renamed_key(key) or (f"; did you mean {suggestion}?" if suggestion else "")
        hint = help_hint(self.command, key)
        print(f"error: {self.context}{concise_error(message)}{near} ({hint})", file=sys.stderr)
        raise SystemExit(2)


def help_hint(command: str, key: str | None) -> str:
    if command not in COMMANDS:
        return "`lightning-llm --help` lists the commands"
    if command not in LIGHTNING_COMMANDS:
        return f"`lightning-llm {command} --help` lists every option"
    if key is not None and key.lstrip("-").startswith("trainer."):
        return f"`lightning-llm {command} --help` lists every trainer key"
    return f"`lightning-llm {command} --config <your config> --help` lists its model and data keys"


class CommandParser(ConciseErrors, ArgumentParser):
    """The parser of `generate` and `consolidate`: exact keys only, one-line errors."""


def run_command(function: Callable, args: list[str] | None) -> None:
    """`lightning-llm <function name> ...`: the function's signature is its options (jsonargparse)."""
    ConciseErrors.command = function.__name__
    ConciseErrors.argv = list(sys.argv[1:] if args is None else args)
    with exit_on_user_error():
        auto_cli(
            function,
            args=args,
            parser_class=CommandParser,
            prog=f"lightning-llm {function.__name__}",
            allow_abbrev=False,
        )


def config_files(argv: list[str]) -> list[Path]:
    files = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("--config", "-c")]
    files += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config=")]
    return [Path(file) for file in files]


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error, not the last one."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


MAX_CONFIG_NODES = 100_000  # a real config has hundreds; aliases nested a few deep make billions


def too_many_nodes(value: object) -> bool:
    """Whether walking `value`, each alias expanded as a copy would expand it, passes MAX_CONFIG_NODES."""
    pending, count = [value], 0
    while pending:
        item = pending.pop()
        count += 1
        if count > MAX_CONFIG_NODES:
            return True
        if isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def check_command(word: str) -> None:
    """A UserError, with the closest command, unless `word` is one of ours (or an option for the parser)."""
    if word in COMMANDS or word.startswith("-"):
        return
    near = difflib.get_close_matches(word, COMMANDS, n=1)
    raise UserError(
        f"{word!r} is not a command{f'; did you mean {near[0]}?' if near else ''} (commands: "
        f"{', '.join(COMMANDS)}; `lightning-llm --help` says what each does)"
    )


def check_config_files(argv: list[str]) -> None:
    """Each `--config` file exists and holds a YAML mapping; else one UserError naming the file and line."""
    for file in config_files(argv):
        if not file.is_file() and not file.is_dir() and isinstance(inline_config(str(file)), dict):
            continue  # jsonargparse also takes the YAML itself: --config '{trainer: {max_steps: 5}}'
        if not file.is_file():
            what = "is a folder" if file.is_dir() else "does not exist"
            raise UserError(f"config file {file} {what}; pass a YAML file such as configs/gpt-pycode.yaml")
        try:
            loaded = yaml.load(file.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or "invalid YAML"
            raise UserError(f"config file {file}{where}: {problem}; fix the YAML there") from None
        except UnicodeDecodeError:
            raise UserError(f"config file {file} is not UTF-8 text; save it as UTF-8") from None
        if too_many_nodes(loaded):
            raise UserError(
                f"config file {file} expands to more than {MAX_CONFIG_NODES:,} values (YAML aliases?); "
                "write the values out"
            )
        if not isinstance(loaded, dict) or not loaded:
            held = "nothing" if not loaded else f"a {type(loaded).__name__}"
            raise UserError(
                f"config file {file} holds {held}, not a mapping of keys (trainer:, model:, data:)"
            )


def inline_config(text: str) -> object:
    """`text` read as YAML, or None when it is not YAML at all."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def wants_config_keys(argv: list[str]) -> bool:
    """`lightning-llm <command> --config X --help`: list the keys of that config's classes."""
    return (
        argv[:1] != []
        and argv[0] in LIGHTNING_COMMANDS
        and bool({"--help", "-h"} & set(argv))
        and bool(config_files(argv))
    )


def configured_classes(config: dict, prefix: str = "") -> Iterator[tuple[str, str, dict]]:
    """(dotted key, class path, init_args) of every `class_path` under the model and data sections."""
    for section in ("model", "data") if not prefix else tuple(config):
        value = config.get(section)
        if not isinstance(value, dict) or "class_path" not in value:
            continue
        key = f"{prefix}{section}"
        init_args = value.get("init_args") or {}
        yield key, value["class_path"], init_args
        yield from configured_classes(init_args, f"{key}.init_args.")


def print_config_keys(argv: list[str]) -> None:
    """Print, for each class the config files name, its keys with types, defaults (the config's values
    where it sets them) and docstrings, as they are typed on the command line."""
    check_config_files(argv)
    merged: dict = {}
    for file in config_files(argv):
        text = file.read_text(encoding="utf-8") if file.is_file() else str(file)
        merged = deep_merge(merged, yaml.safe_load(text))
    for key, class_path, init_args in configured_classes(merged):
        print(f"\n{key}: {class_path}")
        for option, text in class_keys(key, class_path, init_args):
            print(
                f"  {option}\n{textwrap.fill(text, 100, initial_indent=' ' * 6, subsequent_indent=' ' * 6)}"
            )
    print(f"Trainer keys: `lightning-llm {argv[0]} --help`.")


def class_keys(key: str, class_path: str, init_args: dict) -> Iterator[tuple[str, str]]:
    """(option, help with type and default) of each constructor argument of `class_path`; the config's value
    stands as the default where it sets one; arguments that hold another class are listed on their own."""
    nested = {name for name, value in init_args.items() if isinstance(value, dict) and "class_path" in value}
    parser = ArgumentParser(add_help=False)
    parser.add_class_arguments(
        configured_class(key, class_path), f"{key}.init_args", skip=nested, fail_untyped=False
    )
    for name, value in init_args.items():
        if name not in nested:  # show the config's value as the default
            with contextlib.suppress(KeyError, ValueError, TypeError):
                parser.set_defaults({f"{key}.init_args.{name}": value})
    for action in parser._actions:
        option = next((o for o in action.option_strings if o.startswith("--")), None)
        if (
            option is None
            or action.help is None
            or option.endswith(".help")
            or option == f"--{key}.init_args"
        ):
            continue
        default = parser.get_default(option[2:]) if option[2:] in parser.get_defaults() else None
        text = re.sub(r"\s*\((required, )?type: [^)]*\)\s*$", "", action.help.strip())
        yield option, f"{text} (default: {default!r})"


def configured_class(key: str, class_path: str) -> type:
    """The class a config names by its dotted path, or a UserError naming the key and the path."""
    module, _, name = str(class_path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise UserError(
            f"{key}.class_path {class_path!r} cannot be imported ({error}); fix it in the config"
        ) from None


def deep_merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            deep_merge(merged[key], value)
            if isinstance(merged.get(key), dict) and isinstance(value, dict)
            else value
        )
    return merged
