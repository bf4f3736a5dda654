"""The cost-aware ``ehvi`` sampler (``search/sampler=ehvi``): its Gaussian process, its start,
its choices on a known accuracy surface (against TPE on the same trial budget), what it does
with cost, packs and resumes, its settings' checks, then a real sweep."""

from __future__ import annotations

import datetime
import math
import threading
import time
from unittest import mock

import numpy as np
import optuna
import pytest
from conftest import compose_config

from sweep import runner
from sweep.benchmarks.search_efficiency import DIMS as DIM_GRID
from sweep.benchmarks.search_efficiency import VOCABS as VOCAB_GRID
from sweep.benchmarks.search_efficiency import hypervolume
from sweep.common.stop import TimeBudget
from sweep.search.ehvi import FrontGainSampler, Observations, from_unit
from sweep.search.gaussian_process import GaussianProcess, normal_cdf
from sweep.search.space import MAIN_AXES, SearchError

DIMS = optuna.distributions.IntDistribution(4, 256, log=True)
VOCABS = optuna.distributions.IntDistribution(100, 20_000, log=True)


def accuracy(vocab_size: int, embedding_dim: int) -> float:
    """A known surface: more words and wider rows help, each with diminishing returns."""
    return 90.0 - 30.0 * math.exp(-vocab_size / 1500) - 25.0 * math.exp(-embedding_dim / 16)


def params_total(vocab_size: int, embedding_dim: int) -> int:
    return (vocab_size + 2) * embedding_dim + 5 * embedding_dim + 5  # table and a 5-class head


def equal_cost(sampler, seen, rows, width):
    return np.ones_like(rows)


def sweep(sampler, n_trials: int, max_params: float = math.inf) -> optuna.Study:
    """``n_trials`` trials of the surface, told as the trial loop tells them: the figures as
    user attributes too, a trial over ``max_params`` skipped (PRUNED with its reason). Every
    trial costs the sampler the same: in memory a trial lasts microseconds, whose noise would
    steer the cost model and make the suggestions vary from run to run (the cost has its own
    test, on set durations)."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    with mock.patch.object(FrontGainSampler, "seconds", equal_cost):
        for _ in range(n_trials):
            tell_one(study, max_params)
    return study


def tell_one(study: optuna.Study, max_params: float) -> None:
    trial = study.ask()
    k = trial.suggest_int("vocab_size", 100, 20_000, log=True)
    d = trial.suggest_int("embedding_dim", 4, 256, log=True)
    trial.set_user_attr("params_total", params_total(k, d))
    if params_total(k, d) > max_params:
        trial.set_user_attr("skipped_reason", "skipped: over budget")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return
    trial.set_user_attr("val_accuracy", accuracy(k, d))
    study.tell(trial, [accuracy(k, d), params_total(k, d)])


def lasting(study: optuna.Study, seconds) -> optuna.Study:
    """The same trials, each lasting ``seconds(vocab_size, embedding_dim)``: what the sampler
    reads a trial's cost from."""
    start = datetime.datetime(2026, 1, 1)
    copy = optuna.create_study(directions=["maximize", "minimize"])
    for t in study.trials:
        end = start + datetime.timedelta(
            seconds=seconds(t.params["vocab_size"], t.params["embedding_dim"])
        )
        copy.add_trial(optuna.trial.FrozenTrial(
            number=t.number, state=t.state, value=None, values=t.values, datetime_start=start,
            datetime_complete=end, params=t.params, distributions=t.distributions,
            user_attrs=t.user_attrs, system_attrs={}, intermediate_values={}, trial_id=t._trial_id))  # fmt: skip
    return copy


def ehvi(seed: int = 0, **kwargs) -> FrontGainSampler:
    return FrontGainSampler(objectives=["val_accuracy", "params_total"],
                            directions=["maximize", "minimize"], seed=seed, **kwargs)  # fmt: skip


