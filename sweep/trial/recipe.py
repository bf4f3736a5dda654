"""The training recipe of a study: the keys left at ``auto``, picked by a short probe.

How close a trial gets to what its ``embedding_dim`` and cutoff can reach depends on how it
trains: the learning rate, the head (``model.hidden_dim``: a hidden layer or a linear classifier
on the mean) and whether its tokens include word bigrams (``data.tokenizer.word_ngrams``). No
single choice suits every text (docs/benchmarks.md "Training recipe"), so each of these keys may
be ``auto``: before the first trial, two configurations (``train.recipe.embedding_dim``
wide, at the middle and the top of the cutoff axis) train with each choice of ``train.recipe``; the
best validation accuracy wins where it beats the first choice (the old default) by more than
``train.recipe.margin`` (``auto``: one standard error of their paired difference on the
validation documents, so that one seed's noise does not move the recipe).

The probe is coordinate-wise, so it stays a few fits: first the structure (every word_ngrams x
hidden_dim pair left at auto) at the first learning rate, then the other learning rates at the
chosen structure; a challenger clearly behind after its first point
(``train.recipe.stop_behind``) trains no more. What it picked is stored with the study
(``sweep.search.study.settle_recipe``): a resumed run or another worker reuses it, and every
trial records it (columns ``recipe_lr``, ``recipe_hidden_dim``, ``recipe_word_ngrams``). A key
the user sets is never probed. The pick's own fits answer the study's first trials
(``sweep.trial.recipe_fits``).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import UnsupportedInterpolationType

from sweep.common.forked import Forked, processes_for
from sweep.data.prepared import PreparedData
from sweep.models.fit import evaluate
from sweep.models.frontends import frontend_of
from sweep.search.loop import own_mb
from sweep.search.settings import SearchError
from sweep.search.space import SearchSpace
from sweep.trial.recipe_fits import RecipeFits
from sweep.trial.runner import TrialRunner
from sweep.trial.side_by_side import within_memory

log = logging.getLogger(__name__)

AUTO = "auto"
# The recipe's names (train.recipe.<name> lists the choices) and the config key each sets.
KEYS = {
    "word_ngrams": "data.tokenizer.word_ngrams",
    "hidden_dim": "model.hidden_dim",
    "lr": "train.lr",
}


def auto_names(cfg: DictConfig) -> list[str]:
    """The recipe names whose config key is ``auto`` (in ``KEYS`` order)."""
    return [name for name, key in KEYS.items() if OmegaConf.select(cfg, key) == AUTO]


def to_probe(cfg: DictConfig) -> list[str]:
    """The ``auto`` names with more than one choice and not searched: the ones the probe has to
    pick (an ``auto`` key with one choice simply takes it; a key of ``search.space`` is set per
    trial by the search)."""
    space = OmegaConf.select(cfg, "search.space") or {}
    searched = {str(spec.get("key") or name) for name, spec in space.items()}
    return [name for name in auto_names(cfg)
            if len(choices(cfg, name)) > 1 and KEYS[name] not in searched]  # fmt: skip


def choices(cfg: DictConfig, name: str) -> list[Any]:
    """The values ``train.recipe.<name>`` lets the probe pick from (the first: the fallback);
    word n-grams only for a front end that takes them (``FrontEnd.takes_ngrams``)."""
    if name == "word_ngrams" and not frontend_of(cfg.model).takes_ngrams:
        return [1]
    return list(cfg.train.recipe[name])


def fixed(cfg: DictConfig, choice: dict[str, Any] | None = None) -> DictConfig:
    """A copy of ``cfg`` with every ``auto`` key set: from ``choice`` ({config key: value}, as
    the probe stores it) where it names the key, else to its first choice. The copy's study name
    is the one ``cfg`` gives (it is derived from the setup, ``auto`` included), so a study keeps
    its name whatever the probe picked."""
    names = auto_names(cfg)
    if not names:
        return cfg
    out = cfg.copy()
    with contextlib.suppress(UnsupportedInterpolationType):  # no resolvers: no name used here
        if OmegaConf.select(out, "search.study_name") is not None:
            OmegaConf.update(out, "search.study_name", str(cfg.search.study_name))
    for name in names:
        key = KEYS[name]
        value = (choice or {}).get(key, choices(cfg, name)[0])
        OmegaConf.update(out, key, value)
    return out


def with_choice(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """``cfg`` with a probe choice's values (``{recipe name: value}``) set (``fixed``)."""
    return fixed(cfg, {KEYS[n]: v for n, v in values.items()})


