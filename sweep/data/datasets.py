"""Named public data sets: download on first use, verify, convert once to ``text,label`` files.

A named data set's config (``configs/data/<name>.yaml``) lists its source files (URL and
checksum, so a user can point at a mirror) and names a converter here. ``prepare`` fetches the
files into ``<data.root>/<name>/raw/`` (``sweep.data.download``: checked, atomic, resumable) and
converts them once into ``<data.root>/<name>/<key>/<split>.parquet``, ``key`` digesting the
checksums, the converter's version and its options. The corpus stage then reads those files like
the user's own. Splits a source does not have (validation, and test for some) are split off
train by the corpus stage as usual.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pandas as pd

from sweep.common.atomic import replacing
from sweep.common.digest import json_digest
from sweep.data.download import fetch
from sweep.data.readers import DataError

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when a converter's output changes

Frames = dict[str, pd.DataFrame]
CONVERTERS: dict[str, Callable[..., Frames]] = {}


def converter(name: str):
    def register(function):
        CONVERTERS[name] = function
        return function

    return register


def prepare(data_cfg) -> dict[str, Path]:
    """Download and convert the named data set if needed; return split -> converted file."""
    name = data_cfg.dataset
    if name not in CONVERTERS:
        raise DataError(
            f"data.dataset={name!r} has no converter; known: {', '.join(sorted(CONVERTERS))}"
        )
    root = Path(data_cfg.get("root") or "data/datasets").expanduser() / name
    files = {key: dict(spec) for key, spec in data_cfg.files.items()}
    for key, spec in files.items():
        if not spec.get("url") or not spec.get("checksum"):
            raise DataError(f"data.files.{key} needs a url and a checksum (sha256:<hex>)")
    options = dict(data_cfg.get("options") or {})
    identity = {
        "version": CONVERTER_VERSION,
        "checksums": {k: s["checksum"] for k, s in sorted(files.items())},
        "options": options,
    }
    key = json_digest(identity, 12)
    out_dir = root / key
    done = out_dir / "splits.json"
    if done.is_file():
        return {s: out_dir / f"{s}.parquet" for s in json.loads(done.read_text())}

    raw = {}
    for file_key, spec in files.items():
        file_name = spec.get("name") or PurePosixPath(spec["url"].split("?")[0]).name
        raw[file_key] = fetch(
            spec["url"],
            root / "raw" / file_name,
            spec["checksum"],
            retries=int(data_cfg.get("download_retries", 3)),
        )
    log.info("converting %s to text,label files in %s", name, out_dir)
    frames = CONVERTERS[name](raw, **options)
    out_dir.mkdir(parents=True, exist_ok=True)
    for split, frame in frames.items():
        frame = frame[["text", "label"]].astype(str)
        with replacing(out_dir / f"{split}.parquet") as tmp:
            frame.to_parquet(tmp, index=False)
    done.write_text(json.dumps(sorted(frames)))  # written last: marks a finished conversion
    return {s: out_dir / f"{s}.parquet" for s in frames}


def _tar_members(path: Path, pattern: str):
    """Yield (regex match, bytes) for the archive's files whose path matches ``pattern``."""
    regex = re.compile(pattern)
    with tarfile.open(path, "r:*") as archive:
        for member in archive:
            match = regex.fullmatch(member.name.removeprefix("./"))
            if member.isfile() and match:
                yield match, archive.extractfile(member).read()


def _zhang_csv(data: bytes, names: list[str], text_fields: int) -> pd.DataFrame:
    """Zhang et al. (2015) CSV files: class index (1-based), then text fields; no header."""
    rows = csv.reader(io.StringIO(data.decode("utf-8")))
    texts, labels = [], []
    for row in rows:
        if not row:
            continue
        text = " ".join(field.strip() for field in row[1 : 1 + text_fields])
        texts.append(text.replace("\\n", "\n").replace('\\"', '"'))
        labels.append(names[int(row[0]) - 1])
    return pd.DataFrame({"text": texts, "label": labels})