def share_of_grid(study: optuna.Study) -> float:
    """The front's hypervolume (accuracy against log10 params) as a share of the benchmark's
    grid's (``sweep.benchmarks.search_efficiency``: 7 widths x 8 cutoffs)."""
    grid = [(k or 20_000, d) for k in VOCAB_GRID for d in DIM_GRID]
    acc = [accuracy(k, d) for k, d in grid]
    size = np.log10([params_total(k, d) for k, d in grid])
    ref_size, ref_acc = size.max(), min(acc) - 1.0
    whole = hypervolume(acc, size, ref_size, ref_acc)
    done = [t.values for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return hypervolume([a for a, _ in done], np.log10([p for _, p in done]), ref_size, ref_acc) / whole  # fmt: skip


def test_the_first_trials_start_at_the_given_points_by_trial_number():
    """``start_at`` (the recipe probe's configurations): trial k takes point k, whoever asks it,
    then the hypercube goes on."""
    sampler = ehvi(n_startup_trials=4)
    points = [
        {"embedding_dim": 32, "vocab_size": 1_000},
        {"embedding_dim": 32, "vocab_size": 20_000},
    ]
    sampler.start_at(points)
    study = sweep(sampler, 4)
    assert [t.params for t in study.trials[:2]] == points
    plain = sweep(ehvi(n_startup_trials=4), 4)
    assert [t.params for t in study.trials[2:]] == [t.params for t in plain.trials[2:]]


def test_the_process_interpolates_and_is_unsure_where_it_has_not_looked():
    rng = np.random.default_rng(0)
    x = rng.random((20, 2))
    y = 80 + 10 * x[:, 0] - 5 * x[:, 1] ** 2
    process = GaussianProcess.fit(x, y)
    mean, sd = process.predict(x)
    assert np.abs(mean - y).max() < 0.5 and sd.max() < 1.0
    inside, outside = np.array([[0.5, 0.5]]), np.array([[3.0, 3.0]])
    assert abs(process.predict(inside)[0][0] - (85 - 1.25)) < 1.0
    assert process.predict(outside)[1][0] > 3 * process.predict(inside)[1][0]
    z = np.linspace(-6, 6, 241)
    exact = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in z])
    assert np.abs(normal_cdf(z) - exact).max() < 1e-6


def test_the_first_trials_are_a_latin_hypercube_on_the_log_scale():
    def strata(study: optuna.Study, axis: str, low: float, high: float, cuts: int) -> list[int]:
        """The stratum of each trial's value: its log-scale axis [low, high] cut in ``cuts``."""
        return sorted(int(math.log(t.params[axis] / low) / math.log(high / low) * cuts)
                      for t in study.trials)  # fmt: skip

    study = sweep(ehvi(n_startup_trials=4), 4)
    # Each axis cut in 4 strata, each used once; the widths' strata cut the lower half of
    # their axis (startup_width 0.5: the wide, slow tables are left to the model).
    assert strata(study, "vocab_size", 100, 20000, 4) == [0, 1, 2, 3]
    assert strata(study, "embedding_dim", 4, 256, 8) == [0, 1, 2, 3]
    wide = sweep(ehvi(n_startup_trials=4, startup_width=1.0), 4)
    assert strata(wide, "embedding_dim", 4, 256, 4) == [0, 1, 2, 3]
    again = sweep(ehvi(n_startup_trials=4), 4)
    assert [t.params for t in again.trials] == [t.params for t in study.trials]  # seeded


def test_it_finds_the_front_of_a_known_surface_in_fewer_trials_than_tpe():
    """On the same 20 trials, the surrogate's front covers 99% of the grid's hypervolume on
    every seed; TPE's does not (its 5 random startup trials and density ratios need more)."""
    ours = [share_of_grid(sweep(ehvi(seed), 20)) for seed in range(3)]
    tpe = [share_of_grid(sweep(optuna.samplers.TPESampler(seed=seed), 20)) for seed in range(3)]
    assert min(ours) >= 0.99, ours
    assert max(tpe) < 0.99, tpe


