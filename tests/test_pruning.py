"""Size-aware pruning (``search/pruner=size``): the rule on hand-made learning curves, then in
sweeps: packs, another process's trials on the same storage, the page, kill -9 and resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import optuna
import pandas as pd
import pytest
from conftest import ROOT, TINY, assert_refused, compose_config, default_study, watch_study

from sweep import runner
from sweep.search import study as study_module
from sweep.search.pruning import CURVE, Curve, SizeRule, curves, size_rule
from sweep.search.space import SearchError
from sweep.search.storage import journal_storage

RULE = SizeRule(min_epoch=1, reduction_factor=2, margin=1.0)


def test_a_larger_trial_that_trails_a_smaller_one_at_a_rung_stops():
    small = Curve(0, size=1_000, accuracy=(60.0, 70.0, 74.0, 75.0))
    large = Curve(1, size=50_000, accuracy=(55.0, 62.0))
    reason = RULE.decide(large, [small], validation_docs=500)
    assert reason is not None and "after epoch 2" in reason and "of trial 0" in reason
    assert "62.00 trails 70.00" in reason and "1,000 <= 50,000" in reason


def test_a_smaller_trial_is_never_stopped_for_trailing_a_larger_one():
    large = Curve(0, size=50_000, accuracy=(80.0, 90.0, 95.0, 96.0))
    small = Curve(1, size=1_000, accuracy=(40.0, 45.0))
    assert RULE.decide(small, [large], validation_docs=500) is None
    same = Curve(2, size=1_000, accuracy=(40.0, 45.0))  # equal size counts as no larger
    assert RULE.decide(same, [Curve(3, 1_000, (60.0, 70.0))], 500) is not None


def test_noise_within_the_margin_keeps_a_trial():
    small = Curve(0, size=1_000, accuracy=(70.0, 75.0))
    assert RULE.decide(Curve(1, 9_000, (69.5, 74.2)), [small], 500) is None  # 0.8 < 1.0
    assert RULE.decide(Curve(1, 9_000, (69.5, 73.9)), [small], 500) is not None  # 1.1 > 1.0
    # auto: z standard errors of a difference of two accuracies on n validation documents.
    auto = SizeRule(z=2.0)
    assert auto.margin_points(75.0, 500) == pytest.approx(2 * 100 * (2 * 0.75 * 0.25 / 500) ** 0.5)
    assert auto.margin_points(100.0, 500) == pytest.approx(100 / 500)  # never below one document
    assert auto.decide(Curve(1, 9_000, (69.5, 71.0)), [small], 500) is None  # 4.0 < 5.5
    assert auto.decide(Curve(1, 9_000, (69.5, 69.0)), [small], 500) is not None


def test_the_rule_looks_at_rungs_only_and_at_the_best_so_far():
    rule = SizeRule(min_epoch=2, reduction_factor=3, margin=0.0)
    assert [e for e in range(1, 20) if rule.is_rung(e)] == [2, 6, 18]
    small = Curve(0, 1_000, (50.0, 80.0, 60.0, 60.0, 60.0, 60.0))
    assert rule.decide(Curve(1, 9_000, (10.0,)), [small], 500) is None  # epoch 1: no rung
    assert rule.decide(Curve(1, 9_000, (10.0, 20.0, 30.0)), [small], 500) is None  # epoch 3
    # At epoch 6 the small trial's best so far is 80 (epoch 2), not its last epoch's 60.
    assert rule.decide(Curve(1, 9_000, (70.0, 70.0, 70.0, 70.0, 70.0, 79.0)), [small], 500)
    # Peers that have not reached the epoch, and the trial itself, are no evidence.
    behind = Curve(2, 1_000, (99.0,))
    assert rule.decide(Curve(1, 9_000, (10.0, 20.0)), [behind], 500) is None
    assert rule.decide(Curve(1, 9_000, (10.0, 20.0)), [Curve(1, 9_000, (90.0, 95.0))], 500) is None


def test_size_rule_settings_are_checked_with_their_key(tiny_overrides, tmp_path):
    base = [*tiny_overrides, "search/pruner=size"]
    assert size_rule(compose_config(base).search) == SizeRule()
    bad = {"search.pruner.min_epoch=0": r"search\.pruner\.min_epoch=0",
           "search.pruner.reduction_factor=1": r"search\.pruner\.reduction_factor=1",
           "search.pruner.margin=-1": r"search\.pruner\.margin=-1",
           "search.pruner.margin=wide": r"search\.pruner\.margin='wide'"}  # fmt: skip
    assert_refused(base, bad, SearchError, tmp_path / "out")
    assert size_rule(compose_config([*tiny_overrides, "search/pruner=none"]).search) is None


# A grid whose largest-but-one trial cannot learn: K=20 keeps no cue word of the tiny corpus
# (cue_min_rank=50), so (256, 20) stays near chance (25%: four classes) while (8, full), which
# is smaller, learns (over 30% by epoch 2, 43% by epoch 4; 150 validation documents).
GRID = ["search/sampler=grid", "search.sampler.values.embedding_dim=[8,256]",
        "search.sampler.values.vocab_size=[20,null]", "search.n_trials=4", "train.epochs=4",
        "train.patience=4", "data.synthetic.num_docs=1500", "search/pruner=size",
        "search.pruner.margin=2"]  # fmt: skip


def test_a_sweep_prunes_in_a_pack_and_never_puts_a_pruned_trial_on_the_front(
    tiny_overrides, tmp_path
):
    cfg = compose_config([*tiny_overrides, *GRID, "model.sparse=false", "search.pack=4",
                          "search.pack_padding=100"])  # fmt: skip
    table = runner.run(cfg, tmp_path / "out").table.set_index(["embedding_dim", "vocab_size"])
    full = int(table.index.get_level_values(1).max())
    hopeless = table.loc[(256, 20)]
    assert hopeless["state"] == "PRUNED" and hopeless["pruned_epoch"] in (1, 2, 4)
    assert hopeless["epochs"] == hopeless["pruned_epoch"] and hopeless["val_accuracy"] > 0
    assert "of trial" in hopeless["fail_reason"] and "no larger" in hopeless["fail_reason"]
    assert not hopeless["pareto"] and not hopeless["recommended"]
    # Nothing is smaller than (8, 20): it is never stopped, whatever its accuracy.
    assert table.loc[(8, 20)]["state"] == "COMPLETE"
    assert table.loc[(8, full)]["state"] == "COMPLETE"
    assert table["pack"].nunique() == 1  # one pack of four: the pruned one left it early
    assert (table["state"] != "FAIL").all() and len(table) == 4
    page = (tmp_path / "out" / "report.html").read_text()
    assert "pruned (stopped early)" in page


def test_the_same_sweep_without_the_rule_trains_every_trial(tiny_overrides, tmp_path):
    """The control of the test above: the pruned trial was stopped by the rule alone."""
    cfg = compose_config([*tiny_overrides, *GRID[:-2], "search/pruner=none"])
    table = runner.run(cfg, tmp_path / "out").table
    assert (table["state"] == "COMPLETE").all() and (table["epochs"] == 4).all()
    assert "pruned (stopped early)" not in (tmp_path / "out" / "report.html").read_text()


def test_a_trial_is_pruned_on_the_curve_of_another_process(tmp_path):
    """Workers share curves through the storage: a running trial written by another process
    (its size and accuracy per epoch so far) is what this process's trial is compared with."""
    journal = tmp_path / "journal.log"
    other = textwrap.dedent(f"""
        import optuna
        from sweep.search.storage import journal_storage
        study = optuna.create_study(study_name="s", storage=journal_storage({str(journal)!r}),
                                    directions=["maximize", "minimize"])
        trial = study.ask()
        trial.set_user_attr("params_total", 1000)
        trial.set_user_attr({CURVE!r}, [70.0, 80.0])
    """)
    done = subprocess.run([sys.executable, "-c", other], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="s", storage=journal_storage(journal))
    seen = curves(study, "params_total")
    assert seen == [Curve(0, 1000.0, (70.0, 80.0))]  # RUNNING in the other process
    mine = Curve(1, 50_000.0, (60.0, 65.0))
    assert "of trial 0" in RULE.decide(mine, seen, 500)


