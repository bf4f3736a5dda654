"""Stage 0, checks: reject an impossible config before any data is read or model trained.

Every message names the config key and says what to do. Data problems (files, columns, classes)
are checked by ``sweep.data.corpus`` as it reads them, still before training.
"""

from __future__ import annotations

import difflib
import math

from omegaconf import DictConfig, ListConfig, OmegaConf

from sweep.models.kinds import BY_TARGET, NOT_MODEL_ARGS, SIZES, build_model, check_settings
from sweep.search.settings import (
    check_memory_budget,
    check_parallel,
    check_shipping,
    check_study_name,
    pack_padding,
    pack_size,
)
from sweep.search.space import SearchSpace
from sweep.search.storage import check_storage

_ABSENT = object()


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
    _require(train.lr == "auto" or (isinstance(train.lr, (int, float)) and train.lr > 0),
             f"train.lr={train.lr!r} must be positive, or auto (the study's recipe probe picks it)")  # fmt: skip
    check_recipe(cfg)
    check_seed_and_report(cfg)
    share = cfg.report.get("time_share", 1.0)
    _require(
        isinstance(share, (int, float)) and not isinstance(share, bool) and 0 < share <= 1,
        f"report.time_share={share!r} must be a number in (0, 1]: the most of the sweep's time "
        "rewriting the reports after trials may take (1: after every trial)",
    )
    export = cfg.report.get("export", "recommended")
    _require(
        export in ("recommended", "front", "none", "keep"),
        f"report.export={export!r} must be recommended, front, none or keep",
    )
    check_shipping_keys(cfg)
    _require(
        isinstance(cfg.search.n_trials, int) and cfg.search.n_trials >= 1,
        f"search.n_trials={cfg.search.n_trials!r} must be an integer >= 1",
    )
    _require(
        isinstance(cfg.data.max_length, int) and cfg.data.max_length >= 1,
        f"data.max_length={cfg.data.max_length!r} must be an integer >= 1",
    )
    check_ngram_bounds(cfg.data)
    _require(
        cfg.get("threads") is None or int(cfg.threads) >= 1,
        f"threads={cfg.get('threads')} must be >= 1 or null",
    )
    processes = cfg.get("processes", "auto")
    _require(processes == "auto" or (type(processes) is int and processes >= 1),
             f"processes={processes!r} must be an integer >= 1, or auto")  # fmt: skip
    sparse = cfg.model.get("sparse", "auto")
    _require(
        sparse == "auto" or isinstance(sparse, bool),
        f"model.sparse={sparse!r} must be true, false or auto",
    )
    check_model(cfg)
    SearchSpace(cfg.search.space)  # its axes check themselves
    check_study_name(cfg.search.study_name)
    check_storage(cfg.search)
    check_memory_budget(cfg.search)
    pack_size(cfg.search)  # search.pack: a number >= 1 or auto
    pack_padding(cfg.search)  # search.pack_padding: a number >= 1
    check_parallel(cfg.search)  # search.workers, the time budget
    check_finite(cfg)
    check_search_keys(cfg)