def test_a_trial_that_costs_more_must_promise_more():
    """The same surface, but large tables are slow: the sampler's next point is a smaller
    table than when every trial costs the same."""
    flat = lasting(sweep(ehvi(), 8), lambda k, d: 1.0)
    slow = lasting(flat, lambda k, d: 0.2 + (k + 2) * d / 20_000)
    seen = Observations(slow, -1, ["val_accuracy", "params_total"], 1.0)
    rows, width = np.array([102.0, 20_002.0]), np.array([4.0, 256.0])
    assert np.allclose(ehvi().seconds(seen, rows, width), 0.2 + rows * width / 20_000, rtol=1e-6)
    space = {"vocab_size": VOCABS, "embedding_dim": DIMS}
    cheap = ehvi().best_candidate(
        Observations(slow, -1, ["val_accuracy", "params_total"], 1.0), space
    )
    free = ehvi().best_candidate(
        Observations(flat, -1, ["val_accuracy", "params_total"], 1.0), space
    )
    assert params_total(**cheap) < params_total(**free)


def test_a_trial_predicted_to_outlast_the_time_budget_is_not_chosen():
    """search.timeout_s: with less time left than the unbounded choice would take, the choice
    is one predicted to fit; with time for none, the quickest."""

    def seconds(k, d):
        return 0.2 + (k + 2) * d / 2_000

    slow = lasting(sweep(ehvi(), 8), seconds)
    space = {"vocab_size": VOCABS, "embedding_dim": DIMS}

    def choice(left: float | None) -> float:
        """The predicted seconds (here: the true ones) of the choice with ``left`` seconds."""
        sampler = ehvi(budget=None if left is None else TimeBudget(timeout_s=left))
        seen = Observations(slow, -1, ["val_accuracy", "params_total"], 1.0)
        pick = sampler.best_candidate(seen, space)
        return seconds(pick["vocab_size"], pick["embedding_dim"])

    seen = Observations(slow, -1, ["val_accuracy", "params_total"], 1.0)
    quickest = min(seconds(k, d) for k, d in ehvi().grid(space, seen.tried)[0])
    unbounded = choice(None)
    assert unbounded > quickest
    left = (unbounded + quickest) / 2
    assert choice(left) <= left
    assert choice(quickest / 2) == pytest.approx(quickest)


def test_believing_a_running_point_keeps_the_mean_and_shrinks_the_doubt_around_it():
    """The kriging believer: conditioned on a point at its own predicted mean, the process
    predicts the same means (there and at the measured points) and is nearly sure there and
    less unsure nearby; far away nothing changes."""
    rng = np.random.default_rng(0)
    x = rng.random((12, 2)) * 0.5  # measured in the lower-left quarter only
    process = GaussianProcess.fit(x, 80 + 10 * x[:, 0] - 5 * x[:, 1])
    running, near, far = np.array([[0.9, 0.9]]), np.array([[0.85, 0.9]]), np.array([[0.1, 0.1]])
    believed = process.believing(running)
    for where in (running, near, far, x):
        assert np.allclose(believed.predict(where)[0], process.predict(where)[0], atol=1e-6)
    assert believed.predict(running)[1][0] < 0.1 * process.predict(running)[1][0]
    assert believed.predict(near)[1][0] < 0.6 * process.predict(near)[1][0]
    assert believed.predict(far)[1][0] == pytest.approx(process.predict(far)[1][0], rel=0.05)
    assert process.believing(np.zeros((0, 2))) is process


