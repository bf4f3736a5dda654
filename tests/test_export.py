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
from sweep.data.corpus import load_corpus
from sweep.ship.export import ExportError


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
    # Tokenized exactly as in training, stored at the precision the report chose for it.
    assert config["precision"] == rec["ship_precision"]
    assert accuracy == pytest.approx(rec["ship_test_accuracy"])
    on_disk = sum((folder / name).stat().st_size for name in ("model.safetensors", "vocab.txt"))
    assert on_disk == rec[f"file_bytes_{rec['ship_precision']}"] == rec["ship_bytes"]
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
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-20] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"model\.safetensors: its SHA-256 differs"):
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

    from sweep.data.prepared import PreparedData
    from sweep.ship import export
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
    assert accuracy == pytest.approx(rec["ship_test_accuracy"])


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_a_quantized_export_predicts_as_measured_in_a_fresh_process(
    tiny_overrides, tmp_path, precision
):
    """search.precision=int8|int4 with report.quantize=all: every trial is measured at every
    precision as it trains; the exported file is that precision's, its bytes the predicted ones,
    and a fresh process predicts exactly what the in-memory quantized model measured."""
    cfg = compose_config([*tiny_overrides, "data.synthetic.num_docs=1000", "report.quantize=all",
                          f"search.precision={precision}"])  # fmt: skip
    result = runner.run(cfg, tmp_path / "out")
    done = result.table[result.table["state"] == "COMPLETE"]
    for p in ("fp16", "int8", "int4"):
        assert done[f"test_accuracy_{p}"].notna().all()
    rec, folder = result.recommended, tmp_path / "out" / "model"
    assert rec["ship_precision"] == precision
    config = json.loads((folder / "config.json").read_text())
    assert config["precision"] == precision
    on_disk = sum((folder / name).stat().st_size for name in ("model.safetensors", "vocab.txt"))
    assert abs(on_disk / rec[f"file_bytes_{precision}"] - 1) <= 0.01
    corpus = load_corpus(cfg.data, cfg.seed)
    (tmp_path / "in.txt").write_text("\n".join(corpus.texts["test"]) + "\n", encoding="utf-8")
    fresh = subprocess.run(
        [sys.executable, "-m", "sweep.predict", "--model", str(folder), "--input", str(tmp_path / "in.txt")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert fresh.returncode == 0, fresh.stderr
    names = [corpus.label_names[t] for t in corpus.labels["test"]]
    predicted = fresh.stdout.splitlines()
    accuracy = 100.0 * np.mean([p == n for p, n in zip(predicted, names, strict=True)])
    assert accuracy == pytest.approx(rec[f"test_accuracy_{precision}"])


def test_a_byte_budget_skips_larger_files_and_ships_one_under_it(tiny_overrides, tmp_path):
    budget = 12_000
    cfg = compose_config([*tiny_overrides, "data.synthetic.num_docs=1000", "search.n_trials=8",
                          f"search.max_model_bytes={budget}", "search.max_consecutive_skips=200",
                          "report.repeats=0"])  # fmt: skip
    result = runner.run(cfg, tmp_path / "out")
    table = result.table
    skipped = table[table["state"] == "SKIPPED"]
    assert (skipped["file_bytes_int4"] > budget).all()
    assert skipped["fail_reason"].str.contains("search.max_model_bytes=12,000").all()
    done = table[table["state"] == "COMPLETE"]
    assert len(done) and (done["file_bytes_int4"] <= budget).all()
    assert (done["ship_bytes"] <= budget).all()
    rec = result.recommended
    assert rec["ship_val_accuracy"] == done["ship_val_accuracy"].max() or rec["ship_bytes"] < budget
    folder = tmp_path / "out" / "model"
    on_disk = sum((folder / name).stat().st_size for name in ("model.safetensors", "vocab.txt"))
    assert on_disk == rec["ship_bytes"] <= budget


@pytest.mark.parametrize("by", ["norm", "frequency"])
def test_pruned_rows_export_and_predict_as_measured(tiny_overrides, tmp_path, by):
    rows = 40
    cfg = compose_config([*tiny_overrides, "data.synthetic.num_docs=1000", "search.precision=fp32",
                          f"report.prune_rows={rows}", f"report.prune_by={by}"])  # fmt: skip
    rec = runner.run(cfg, tmp_path / "out").recommended
    folder = tmp_path / "out" / "model"
    config = json.loads((folder / "config.json").read_text())
    words = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    kept = min(rows, int(rec["vocab_size"]))
    assert config["vocab_size"] == kept and len(words) == kept + 2
    assert words[:2] == ["<pad>", "<unk>"]
    corpus = load_corpus(cfg.data, cfg.seed)
    if by == "frequency":  # the most frequent words, in rank order
        from sweep.data.prepared import PreparedData

        data = PreparedData.load(cfg.data, cfg.seed, "cpu")
        assert words == data.encoded.words[: kept + 2]
    pruned = config["figures"]["pruned"]
    assert pruned["rows"] == kept and pruned["by"] == by
    predicted = sweep.load(folder).predict(corpus.texts["test"])
    names = [corpus.label_names[t] for t in corpus.labels["test"]]
    accuracy = 100.0 * np.mean([p == n for p, n in zip(predicted, names, strict=True)])
    assert accuracy == pytest.approx(pruned["test_accuracy"])


def test_a_folder_exported_before_precisions_still_loads(exported, tmp_path):
    """model.pt + vocab.json, as the first export wrote them: loaded as they are."""

    import torch

    from sweep.common.digest import file_digest
    from sweep.ship import quantize, tensorfile

    _, _, folder = exported
    old = tmp_path / "old"
    old.mkdir()
    state = quantize.decode(*tensorfile.read(folder / "model.safetensors"))
    torch.save(state, old / "model.pt")
    words = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    (old / "vocab.json").write_text(json.dumps({"words": words}))
    config = json.loads((folder / "config.json").read_text())
    config.pop("precision")  # the first format: no precision, a re-created trial's accuracy
    config["recreated_val_accuracy"] = config["figures"]["val_accuracy"]
    (old / "config.json").write_text(json.dumps(config))
    names = ("model.pt", "config.json", "vocab.json")
    (old / "SHA256SUMS").write_text("".join(f"{file_digest(old / n)}  {n}\n" for n in names))
    texts = ["a first text", "and another one", ""]
    assert sweep.load(old).predict(texts) == sweep.load(folder).predict(texts)


def test_a_named_precision_ships_even_unmeasured_and_hashed_rows_export(tiny_overrides, tmp_path):
    """search.precision=int4 with report.quantize=none: the file is int4 (its bytes the
    predicted ones), its accuracy unmeasured; hash buckets keep every word in vocab.txt."""
    cfg = compose_config([*tiny_overrides, "search.precision=int4", "report.quantize=none",
                          "model.hash_buckets=32"])  # fmt: skip
    result = runner.run(cfg, tmp_path / "out")
    rec, folder = result.recommended, tmp_path / "out" / "model"
    assert rec["ship_precision"] == "int4" and np.isnan(rec["ship_val_accuracy"])
    assert result.table["val_accuracy_int4"].isna().all()  # nothing measured at int4
    assert json.loads((folder / "config.json").read_text())["precision"] == "int4"
    on_disk = sum((folder / name).stat().st_size for name in ("model.safetensors", "vocab.txt"))
    assert on_disk == rec["file_bytes_int4"]
    words = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
    corpus = load_corpus(cfg.data, cfg.seed)
    assert len(words) > rec["vocab_size"] + 2  # every word: its rank picks its bucket
    assert len(sweep.load(folder).predict(corpus.texts["test"][:10])) == 10