@converter("ag_news")
def ag_news(raw: dict[str, Path]) -> Frames:
    """AG News (Zhang et al. 2015): title and description; 4 topics."""
    names = ["World", "Sports", "Business", "Sci/Tech"]
    return {s: _zhang_csv(raw[s].read_bytes(), names, 2) for s in ("train", "test")}


@converter("dbpedia")
def dbpedia(raw: dict[str, Path]) -> Frames:
    """DBpedia ontology (Zhang et al. 2015): title and abstract; 14 classes from classes.txt."""
    members = {m[1]: data for m, data in _tar_members(raw["archive"], r"[^/]+/(\w+)\.(?:csv|txt)")}
    names = members["classes"].decode("utf-8").split()
    return {s: _zhang_csv(members[s], names, 2) for s in ("train", "test")}


@converter("yelp_polarity")
def yelp_polarity(raw: dict[str, Path]) -> Frames:
    """Yelp review polarity (Zhang et al. 2015): 1 = negative, 2 = positive."""
    members = {m[1]: data for m, data in _tar_members(raw["archive"], r"[^/]+/(train|test)\.csv")}
    return {s: _zhang_csv(members[s], ["negative", "positive"], 1) for s in ("train", "test")}


@converter("imdb")
def imdb(raw: dict[str, Path]) -> Frames:
    """IMDB reviews (Maas et al. 2011): aclImdb/{train,test}/{pos,neg}/*.txt; <br /> -> space."""
    rows: dict[str, list] = {"train": [], "test": []}
    pattern = r"aclImdb/(train|test)/(pos|neg)/[^/]+\.txt"
    for match, data in _tar_members(raw["archive"], pattern):
        text = data.decode("utf-8").replace("<br />", " ")
        rows[match[1]].append((match.string, text, "positive" if match[2] == "pos" else "negative"))
    # Archive order is arbitrary: sort by member path so the rows (and seeds) are reproducible.
    return {
        s: pd.DataFrame([r[1:] for r in sorted(v)], columns=["text", "label"])
        for s, v in rows.items()
    }


@converter("20newsgroups")
def newsgroups(raw: dict[str, Path]) -> Frames:
    """20 Newsgroups, "bydate" split (Rennie): one post per file, Latin-1, label = newsgroup."""
    rows: dict[str, list] = {"train": [], "test": []}
    for match, data in _tar_members(raw["archive"], r"20news-bydate-(train|test)/([^/]+)/(\d+)"):
        rows[match[1]].append((match[2], int(match[3]), data.decode("latin-1")))
    return {
        s: pd.DataFrame([(t, g) for g, _, t in sorted(v)], columns=["text", "label"])
        for s, v in rows.items()
    }


@converter("trec")
def trec(raw: dict[str, Path], labels: str = "coarse") -> Frames:
    """TREC questions (Li & Roth 2002): lines ``COARSE:fine question``; Latin-1 (one byte)."""
    if labels not in ("coarse", "fine"):
        raise DataError(f"data.options.labels={labels!r} is unknown: use coarse or fine")
    frames = {}
    for split in ("train", "test"):
        texts, names = [], []
        for line in raw[split].read_bytes().decode("latin-1").splitlines():
            label, _, text = line.strip().partition(" ")
            if text:
                texts.append(text)
                names.append(label if labels == "fine" else label.split(":")[0])
        frames[split] = pd.DataFrame({"text": texts, "label": names})
    return frames


@converter("sst2")
def sst2(raw: dict[str, Path]) -> Frames:
    """SST-2 as in GLUE: train (phrases and sentences) and dev; GLUE's test has no labels, so
    dev is the test split here and validation is split off train."""
    frames = {}
    with zipfile.ZipFile(raw["archive"]) as archive:
        for split, member in (("train", "SST-2/train.tsv"), ("test", "SST-2/dev.tsv")):
            table = pd.read_csv(archive.open(member), sep="\t", quoting=csv.QUOTE_NONE, dtype=str)
            frames[split] = pd.DataFrame(
                {
                    "text": table["sentence"].str.strip(),
                    "label": table["label"].map({"0": "negative", "1": "positive"}),
                }
            )
    return frames
