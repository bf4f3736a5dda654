"""Stage 1, corpus: load texts and labels from the configured source and split them.

Sources: ``synthetic`` (generated from the seed, see ``sweep.synthetic``) and ``files`` (CSV, TSV,
JSONL or Parquet, optionally compressed). Missing validation or test files are split off the train
file, stratified by class and seeded. Every problem with the input is a ``DataError`` that names the
config key or file at fault, raised before any training starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sweep import synthetic

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".zip")
_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}


class DataError(ValueError):
    """Bad input data or data config; the message names the key or file and what to do."""


@dataclass
class Corpus:
    """Raw texts and integer labels per split, plus what identifies the source's content."""

    texts: dict[str, list[str]]
    labels: dict[str, np.ndarray]  # int64 class ids per split
    label_names: list[str]  # class id -> original label, as text
    fingerprint: str  # hash of the source's content and the split settings


def load_corpus(data_cfg, seed: int) -> Corpus:
    """Load the corpus described by ``cfg.data``; ``seed`` drives generation and splitting."""
    source = data_cfg.source
    if source == "synthetic":
        params = dict(data_cfg.synthetic)
        texts, labels = synthetic.generate(seed=seed, **params)
        frames = {"train": pd.DataFrame({"text": texts, "label": labels})}
        identity = {"synthetic": params, "seed": seed}
        text_column, label_column = "text", "label"
    elif source == "files":
        text_column, label_column = data_cfg.text_column, data_cfg.label_column
        frames, identity = {}, {}
        for split in SPLITS:
            path = data_cfg.get(split)
            if path is None:
                if split == "train":
                    raise DataError("data.train is not set: pass data.train=PATH (CSV, TSV, ...)")
                continue
            frames[split] = read_table(split, path, data_cfg.get("format", "auto"))
            check_columns(frames[split], split, path, text_column, label_column)
            identity[split] = file_digest(Path(path))
    else:
        raise DataError(f"data.source={source!r} is unknown: use 'synthetic' or 'files'")

    split_cfg = {
        "validation_fraction": data_cfg.validation_fraction,
        "test_fraction": data_cfg.test_fraction,
        "seed": seed,
    }
    frames = {s: clean(f, s, data_cfg, text_column, label_column) for s, f in frames.items()}
    frames = fill_missing_splits(frames, label_column, **split_cfg)

    label_names = sorted(frames["train"][label_column].unique(), key=str)
    if len(label_names) < 2:
        raise DataError(
            f"data.label_column={label_column!r}: the train split has a single class "
            f"({label_names[0]!r}); a classifier needs at least two"
        )
    label_ids = {name: i for i, name in enumerate(label_names)}
    labels, texts = {}, {}
    for split, frame in frames.items():
        unknown = set(frame[label_column].unique()) - set(label_ids)
        if unknown:
            raise DataError(
                f"data.{split}: labels {sorted(map(str, unknown))[:5]} never occur in the train "
                "split; every class must have training examples"
            )
        labels[split] = frame[label_column].map(label_ids).to_numpy(dtype=np.int64)
        texts[split] = frame[text_column].tolist()
    identity.update(split_cfg, columns=[text_column, label_column])
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    sizes = ", ".join(f"{s} {len(texts[s])}" for s in SPLITS)
    log.info("corpus: %s; %d classes", sizes, len(label_names))
    return Corpus(texts, labels, [str(n) for n in label_names], fingerprint)


def table_format(path: Path, fmt: str) -> tuple[str, str | None]:
    """Return (format, compression suffix) of ``path``; ``fmt`` other than 'auto' wins."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in _COMPRESSIONS else None
    if fmt != "auto":
        return fmt, compression
    if suffixes and suffixes[-1] in _FORMATS:
        return _FORMATS[suffixes[-1]], compression
    raise DataError(
        f"{path}: cannot tell the format from the file name; name it .csv, .tsv, .jsonl or "
        ".parquet (optionally .gz), or set data.format=csv|tsv|jsonl|parquet"
    )


def read_table(split: str, path_text: str, fmt: str) -> pd.DataFrame:
    """Read one data file into a DataFrame; errors name ``data.<split>`` and the path."""
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise DataError(f"data.{split}: file {str(path)!r} not found; pass an existing path")
    kind, _ = table_format(path, fmt)
    try:
        if kind == "csv":
            return pd.read_csv(path, keep_default_na=False, dtype=str)
        if kind == "tsv":
            return pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str, quoting=3)
        if kind == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if kind == "parquet":
            return pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError) as error:
        raise DataError(f"data.{split}: cannot read {str(path)!r} as {kind}: {error}") from error
    raise DataError(f"data.format={kind!r} is unknown: use csv, tsv, jsonl or parquet")


def check_columns(frame: pd.DataFrame, split: str, path: str, text_col: str, label_col: str):
    """Raise a DataError naming the key when the text or label column is missing."""
    for key, column in (("text_column", text_col), ("label_column", label_col)):
        if column not in frame.columns:
            raise DataError(
                f"data.{key}={column!r} is not a column of {path} (data.{split}); its columns "
                f"are {list(map(str, frame.columns))}: set data.{key}=<one of them>"
            )


def clean(frame, split: str, data_cfg, text_col: str, label_col: str) -> pd.DataFrame:
    """Drop rows with an empty text or label (counted in the log); fail on an empty split."""
    frame = frame[[text_col, label_col]].copy()
    text = frame[text_col].astype("string").fillna("")
    label = frame[label_col]
    keep = (text.str.strip() != "").to_numpy() & label.notna().to_numpy()
    keep &= (label.astype("string").str.strip() != "").fillna(False).to_numpy()
    dropped = int((~keep).sum())
    if dropped:
        log.warning("data.%s: dropped %d rows with an empty text or label", split, dropped)
    frame = frame[keep]
    frame[text_col] = text[keep].astype(str)
    if frame.empty:
        where = data_cfg.get(split) or data_cfg.source
        raise DataError(f"data.{split}: {where} has no rows with a text and a label")
    return frame.reset_index(drop=True)


def fill_missing_splits(frames, label_column, *, validation_fraction, test_fraction, seed):
    """Split missing validation/test sets off train, stratified by class and seeded."""
    missing = {"validation": validation_fraction, "test": test_fraction}
    missing = {s: f for s, f in missing.items() if s not in frames}
    if not missing:
        return frames
    for split, fraction in missing.items():
        if not 0.0 < fraction < 1.0:
            raise DataError(f"data.{split}_fraction must be in (0, 1), got {fraction}")
    if sum(missing.values()) >= 1.0:
        raise DataError("data.validation_fraction + data.test_fraction must be below 1")
    train = frames["train"]
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in ("train", *missing)}
    for _, rows in train.groupby(label_column, sort=True).indices.items():
        rows = rng.permutation(rows)
        start = 0
        for split, fraction in missing.items():
            take = int(round(fraction * len(rows)))
            parts[split].append(rows[start : start + take])
            start += take
        parts["train"].append(rows[start:])
    out = dict(frames)
    for split, chunks in parts.items():
        index = np.sort(np.concatenate(chunks))
        out[split] = train.iloc[index].reset_index(drop=True)
        if out[split].empty:
            raise DataError(
                f"data.train: too few rows ({len(train)}) to split off a {split} set; "
                f"pass data.{split}=PATH or raise data.{split}_fraction"
            )
    return out


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks: the cache key of a data file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
