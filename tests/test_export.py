"""Shipping the model: the exported folder predicts on its own, in a fresh process, exactly as the
sweep's trial did; an altered folder is refused."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, compose_config

import sweep
from sweep import runner
from sweep.corpus import load_corpus
from sweep.export import ExportError


@pytest.fixture
def exported(tiny_overrides, tmp_path, count_fits):
    cfg = compose_config([*tiny_overrides, "data.synthetic.num_docs=1000"])
    result = runner.run(cfg, tmp_path / "out")
    assert len(count_fits) == cfg.search.n_trials  # the export trained nothing again
    return cfg, result, tmp_path / "out" / "model"


def test_the_recommended_model_predicts_as_the_sweep_measured_it(exported, tmp_path):
    cfg, result, folder = exported
    rec = result.recommended
    config = json.loads((folder / "config.json").read_text())
    assert (
        config["embedding_dim"] == rec["embedding_dim"]
        and config["vocab_size"] == rec["vocab_size"]
    )
    # Only the front's weights stay kept beside the storage (a dominated trial never returns).
    states = tmp_path / "studies" / cfg.search.study_name / "states"
    front = result.table[result.table["pareto"]]
    assert len(list(states.glob("*.pt"))) == len(front)
    corpus = load_corpus(cfg.data, cfg.seed)
    texts, truth = corpus.texts["test"], corpus.labels["test"]
    predictor = sweep.load(folder)
    predicted = predictor.predict(texts)
    accuracy = 100.0 * np.mean(
        [p == corpus.label_names[t] for p, t in zip(predicted, truth, strict=True)]
    )
    assert accuracy == pytest.approx(rec["test_accuracy"])  # tokenized exactly as in training
    proba = predictor.predict_proba(texts[:5])
    assert proba.shape == (5, len(corpus.label_names)) and np.allclose(proba.sum(axis=1), 1)

    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
    fresh = subprocess.run(
        [sys.executable, "-m", "sweep.predict", "--model", str(folder), "--input", str(tmp_path / "in.txt")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    assert fresh.stdout.splitlines() == predicted  # a fresh process: identical predictions


def test_an_altered_or_unfinished_folder_is_refused(exported):
    _, _, folder = exported
    weights = folder / "model.pt"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"model\.pt: its SHA-256 differs"):
        sweep.load(folder)
    (folder / "SHA256SUMS").unlink()
    with pytest.raises(ExportError, match="no SHA256SUMS"):
        sweep.load(folder)
    cli = subprocess.run([sys.executable, "-m", "sweep.predict", "--model", str(folder)],
                         capture_output=True, text=True, cwd=ROOT, input="x\n")  # fmt: skip
    assert cli.returncode != 0 and "no SHA256SUMS" in cli.stderr


def test_without_kept_weights_the_trial_is_re_created_alike(exported, tmp_path, count_fits):
    """A study trained elsewhere (no kept weights): export trains the trial again, same seed."""
    import shutil

    from sweep import export
    from sweep.prepared import PreparedData
    from sweep.trial import TrialRunner

    cfg, result, folder = exported
    row = result.recommended
    trial = TrialRunner(cfg, PreparedData.load(cfg.data, cfg.seed, "cpu"))
    params = {"embedding_dim": int(row["embedding_dim"]), "vocab_size": int(row["vocab_size"])}
    shutil.rmtree(tmp_path / "studies" / cfg.search.study_name / "states")
    calls = len(count_fits)
    again = export.export_trial(trial, params, row, tmp_path / "again")
    assert len(count_fits) == calls + 1
    texts = load_corpus(cfg.data, cfg.seed).texts["test"]
    assert sweep.load(again).predict(texts) == sweep.load(folder).predict(texts)


def test_export_front_and_none(tiny_overrides, tmp_path):
    cfg = compose_config([*tiny_overrides, "report.export=front"])
    table = runner.run(cfg, tmp_path / "front").table
    front = sorted(table.loc[table["pareto"], "trial"].astype(int))
    assert (
        sorted(int(p.name.split("-")[1]) for p in (tmp_path / "front" / "models").iterdir())
        == front
    )
    cfg = compose_config([*tiny_overrides, "report.export=none", "search.study_name=other"])
    runner.run(cfg, tmp_path / "none")
    assert (
        not (tmp_path / "none" / "model").exists() and not (tmp_path / "none" / "models").exists()
    )
    assert isinstance(pd.read_csv(tmp_path / "none" / "trials.csv"), pd.DataFrame)


@pytest.mark.parametrize("model", ["cnn", "rnn", "transformer"])
def test_every_model_exports_and_predicts_as_measured(tiny_overrides, tmp_path, model):
    cfg = compose_config([*tiny_overrides, f"model={model}", "data.max_length=32",
                          "search.n_trials=1", "train.epochs=1"])  # fmt: skip
    rec = runner.run(cfg, tmp_path / "out").recommended
    corpus = load_corpus(cfg.data, cfg.seed)
    predicted = sweep.load(tmp_path / "out" / "model").predict(corpus.texts["test"])
    names = [corpus.label_names[t] for t in corpus.labels["test"]]
    accuracy = 100.0 * np.mean([p == n for p, n in zip(predicted, names, strict=True)])
    assert accuracy == pytest.approx(rec["test_accuracy"])
