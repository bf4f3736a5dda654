"""The study's trials side by side (``processes=2``): each in a forked child, asked as a slot
frees and told as it ends; each trains exactly as alone; a child's failure or death fails its
own trial only; trials start together only where the memory room holds them together."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal

import optuna
import pandas as pd
import pytest
from conftest import compose_config

from sweep import runner
from sweep.data.prepared import PreparedData
from sweep.search import loop
from sweep.search.space import SearchSpace
from sweep.trial import lone, recipe
from sweep.trial.runner import TrialRunner


def _overrides(tiny_overrides, *more):
    return [*tiny_overrides, "processes=2", "search.n_trials=4", "report.quantize=none", *more]


def test_trials_side_by_side_train_each_as_alone(tiny_overrides, tmp_path, caplog):
    """Four trials two at a time: each child's figures are those of the same configuration
    trained alone in this process; two trials ran at once (the second asked before the first
    was told); the time line counts four fits and still adds up to the run's wall time."""
    caplog.set_level(logging.INFO)
    cfg = compose_config(_overrides(tiny_overrides))
    result = runner.run(cfg, tmp_path / "out")
    assert "trials: 2 side by side (processes)" in caplog.text
    table = result.table.sort_values("trial")
    assert (table["state"] == "COMPLETE").all() and len(table) == 4

    fixed = recipe.fixed(cfg)
    alone = TrialRunner(fixed, PreparedData.load(fixed.data, fixed.seed, "cpu"))
    for row in table.to_dict("records"):
        params = {"embedding_dim": int(row["embedding_dim"]), "vocab_size": int(row["vocab_size"])}
        measured = alone.train(params)
        for key in ("val_accuracy", "test_accuracy", "val_loss", "epochs"):
            assert measured[key] == pytest.approx(row[key]), (params, key)

    spans = sorted((t.datetime_start, t.datetime_complete)
                   for t in optuna.load_study(study_name=cfg.search.study_name,
                                              storage=_storage(cfg)).trials)  # fmt: skip
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False)), spans

    # The time line: four fits; the wait for the children is the training, counted once (the
    # children's own seconds, summed, would exceed the trials' wall and leave the search and
    # storage below zero)
    timing = json.loads((tmp_path / "out" / "timing.json").read_text())
    assert timing["trials"] == 4 and timing["training_s"] > 0
    assert min(timing[k] for k in ("search_and_storage_s", "other_s")) >= 0


def _storage(cfg):
    from sweep.search.storage import make_storage

    return make_storage(cfg.search)


def test_a_child_that_fails_or_dies_fails_its_own_trial_only(tiny_overrides, tmp_path,
                                                              monkeypatch):  # fmt: skip
    """The second training started raises, the third is killed (SIGKILL, as the out-of-memory
    killer would): those two trials FAIL with their reasons, the others complete, and the
    study still reaches its four finished trials."""
    calls = tmp_path / "calls"
    calls.mkdir()
    real = lone.Lone.train

    def failing(self, params, on_epoch=None, seed=None, wrap_model=None):
        count = 1  # this call's number: the first name free (a file is what the forks share)
        while True:
            try:
                os.close(os.open(calls / str(count), os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                count += 1
        if count == 2:
            raise RuntimeError("boom in the second training")
        if count == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, params, on_epoch, seed, wrap_model)

    monkeypatch.setattr(lone.Lone, "train", failing)
    cfg = compose_config(_overrides(tiny_overrides, "search.max_failures=5"))
    table = runner.run(cfg, tmp_path / "out").table
    assert (table["state"] == "COMPLETE").sum() == 4
    failed = table.loc[table["state"] == "FAIL", "fail_reason"].tolist()
    assert len(failed) == 2, table[["trial", "state", "fail_reason"]]
    assert any("RuntimeError: boom in the second training" in r for r in failed)
    assert any("ended without a result: killed by signal 9" in r for r in failed)


class _Slots:
    """A fake of ``TrialsSideBySide``: jobs end in the order they started, one per wait;
    records how many trained at once."""

    def __init__(self, slots: int):
        self.slots, self.running, self.most = slots, [], 0

    def start(self, params):
        job = _Job(params)
        self.running.append(job)
        self.most = max(self.most, len(self.running))
        return job

    def wait(self, timeout: float) -> None:
        self.running.pop(0).done = True


class _Job:
    def __init__(self, params):
        self.params, self.done = params, False

    def poll(self) -> bool:
        return self.done

    def get(self):
        return {"val_accuracy": float(self.params["embedding_dim"])}


@pytest.mark.parametrize(("limit", "most"), [(100.0, 1), (200.0, 2), (None, 2)])
def test_trials_start_together_only_where_the_memory_room_holds_them(limit, most):
    """Each trial's own peak is 60 MiB on a 10 MiB baseline: a 100 MiB room trains one at a
    time, 200 MiB two, no room (a number or null for search.max_memory_mb) as many as slots."""
    search_cfg = compose_config(["search/sampler=random", "search.n_trials=6"]).search
    space = SearchSpace(search_cfg.space).with_vocabulary(1000)
    study = optuna.create_study(directions=list(search_cfg.directions),
                                sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    room = None if limit is None else loop.MemoryRoom(limit, limit, "injected")

    def describe(params):
        return {"params_total": params["embedding_dim"] * 10, "memory_mb": 70.0,
                "est_baseline_mb": 10.0}  # fmt: skip

    slots, told, mine = _Slots(2), [], []

    def finish(trial, result):
        loop.tell(study, trial, optuna.trial.TrialState.COMPLETE, result)
        told.append(trial.number)

    asked = loop.run_side_by_side(study, search_cfg, 6, None, space, None, describe,
                                  lambda: contextlib.nullcontext(slots), finish, room, mine)  # fmt: skip
    assert asked == 6 and sorted(told) == list(range(6)) and slots.most == most
    assert mine == []  # none of this process's trials is left running
    frame = loop.trials_frame(study)
    assert (frame["state"] == "COMPLETE").all()
    assert pd.Series(frame["val_accuracy"]).equals(pd.Series(frame["embedding_dim"], dtype=float))


@pytest.mark.parametrize("side_by_side", [False, True])
def test_the_skip_that_ends_a_sweep_is_told_first(side_by_side):
    """``search.max_consecutive_skips`` reached: the sweep stops with its error, and the trial
    whose skip stopped it is told (PRUNED), not left RUNNING for a later start to fail."""
    from sweep.search.settings import SearchError

    search_cfg = compose_config(["search/sampler=random", "search.n_trials=6",
                                 "search.max_consecutive_skips=2"]).search  # fmt: skip
    space = SearchSpace(search_cfg.space).with_vocabulary(1000)
    study = optuna.create_study(directions=list(search_cfg.directions),
                                sampler=optuna.samplers.RandomSampler(seed=0))  # fmt: skip
    room = loop.MemoryRoom(100.0, 100.0, "injected")

    def describe(params):  # every configuration over the room: each is skipped
        return {"params_total": 10, "memory_mb": 500.0, "est_baseline_mb": 10.0}

    slots = _Slots(2)
    with pytest.raises(SearchError, match="2 suggestions in a row were skipped"):
        loop.run_trials(study, search_cfg, n_trials=6, space=space, describe=describe,
                        train=None, after_trial=lambda trial, n: None, memory_room=room,
                        side_by_side=(lambda: contextlib.nullcontext(slots)) if side_by_side
                        else None)  # fmt: skip
    states = [t.state for t in study.trials]
    assert len(states) == 2 and set(states) == {optuna.trial.TrialState.PRUNED}
