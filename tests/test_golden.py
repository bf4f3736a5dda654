"""Behaviour pinned across refactors: a fixed-seed default sweep writes the same trials.csv.

``tests/data/golden_trials.csv`` was written by this sweep before the trial and its schema were
restructured (issue 13). Every column must still be there, in the same order, and every value
that does not depend on the clock must be the same (floats within 1e-9 relative; a float32 loss
within 1e-5, see ``FLOAT32_SUMS``). Columns added
since on purpose, empty or new in every old row: ``pack`` (issue 18), and the shipping columns of
issue 16 (``file_bytes_*``, ``*_accuracy_fp16|int8|int4``, ``ship_*``) and the memory split of
issue 14 (``gpu_baseline_mb``, ``probe_peak_mb``, ``est_baseline_mb``, ``memory_mb``), checked
before they were written in that the old columns kept every value, except ``est_peak_mb``, which
now estimates the trial alone: the corpus moved to ``est_baseline_mb``, the best-epoch copy of
the weights was added (old = new + 0.347 MiB corpus - params_total x 4 bytes, row by row).
The training recipe's columns (issue 29: ``recipe_lr``, ``recipe_hidden_dim``,
``recipe_word_ngrams``) were inserted with what this sweep trained with before (TINY fixes them:
0.01, 64, 1), every other value unchanged; so was ``probe_fit`` (issue 45: empty, no probe). The sweep was TPE's when it was written; since
issue 27 the default sampler is ``ehvi``, so the test names ``search/sampler=tpe``: the same
trials, to pin the trial and its records (the sampler has tests of its own, test_ehvi).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from conftest import TINY, compose_config

from sweep import runner

GOLDEN = Path(__file__).parent / "data" / "golden_trials.csv"
# Wall-clock figures and who ran the trial: they differ on every run.
CLOCK = {
    "train_seconds", "cutoff_seconds", "tokens_per_second", "examples_per_second",
    "eval_tokens_per_second", "eval_examples_per_second", "datetime_start",
    "duration_seconds", "worker", "heartbeat",
}  # fmt: skip
# A mean of float32 losses: its last digits are the CPU's summation order (oneDNN's AVX2 kernels
# at one thread moved val_loss by 1.1e-7 relative, every accuracy the same); any change of what
# is computed moves it by far more than this.
FLOAT32_SUMS = {"val_loss": 1e-5}
OVERRIDES = [
    *TINY,
    "search.n_trials=4",
    "data.synthetic.num_docs=1200",
    "train.epochs=4",
    "train.patience=2",
    "report.repeats=1",
    "report.top_k=2",
    "device=cpu",
    "search/sampler=tpe",
]


def test_default_sweep_writes_the_golden_trials_csv(tmp_path):
    cfg = compose_config(
        [*OVERRIDES, f"search.storage_dir={tmp_path / 's'}", f"data.cache_dir={tmp_path / 'c'}"]
    )
    runner.run(cfg, tmp_path / "out")
    got = pd.read_csv(tmp_path / "out" / "trials.csv")
    want = pd.read_csv(GOLDEN)
    assert list(got.columns) == list(want.columns)
    for column in want.columns:
        if column in CLOCK:
            continue
        a, b = got[column], want[column]
        if pd.api.types.is_numeric_dtype(b) and not pd.api.types.is_bool_dtype(b):
            rtol = FLOAT32_SUMS.get(column, 1e-9)
            np.testing.assert_allclose(a.to_numpy(float), b.to_numpy(float), rtol=rtol,
                                       equal_nan=True, err_msg=column)  # fmt: skip
        else:
            assert a.astype(str).tolist() == b.astype(str).tolist(), column