def check_recipe(cfg: DictConfig) -> None:
    """``train.recipe``: the choices each ``auto`` key may take (``sweep.trial.recipe``)."""
    choices = cfg.train.get("recipe")
    _require(choices is not None, "train.recipe is missing: it lists what each auto key may be")
    rules = {"lr": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                    "positive numbers"),
             "hidden_dim": (lambda v: isinstance(v, int) and v >= 0, "integers >= 0"),
             "word_ngrams": (lambda v: isinstance(v, int) and v >= 1, "integers >= 1")}  # fmt: skip
    for name, (ok, what) in rules.items():
        values = choices.get(name)
        _require(
            values is not None and len(values) > 0 and all(ok(v) for v in values),
            f"train.recipe.{name}={values!r} must be a non-empty list of {what}",
        )
    margin = choices.get("margin", "auto")
    _require(margin == "auto" or (isinstance(margin, (int, float)) and margin >= 0),
             f"train.recipe.margin={margin!r} must be a number of points >= 0, or auto")  # fmt: skip
    behind = choices.get("stop_behind")
    _require(behind is None or (isinstance(behind, (int, float)) and not isinstance(behind, bool)
                                and behind >= 0),
             f"train.recipe.stop_behind={behind!r} must be a number of standard errors >= 0, "
             "or null (every choice trains at every probe point)")  # fmt: skip
    texts = choices.get("max_texts")
    _require(texts is None or (isinstance(texts, int) and not isinstance(texts, bool)
                               and texts >= 100),
             f"train.recipe.max_texts={texts!r} must be an integer >= 100 (the most texts of a "
             "split the probe trains and validates on), or null (every text)")  # fmt: skip
    dim = choices.get("embedding_dim")
    _require(isinstance(dim, int) and dim >= 1,
             f"train.recipe.embedding_dim={dim!r} must be an integer >= 1")  # fmt: skip
    for key, rule in (("model.hidden_dim", rules["hidden_dim"]),
                      ("data.tokenizer.word_ngrams", rules["word_ngrams"])):  # fmt: skip
        value = OmegaConf.select(cfg, key)
        _require(value is None or value == "auto" or rule[0](value),
                 f"{key}={value!r} must be one of the {rule[1]}, or auto")  # fmt: skip


def check_seed_and_report(cfg: DictConfig) -> None:
    """``seed``, ``report.tolerance``, ``report.top_k`` and ``report.repeats``."""
    _require(_is_int(cfg.seed) and cfg.seed >= 0,
             f"seed={cfg.seed!r} must be an integer >= 0 (it seeds the data, the splits and "
             "every trial)")  # fmt: skip
    _require(cfg.report.tolerance >= 0, f"report.tolerance={cfg.report.tolerance} must be >= 0")
    for key, low in (("top_k", 1), ("repeats", 0)):
        value = cfg.report.get(key)
        _require(_is_int(value) and value >= low,
                 f"report.{key}={value!r} must be an integer >= {low}")  # fmt: skip


def check_ngram_bounds(data_cfg: DictConfig) -> None:
    """``data.ngram_min_count`` and ``data.max_ngrams`` (the word n-gram rows' bounds)."""
    min_count, max_ngrams = data_cfg.get("ngram_min_count", 1), data_cfg.get("max_ngrams")
    _require(_is_int(min_count) and min_count >= 1,
             f"data.ngram_min_count={min_count!r} must be an integer >= 1")  # fmt: skip
    _require(max_ngrams is None or (_is_int(max_ngrams) and max_ngrams >= 1),
             f"data.max_ngrams={max_ngrams!r} must be an integer >= 1 or null")  # fmt: skip


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Where a user who sets a per-trial size should go instead.
_SIZE_ADVICE = {
    "embedding_dim": "search one width: search.space.embedding_dim.low=N "
    "search.space.embedding_dim.high=N",
    "num_embeddings": "search one cutoff: search.space.vocab_size.low=K search.space.vocab_size.high=K",
    "num_classes": "it comes from the data's labels",
}


