"""Bad input gets one clear line naming the key or file, before any work where it can be
checked up front, and loses nothing: a user's own file is never overwritten, damaged kept
weights are trained again."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import TINY, compose_config, run_cli

from sweep import runner
from sweep.config import ConfigError, check_config
from sweep.data.readers import DataError, read_table
from sweep.search.storage import StorageError


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=1.5", r"seed=1\.5 must be an integer >= 0"),
        ("seed=-1", r"seed=-1 must be an integer >= 0"),
        ("model.embedding_dim=0", r"model\.embedding_dim=0 is set by the sweep for each trial.*search\.space\.embedding_dim"),
        ("model.num_embeddings=100", r"model\.num_embeddings=100 is set by the sweep.*vocab_size"),
        ("report.top_k=-1", r"report\.top_k=-1 must be an integer >= 1"),
        ("report.repeats=1.5", r"report\.repeats=1\.5 must be an integer >= 0"),
        ("model.dropout=2.0", r"model\.dropout=2\.0 must be a probability in \[0, 1\)"),
        ("+model.hidden=3", r"model\.hidden is no setting of the bag model \(known: .*hidden_dim"),
        ("model.factorized_dim=[4]", r"model\.factorized_dim=\[4\] is not a plain value of type int \| null"),
        ("data.ngram_min_count=0", r"data\.ngram_min_count=0 must be an integer >= 1"),
        ("data.max_ngrams=2.5", r"data\.max_ngrams=2\.5 must be an integer >= 1 or null"),
    ],
)  # fmt: skip
def test_impossible_values_name_their_key(override, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_config([override]))


def test_a_model_its_constructor_refuses_stops_before_any_trial(tmp_path):
    """model=rnn model.cell=xyz: one line, exit 2, and no study made (the check builds the
    model once, tiny, instead of failing every trial)."""
    result = run_cli([*TINY, "model=rnn", "model.cell=xyz", "hydra.run.dir=run",
                      "search.storage_dir=studies"], cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "model.cell='xyz' is unknown: use gru or lstm" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "studies").exists()


def test_a_storage_path_at_a_users_file_leaves_it_byte_identical(tmp_path):
    """search.storage=notes.csv (an existing file that is not a journal): refused before
    anything is written, the file untouched, no backup made beside it."""
    notes = tmp_path / "notes.csv"
    notes.write_bytes(b"text,label\nmy own data without a final newline")
    before = notes.read_bytes()
    result = run_cli([*TINY, f"search.storage={notes}", "hydra.run.dir=run"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-2000:]
    assert f"'{notes}' exists and is not an Optuna journal" in output
    assert notes.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv", "run"]
    with pytest.raises(StorageError, match="is not an Optuna journal"):  # reports too
        from sweep.report.build import rebuild

        rebuild(str(notes), "any", tmp_path / "reports")
    assert notes.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("text,label\nhello world,a,extra\nfoo bar,b\nbaz,a\n", 2),  # pandas read an index here
        ('text,label\nhello world,a\nfoo bar,b\n"x, y",b\nw, z,b\n', 5),
    ],
)
def test_a_csv_row_with_extra_fields_names_its_line(tmp_path, text, line):
    path = tmp_path / "train.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=rf"data\.train: .*train\.csv' line {line} has more fields than its header's 2: a text holding a comma must be quoted"):  # fmt: skip
        read_table("train", path, "auto")


def test_damaged_kept_weights_are_trained_again(tiny_overrides, tmp_path, count_fits, caplog):
    """Kept weights damaged on disk (docs/failures.md: the trial is trained again): the rerun
    exports, trains the recommended trial once more, and says so; nothing crashes."""
    cfg = compose_config(tiny_overrides)
    first = runner.run(cfg, tmp_path / "first")
    states = tmp_path / "studies" / cfg.search.study_name / "states"
    kept = sorted(states.glob("*.pt"))
    assert kept
    for path in kept[:-1]:
        path.write_bytes(b"not a torch file")
    kept[-1].write_bytes(b"\x80\x04K\x01.")  # a pickle of the number 1: not a state dict
    fits = len(count_fits)
    again = runner.run(compose_config(tiny_overrides), tmp_path / "again")
    assert len(count_fits) > fits  # retrained, not crashed
    assert "cannot be used" in caplog.text and "trained again" in caplog.text
    folder = tmp_path / "again" / "model"
    config = json.loads((folder / "config.json").read_text())
    rec = again.recommended
    assert (config["embedding_dim"], config["vocab_size"]) == (
        rec["embedding_dim"],
        rec["vocab_size"],
    )
    assert first.recommended["trial"] == rec["trial"]
    assert pd.notna(rec["val_accuracy"])
