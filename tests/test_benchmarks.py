"""Helpers of the benchmark commands (the benchmarks themselves read ../shared, not run here)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sweep.benchmarks.models import markdown
from sweep.benchmarks.search_efficiency import hypervolume


def test_hypervolume_of_a_staircase():
    # Points (log params, accuracy): (1, 50), (2, 80), (3, 70 dominated), ref x = 4.
    hv = hypervolume(np.array([50.0, 80.0, 70.0]), np.array([1.0, 2.0, 3.0]), 4.0)
    assert hv == pytest.approx(1 * 50 + 2 * 80)


def test_hypervolume_grows_with_a_better_front():
    base = hypervolume(np.array([60.0]), np.array([2.0]), 4.0)
    assert hypervolume(np.array([60.0, 70.0]), np.array([2.0, 3.0]), 4.0) > base
    assert hypervolume(np.array([60.0, 50.0]), np.array([2.0, 3.0]), 4.0) == base


def test_markdown_table():
    text = markdown(pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}))
    assert text.splitlines() == ["| a | b |", "| --- | --- |", "| 1 | x |", "| 2 | y |"]


def test_data_prep_benchmark_prints_time_and_memory(tmp_path, capsys):
    from sweep.benchmarks import data_prep

    data_prep.main(["--docs", "3000", "--out", str(tmp_path)])
    row = pd.read_csv(tmp_path / "data_prep.csv").iloc[0]
    assert row["documents"] == 3000 and row["all_tokens_kept"] > 3000 * 40
    assert 0 < row["total_s"] < 60 and row["peak_rss_mb"] >= row["rss_after_imports_mb"] > 0
    assert "peak_rss_mb" in capsys.readouterr().out
