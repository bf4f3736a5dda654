"""The documentation's commands: every ``python run_sweep.py ...`` in a code block of the README
or of docs/ composes against the configs, as the command line would take it (a renamed or
removed key fails here, not for the reader). The site itself is built by ``mkdocs build
--strict`` in CI."""

from __future__ import annotations

import re
import shlex
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
