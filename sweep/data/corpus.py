"""Stage 1, corpus: load texts and labels from the configured source and split them.

Sources: ``synthetic`` (generated from the seed, see ``sweep.data.synthetic``), ``files`` (local paths
or fsspec URLs, read by ``sweep.data.readers``) and ``named`` (a public benchmark downloaded and
converted by ``sweep.data.datasets``). Missing validation or test files are split off the train file,
stratified by class and seeded. Empty texts, labels written as text or numbers, texts shared by
train and test: each is handled by a config key, and every problem with the input is a
``DataError`` that names the config key or file at fault, raised before any training starts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sweep.common.digest import file_digest, json_digest
from sweep.data import synthetic
from sweep.data.readers import DataError, is_url, local_path, read_table, shorten

__all__ = ["SPLITS", "Corpus", "DataError", "load_corpus"]

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
_INTEGRAL = re.compile(r"[+-]?\d+\.0*")
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")
# Label texts that spreadsheets and pandas write for a missing value: missing, not a class.
MISSING_LABELS = frozenset({"nan", "null", "none", "na", "n/a", "<na>", "nat"})


@dataclass
class Corpus:
    """Raw texts and integer labels per split, plus what identifies the source's content."""

    texts: dict[str, list[str]]
    labels: dict[str, np.ndarray]  # int64 class ids per split
    label_names: list[str]  # class id -> original label, as text
    fingerprint: str  # hash of the source's content and the split settings
    stats: dict = field(default_factory=dict)  # rows dropped, leakage, per-class counts


def load_corpus(data_cfg, seed: int) -> Corpus:
    """Load the corpus described by ``cfg.data``; ``seed`` drives generation and splitting."""
    frames, identity, where, text_column, label_column = read_source(data_cfg, seed)
    split_cfg = {
        "validation_fraction": data_cfg.validation_fraction,
        "test_fraction": data_cfg.test_fraction,
        "seed": seed,
    }
    policy = {"empty": data_cfg.get("empty", "drop"), "leakage": data_cfg.get("leakage", "warn")}
    stats: dict = {"dropped_empty": {}, "leakage": {}}
    frames = {
        s: clean(f, s, where[s], text_column, label_column, policy["empty"], stats)
        for s, f in frames.items()
    }
    frames = fill_missing_splits(frames, label_column, **split_cfg)
    frames = check_leakage(frames, text_column, policy["leakage"], stats)
    texts, labels, label_names = label_ids(frames, text_column, label_column)
    stats["classes"] = {
        name: {s: int((labels[s] == i).sum()) for s in SPLITS} for i, name in enumerate(label_names)
    }
    identity.update(split_cfg, columns=[text_column, label_column], **policy)
    if data_cfg.source != "synthetic":  # the same bytes read another way are another corpus
        identity.update(format=data_cfg.get("format", "auto"), encoding=data_cfg.get("encoding"))
    sizes = ", ".join(f"{s} {len(texts[s])}" for s in SPLITS)
    log.info("corpus: %s; %d classes", sizes, len(label_names))
    return Corpus(texts, labels, list(label_names), json_digest(identity), stats)


def read_source(data_cfg, seed: int):
    """(frames per split, identity, where each split came from, text column, label column) of
    the configured source: generated, files, or a named data set's converted files."""
    source = data_cfg.source
    text_column = data_cfg.get("text_column", "text")
    label_column = data_cfg.get("label_column", "label")
    if source == "synthetic":
        params = dict(data_cfg.synthetic)
        texts, labels = synthetic.generate(seed=seed, **params)
        # Object columns hold the generated strings themselves (no copy into another layout).
        frames = {"train": pd.DataFrame({"text": texts, "label": labels}, dtype=object)}
        return (
            frames,
            {"synthetic": params, "seed": seed},
            {"train": "the synthetic corpus"},
            "text",
            "label",
        )
    if source not in ("files", "named"):
        raise DataError(f"data.source={source!r} is unknown: use 'synthetic', 'files' or 'named'")
    if source == "named":
        from sweep.data import datasets

        paths = datasets.prepare(data_cfg)
    else:
        paths = {s: data_cfg.get(s) for s in SPLITS if data_cfg.get(s) is not None}
        if "train" not in paths:
            raise DataError("data.train is not set: pass data.train=PATH (CSV, TSV, ...)")
    frames, identity, where = {}, {}, {}
    for split, path_text in paths.items():
        path = local_path(split, str(path_text), data_cfg.get("cache_dir"))
        frames[split] = read_table(
            split, path, data_cfg.get("format", "auto"), data_cfg.get("encoding", "utf-8")
        )
        check_columns(frames[split], split, str(path_text), text_column, label_column)
        identity[split] = file_digest(path)
        where[split] = str(path_text) if is_url(str(path_text)) else str(path)
    return frames, identity, where, text_column, label_column