def probe_points(cfg: DictConfig, data: PreparedData) -> list[dict[str, Any]]:
    """The configurations the probe trains for each choice: ``train.recipe.embedding_dim`` wide
    (within the space's bounds), at the middle of the cutoff axis on a log scale (a typical
    trial) and at its top (where the most accurate trials live), both of this encoding's
    vocabulary: with bigrams, words and bigrams compete for rows."""
    axes = {axis.name: axis for axis in SearchSpace(cfg.search.space).axes}
    low, high = axes["embedding_dim"].bounds(data.full_vocab)
    dim = min(max(int(cfg.train.recipe.embedding_dim), int(low)), int(high))
    low, high = axes["vocab_size"].bounds(data.full_vocab)
    cutoffs = sorted({int(round(math.sqrt(low * high))), int(high)})
    return [{"embedding_dim": dim, "vocab_size": k} for k in cutoffs]


def margin_points(cfg: DictConfig, incumbent: torch.Tensor, challenger: torch.Tensor) -> float:
    """How many validation accuracy points ``challenger`` must gain over ``incumbent`` (each a
    boolean per validation document: right or wrong) to replace it: ``train.recipe.margin``, or
    with ``auto`` one standard error of their paired difference, ``100 * sqrt(d) / n`` for ``d``
    documents of ``n`` that one gets right and the other wrong. Paired, because both ran on the
    same documents: a probe on one seed must not trade the default for noise, yet a real gain
    shows long before two unpaired accuracies would tell it."""
    margin = cfg.train.recipe.get("margin", "auto")
    if margin != "auto":
        return float(margin)
    return paired_se(incumbent, challenger)


def paired_se(incumbent: torch.Tensor, challenger: torch.Tensor) -> float:
    """One standard error (points) of the paired difference of two accuracies on the same
    documents (each a boolean per document): ``100 * sqrt(d) / n`` for ``d`` of ``n``
    documents that one gets right and the other wrong."""
    discordant = int((incumbent != challenger).sum())
    return 100.0 * math.sqrt(discordant) / max(len(incumbent), 1)


def pick(cfg: DictConfig, rows: list[dict[str, Any]], right: list[torch.Tensor]) -> int:
    """The index of the winner among ``rows`` (``right``: each row's per-document correctness):
    the incumbent (``rows[0]``, the earlier choices, the default first) unless the best row
    beats it by more than ``margin_points``. A row stopped behind (``clearly_behind``) never
    wins."""
    accuracies = [-math.inf if row.get("stopped") else row["val_accuracy"] for row in rows]
    best = accuracies.index(max(accuracies))  # the first of a tie
    gain = accuracies[best] - accuracies[0]
    return best if gain > 0 and gain > margin_points(cfg, right[0], right[best]) else 0


def clearly_behind(cfg: DictConfig, incumbent: torch.Tensor, challenger: torch.Tensor) -> bool:
    """Whether a challenger's first probe point (``challenger``: per validation document, right
    or wrong) is so far behind the incumbent's first point that its other points need not
    train: more than ``train.recipe.stop_behind`` standard errors of their paired difference
    (null: never). To be picked it would have to beat the incumbent by more than the margin over
    all its points; the points of one choice rise and fall together, so that far behind at one
    it does not (docs/benchmarks.md, "From command to answer")."""
    k = cfg.train.recipe.get("stop_behind")
    if k is None:
        return False
    gap = 100.0 * float(incumbent.float().mean() - challenger.float().mean())
    return gap > 0 and gap > float(k) * paired_se(incumbent, challenger)


