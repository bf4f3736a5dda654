"""Corpus loading: file formats, seeded stratified splits, synthetic data, bad input messages."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config

from sweep.data.corpus import DataError, load_corpus
from sweep.data.synthetic import generate

ROWS = [(f"text number {i} word{i % 7}", ["pos", "neg", "mid"][i % 3]) for i in range(60)]


def files_cfg(tmp_path, **data):
    overrides = ["data=files", f"data.cache_dir={tmp_path / 'cache'}"]
    overrides += [f"data.{k}={v}" for k, v in data.items()]
    return compose_config(overrides).data


def write(path, rows=ROWS, columns=("text", "label")):
    frame = pd.DataFrame(rows, columns=list(columns))
    name = path.name
    if ".csv" in name:
        frame.to_csv(path, index=False)
    elif ".tsv" in name:
        frame.to_csv(path, sep="\t", index=False)
    elif ".jsonl" in name:
        lines = "".join(json.dumps(r) + "\n" for r in frame.to_dict("records"))
        if name.endswith(".gz"):
            path.write_bytes(gzip.compress(lines.encode()))
        else:
            path.write_text(lines)
    elif ".parquet" in name:
        frame.to_parquet(path)
    return path


@pytest.mark.parametrize(
    "name", ["d.csv", "d.csv.gz", "d.tsv", "d.jsonl", "d.jsonl.gz", "d.parquet"]
)
def test_every_format_loads_the_same_rows(tmp_path, name):
    path = write(tmp_path / name)
    corpus = load_corpus(files_cfg(tmp_path, train=path), seed=0)
    assert sum(len(corpus.texts[s]) for s in corpus.texts) == len(ROWS)
    assert corpus.label_names == ["mid", "neg", "pos"]
    every = {t for s in corpus.texts for t in corpus.texts[s]}
    assert every == {t for t, _ in ROWS}


def test_missing_splits_are_stratified_and_seeded(tmp_path):
    path = write(tmp_path / "d.csv")
    cfg = files_cfg(tmp_path, train=path)
    a, b = load_corpus(cfg, seed=1), load_corpus(cfg, seed=1)
    c = load_corpus(cfg, seed=2)
    assert a.texts == b.texts and a.texts["validation"] != c.texts["validation"]
    for split in ("validation", "test"):
        assert np.bincount(a.labels[split]).tolist() == [2, 2, 2]  # 10% of 20 per class
    assert len(a.texts["train"]) == 48
    assert not set(a.texts["train"]) & set(a.texts["validation"])


def test_given_validation_and_test_files_are_used_as_they_are(tmp_path):
    train = write(tmp_path / "train.csv")
    val = write(tmp_path / "val.csv", ROWS[:6])
    test = write(tmp_path / "test.csv", ROWS[6:9])
    corpus = load_corpus(files_cfg(tmp_path, train=train, validation=val, test=test), seed=0)
    assert len(corpus.texts["train"]) == 60
    assert corpus.texts["validation"] == [t for t, _ in ROWS[:6]]
    assert corpus.texts["test"] == [t for t, _ in ROWS[6:9]]


def test_integer_labels_and_other_column_names(tmp_path):
    rows = [(i % 2, f"doc {i}") for i in range(30)]
    path = write(tmp_path / "d.csv", rows, columns=("y", "body"))
    corpus = load_corpus(files_cfg(tmp_path, train=path, text_column="body", label_column="y"), 0)
    assert corpus.label_names == ["0", "1"]


def test_empty_texts_are_dropped(tmp_path, caplog):
    rows = [*ROWS, ("", "pos"), ("   ", "neg")]
    corpus = load_corpus(files_cfg(tmp_path, train=write(tmp_path / "d.csv", rows)), 0)
    assert sum(len(t) for t in corpus.texts.values()) == len(ROWS)
    assert "dropped 2 rows" in caplog.text


def test_missing_file_names_the_key_and_path(tmp_path):
    with pytest.raises(DataError, match=r"data\.train: file '.*nope\.csv' not found"):
        load_corpus(files_cfg(tmp_path, train=tmp_path / "nope.csv"), 0)


def test_missing_train_key(tmp_path):
    with pytest.raises(DataError, match=r"data\.train is not set"):
        load_corpus(files_cfg(tmp_path), 0)


def test_missing_column_lists_the_columns(tmp_path):
    path = write(tmp_path / "d.csv", ROWS, columns=("sentence", "label"))
    with pytest.raises(DataError, match=r"data\.text_column='text' is not a column .*'sentence'"):
        load_corpus(files_cfg(tmp_path, train=path), 0)


def test_empty_data_set(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\n")
    with pytest.raises(DataError, match=r"data\.train: .*d\.csv has no rows"):
        load_corpus(files_cfg(tmp_path, train=path), 0)


def test_single_class(tmp_path):
    path = write(tmp_path / "d.csv", [(f"t {i}", "only") for i in range(20)])
    with pytest.raises(DataError, match=r"data\.label_column='label'.*single class .*'only'"):
        load_corpus(files_cfg(tmp_path, train=path), 0)


def test_unknown_extension_asks_for_format(tmp_path):
    path = tmp_path / "d.data"
    path.write_text("text,label\na,b\n")
    with pytest.raises(DataError, match=r"data\.format="):
        load_corpus(files_cfg(tmp_path, train=path), 0)


def test_synthetic_is_deterministic_per_seed():
    a = generate(seed=3, num_docs=50, vocab_words=500, cue_min_rank=20)
    b = generate(seed=3, num_docs=50, vocab_words=500, cue_min_rank=20)
    c = generate(seed=4, num_docs=50, vocab_words=500, cue_min_rank=20)
    assert a == b and a != c


def test_synthetic_has_a_zipf_vocabulary_and_balanced_classes():
    texts, labels = generate(seed=0, num_docs=3000)
    counts = pd.Series(" ".join(texts).split()).value_counts()
    assert len(counts) > 10_000  # tens of thousands of words in the generator, most seen
    assert counts.iloc[0] > 50 * counts.iloc[999]  # heavy head, long tail
    shares = pd.Series(labels).value_counts(normalize=True)
    assert len(shares) == 4 and shares.min() > 0.2


def test_synthetic_size_is_configurable():
    cfg = compose_config(["data.synthetic.num_docs=100", "data.synthetic.num_classes=3",
                          "data.synthetic.vocab_words=1000", "data.synthetic.cue_min_rank=20",
                          "data.cache_dir=null"])  # fmt: skip
    corpus = load_corpus(cfg.data, seed=0)
    assert sum(len(t) for t in corpus.texts.values()) == 100
    assert len(corpus.label_names) == 3


def test_labels_as_numbers_or_text_are_one_class(tmp_path):
    # JSONL keeps numbers as numbers; the CSV test file has them as text: 1, 1.0 and "1" agree.
    train = tmp_path / "train.jsonl"
    train.write_text(
        "".join(json.dumps({"text": f"doc {i}", "label": i % 2}) + "\n" for i in range(40))
    )
    test = write(tmp_path / "test.csv", [(f"other {i}", f"{i % 2}.0") for i in range(6)])
    corpus = load_corpus(files_cfg(tmp_path, train=train, test=test), 0)
    assert corpus.label_names == ["0", "1"]
    assert corpus.labels["test"].tolist() == [0, 1, 0, 1, 0, 1]


def test_numeric_labels_sort_numerically(tmp_path):
    rows = [(f"doc {i}", str([2, 10, 1][i % 3])) for i in range(30)]
    corpus = load_corpus(files_cfg(tmp_path, train=write(tmp_path / "d.csv", rows)), 0)
    assert corpus.label_names == ["1", "2", "10"]


def test_empty_texts_and_nan_labels_can_be_an_error_naming_the_row(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"text": f"doc {i}", "label": "a" if i % 2 else "b"} for i in range(20)]
    rows[7]["text"] = None
    rows[9]["label"] = None
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    corpus = load_corpus(files_cfg(tmp_path, train=path), 0)
    assert corpus.stats["dropped_empty"]["train"] == 2
    with pytest.raises(DataError, match=r"data\.train: .*d\.jsonl row 8 .*empty text.*2 rows"):
        load_corpus(files_cfg(tmp_path, train=path, empty="error"), 0)


def test_non_utf8_bytes_name_the_file_and_line_or_use_the_configured_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    lines = ["text,label", *(f"plain {i},{'ab'[i % 2]}" for i in range(20))]
    lines[5] = "caf\xe9 au lait,a"
    path.write_bytes("\n".join(lines).encode("latin-1"))
    with pytest.raises(
        DataError, match=r"latin\.csv' is not valid utf-8 \(line 6, byte 4.*data\.encoding"
    ):
        load_corpus(files_cfg(tmp_path, train=path), 0)
    corpus = load_corpus(files_cfg(tmp_path, train=path, encoding="latin-1"), 0)
    assert "caf\xe9 au lait" in [t for s in corpus.texts for t in corpus.texts[s]]


def test_texts_shared_by_train_and_test_warn_drop_or_fail(tmp_path, caplog):
    train = write(tmp_path / "train.csv")
    test = write(
        tmp_path / "test.csv", [*ROWS[:3], ("a new text", "pos"), (" " + ROWS[4][0], "neg")]
    )
    corpus = load_corpus(files_cfg(tmp_path, train=train, test=test), 0)
    assert corpus.stats["leakage"]["test"] == 4
    assert "4 of 5 test texts (80.0%) also occur in train" in caplog.text
    dropped = load_corpus(files_cfg(tmp_path, train=train, test=test, leakage="drop"), 0)
    assert dropped.texts["test"] == ["a new text"]
    with pytest.raises(DataError, match=r"4 of 5 test texts.*data\.leakage=drop"):
        load_corpus(files_cfg(tmp_path, train=train, test=test, leakage="error"), 0)


def test_per_class_counts_are_reported_for_every_split(tmp_path):
    corpus = load_corpus(files_cfg(tmp_path, train=write(tmp_path / "d.csv")), 0)
    assert corpus.stats["classes"] == {
        name: {"train": 16, "validation": 2, "test": 2} for name in ("mid", "neg", "pos")
    }


def test_fsspec_urls_are_read_and_cached(tmp_path):
    import fsspec

    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    with fsspec.open("memory://bucket/d.csv.gz", "wb", compression="gzip") as handle:
        handle.write(frame.to_csv(index=False).encode())
    corpus = load_corpus(files_cfg(tmp_path, train="memory://bucket/d.csv.gz"), 0)
    assert sum(len(t) for t in corpus.texts.values()) == len(ROWS)
    assert list((tmp_path / "cache" / "remote").glob("*/d.csv.gz"))


def test_http_urls_are_read(tmp_path, file_server):
    frame = pd.DataFrame(ROWS, columns=["text", "label"])
    file_server.files["/data/train.csv"] = frame.to_csv(index=False).encode()
    corpus = load_corpus(files_cfg(tmp_path, train=f"{file_server.url}/data/train.csv"), 0)
    assert corpus.label_names == ["mid", "neg", "pos"]


def test_unreachable_or_missing_urls_name_the_key(tmp_path, file_server):
    with pytest.raises(DataError, match=r"data\.train: .*missing\.csv"):
        load_corpus(files_cfg(tmp_path, train=f"{file_server.url}/missing.csv"), 0)
    with pytest.raises(DataError, match=r"data\.train=.*nosuchproto://.*"):
        load_corpus(files_cfg(tmp_path, train="nosuchproto://x/d.csv"), 0)


def test_fingerprint_follows_the_encoding_and_cleaning_options(tmp_path):
    path = write(tmp_path / "d.csv")
    base = load_corpus(files_cfg(tmp_path, train=path), 0).fingerprint
    for option in ({"encoding": "latin-1"}, {"leakage": "drop"}, {"empty": "error"}):
        assert load_corpus(files_cfg(tmp_path, train=path, **option), 0).fingerprint != base
