"""The console scripts of pyproject.toml: installed, and `--help` describes every option.

Each script's `main(["--help"])` runs in-process (argparse prints and exits 0); the help text is
then read the way a user reads it: every option and positional named in the usage line must have
an entry with a description.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
SCRIPTS: dict[str, str] = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["scripts"]


def _entry(target: str) -> Callable[[list[str]], int]:
    module, _, function = target.partition(":")
    entry: Callable[[list[str]], int] = getattr(importlib.import_module(module), function)
    return entry


def _help_entries(text: str) -> dict[str, str]:
    """`{first name of the entry: its description}` from argparse's argument sections."""
    entries: dict[str, str] = {}
    current: str | None = None
    in_section = False
    for line in text.splitlines():
        if re.match(r"^(positional arguments|options|optional arguments|[\w ]+):$", line):
            in_section, current = True, None
            continue
        if not in_section or not line.strip():
            continue
        if re.match(r"^  \S", line):  # an entry: "  --name VALUE   description"
            head, _, description = line.strip().partition("  ")
            current = head.split(", ")[-1].split()[0] if head.startswith("-") else head.split()[0]
            entries[current] = description.strip()
        elif current is not None and line.startswith("    "):  # a wrapped description
            entries[current] = f"{entries[current]} {line.strip()}".strip()
    return entries


def test_scripts_are_the_three_jobs() -> None:
    assert SCRIPTS == {
        "mldm-serve": "service.__main__:main",
        "mldm-train": "training.__main__:main",
        "mldm-data": "data.schrodinger:main",
    }


def test_scripts_are_installed() -> None:
    """The environment's entry points match pyproject (else: pip install --no-deps -e .)."""
    installed = {
        entry.name: entry.value
        for entry in importlib.metadata.entry_points(group="console_scripts")
        if entry.name in SCRIPTS
    }
    assert installed == SCRIPTS


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_describes_every_option(
    script: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as exited:
        _entry(SCRIPTS[script])(["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    usage = text.split("\n\n", 1)[0]
    assert usage.startswith("usage: ")
    options = set(re.findall(r"\[?(--[a-z][a-z0-9-]*)", usage)) - {"--help"}
    entries = _help_entries(text)
    assert options, text
    for option in sorted(options):
        assert entries.get(option), f"{script}: {option} has no description:\n{text}"
    for name, description in entries.items():
        assert len(description) >= 10, f"{script}: {name}: description too short: {description!r}"
    # A positional is shown as {a,b,...} or NAME; each has its own entry too.
    positionals = [e for e in entries if not e.startswith("-")]
    assert all(entries[p] for p in positionals)
