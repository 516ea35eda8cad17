"""Every command the README (and docs/benchmarks.md) shows is real: make targets exist, CLI commands parse,
scripts and files exist."""

from __future__ import annotations

import contextlib
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from lightning_llm.cli import main
from lightning_llm.cli_help import OUR_COMMANDS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = (README, REPO / "docs" / "benchmarks.md")
CLI_PREFIXES = (
    "lightning-llm",
    ".venv/bin/lightning-llm",
    "python -m lightning_llm",
    ".venv/bin/python -m lightning_llm",
)


def readme_commands() -> list[str]:
    """The shell commands in the docs' ```bash blocks, continuation lines joined, comments dropped."""
    text = "".join(doc.read_text(encoding="utf-8") for doc in DOCS)
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z][\w-]*):", (REPO / "Makefile").read_text(), flags=re.M))


def cli_words(command: str) -> list[str] | None:
    """The arguments after the CLI's name, or None when the command is not a lightning-llm call."""
    for prefix in CLI_PREFIXES:
        if command.startswith(prefix + " "):
            return shlex.split(command[len(prefix) :])
    return None


COMMANDS = readme_commands()
SCRIPT_COMMAND = re.compile(r"^(\S+=\S+ )*(scripts/|bench/|python bench/|\.venv/bin/python bench/|sbatch )")


def test_every_command_is_checked_by_a_test_below():
    unchecked = [
        c for c in COMMANDS if not (c.startswith("make ") or cli_words(c) or SCRIPT_COMMAND.match(c))
    ]
    assert not unchecked, f"commands no test runs: {unchecked}"


def test_the_readme_shows_the_two_setup_commands():
    assert "make train" in COMMANDS and "make test" in COMMANDS


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("make ")])
def test_make_targets_exist(command):
    words = shlex.split(command)
    targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
    assert targets and set(targets) <= make_targets(), f"{command}: no such make target"
    # `make -n` expands the recipe without running it: variables and prerequisites must resolve
    dry = subprocess.run(["make", "-n", *words[1:]], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr


def written_config(command: str) -> str | None:
    """The --config a command reads from logs/, which an earlier command in the docs writes (not in a fresh clone)."""
    words = cli_words(command) or []
    config = next((words[i + 1] for i, w in enumerate(words[:-1]) if w == "--config"), None)
    return config if config and config.startswith("logs/") else None


@pytest.mark.parametrize(
    "command",
    [c for c in COMMANDS if cli_words(c) and cli_words(c)[0] not in OUR_COMMANDS and not written_config(c)],
)
def test_cli_commands_parse(command, monkeypatch, capsys):
    monkeypatch.chdir(REPO)  # the README's paths are relative to the repository
    words = [w for w in cli_words(command) if w != "--print_config"]
    with pytest.raises(SystemExit) as exited:
        main([*words, "--print_config"])  # parses the whole config, links and all, and trains nothing
    assert exited.value.code == 0, capsys.readouterr().err


@pytest.mark.parametrize("command", [c for c in COMMANDS if written_config(c)])
def test_configs_under_logs_are_written_by_a_tune_shown_before(command):
    """best.yaml exists only after its study; tests/test_tune.py trains one with fit. Here: the docs run that
    study first, on the experiment whose name the path carries."""
    name = Path(written_config(command)).parent.name
    earlier = COMMANDS[: COMMANDS.index(command)]
    tunes = [c for c in earlier if (cli_words(c) or [""])[0] == "tune" and f"configs/{name}.yaml" in c]
    assert written_config(command) == f"logs/tune/{name}/best.yaml" and tunes, f"{command}: nothing writes it"


@pytest.mark.parametrize("command", [c for c in COMMANDS if cli_words(c) and cli_words(c)[0] in OUR_COMMANDS])
def test_our_commands_use_real_options(command, capsys):
    """generate, export, serve, consolidate read checkpoints the docs only name, tune runs for minutes: their
    options must exist (tune's dotted ones are fit's, which its own checks parse before any trial)."""
    with contextlib.suppress(SystemExit):  # jsonargparse's --help exits; tune's prints its usage and returns
        main([cli_words(command)[0], "--help"])
    options = set(re.findall(r"--\w+", capsys.readouterr().out))
    used = {w.split("=")[0] for w in cli_words(command) if w.startswith("--") and "." not in w}
    assert used <= options, f"unknown options {used - options}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if SCRIPT_COMMAND.match(c)])
def test_scripts_exist_and_parse(command):
    script = next(w for w in shlex.split(command) if w.startswith(("scripts/", "bench/")))
    path = REPO / script
    assert path.is_file(), f"{command}: {script} does not exist"
    checker = ["bash", "-n"] if path.suffix in (".sh", ".sbatch") else ["python", "-m", "py_compile"]
    assert subprocess.run([*checker, str(path)], capture_output=True).returncode == 0


def test_every_config_the_readme_names_exists():
    text = "".join(doc.read_text(encoding="utf-8") for doc in DOCS)
    named = set(re.findall(r"configs/[\w/.-]+\.yaml", text))
    missing = [name for name in sorted(named) if not (REPO / name).is_file()]
    assert named and not missing, f"the README names configs that do not exist: {missing}"
