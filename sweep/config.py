"""Stage 0, checks: reject an impossible config before any data is read or model trained.

Every message names the config key and says what to do. Data problems (files, columns, classes)
are checked by ``sweep.corpus`` as it reads them, still before training.
"""

from __future__ import annotations

from omegaconf import DictConfig

from sweep.search import check_space


class ConfigError(ValueError):
    """An impossible config value; the message names the key."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def check_config(cfg: DictConfig) -> None:
    """Raise ConfigError (or the search module's SearchError) for the first impossible value."""
    train = cfg.train
    for key in ("epochs", "batch_size", "patience", "eval_batch_size"):
        value = train[key]
        _require(
            isinstance(value, int) and value >= 1, f"train.{key}={value!r} must be an integer >= 1"
        )
    _require(train.lr > 0, f"train.lr={train.lr} must be positive")
    _require(cfg.report.tolerance >= 0, f"report.tolerance={cfg.report.tolerance} must be >= 0")
    _require(
        isinstance(cfg.search.n_trials, int) and cfg.search.n_trials >= 1,
        f"search.n_trials={cfg.search.n_trials!r} must be an integer >= 1",
    )
    _require(
        isinstance(cfg.data.max_length, int) and cfg.data.max_length >= 1,
        f"data.max_length={cfg.data.max_length!r} must be an integer >= 1",
    )
    _require(
        cfg.get("threads") is None or int(cfg.threads) >= 1,
        f"threads={cfg.get('threads')} must be >= 1 or null",
    )
    sparse = cfg.model.get("sparse", "auto")
    _require(
        sparse == "auto" or isinstance(sparse, bool),
        f"model.sparse={sparse!r} must be true, false or auto",
    )
    check_space(cfg.search.space)