def fit_choice(cfg: DictConfig, values: dict[str, Any], data: PreparedData, on_trained=None,
               behind: Callable[[torch.Tensor], bool] | None = None):  # fmt: skip
    """Train one choice (``values``: {recipe name: value}) at every probe point; (its row of
    figures, which validation documents its fits get right, concatenated, and its fits:
    (configuration, measured figures) each). ``on_trained`` also sees each trained model (its
    weights kept: ``RecipeFits``). ``behind(right at the first point)`` True stops the choice
    after its first point (its row says ``stopped``)."""
    trial_cfg = with_choice(cfg, values)
    runner, kept = TrialRunner(trial_cfg, data), []

    def keep_right(params, seed, model) -> None:  # the best epoch's weights
        view = runner.eval_views(runner.setup(params)[1])["val"]
        right = torch.zeros(len(view.labels), dtype=torch.bool, device=view.labels.device)
        evaluate(model, view, int(trial_cfg.train.eval_batch_size), right=right)
        kept.append(right.cpu())
        if on_trained is not None:
            on_trained(params, seed, model)

    runner.on_trained = keep_right
    points = probe_points(trial_cfg, data)
    fits = [runner.train(dict(points[0]))]
    stopped = len(points) > 1 and behind is not None and behind(kept[0])
    if not stopped:
        fits += [runner.train(dict(point)) for point in points[1:]]
    measured = list(zip(points[: len(fits)], fits, strict=True))
    right = torch.cat(kept)
    return choice_row(values, measured, right, stopped), right, measured


def choice_row(values: dict[str, Any], measured: list, right: torch.Tensor, stopped: bool) -> dict:
    """A choice's row of the probe's table from its fits (``measured``: (point, figures) each)
    and which validation documents they get right."""
    points, fits = [point for point, _ in measured], [figures for _, figures in measured]
    return {**values, "embedding_dim": points[0]["embedding_dim"],
            "vocab_sizes": [point["vocab_size"] for point in points],
            **({"stopped": True} if stopped else {}),
            "val_accuracy": round(100.0 * float(right.float().mean()), 3),
            "epochs": [f["epochs"] for f in fits],
            "train_seconds": round(sum(f["train_seconds"] for f in fits), 3)}  # fmt: skip