def label_ids(frames, text_column: str, label_column: str):
    """(texts, class ids, class names) per split; classes are the train split's labels."""
    label_names = sorted(frames["train"][label_column].unique(), key=label_sort_key)
    if len(label_names) < 2:
        raise DataError(
            f"data.label_column={label_column!r}: the train split has a single class "
            f"({label_names[0]!r}); a classifier needs at least two"
        )
    ids = {name: i for i, name in enumerate(label_names)}
    labels, texts = {}, {}
    for split, frame in frames.items():
        unknown = set(frame[label_column].unique()) - set(ids)
        if unknown:
            raise DataError(
                f"data.{split}: labels {[shorten(u, 40) for u in sorted(map(str, unknown))[:5]]} "
                f"({len(unknown)} in all) never occur in the train "
                "split; every class must have training examples"
            )
        labels[split] = frame[label_column].map(ids).to_numpy(dtype=np.int64)
        texts[split] = frame[text_column].tolist()
    return texts, labels, label_names


def label_sort_key(name: str):
    """Numeric labels in numeric order (2 before 10), then the others alphabetically."""
    try:
        return (0, float(name), name)
    except ValueError:
        return (1, 0.0, name)


def check_columns(frame: pd.DataFrame, split: str, path: str, text_col: str, label_col: str):
    """Raise a DataError naming the key when the text or label column is missing."""
    for key, column in (("text_column", text_col), ("label_column", label_col)):
        if column not in frame.columns:
            names = [shorten(c, 40) for c in frame.columns[:10]]
            more = f" and {len(frame.columns) - 10} more" if len(frame.columns) > 10 else ""
            raise DataError(
                f"data.{key}={column!r} is not a column of {path} (data.{split}); its columns "
                f"are {names}{more}: set data.{key}=<one of them>, or give the file a header "
                "line if it has none"
            )