def check_model(cfg: DictConfig) -> None:
    """``model.*``: the sizes each trial sets left unset (``???``); a model kind's settings plain
    values of the types its constructor takes; and the model built once, tiny, so that a value
    its constructor refuses (``model.dropout=2.0``) stops the run here, not in every trial."""
    for key in SIZES:
        if key in cfg.model and not OmegaConf.is_missing(cfg.model, key):
            raise ConfigError(f"model.{key}={cfg.model[key]!r} is set by the sweep for each "
                              f"trial, so a value here would be ignored: {_SIZE_ADVICE[key]}")  # fmt: skip
    settings = OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=False)
    for key in (*NOT_MODEL_ARGS, *SIZES):
        settings.pop(key, None)
    if settings.get("hidden_dim") == "auto":  # the recipe probe's: its first choice to build
        settings["hidden_dim"] = cfg.train.recipe.hidden_dim[0]
    kind = BY_TARGET.get(str(settings.get("_target_")))
    if kind is not None:
        try:
            check_settings(kind, settings, where="model")
        except ValueError as error:
            raise ConfigError(str(error)) from None
    dropout = settings.get("dropout", 0.0)
    _require(isinstance(dropout, (int, float)) and 0 <= dropout < 1,
             f"model.dropout={dropout!r} must be a probability in [0, 1)")  # fmt: skip
    built = OmegaConf.create({**settings, "name": cfg.model.get("name")})
    try:
        build_model(built, num_embeddings=8, embedding_dim=4, num_classes=2)
    except Exception as error:  # the constructor's own check, in its words
        cause = error.__cause__ or error
        raise ConfigError(f"model: the {cfg.model.get('name')} model cannot be built from these "
                          f"settings ({str(cause).strip().splitlines()[0][:300]})") from None  # fmt: skip


def check_shipping_keys(cfg: DictConfig) -> None:
    """report.quantize, report.prune_rows / prune_by, search.precision / max_model_bytes."""
    quantize = cfg.report.get("quantize", "front")
    _require(
        quantize in ("front", "all", "none"),
        f"report.quantize={quantize!r} must be front, all or none",
    )
    rows = cfg.report.get("prune_rows")
    _require(
        rows is None or (isinstance(rows, int) and not isinstance(rows, bool) and rows >= 1),
        f"report.prune_rows={rows!r} must be an integer >= 1 (word rows the export keeps) or null",
    )
    _require(
        rows is None or not cfg.model.get("hash_buckets"),
        f"report.prune_rows={rows} needs model.hash_buckets=0: hashed rows are shared by many "
        "words, so they cannot be pruned by word; set one of the two to null/0",
    )
    prune_by = cfg.report.get("prune_by", "norm")
    _require(
        prune_by in ("norm", "frequency"), f"report.prune_by={prune_by!r} must be norm or frequency"
    )
    check_shipping(cfg.search)


def check_finite(node, prefix: str = "") -> None:
    """Every number in the config is finite: ``train.lr=inf`` or ``nan`` stops here."""
    if isinstance(node, (DictConfig, ListConfig)):  # as written: no interpolation resolved
        node = OmegaConf.to_container(node, resolve=False)
    items = enumerate(node) if isinstance(node, list) else node.items()
    for key, value in items:
        name = f"{prefix}{key}" if isinstance(node, dict) else f"{prefix[:-1]}[{key}]"
        if isinstance(value, (dict, list)):
            check_finite(value, f"{name}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{name}={value} is not a finite number: give a real value")


def check_search_keys(cfg: DictConfig) -> None:
    """Each extra search key (``search.space.X.key``) names a key the config has."""
    for name, spec in cfg.search.space.items():
        key = spec.get("key")
        if not key or key == "model":
            continue
        if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            raise ConfigError(
                f"search.space.{name}.key={key!r} is not a key of the config"
                f"{did_you_mean(str(key), dotted_keys(cfg))} (python run_sweep.py --help lists them)"
            )


def dotted_keys(node, prefix: str = "") -> list[str]:
    """Every key of a config as ``a.b.c`` (values not resolved)."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    out = []
    for key, value in node.items() if isinstance(node, dict) else ():
        out.append(f"{prefix}{key}")
        out += dotted_keys(value, f"{prefix}{key}.")
    return out


def did_you_mean(key: str, known: list[str]) -> str:
    """``; did you mean a, b?`` naming the keys closest to ``key``, or ''."""
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.8)
    if not close:  # a typo in the last part: compare leaf names under the same parent
        parent, _, leaf = key.rpartition(".")
        siblings = [k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == parent]
        close = [
            f"{parent}.{x}" if parent else x for x in difflib.get_close_matches(leaf, siblings, n=3)
        ]
    return f"; did you mean {', '.join(close)}?" if close else ""