def first_only(values: dict[str, Any], right: torch.Tensor, measured: list):
    """A choice cut to its first fit and stopped there, as ``fit_choice`` with ``behind`` True
    returns it: for a challenger that trained beside its incumbent, before the incumbent's
    first fit was known, and turned out clearly behind it."""
    first = right[: len(right) // len(measured)]
    return choice_row(values, measured[:1], first, True), first, measured[:1]


def data_of(cfg: DictConfig, values: dict[str, Any], device, prepared: dict[int, PreparedData]):
    """The prepared data choice ``values`` trains on: from ``prepared`` (per word_ngrams: the
    encoding costs most), else loaded into it; n-grams from the loaded words, no second
    tokenizing."""
    data_cfg = with_choice(cfg, values).data
    ngrams = int(data_cfg.tokenizer.word_ngrams)
    if ngrams not in prepared:
        encode = frontend_of(cfg.model).encode
        prepared[ngrams] = PreparedData.load(data_cfg, cfg.seed, device, encode,
                                             words=prepared.get(1))  # fmt: skip
    return prepared[ngrams]


def probe(
    cfg: DictConfig,
    device: torch.device,
    beat: Callable[[], None] | None = None,
    prepared: dict[int, PreparedData] | None = None,
    fits: RecipeFits | None = None,
) -> dict:
    """Pick every ``auto`` key of ``cfg`` (see the module docstring). Returns what the study
    stores: ``choice`` ({config key: value}), ``probes`` (one row per choice: its validation
    accuracy over its fits, their cutoffs, epochs and seconds), ``embedding_dim`` (of the probe
    points) and ``seconds``. ``beat`` is called after each choice (the claim's heartbeat).
    ``prepared`` ({word_ngrams: data}) holds the data the caller has loaded already; the probe
    adds what it loads, so the caller can train on the pick without loading it again. ``fits``
    receives the pick's fits (their figures and weights), so the study need not train them
    again (``sweep.trial.recipe_fits``). The choices of a stage train side by side where the
    CPU has the cores (``probe_processes``); the pick is the same as one after another."""
    names = to_probe(cfg)
    if not names:
        return {"choice": {}, "probes": [], "embedding_dim": None, "seconds": 0.0}
    started = time.perf_counter()
    fits = RecipeFits(None, cfg.seed) if fits is None else fits
    fits.discard()  # the waiting weights of a probe that was killed
    prepared = {} if prepared is None else prepared  # per word_ngrams: encoding costs most
    structure = [n for n in names if n != "lr"]
    first_lr = {"lr": choices(cfg, "lr")[0]} if "lr" in names else {}
    shapes = [{**dict(zip(structure, combo, strict=True)), **first_lr}
              for combo in itertools.product(*(choices(cfg, n) for n in structure))]  # fmt: skip
    rates = len(choices(cfg, "lr")) - 1 if "lr" in names else 0  # the second stage's
    processes = probe_processes(cfg, device, max(len(shapes), rates))
    state = Stage(cfg, device, prepared, fits, beat)
    if processes > 1:  # every encoding loaded before the fork: the children share it
        own = max(fit_memory(cfg, v, state.data(v)) for v in shapes)
        processes = within_memory(processes, own, device, "recipe probe")
    _PROBING["stage"] = state  # what a forked child reads (the fork copies it)
    try:
        with Forked(processes, torch.get_num_threads()) as forked:
            state.run(forked, [(v, None if i == 0 else 0) for i, v in enumerate(shapes)])
            winner = pick(cfg, state.rows, state.right)
            if "lr" in names:
                shape = {n: state.rows[winner][n] for n in structure}
                jobs = [({**shape, "lr": lr}, winner) for lr in choices(cfg, "lr")[1:]]
                stage = [winner, *state.run(forked, jobs)]
                winner = stage[pick(cfg, *state.of(stage))]
    finally:
        _PROBING.clear()
    fits.settle(winner)
    if processes > 1:
        log.info("recipe probe: %d choices side by side in %d processes", len(state.rows),
                 processes)  # fmt: skip
    return {
        "choice": {KEYS[n]: state.rows[winner][n] for n in names},
        "probes": state.rows,
        "embedding_dim": state.rows[0]["embedding_dim"],
        "seconds": round(time.perf_counter() - started, 3),
        **({"train_texts": state.texts} if state.texts is not None else {}),
    }


def probe_processes(cfg: DictConfig, device: torch.device, choices_at_once: int) -> int:
    """How many of the probe's choices train at once: ``processes`` (``processes_for``), at
    most ``choices_at_once``."""
    return min(processes_for(cfg.get("processes", "auto"), device), max(choices_at_once, 1))


def fit_memory(cfg: DictConfig, values: dict[str, Any], data: PreparedData) -> float:
    """The estimated own memory (MiB) of choice ``values``' largest probe fit (the top of the
    cutoff axis), the corpus left out."""
    runner = TrialRunner(with_choice(cfg, values), data)
    return own_mb(runner.describe(probe_points(runner.cfg, data)[-1]))


# The stage a forked child of the probe trains in (``Forked``: the child reads it from the
# memory the fork copied; set before the children start, cleared after).
_PROBING: dict[str, Stage] = {}


def _fit_job(index: int, values: dict[str, Any], incumbent_first: torch.Tensor | None):
    """One choice, in a child (or on the spot): ``fit_choice`` with what the stage holds."""
    return _PROBING["stage"].fit(index, values, incumbent_first)


class Stage:
    """The probe's choices so far (``rows``, ``right``) and how one more trains."""

    def __init__(self, cfg, device, prepared, fits: RecipeFits, beat):
        self.cfg, self.device, self.prepared = cfg, device, prepared
        self.fits, self.beat = fits, beat
        self.rows: list[dict[str, Any]] = []  # per choice: its fits' figures
        self.right: list[torch.Tensor] = []  # per choice: which validation documents it gets right
        self.sampled: dict[int, PreparedData] = {}  # per word_ngrams, where max_texts cuts
        self.texts: int | None = None  # training texts the fits see, where sampled

    def data(self, values: dict[str, Any]) -> PreparedData:
        """The data choice ``values``' fits train on: its encoding (``data_of``), or where the
        corpus has more than ``train.recipe.max_texts`` documents in a split, a sample of that
        many (``PreparedData.sample``): word n-grams are then derived from the sample's words,
        so the whole corpus's n-gram encoding is made only if the probe picks n-grams."""
        ngrams = int(with_choice(self.cfg, values).data.tokenizer.word_ngrams)
        if ngrams not in self.sampled:
            self.sampled[ngrams] = self._load(values, ngrams)
        return self.sampled[ngrams]

    def _load(self, values: dict[str, Any], ngrams: int) -> PreparedData:
        cfg, limit = self.cfg, self.cfg.train.recipe.get("max_texts")
        words = self.prepared.get(1)
        if (limit is not None and ngrams > 1 and ngrams not in self.prepared
                and words is not None and words.encoded.streams is not None):  # fmt: skip
            sample = self.data({**values, "word_ngrams": 1})
            if sample is not words:
                return PreparedData.load(with_choice(cfg, values).data, cfg.seed, self.device,
                                         frontend_of(cfg.model).encode, words=sample)  # fmt: skip
        whole = data_of(cfg, values, self.device, self.prepared)
        if limit is None:
            return whole
        sample = whole.sample(int(limit), cfg.seed)
        if sample is not whole and self.texts is None:
            self.texts = len(sample.encoded.labels["train"])
            log.info("recipe probe: on %d of the %d training texts and %d of the %d validation "
                     "texts (train.recipe.max_texts; its fits are not the study's trials)",
                     self.texts, len(whole.encoded.labels["train"]),
                     len(sample.encoded.labels["validation"]),
                     len(whole.encoded.labels["validation"]))  # fmt: skip
        return sample

    def whole(self, values: dict[str, Any]) -> bool:
        """Whether choice ``values`` trains on every document (so its fits can be trials): a
        sample is all or nothing (every encoding has the same documents)."""
        self.data(values)
        return self.texts is None

    def fit(self, index: int, values: dict[str, Any], incumbent_first: torch.Tensor | None):
        cfg = self.cfg
        behind = None if incumbent_first is None else (  # against the incumbent's first point
            lambda first: clearly_behind(cfg, incumbent_first, first))  # fmt: skip
        on_trained = self.fits.on_trained(index) if self.whole(values) else None
        return fit_choice(cfg, values, self.data(values), on_trained, behind)

    def of(self, indices: list[int]) -> tuple[list[dict[str, Any]], list[torch.Tensor]]:
        return [self.rows[i] for i in indices], [self.right[i] for i in indices]

    def first_point(self, index: int | None) -> torch.Tensor | None:
        """Choice ``index``'s correctness at its first point, once it has trained (else None:
        a challenger that starts beside its incumbent trains every point)."""
        if index is None or index >= len(self.rows):
            return None
        return self.right[index][: len(self.right[index]) // len(self.rows[index]["vocab_sizes"])]

    def run(self, forked: Forked, jobs: list[tuple[dict[str, Any], int | None]]) -> list[int]:
        """Train ``jobs`` ((values, the index of the choice it must beat or None) each), at
        most ``forked.processes`` at once; their indices, in order."""
        pending: collections.deque = collections.deque()
        done = []
        for values, incumbent in jobs:
            if len(pending) >= forked.processes:
                done.append(self.collect(*pending.popleft()))
            index, first = len(self.rows) + len(pending), self.first_point(incumbent)
            job = forked.submit(_fit_job, index, values, first)
            pending.append((values, job, incumbent if first is None else None))
        while pending:
            done.append(self.collect(*pending.popleft()))
        return done

    def collect(self, values: dict[str, Any], job, late: int | None = None) -> int:
        """Take a job's choice into the table; ``late``: the incumbent it trained beside, the
        stop rule applied now (the same row as one after another)."""
        row, kept, measured = job.get()
        if late is not None and len(measured) > 1:
            n = len(kept) // len(measured)
            if clearly_behind(self.cfg, self.first_point(late), kept[:n]):
                row, kept, measured = first_only(values, kept, measured)
        if self.whole(values):  # a sample's fits are not the trials at those points
            self.fits.add(len(self.rows), measured)
        self.rows.append(row)
        self.right.append(kept)
        log.info("recipe probe %d: %s -> val_accuracy %.2f (%.1fs)%s", len(self.rows), values,
                 row["val_accuracy"], row["train_seconds"],
                 ", stopped after its first cutoff: clearly behind" if row.get("stopped") else "")  # fmt: skip
        if self.beat is not None:
            self.beat()
        return len(self.rows) - 1


_STORED_KEYS = {"choice", "probes", "embedding_dim", "seconds", "train_texts"}


def check_stored(cfg: DictConfig, stored: Any, where: str) -> dict:
    """A recipe read back from the study storage (``where`` names it), checked as data before
    any of it reaches the config: the keys ``probe`` returns, a choice for exactly the keys this
    config probes, each value one of that key's ``train.recipe`` choices, and plain figures.
    The storage may be a shared database: a value that is not one of the config's own choices
    (a mapping naming a ``_target_``, an interpolation) stops the run with a ``SearchError``."""

    def refuse(what: str) -> SearchError:
        return SearchError(
            f"the training recipe stored in {where} is not one this config can take ({what}): "
            "the storage was changed by hand, or the study was made with other train.recipe "
            "choices. Choose a new search.study_name, or set the auto keys (train.lr, "
            "model.hidden_dim, data.tokenizer.word_ngrams) to values to skip the probe"
        )

    if not isinstance(stored, dict) or not set(stored) <= _STORED_KEYS or "choice" not in stored:
        raise refuse(f"keys {sorted(stored) if isinstance(stored, dict) else type(stored)}")
    choice, names = stored["choice"], to_probe(cfg)
    if not isinstance(choice, dict) or set(choice) != {KEYS[n] for n in names}:
        raise refuse(f"it sets {sorted(choice) if isinstance(choice, dict) else choice!r}, the "
                     f"probe sets {sorted(KEYS[n] for n in names)}")  # fmt: skip
    for name in names:
        value = choice[KEYS[name]]
        if not any(type(value) is type(c) and value == c for c in choices(cfg, name)):
            shown = repr(value) if len(repr(value)) <= 80 else f"a {type(value).__name__}"
            raise refuse(f"{KEYS[name]}={shown} is not in train.recipe.{name}")
    probes = stored.get("probes", [])
    plain = (type(None), bool, int, float, str)
    rows_ok = isinstance(probes, list) and all(
        isinstance(row, dict) and {"val_accuracy", "vocab_sizes"} <= set(row)
        and isinstance(row["vocab_sizes"], list)
        and all(isinstance(v, plain) or (isinstance(v, list) and all(
            isinstance(x, plain) for x in v)) for v in row.values()) for row in probes)  # fmt: skip
    if (
        not rows_ok
        or not isinstance(stored.get("embedding_dim"), (int, type(None)))
        or not (isinstance(stored.get("seconds", 0.0), (int, float)))
        or not isinstance(stored.get("train_texts", 0), int)
    ):
        raise refuse("its probe figures are not plain numbers")
    return stored


def describe(stored: dict) -> str:
    """One line for the log: what the recipe picked and what the probe cost."""
    if not stored.get("choice"):
        return "recipe: every key fixed"
    picked = ", ".join(f"{key}={value}" for key, value in stored["choice"].items())
    fits = sum(len(row["vocab_sizes"]) for row in stored["probes"])
    sample = f" on {stored['train_texts']} training texts" if "train_texts" in stored else ""
    return (f"recipe: {picked} (probe: {len(stored['probes'])} choices, {fits} fits at "
            f"embedding_dim={stored['embedding_dim']}{sample}, {stored['seconds']:.1f}s)")  # fmt: skip
