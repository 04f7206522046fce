"""The `gatehouse` command: every sub-command explains itself with an example; errors are one line."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import version

import pytest

from gatehouse.cli import build_parser
from tests.support import ROOT


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(build_parser())


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatehouse.cli", *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_every_command_is_listed() -> None:
    assert {("serve",), ("db", "status"), ("db", "upgrade"), ("users", "create"), ("sim", "esp32")} <= set(COMMANDS)
    assert ("outbox",) in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "gatehouse")
def test_help_says_what_and_shows_an_example(command: tuple[str, ...]) -> None:
    done = _run(*command, "--help")
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert text.startswith("usage: gatehouse")
    example = text.split("examples:\n", 1)[1]
    assert example.strip().startswith(("gatehouse ", "GATEHOUSE_", "echo ")), text
    assert " ".join(("gatehouse", *command)) in example or not command


def test_version() -> None:
    done = _run("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"gatehouse {version('gatehouse')}"


@pytest.mark.parametrize(
    "args",
    [
        ("frobnicate",),
        ("db",),
        ("db", "downgrade"),
        ("serve", "--http-port", "eighty"),
        ("users", "create"),
        ("outbox", "--limit", "0"),
    ],
)
def test_usage_errors_are_one_line(args: tuple[str, ...]) -> None:
    done = _run(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gatehouse") and "--help" in lines[0], done.stderr