@pytest.mark.slow
def test_kill_9_mid_rung_then_resume(tmp_path):
    """A sweep with the size rule killed while a trial trains between rungs: the rerun fails
    that trial as interrupted, keeps every finished and pruned trial with its curve and reason,
    and reaches search.n_trials."""
    overrides = [*TINY, "data.synthetic.num_docs=3000", "train.epochs=40", "train.patience=40",
                 "search.n_trials=5", "search/pruner=size"]  # fmt: skip
    args = [sys.executable, str(ROOT / "run_sweep.py"), *overrides, "hydra.run.dir=run"]
    name = default_study(overrides)
    journal = tmp_path / "studies" / name / "journal.log"
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip

    def between_rungs(study):
        trials = study.get_trials()
        running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        # Past rung 16 (its curve stored there) and before rung 32: 15 epochs to see it in.
        return (any(t.state.is_finished() for t in trials) and running
                and len(running[0].user_attrs.get(CURVE, ())) == 16)  # fmt: skip

    study = watch_study(journal, name, between_rungs, timeout=300)
    assert study is not None, "never saw a trial between its rungs"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    trials = study.get_trials()
    killed = next(t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING)
    before = {t.number: (t.state, t.user_attrs.get(CURVE)) for t in trials if t.state.is_finished()}
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=journal_storage(journal))
    trial = study.trials[killed]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["fail_reason"].startswith("interrupted: its worker")
    for number, (state, curve) in before.items():  # nothing finished is lost or retrained
        assert study.trials[number].state == state
        assert study.trials[number].user_attrs.get(CURVE) == curve
    assert study_module.count_finished(study) == 5
    table = pd.read_csv(tmp_path / "run" / "trials.csv")
    pruned = table[table["state"] == "PRUNED"]
    assert pruned["fail_reason"].str.startswith("pruned after epoch").all()
    assert not table.loc[table["state"] != "COMPLETE", "pareto"].any()
