"""The reference pages, built from the code so that neither can drift from it.

Between ``<!-- columns ... -->`` and ``<!-- /columns -->`` stands the column table of
``sweep/schema.py``; between ``<!-- config ... -->`` and ``<!-- /config -->`` the config
reference: every group's options and every key with its comment, from the YAML files that
``python run_sweep.py --help`` reads (``sweep.cli``). The tables are written into the Markdown
files (``python docs/hooks.py`` rewrites them; ``tests/test_docs.py`` fails when one is out of
date), so the pages read as Markdown too; as an MkDocs hook, the site is built from the code's
tables whatever the files hold."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the sweep package of this checkout, installed or not

from sweep import schema  # noqa: E402
from sweep.cli import CONFIGS, config_groups, included_files, yaml_body  # noqa: E402

KNOWN = {
    "sizes": "before training (plan mode too)",
    "trained": "by training",
    "study": "the study's bookkeeping",
    "report": "by the report",
}


def columns_table() -> str:
    rows = ["| column | known | meaning |", "| --- | --- | --- |"]
    for column in schema.COLUMNS:
        rows.append(f"| `{column.name}` | {KNOWN[column.known]} | {column.doc} |")
    return "\n".join(rows)


def config_reference() -> str:
    out = ["## Top level (`configs/sweep.yaml`)", "", "```yaml", *yaml_body(CONFIGS / "sweep.yaml"),
           "```"]  # fmt: skip
    for group in config_groups():  # common/ is merged into each option's file (included_files)
        for path in sorted((CONFIGS / group).glob("*.yaml")):
            out += ["", f"## `{group}={path.stem}`", "", "```yaml"]
            for part in included_files(path):
                out += yaml_body(part)
            out += ["```"]
    return "\n".join(out)


GENERATED = {"columns": columns_table, "config": config_reference}
PAGES = [ROOT / "docs" / "reference" / f"{name}.md" for name in GENERATED]


def refreshed(markdown: str) -> str:
    """``markdown`` with each generated block (the marker, the table, the end marker) as the code
    makes it now; a marker without its end gets the table after it."""

    def block(match: re.Match) -> str:
        name = match.group("name")
        return f"{match.group('marker')}\n{GENERATED[name]()}\n<!-- /{name} -->"

    pattern = (r"(?P<marker><!-- (?P<name>columns|config)\b[^>]*-->)"
               r"(?:\n.*?\n<!-- /(?P=name) -->)?")  # fmt: skip
    return re.sub(pattern, block, markdown, flags=re.S)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return refreshed(markdown)


if __name__ == "__main__":  # python docs/hooks.py: write the tables into the pages
    for path in PAGES:
        text = path.read_text()
        if refreshed(text) != text:
            path.write_text(refreshed(text))
            print(f"rewrote {path.relative_to(ROOT)}")
