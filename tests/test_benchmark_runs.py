"""Each benchmark command's cheapest path, run end to end on tiny data (``slow``: CI runs them).

The benchmarks read real data sets (``../shared/datasets``), which a test must not need: here a
folder of the same layout holds small synthetic CSVs, so every command runs its real code, from
argument parsing to the table it prints, in seconds. The figures are not checked against targets
(that is what the benchmarks are for), only that each row is whole and plausible."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY
from omegaconf import OmegaConf

from sweep.data.synthetic import generate

pytestmark = pytest.mark.slow

# ``data.synthetic`` overrides of a corpus small enough for a trial to take a fraction of a second.
TINY_DATA = [o for o in TINY if o.startswith("data.")]


def write_csv(path: Path, seed: int, docs: int) -> None:
    texts, labels = generate(seed=seed, num_docs=docs, vocab_words=2000, cue_min_rank=50,
                             cue_words=20)  # fmt: skip
    table = pd.DataFrame({"text": texts, "label": labels})
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            table.to_csv(f, index=False)
    else:
        table.to_csv(path, index=False)


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Path:
    """The layout of ``../shared/datasets`` (TREC, SST-2, 20 Newsgroups), with tiny texts."""
    root = tmp_path_factory.mktemp("datasets")
    files = {"trec/train.csv": 400, "trec/test.csv": 150, "sst2/train.csv": 400,
             "sst2/dev.csv": 100, "sst2/test.csv": 100, "20newsgroups/train.csv.gz": 400,
             "20newsgroups/test.csv.gz": 150}  # fmt: skip
    for seed, (name, docs) in enumerate(files.items()):
        write_csv(root / name, seed, docs)
    return root


def test_models_benchmark_sweeps_a_data_set_and_prints_its_row(datasets, tmp_path, capsys):
    from sweep.benchmarks import models

    models.main(["--datasets", str(datasets), "--out", str(tmp_path), "--trials", "2",
                 "--only", "trec-bag"])  # fmt: skip
    row = pd.read_csv(tmp_path / "models.csv").iloc[0]
    assert (row["dataset"], row["model"], row["trials"]) == ("trec", "bag", 2)
    assert 0 <= row["best test acc"] <= 100 and row["its params"] <= row["best params"]
    assert "| trec | bag |" in capsys.readouterr().out


def test_search_efficiency_benchmark_times_each_strategy_against_the_grid(datasets, tmp_path,
                                                                         capsys):  # fmt: skip
    from sweep.benchmarks import search_efficiency

    search_efficiency.main(["--datasets", str(datasets), "--out", str(tmp_path), "--sets", "trec",
                            "--strategies", "tpe", "size", "--seeds", "0", "1", "--trials", "3",
                            "--trials-pruning", "3", "--noise-seeds", "0", "1",
                            "--grid", "4,16", "100,null", "--", "train.epochs=2"])  # fmt: skip
    runs = pd.read_csv(tmp_path / "runs.csv")
    oracle = runs[runs["strategy"] == "oracle"].iloc[0]  # the grid's cheapest 99%: under its time
    assert 99 <= oracle["final_hv_pct"] <= 100 + 1e-9 and 1 <= oracle["complete"] <= 4
    # The grid retrained: with the config's own seed it repeats the grid's figures exactly.
    reseeded = runs[runs["strategy"] == "grid-reseeded"]
    reseeded = reseeded.set_index(reseeded["seed"].astype(int))  # "grid" makes the column text
    assert reseeded.loc[0, "final_hv_pct"] == pytest.approx(100.0)
    assert bool(reseeded.loc[0, "final_pick_right"]) and (reseeded["complete"] == 4).all()
    same, other = (pd.read_csv(tmp_path / "noise" / f"trec-grid-seed{s}.csv") for s in (0, 1))
    assert (other["val_accuracy"] != same["val_accuracy"]).any()  # another draw, not a copy
    assert (other["params_total"] == same["params_total"]).all() and len(other) == 4
    runs = runs[~runs["strategy"].isin(["oracle", "grid-reseeded"])]
    assert len(runs) == 4 and set(runs["strategy"]) == {"tpe", "size"}
    assert ((runs["final_hv_pct"] > 0) & (runs["final_hv_pct"] <= 100 + 1e-9)).all()
    assert (runs["run_seconds"] > 0).all() and (runs["complete"] + runs["pruned"] == 3).all()
    reached = runs["seconds_to_99pct_hv"].dropna()
    assert (reached <= runs.loc[reached.index, "run_seconds"]).all()
    table = pd.read_csv(tmp_path / "search_efficiency.csv")
    assert list(table["strategy"]) == ["oracle", "grid-reseeded", "tpe", "size"]
    assert list(table["seeds"]) == [1, 2, 2, 2]
    out = capsys.readouterr().out
    assert "trec: grid of 4 trials" in out and "ratio_to_tpe_99pct_hv" in out


def test_speed_benchmark_trains_ours_and_the_reference(datasets, tmp_path):
    from sweep.benchmarks import speed

    speed.main(["--datasets", str(datasets), "--out", str(tmp_path), "--data", "trec",
                "--no-fasttext", "--seeds", "0", "--lrs", "0.01", "--dim", "8"])  # fmt: skip
    row = pd.read_csv(tmp_path / "speed.csv").iloc[0]
    assert (row["data"], row["dim"], row["lr"]) == ("trec", 8, 0.01)
    assert row["ours_s"] > 0 and row["ref_s"] > 0 and math.isfinite(row["speedup_trial"])
    assert 0 <= row["ours_acc"] <= 100 and 0 <= row["ref_acc"] <= 100


def test_memory_benchmark_estimates_every_model_on_cpu(tmp_path, capsys):
    from sweep.benchmarks import memory

    memory.main(["--out", str(tmp_path), "--device", "cpu", *TINY_DATA, "train.epochs=1",
                 "data.max_length=32"])  # fmt: skip
    table = pd.read_csv(tmp_path / "memory.csv")
    assert set(table["model"]) == {"bag", "cnn", "rnn", "transformer"}
    assert (table["est_peak_mb"] > 0).all() and table["gpu_peak_mb"].isna().all()  # NaN on CPU
    assert "device: cpu" in capsys.readouterr().out.lower()


def test_optim_benchmark_times_both_optimizers(capsys):
    from sweep.benchmarks import optim

    optim.main(["--repeats", "1", "--threads", "1", *TINY_DATA])
    out = capsys.readouterr().out
    assert "FusedAdam (sweep.models.optim)" in out and "torch.optim.Adam(fused=True)" in out


def test_scaling_benchmark_runs_the_sweep_with_each_worker_count(tmp_path):
    from sweep.benchmarks import scaling

    scaling.main(["--out", str(tmp_path), "--workers", "1", "--trials", "2", "--", *TINY_DATA])
    row = pd.read_csv(tmp_path / "scaling.csv").iloc[0]
    assert (row["workers"], row["trials"], row["speed-up"]) == (1, 2, 1.0)


def test_workers_front_benchmark_compares_the_front_of_each_worker_count(tmp_path):
    from sweep.benchmarks import workers_front

    workers_front.main(["--out", str(tmp_path), "--workers", "1", "2", "--seeds", "0",
                        "--trials", "3", "--", *TINY_DATA])  # fmt: skip
    table = pd.read_csv(tmp_path / "workers_front.csv")
    assert list(table["workers"]) == [1, 2] and (table["trials"] == 3).all()
    assert table["seed 0"].max() == 100.0 and (table["seed 0"] > 0).all()
    assert (table["overlaps"] == 0).all()


def test_contention_benchmark_times_the_sweep_alone_and_beside_busy_loops(tmp_path):
    from sweep.benchmarks import contention

    contention.main(["--out", str(tmp_path), "--competitors", "1", "--", *TINY_DATA,
                     "search.n_trials=2"])  # fmt: skip
    table = pd.read_csv(tmp_path / "contention.csv")
    assert list(table["competitors"]) == [0, 1] and (table["trials"] == 2).all()
    # The ratio divides the rounded wall time by the exact one: 1 within rounding.
    assert table["ratio to alone"].iloc[0] == pytest.approx(1.0, abs=0.05)
    assert table["ratio to alone"].iloc[1] > 0


def test_shipping_benchmark_exports_our_model_under_a_budget(datasets, tmp_path):
    from sweep.benchmarks import shipping

    shipping.main(["--datasets", str(datasets), "--out", str(tmp_path), "--sets", "trec",
                   "--budgets", "1MB", "--trials", "3", "--no-fasttext"])  # fmt: skip
    row = pd.read_csv(tmp_path / "shipping.csv").iloc[0]
    assert (row["data"], row["budget"], row["trials_trained"]) == ("trec", "1MB", 3)
    assert row["ours_precision"] in ("fp32", "fp16", "int8", "int4")
    assert 0 < row["ours_bytes"] <= 1_000_000 and 0 <= row["ours_acc"] <= 100


def test_defaults_benchmark_runs_the_default_sweep_on_a_set(datasets, tmp_path):
    from sweep.benchmarks import defaults

    defaults.main(["--datasets", str(datasets), "--out", str(tmp_path), "--data", "trec",
                   "--fasttext-dims", "--variant", "tiny", "search.n_trials=2", "train.epochs=1",
                   "report.repeats=0", "--seeds", "0", "1"])  # fmt: skip
    table = pd.read_csv(tmp_path / "defaults.csv")
    assert list(table["seed"]) == ["0", "1", "mean"]
    row = table.iloc[0]
    assert (row["data"], row["variant"]) == ("trec", "tiny") and row["wall s"] > 0
    assert 0 <= row["recommended: test acc"] <= 100 and row["its params"] > 0
    # each seed ran its own sweep, at its own seed, in its own folder
    for folder, seed in (("trec", 0), ("trec-s1", 1)):
        run = tmp_path / folder / "tiny" / "run"
        assert len(pd.read_csv(run / "trials.csv")) == 2
        assert OmegaConf.load(run / ".hydra" / "config.yaml").seed == seed
    # the whole command's time line: its phases are the run's own (timing.json), within its wall
    phases = ["data s", "probe s", "trials s", "repeats s", "precisions + export s"]
    assert (row[phases] >= 0).all() and row[phases].sum() <= row["wall s"]
    assert row["probe s"] > 0 and 0 < row["probe %"] < 100  # the recipe probe ran
    whole = pd.read_csv(tmp_path / "whole_run.csv").iloc[0]
    assert (whole["variant"], whole["wall ratio"], whole["pick diff"]) == ("tiny", 1.0, 0.0)


def test_frontends_benchmark_prices_each_kind_and_compares_their_fronts(datasets, tmp_path):
    from sweep.benchmarks import frontends

    frontends.main(["--datasets", str(datasets), "--out", str(tmp_path), "--data", "trec",
                    "--cost-set", "20newsgroups", "--rows", "300", "--dim", "8", "--epochs", "1",
                    "--override", "search.n_trials=3", "train.epochs=1", "report.repeats=0"])  # fmt: skip
    cost = pd.read_csv(tmp_path / "cost.csv")
    assert list(cost["kind"]) == ["word", "subword"] and (cost["prepare s"] > 0).all()
    assert list(cost["rows"]) == [302, 302] and (cost["trial x word"] > 0).all()
    fronts = pd.read_csv(tmp_path / "fronts.csv")
    assert list(fronts["kind"]) == ["word", "subword", "mixed"] and (fronts["wall s"] > 0).all()
    word = fronts.iloc[0]
    assert word["reaches at int8 B"] <= word["word rec int8 B"]  # its own recommendation reaches
    assert 0 <= word["rec test acc"] <= 100 and word["unseen-word texts"] >= 0
