"""The ``ehvi`` sampler: the next trial is the point with the largest expected gain of the front
per second of training.

What a general tuner does not know, this one uses: a configuration's size (the study's second
objective, ``params_total`` by default) is a known function of ``vocab_size`` and
``embedding_dim`` (exactly linear in rows x width, width, width^2, rows and 1 for every model
here: it is fitted to the stored trials by least squares), and its cost in seconds is nearly so
(rows x width, width and a per-trial overhead, fitted to the finished trials' durations). Only
the accuracy is unknown before training: a Gaussian process over (log K, log D) in the unit box
(``sweep.search.gaussian_process``) predicts it with its uncertainty.

The gain of a point is its expected hypervolume improvement: the area (accuracy above the
staircase of the front so far, times log10 size from the point's size to the reference) that a
result drawn from the prediction would add, in closed form, since the size is known. The score
is that gain per predicted second; the next trial is the best of a grid of candidates
(``candidates`` per axis on the log scale, rounded to integers, the configurations tried so far
left out). Trials still running (a pack, trials side by side, other workers) count as if they
had reached their predicted accuracy (the "kriging believer"): the process is conditioned on
them, so the uncertainty, and with it the gain, falls around each, and on the front they
raise; so the trials asked while others run differ.

Candidates a budget rules out (``search.max_params``, ``max_memory_mb``, ``max_model_bytes``:
each budget's column fitted like the size) are left out, and so is every point at least as
large on both axes as a skipped trial (over a budget, past an out-of-memory size).

The first ``n_startup_trials`` trials are a Latin hypercube on the log scale (seeded); a study
whose recipe was probed starts at the probe's configurations (``start_at``). Trials stopped by
the size rule (``search/pruner=size``) count at the accuracy they reached, which is what the
rule judged them by. Other searched keys (``train.lr``, ...) are drawn by TPE independently; the
surrogate models the two main axes only.

Several workers on one study (``search.workers``): a trial is placed only once every trial asked
before it has its configuration stored (a short wait, for a worker that asked a moment earlier),
so the running trials of all workers are left out as tried and counted as believed; a startup
point that another worker's trial already holds is replaced by a seeded draw. No two workers
train one configuration at the same time. With a time budget (``search.timeout_s``) a candidate
predicted to take longer than the time left (and the grace) is not chosen; when none fits, the
quickest is.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from sweep.common.stop import TimeBudget
from sweep.search.gaussian_process import GaussianProcess, expected_improvement
from sweep.search.records import is_original, is_skipped, seconds_spent
from sweep.search.space import MAIN_AXES

State = optuna.trial.TrialState
WIDTH, ROWS = MAIN_AXES  # embedding_dim, vocab_size
SPECIALS = 2  # <pad> and <unk>: a table has vocab_size + 2 rows
CEILING = 0.05  # the reference size past the largest candidate, as a share of the sizes' log range
# How long a trial waits for the configurations of trials other workers asked just before it.
PLACING_WAIT_S = 5.0


def unit(value: float, dist) -> float:
    """The position of ``value`` on its axis, 0 to 1 (on the log scale where the axis is log)."""
    low, high = float(dist.low), float(dist.high)
    if high <= low:
        return 0.0
    if dist.log:
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def from_unit(u: float, dist):
    """The value of the axis at position ``u`` (rounded to the axis's step for integers)."""
    low, high = float(dist.low), float(dist.high)
    value = math.exp(math.log(low) + u * (math.log(high) - math.log(low))) if dist.log else (
        low + u * (high - low)
    )  # fmt: skip
    if isinstance(dist, IntDistribution):
        return int(min(max(round(value), dist.low), dist.high))
    return float(min(max(value, low), high))


def positions(points, space) -> np.ndarray:
    """The unit positions of (vocab_size, embedding_dim) points on their axes."""
    return np.asarray([[unit(r, space[ROWS]), unit(w, space[WIDTH])] for r, w in points])


def size_features(rows: np.ndarray, width: np.ndarray) -> np.ndarray:
    """What a model's size is linear in: the table (rows x width), the width (first layer), its
    square (a Transformer's width x width layers), the rows (a per-row bias) and a constant."""
    return np.stack([rows * width, width, width * width, rows, np.ones_like(rows)], axis=1)


def cost_features(rows: np.ndarray, width: np.ndarray) -> np.ndarray:
    """What a trial's seconds are nearly linear in: the table's update (rows x width), the
    width (each token's work) and a per-trial overhead."""
    return np.stack([rows * width, width, np.ones_like(rows)], axis=1)


class Observations:
    """What the stored trials say: inputs, accuracies, sizes, durations and what is running."""

    def __init__(self, study: optuna.Study, number: int, objectives: Sequence[str], sign: float,
                 columns: Sequence[str] = ()):  # fmt: skip
        self.x, self.quality, self.size_of, self.seconds_of = [], [], [], []
        self.pending, self.tried, self.skipped = [], set(), []
        self.figures: dict[str, list] = {column: [] for column in columns}
        quality_key = objectives[0]
        size_key = objectives[1] if len(objectives) > 1 else None
        for trial in study.get_trials(deepcopy=False):
            params = trial.params
            if trial.number == number or WIDTH not in params or ROWS not in params:
                continue
            point = (float(params[ROWS]) + SPECIALS, float(params[WIDTH]))
            self.tried.add((params[ROWS], params[WIDTH]))
            attrs = trial.user_attrs
            if size_key and size_key in attrs and not is_skipped(trial):
                self.size_of.append((*point, float(attrs[size_key])))
            for column, samples in self.figures.items():
                if column in attrs and math.isfinite(float(attrs[column])):
                    samples.append((*point, float(attrs[column])))
            if is_skipped(trial):  # over a budget or past an out-of-memory size
                self.skipped.append((params[ROWS], params[WIDTH]))
            if not is_original(trial):
                continue  # a reused trial repeats its original; a skipped one never trained
            finished = trial.state == State.COMPLETE or (
                trial.state == State.PRUNED and "pruned_epoch" in attrs
            )
            if finished and quality_key in attrs and math.isfinite(float(attrs[quality_key])):
                self.x.append((params[ROWS], params[WIDTH]))
                self.quality.append(sign * float(attrs[quality_key]))
            seconds = seconds_spent(trial)
            if trial.state == State.COMPLETE and seconds is not None:
                self.seconds_of.append((*point, seconds))
            if trial.state == State.RUNNING:
                self.pending.append((params[ROWS], params[WIDTH]))


def wait_for_placing(study: optuna.Study, number: int, wait_s: float = PLACING_WAIT_S) -> bool:
    """Wait (at most ``wait_s``) until every trial asked in the last minute before trial
    ``number`` that still runs has its configuration stored: another worker's trial is asked
    first and placed a moment later, and a trial placed without knowing it could be given the
    same configuration. True if it waited."""
    waited, until = False, time.monotonic() + wait_s
    while time.monotonic() < until:
        recent = datetime.datetime.now() - datetime.timedelta(seconds=60)
        unplaced = [
            t for t in study.get_trials(deepcopy=False, states=(State.RUNNING,))
            if t.number < number and not (WIDTH in t.params and ROWS in t.params)
            and t.datetime_start is not None and t.datetime_start > recent
        ]  # fmt: skip
        if not unplaced:
            return waited
        waited = True
        time.sleep(0.05)
    return waited


def least_squares(samples: list[tuple[float, float, float]], features) -> np.ndarray | None:
    """Coefficients of the target (third item) on ``features(rows, width)``, or None with fewer
    distinct samples than features."""
    if not samples:
        return None
    data = np.asarray(samples, float)
    design = features(data[:, 0], data[:, 1])
    if len({(r, w) for r, w, _ in samples}) < design.shape[1]:
        return None
    coef, *_ = np.linalg.lstsq(design, data[:, 2], rcond=None)
    return coef


class FrontGainSampler(optuna.samplers.BaseSampler):
    """Cost-aware expected hypervolume improvement over ``embedding_dim`` and ``vocab_size``."""

    def __init__(self, *, objectives: Sequence[str], directions: Sequence[str], seed: int | None = None,
                 n_startup_trials: int = 4, candidates: int = 33, startup_width: float = 0.5,
                 limits: Sequence[tuple[str, float]] = (), budget: TimeBudget | None = None):  # fmt: skip
        self.objectives, self.limits = list(objectives), list(limits)
        self.budget, self.first_points = budget, []
        self.sign = 1.0 if directions[0] == "maximize" else -1.0
        self.seed, self.n_startup, self.candidates = seed, int(n_startup_trials), int(candidates)
        self.independent = optuna.samplers.TPESampler(seed=seed)
        rng = np.random.default_rng(seed)
        # A Latin hypercube: each axis cut in n_startup strata, each stratum used once.
        n = max(self.n_startup, 1)
        strata = np.stack([rng.permutation(n) for _ in MAIN_AXES], axis=1)
        self.startup = (strata + rng.random((n, len(MAIN_AXES)))) / n
        # The hypercube's widths span the lower startup_width share of the width axis (log
        # scale): wide tables cost the most (on TREC a CNN trial at D=256 takes about 4x one at
        # D=16), and the model goes there once the front's gain pays for it (docs/search.md).
        self.startup[:, MAIN_AXES.index(WIDTH)] *= float(startup_width)

    def reseed_rng(self) -> None:
        self.independent.reseed_rng()

    def start_at(self, points: Sequence[dict[str, Any]]) -> None:
        """Trial k < len(points) takes ``points[k]`` (``embedding_dim``, ``vocab_size``) instead
        of the hypercube's k-th point: by trial number, so that of several workers asking at once
        none takes a point twice (Optuna's queue, ``enqueue_trial``, cannot promise that on
        SQLite)."""
        self.first_points = [dict(point) for point in points]

    def infer_relative_search_space(self, study, trial) -> dict[str, BaseDistribution]:
        for past in reversed(study.get_trials(deepcopy=False)):
            dists = past.distributions
            if all(
                isinstance(dists.get(a), (IntDistribution, FloatDistribution)) for a in MAIN_AXES
            ):
                return {a: dists[a] for a in MAIN_AXES}  # fmt: skip
        return {}

    def sample_relative(self, study, trial, search_space) -> dict[str, Any]:
        if wait_for_placing(study, trial.number):  # other workers' trials placed meanwhile
            search_space = self.infer_relative_search_space(study, trial)
        if not search_space:
            return {}
        seen = Observations(study, trial.number, self.objectives, self.sign,
                            [column for column, _ in self.limits])  # fmt: skip
        # The Latin hypercube first (sample_independent); then the model, as soon as two trials
        # finished (trials the hypercube put over a budget count toward it, never finished).
        if trial.number < self.n_startup or len(seen.quality) < 2:
            return self.unless_taken(trial.number, seen, search_space)
        return self.best_candidate(seen, search_space)

    def startup_position(self, k: int, axis: str, attempt: int = 0) -> float:
        """The startup design's position (0 to 1) of trial ``k`` on ``axis``: the hypercube's
        k-th point, past it (fewer than two trials finished: the others failed or were skipped)
        a seeded uniform draw; ``attempt`` > 0: another seeded draw."""
        if k < len(self.startup) and not attempt:
            return float(self.startup[k][MAIN_AXES.index(axis)])
        key = [self.seed or 0, k] + ([MAIN_AXES.index(axis), attempt] if attempt else [])
        return float(np.random.default_rng(key).random())

    def startup_point(self, k: int, space, attempt: int = 0) -> tuple:
        """(vocab_size, embedding_dim) of trial ``k``'s startup position, as the trial stores it
        (``start_at``'s points first)."""
        if k < len(self.first_points) and not attempt:
            point = self.first_points[k]
            return (from_unit(unit(point[ROWS], space[ROWS]), space[ROWS]),
                    from_unit(unit(point[WIDTH], space[WIDTH]), space[WIDTH]))  # fmt: skip
        return tuple(from_unit(self.startup_position(k, axis, attempt), space[axis])
                     for axis in (ROWS, WIDTH))  # fmt: skip

    def unless_taken(self, k: int, seen: Observations, space) -> dict[str, Any]:
        """{} (the startup point, by ``sample_independent``) unless a trial already holds that
        configuration (another worker's, running): then a seeded draw that none holds."""
        for attempt in range(100):
            point = self.startup_point(k, space, attempt)
            if point not in seen.tried:
                return {} if attempt == 0 else {ROWS: point[0], WIDTH: point[1]}
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name in MAIN_AXES and isinstance(param_distribution, (IntDistribution, FloatDistribution)):  # fmt: skip
            k = trial.number
            if k < len(self.first_points):
                u = unit(self.first_points[k][param_name], param_distribution)
            else:
                u = self.startup_position(k, param_name)
            return from_unit(float(u), param_distribution)
        return self.independent.sample_independent(study, trial, param_name, param_distribution)

    # -- the model --------------------------------------------------------------------------

    def grid(self, space, tried: set) -> tuple[list[tuple], np.ndarray]:
        """Candidate (vocab_size, embedding_dim) values not tried yet, and their unit positions:
        ``candidates`` steps per axis on its scale, rounded as the trial would store them."""
        steps = np.linspace(0.0, 1.0, self.candidates)
        points = {(from_unit(a, space[ROWS]), from_unit(b, space[WIDTH])) for a in steps for b in steps}  # fmt: skip
        values = sorted(points - tried)
        return values, positions(values, space)

    def best_candidate(self, seen: Observations, space) -> dict[str, Any]:
        values, units = self.grid(space, seen.tried)
        values, units = self.feasible(seen, values, units)
        if not values:  # every candidate tried or out of bounds: leave it to the independent draws
            return {}
        process = GaussianProcess.fit(positions(seen.x, space), np.asarray(seen.quality))
        # Running trials as if measured at their predicted accuracy: their neighbours' gain
        # falls with the uncertainty there, so trials asked side by side differ.
        process = process.believing(positions(seen.pending, space))
        table = np.asarray(values, float)
        rows, width = table[:, 0] + SPECIALS, table[:, 1]
        mean, sd = process.predict(units)
        gain = self.gain(seen, space, process, rows, width, mean, sd)
        seconds = self.seconds(seen, rows, width)
        best = int(np.argmax(self.within_budget(seen, gain / seconds, seconds)))
        return {ROWS: values[best][0], WIDTH: values[best][1]}

    def within_budget(self, seen: Observations, score: np.ndarray, seconds: np.ndarray):
        """``score`` with the candidates predicted to outlast the time budget left out (the
        time left and the grace: ``search.timeout_s``, ``timeout_grace_s``); when none fits,
        the quickest is the best. Unchanged without a budget or a cost model yet."""
        if self.budget is None or least_squares(seen.seconds_of, cost_features) is None:
            return score
        left = self.budget.left() + (self.budget.grace_s or 0.0)
        if not math.isfinite(left):
            return score
        fits = seconds <= left
        return np.where(fits, score, -np.inf) if fits.any() else -seconds

    def feasible(self, seen: Observations, values: list[tuple], units: np.ndarray):
        """The candidates that can train: none at least as large on both axes as a skipped
        trial (sizes grow with both, so it would be skipped too), none predicted over a budget
        (``search.max_params`` ...: each budget's column fitted like the size)."""
        if not values:
            return values, units
        table = np.asarray(values, float)
        ok = np.ones(len(values), bool)
        for rows, width in seen.skipped:
            ok &= ~((table[:, 0] >= rows) & (table[:, 1] >= width))
        for column, limit in self.limits:
            coef = least_squares(seen.figures[column], size_features)
            if coef is not None:
                ok &= size_features(table[:, 0] + SPECIALS, table[:, 1]) @ coef <= limit
        return [v for v, keep in zip(values, ok, strict=True) if keep], units[ok]

    @staticmethod
    def log_size(seen: Observations):
        """log10 of the size objective as a function of (rows, width), fitted once to the
        stored trials; with too few of them, proportional to the table (rows x width)."""
        coef = least_squares(seen.size_of, size_features)
        if coef is None:
            ratios = [s / (r * w) for r, w, s in seen.size_of if r * w > 0]
            scale = float(np.median(ratios)) if ratios else 1.0

        def of(rows: np.ndarray, width: np.ndarray) -> np.ndarray:
            size = rows * width * scale if coef is None else size_features(rows, width) @ coef
            return np.log10(np.maximum(size, 1e-9))

        return of

    def seconds(self, seen: Observations, rows: np.ndarray, width: np.ndarray) -> np.ndarray:
        """Predicted seconds of a trial at each (rows, width); never below half the fastest
        finished trial's (an extrapolation must not call a trial free)."""
        coef = least_squares(seen.seconds_of, cost_features)
        if coef is None:
            return np.ones_like(rows)
        floor = 0.5 * min(s for _, _, s in seen.seconds_of)
        return np.maximum(cost_features(rows, width) @ coef, max(floor, 1e-3))

    def gain(self, seen, space, process, rows, width, mean, sd) -> np.ndarray:
        """Expected hypervolume improvement of each candidate (one objective: expected
        improvement over the best)."""
        quality = np.asarray(seen.quality)
        pending_quality = np.zeros(0)
        if seen.pending:
            pending_quality = process.predict(positions(seen.pending, space))[0]
        if len(self.objectives) < 2:
            best = max(quality.max(), pending_quality.max(initial=-math.inf))
            return expected_improvement(mean, sd, best)
        log_size = self.log_size(seen)
        known = np.asarray([[r + SPECIALS, w] for r, w in seen.x + seen.pending], float)
        sizes = log_size(known[:, 0], known[:, 1])
        quality = np.concatenate([quality, pending_quality])
        candidate_size = log_size(rows, width)
        spread = quality.max() - quality.min() or 1.0
        floor = quality.min() - 0.1 * spread  # the reference accuracy
        top = max(candidate_size.max(), sizes.max())
        ceiling = top + CEILING * max(top - min(candidate_size.min(), sizes.min()), 1e-3)
        # The staircase: each point that raises the best quality so far, smallest size first.
        steps, level = [], -math.inf
        for s, q in sorted(zip(sizes, quality, strict=True)):
            if q > level:
                steps.append((s, q))
                level = q
        lows = np.asarray([-math.inf] + [s for s, _ in steps])
        highs = np.asarray([s for s, _ in steps] + [ceiling])
        levels = np.asarray([floor] + [q for _, q in steps])
        overlap = np.clip(
            highs[None, :] - np.maximum(lows[None, :], candidate_size[:, None]), 0.0, None
        )
        return (overlap * expected_improvement(mean[:, None], sd[:, None], levels[None, :])).sum(1)
