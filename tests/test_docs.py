"""The documentation's commands: every ``python run_sweep.py ...`` in a code block of the README
or of docs/ composes against the configs, as the command line would take it (a renamed or
removed key fails here, not for the reader); every ``python -m sweep.X ...`` in a code block or
an inline code span parses with that command's own argument parser (a required option left out,
a renamed flag fails here); the reference pages hold the tables the code generates, so they read
in Markdown too. The site itself is built by ``mkdocs build --strict`` in CI."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

from sweep.cli import check_additions, compose_user, overrides_of

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def commands(page: Path) -> list[tuple[int, str]]:
    """(line, command) of each ``python run_sweep.py`` line in the page's code blocks, with its
    backslash continuations joined."""
    out, fence, lines = [], False, page.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("```"):
            fence = not fence
        elif fence and line.startswith("python run_sweep.py"):
            start, text = i + 1, line
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i].strip()
            out.append((start, text))
        i += 1
    return out


def first_value(override: str) -> str:
    """A multirun sweep's first job: ``k=a,b`` -> ``k=a``, ``k=range(0,4)`` -> ``k=0``."""
    key, _, value = override.partition("=")
    swept = re.fullmatch(r"(?:range|choice)\(([^,)]+).*\)", value)
    if swept:
        return f"{key}={swept.group(1)}"
    if "," in value and not value.startswith(("[", "{", "'", '"')):
        return f"{key}={value.split(',')[0]}"
    return override


def as_overrides(command: str) -> list[str]:
    """The overrides a command composes: comments dropped, a multirun sweep's first job."""
    argv = shlex.split(command, comments=True)[2:]
    multirun = "--multirun" in argv or "-m" in argv
    overrides = overrides_of(argv)
    return [first_value(o) for o in overrides] if multirun else overrides


CASES = [(page, line, command) for page in PAGES for line, command in commands(page)]


def test_the_docs_show_commands():
    assert len(CASES) >= 15  # the README's and the pages' examples are found
    assert {page.name for page, _, _ in CASES} >= {"README.md", "usage.md", "parallel.md"}


@pytest.mark.parametrize(
    ("page", "line", "command"), CASES, ids=[f"{p.name}:{n}" for p, n, _ in CASES]
)
def test_every_documented_command_composes(page, line, command):
    overrides = as_overrides(command)
    compose_user(overrides)  # raises on an unknown key, group or option
    assert check_additions(overrides) is None, f"{page.name}:{line}: {command}"


def module_commands(page: Path) -> list[tuple[int, str]]:
    """(line, command) of each ``python -m sweep.X ...`` of the page: in code blocks (backslash
    continuations joined, comments dropped) and in inline code spans (which may wrap)."""
    text = page.read_text()
    out = []
    for match in re.finditer(r"```.*?```", text, re.S):
        block = re.sub(r"\\\n\s*", " ", match.group(0))
        for line in block.splitlines():
            start = line.find("python -m sweep.")
            if start >= 0:
                number = text[: match.start()].count("\n") + 1
                out.append((number, line[start:]))
    prose = re.sub(r"```.*?```", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    for match in re.finditer(r"`(python -m sweep\.[^`]+)`", prose):
        command = " ".join(match.group(1).split())
        if len(command.split()) > 3:  # a command line, not the command's name alone
            out.append((prose[: match.start()].count("\n") + 1, command))
    return out


# Usage lines, not commands: a NAME placeholder for the module, [optional] parts.
MODULE_CASES = [(page, line, command) for page in PAGES for line, command in module_commands(page)
                if ".NAME" not in command and "[" not in command]  # fmt: skip


class Parsed(Exception):
    """The command's arguments parsed: the test stops it there, before any work."""


def test_the_docs_show_module_commands():
    modules = {shlex.split(c, comments=True)[2] for _, _, c in MODULE_CASES}
    assert {"sweep.report", "sweep.predict", "sweep.benchmarks.search_efficiency"} <= modules


@pytest.mark.parametrize(
    ("page", "line", "command"), MODULE_CASES, ids=[f"{p.name}:{n}" for p, n, _ in MODULE_CASES]
)
def test_every_documented_module_command_parses(page, line, command, monkeypatch, capsys):
    argv = shlex.split(command, comments=True)
    module = argv[2]
    target = {"sweep.report": "sweep.report.build", "sweep.predict": "sweep.ship.export"}
    main = importlib.import_module(target.get(module, module)).main
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        real(self, args, namespace)
        raise Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [module, *argv[3:]])
    try:
        main(argv[3:])
    except Parsed:
        return
    except SystemExit as stop:
        pytest.fail(f"{page.name}:{line}: {command}: {capsys.readouterr().err.strip()} ({stop})")
    pytest.fail(f"{page.name}:{line}: {command}: parsed nothing")


@pytest.mark.parametrize("name", ["columns", "config"])
def test_the_reference_pages_hold_what_the_code_generates(name):
    """docs/reference/*.md read in Markdown: the generated table is in the file, up to date
    (``python docs/hooks.py`` rewrites them)."""
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        hooks = importlib.import_module("hooks")
    finally:
        sys.path.remove(str(ROOT / "docs"))
    page = ROOT / "docs" / "reference" / f"{name}.md"
    assert hooks.refreshed(page.read_text()) == page.read_text(), (
        f"{page} is out of date: run python docs/hooks.py"
    )