def test_trials_asked_while_others_run_keep_apart():
    """Trials asked one at a time while the earlier ones still run (side by side, workers): each
    new point lies away from the running ones, not beside them (the believer lowers the gain
    around a running point, not only the front)."""
    study = sweep(ehvi(), 8)
    with mock.patch.object(FrontGainSampler, "seconds", equal_cost):
        asked, points = [], []
        for _ in range(3):
            trial = study.ask()
            asked.append(trial)
            points.append((trial.suggest_int("vocab_size", 100, 20_000, log=True),
                           trial.suggest_int("embedding_dim", 4, 256, log=True)))  # fmt: skip
    units = np.array([[from_unit_inverse(k, VOCABS), from_unit_inverse(d, DIMS)]
                      for k, d in points])  # fmt: skip
    apart = min(np.linalg.norm(units[i] - units[j]) for i in range(3) for j in range(i))
    assert apart > 0.1, points


def from_unit_inverse(value: int, distribution) -> float:
    """A value's position on its axis's log scale, 0 to 1."""
    low, high = math.log(distribution.low), math.log(distribution.high)
    return (math.log(value) - low) / (high - low)


def test_a_pack_and_a_resumed_study_never_ask_a_tried_point():
    study = sweep(ehvi(), 8)
    study.sampler = ehvi(seed=7)  # resumed: reseeded
    with mock.patch.object(FrontGainSampler, "seconds", equal_cost):
        asked = [study.ask() for _ in range(4)]  # a pack: asked before any is told
        points = [(t.suggest_int("vocab_size", 100, 20_000, log=True),
                   t.suggest_int("embedding_dim", 4, 256, log=True)) for t in asked]  # fmt: skip
    tried = {(t.params["vocab_size"], t.params["embedding_dim"]) for t in study.trials[:8]}
    assert len(set(points)) == 4 and not set(points) & tried


def test_two_workers_asking_at_once_never_get_one_configuration():
    """Worker A asks a trial and places it a moment later; worker B asks the next one in that
    moment. B waits until A's trial has its configuration, so it counts as running and tried:
    on the same observations B would otherwise choose exactly A's point."""
    study = sweep(ehvi(), 6)
    with mock.patch.object(FrontGainSampler, "seconds", equal_cost):
        first, second = study.ask(), study.ask()  # two workers' trials, neither placed yet

        def place(trial):
            return (trial.suggest_int("vocab_size", 100, 20_000, log=True),
                    trial.suggest_int("embedding_dim", 4, 256, log=True))  # fmt: skip

        placed, at = {}, {}

        def worker_a():
            placed["a"] = place(first)
            at["a"] = time.monotonic()

        timer = threading.Timer(0.3, worker_a)
        timer.start()
        placed["b"] = place(second)  # waits for A's
        at["b"] = time.monotonic()
        timer.join()
    assert at["b"] >= at["a"] and placed["a"] != placed["b"]
    # What B would have chosen had it not waited: A's point.
    alone = sweep(ehvi(), 6)
    with mock.patch.object(FrontGainSampler, "seconds", equal_cost):
        assert place(alone.ask()) == placed["a"]


def test_a_startup_point_another_worker_holds_is_drawn_again():
    """Workers seed their samplers apart, so their hypercubes differ: a startup point another
    worker's running trial already holds is replaced by a seeded draw that none holds."""
    sampler = ehvi(n_startup_trials=4)
    space = {"vocab_size": VOCABS, "embedding_dim": DIMS}
    study = sweep(sampler, 1)
    # Trial 2's hypercube point, as the trial stores it.
    taken = {axis: from_unit(sampler.startup[2][MAIN_AXES.index(axis)], space[axis])
             for axis in ("vocab_size", "embedding_dim")}  # fmt: skip
    study.enqueue_trial(taken)  # trial 1: another worker's, running at this trial's point 2

    def place(trial):
        return (trial.suggest_int("vocab_size", 100, 20_000, log=True),
                trial.suggest_int("embedding_dim", 4, 256, log=True))  # fmt: skip

    with mock.patch.object(FrontGainSampler, "seconds", equal_cost):
        assert place(study.ask()) == tuple(taken.values())
        trial = study.ask()
        point = place(trial)
    assert trial.number == 2 and point != tuple(taken.values())
    assert point not in {
        (t.params["vocab_size"], t.params["embedding_dim"]) for t in study.trials[:2]
    }


