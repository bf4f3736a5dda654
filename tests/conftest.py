"""Shared fixtures: compose the project's configs with tiny, fast data and temp folders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# A corpus small enough for a trial to take a fraction of a second.
TINY = [
    "data.synthetic.num_docs=400",
    "data.synthetic.vocab_words=2000",
    "data.synthetic.cue_min_rank=50",
    "data.synthetic.cue_words=20",
    "train.epochs=2",
    "train.patience=1",
    "search.n_trials=3",
    "search.space.embedding_dim.high=32",
    "search.space.vocab_size.low=20",
    "report.repeats=0",
]


def compose_config(overrides: list[str] | tuple[str, ...] = ()):
    """The composed primary config, as ``run_sweep.py`` would see it (without hydra keys)."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="sweep", overrides=list(overrides))


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """Overrides for a tiny sweep whose storage and cache live in this test's temp folder."""
    return [
        *TINY,
        f"search.storage_dir={tmp_path / 'studies'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "device=cpu",
    ]


@pytest.fixture
def tiny_cfg(tiny_overrides):
    return compose_config(tiny_overrides)


def run_cli(args: list[str], cwd: Path, timeout: float = 300):
    """Run ``run_sweep.py`` as a user would, in ``cwd``; return the CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, str(ROOT / "run_sweep.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def count_fits(monkeypatch):
    """Count calls of the training function (the only place a model is trained)."""
    from sweep import runner

    calls = []
    real_fit = runner.fit

    def counting_fit(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runner, "fit", counting_fit)
    return calls