def label_text(value) -> str:
    """One label as text: 1, 1.0 and "1" are the same class; NaN/None become ''."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (bool, np.bool_)):
        return str(value).lower()
    text = str(value).strip()
    if text.lower() in MISSING_LABELS:
        return ""
    # "1.0" in a text column is the class 1 of a numeric column (pandas writes ints as floats
    # when a column has a missing value).
    if _INTEGRAL.fullmatch(text):
        return str(int(float(text)))
    return text


def as_text(column: pd.Series, split: str, key: str, name: str) -> pd.Series:
    """A column as Python strings: bytes decoded (UTF-8) and other non-text values converted,
    each with a warning naming the column and the type; undecodable bytes are a DataError."""
    values = column.astype(object)
    kinds = {type(v).__name__ for v in values.dropna() if not isinstance(v, str)}
    if not kinds:
        return values
    if "bytes" in kinds:
        try:
            values = values.map(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v)
        except UnicodeDecodeError as error:
            raise DataError(
                f"data.{key}={name!r} (data.{split}) holds bytes that are not UTF-8 "
                f"({error.reason}); store the column as text"
            ) from None
    log.warning(
        "data.%s: column %r (data.%s) holds %s values, not text; converted to text",
        key,
        name,
        split,
        "/".join(sorted(kinds)),
    )
    return values.map(lambda v: v if isinstance(v, str) or v is None else str(v)).astype(object)


def warn_numeric_texts(text: pd.Series, split: str, text_col: str) -> None:
    """Warn when most texts are numbers: usually the text and label columns are mixed up."""
    sample = text.head(1000)
    numeric = sample.map(lambda t: bool(_NUMBER.fullmatch(t))).to_numpy(dtype=bool)
    if len(sample) and numeric.mean() > 0.5:
        log.warning(
            "data.text_column=%r (data.%s): %d of the first %d texts are numbers (e.g. %r); "
            "a classifier learns little from them: check data.text_column",
            text_col,
            split,
            int(numeric.sum()),
            len(sample),
            shorten(sample[numeric].iloc[0], 40),
        )


def clean(frame, split, where, text_col, label_col, empty_policy, stats) -> pd.DataFrame:
    """Normalise labels to text; drop (and count) or reject rows with an empty text or label."""
    if empty_policy not in ("drop", "error"):
        raise DataError(f"data.empty={empty_policy!r} is unknown: use drop or error")
    # Python strings (object dtype) from here on: the encoder reads them one by one, and
    # converting once here avoids a second copy of every text later.
    text = as_text(frame[text_col], split, "text_column", text_col)
    has_text = text.notna().to_numpy().copy()
    if not has_text.all():  # as_text left only strings and missing values
        text = text.where(has_text, "").astype(object)
    # A text is empty when it has no non-space character (regex: fast on long documents).
    has_text &= text.str.contains(r"\S", regex=True).to_numpy(dtype=bool)
    label = frame[label_col]
    if label.map(lambda v: isinstance(v, bytes)).any():
        label = as_text(label, split, "label_column", label_col)
    label = label.map(label_text)
    keep = has_text & (label != "").to_numpy()
    bad = np.flatnonzero(~keep)
    if len(bad) and empty_policy == "error":
        what = "text" if not has_text[bad[0]] else "label"
        raise DataError(
            f"data.{split}: {where} row {bad[0] + 1} (of the data, header not counted) has an "
            f"empty {what}, and {len(bad)} rows in all have an empty text or label; fix them "
            "or set data.empty=drop to drop them"
        )
    if len(bad):
        log.warning(
            "data.%s: dropped %d rows with an empty or missing (NaN, null) text or label",
            split,
            len(bad),
        )
    stats["dropped_empty"][split] = int(len(bad))
    out = pd.DataFrame({text_col: text[keep], label_col: label[keep]}, dtype=object)
    if len(out):
        warn_numeric_texts(out[text_col], split, text_col)
    if out.empty:
        raise DataError(f"data.{split}: {where} has no rows with a text and a label")
    return out


def check_leakage(frames, text_col: str, policy: str, stats) -> dict:
    """Count validation/test texts that also occur in train (after trimming spaces).

    ``warn`` logs the count, ``drop`` removes them from validation/test, ``error`` stops.
    """
    if policy not in ("warn", "drop", "error"):
        raise DataError(f"data.leakage={policy!r} is unknown: use warn, drop or error")
    seen = {t.strip() for t in frames["train"][text_col]}
    out = dict(frames)
    for split in ("validation", "test"):
        frame = frames[split]
        shared = frame[text_col].map(lambda t: t.strip() in seen).to_numpy(dtype=bool)
        count = int(shared.sum())
        stats["leakage"][split] = count
        if not count:
            continue
        message = (
            f"data: {count} of {len(frame)} {split} texts ({100 * count / len(frame):.1f}%) "
            f"also occur in train, so the {split} accuracy is optimistic"
        )
        if policy == "error":
            raise DataError(
                message + "; remove them from the files, or set data.leakage=drop (drop them "
                "from the split) or data.leakage=warn"
            )
        if policy == "drop":
            out[split] = frame[~shared].reset_index(drop=True)
            log.warning("%s: dropped them from %s (data.leakage=drop)", message, split)
            if out[split].empty:
                raise DataError(f"data.{split}: every text also occurs in train; nothing left")
        else:
            log.warning("%s; set data.leakage=drop to drop them", message)
    return out


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
    class_sizes = train[label_column].value_counts()
    if len(train) > 1 and (class_sizes == 1).all():
        raise DataError(
            f"data.label_column={label_column!r}: each of the {len(train)} train rows has its "
            "own label (every label occurs once), so it cannot be a class; point "
            "data.label_column at the class column"
        )
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