def test_a_budget_and_a_skipped_size_are_never_suggested_again():
    """With ``search.max_params`` the size fitted to the trials so far keeps every suggestion
    within it once the model chooses (the Latin hypercube's may be over: the loop skips them);
    a skipped trial also rules out every point at least as large on both axes."""
    limit = 60_000
    study = sweep(ehvi(limits=[("params_total", limit)]), 20, max_params=limit)
    chosen = [t for t in study.trials[4:]]
    assert all(t.user_attrs["params_total"] <= limit for t in chosen), [t.params for t in chosen]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 16
    # A skip alone (an out-of-memory size: no budget to fit) rules out its upper-right quadrant.
    skipped = sweep(ehvi(), 6, max_params=params_total(2_000, 32))
    walls = [(t.params["vocab_size"], t.params["embedding_dim"]) for t in skipped.trials
             if t.state == optuna.trial.TrialState.PRUNED]  # fmt: skip
    assert walls, "the surface's Latin hypercube should hit the wall at least once"
    seen = Observations(skipped, -1, ["val_accuracy", "params_total"], 1.0)
    space = {"vocab_size": VOCABS, "embedding_dim": DIMS}
    values, units = ehvi().grid(space, seen.tried)
    kept, _ = ehvi().feasible(seen, values, units)
    assert kept and not [v for v in kept for k, d in walls if v[0] >= k and v[1] >= d]


def test_its_settings_are_checked_with_their_key(tiny_overrides, tmp_path):
    base = [*tiny_overrides, "search/sampler=ehvi"]
    bad = [
        (["search.sampler.n_startup_trials=1"], r"search\.sampler\.n_startup_trials=1"),
        (["search.sampler.candidates=many"], r"search\.sampler\.candidates='many'"),
        (["search.sampler.startup_width=0"], r"search\.sampler\.startup_width=0 must be a number in \(0, 1\]"),
        (["search.sampler.startup_width=1.5"], r"search\.sampler\.startup_width=1\.5 must"),
        (["search.space.embedding_dim.type=categorical", "+search.space.embedding_dim.choices=[8,16]"],
         r"search\.space\.embedding_dim is categorical"),
        (["search.objectives=[val_accuracy,params_total,memory_mb]",
          "search.directions=[maximize,minimize,minimize]"], r"search/sampler=ehvi needs"),
    ]  # fmt: skip
    for overrides, match in bad:
        with pytest.raises(SearchError, match=match):
            runner.run(compose_config([*base, *overrides]), tmp_path / "out")
    assert not list((tmp_path / "studies").glob("*/journal.log"))  # refused before a study


def test_a_sweep_with_the_sampler_and_the_size_rule(tiny_overrides, tmp_path):
    """A real sweep: every trial a different configuration, the model's choices after the
    Latin hypercube, a front and a recommendation; a second run resumes."""
    overrides = [*tiny_overrides, "search/sampler=ehvi", "search/pruner=size",
                 "search.n_trials=7", "search.space.vocab_size.low=20"]  # fmt: skip
    table = runner.run(compose_config(overrides), tmp_path / "out").table
    assert len(table) == 7 and table["state"].isin(["COMPLETE", "PRUNED"]).all()
    assert not table.duplicated(["vocab_size", "embedding_dim"]).any()
    assert table["recommended"].sum() == 1 and table["pareto"].any()
    more = runner.run(compose_config([*overrides[:-2], "search.n_trials=9",
                                      overrides[-1]]), tmp_path / "out").table  # fmt: skip
    assert len(more) == 9 and not more.duplicated(["vocab_size", "embedding_dim"]).any()
