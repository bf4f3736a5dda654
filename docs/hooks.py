"""MkDocs hooks: the reference pages are built from the code, so neither can drift from it.

``<!-- columns ... -->`` becomes the column table of ``sweep/schema.py``; ``<!-- config ... -->``
the config reference: every group's options and every key with its comment, from the YAML files
that ``python run_sweep.py --help`` reads (``sweep.cli``)."""

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


def on_page_markdown(markdown: str, page, config, files) -> str:
    return re.sub(r"<!-- (columns|config)\b[^>]*-->", lambda m: GENERATED[m.group(1)](), markdown)
