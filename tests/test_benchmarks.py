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
