"""A stop is a stop: SIGTERM and SIGINT to a run and to the parent of workers, kill -9 of one
worker, exit codes. Real processes and real signals; the long ones are slow."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose_config, default_study, watch_study

from sweep import parallel, runner
from sweep.common import forked, stop
from sweep.search import study as study_module
from sweep.search.storage import journal_storage
from sweep.trial import lone as trial_module

State = optuna.trial.TrialState
# Trials of about 5 seconds (2 CPU cores): a signal sent while one trains lands in its middle.
LONG = [*TINY, "data.synthetic.num_docs=3000", "train.epochs=150", "train.patience=150",
        "threads=1"]  # fmt: skip
# Trials of about 15 seconds: six of them on two workers outlast 30 seconds, so a worker
# orphaned by its parent's stop would still be training when the test looks.
LONGER = [*LONG, "train.epochs=500", "train.patience=500"]
pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    """``run_sweep.py args`` in ``cwd``, its output in ``cwd/out.txt``."""
    with open(cwd / "out.txt", "ab") as out:
        return subprocess.Popen([sys.executable, str(ROOT / "run_sweep.py"), *args], cwd=cwd,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip


def load(tmp_path: Path, name: str) -> optuna.Study:
    journal = journal_storage(tmp_path / "studies" / name / "journal.log")
    return optuna.load_study(study_name=name, storage=journal)


def training(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Running trials past their sizes: in training."""
    return [t for t in study.get_trials(states=(State.RUNNING,)) if "params_total" in t.user_attrs]


def processes_of(folder: Path) -> list[int]:
    """Live processes whose command line names ``folder`` (a run's workers: their run folder)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="ignore")
        except OSError:
            continue
        if str(folder) in text and "run_sweep.py" in text:
            pids.append(int(cmdline.parent.name))
    return pids


def gone_within(proc: subprocess.Popen, folder: Path, seconds: float) -> float:
    """Seconds until ``proc`` and every process naming ``folder`` have ended (at most
    ``seconds``: then the test fails, naming what is left)."""
    started = time.time()
    while time.time() - started < seconds:
        if proc.poll() is not None and not processes_of(folder):
            return time.time() - started
        time.sleep(0.2)
    raise AssertionError(f"left after {seconds}s: parent {proc.poll()}, {processes_of(folder)}")


def test_sigterm_fails_the_running_trial_writes_the_reports_and_exits_143(tmp_path):
    """One process: SIGTERM mid-trial (what timeout, SLURM and systemd send)."""
    overrides = [*LONG, "search.n_trials=3"]
    name = default_study(overrides)
    proc = start([*overrides, "hydra.run.dir=run"], tmp_path)
    study = watch_study(tmp_path / "studies" / name / "journal.log", name, training, 240)
    assert study is not None, (tmp_path / "out.txt").read_text()[-3000:]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, (tmp_path / "out.txt").read_text()[-3000:]
    trials = load(tmp_path, name).get_trials()
    assert not [t for t in trials if t.state == State.RUNNING]
    stopped = [t for t in trials if t.user_attrs.get("fail_reason") == "stopped: SIGTERM"]
    assert len(stopped) == 1 and stopped[0].state == State.FAIL
    table = pd.read_csv(tmp_path / "run" / "trials.csv")
    assert table.loc[table["trial"] == stopped[0].number, "state"].item() == "FAIL"
    assert "Stopped by SIGTERM" in (tmp_path / "run" / "report.html").read_text()
    assert "stopped: SIGTERM: exit 143" in (tmp_path / "out.txt").read_text()


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (Linux's /proc/<pid>/task/*/children)."""
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids += [int(k) for k in task.read_text().split()]
        except OSError:
            continue
    return [k for k in kids if alive(k)]


@pytest.mark.parametrize("signum,group", [(signal.SIGTERM, False), (signal.SIGTERM, True),
                                          (signal.SIGINT, True)])  # fmt: skip
def test_a_stop_during_the_side_by_side_probe_ends_its_children_and_the_run(
    tmp_path, signum, group
):
    """SIGTERM to the run or to its whole process group (systemd, SLURM), or Ctrl-C (SIGINT
    to the group, as a terminal sends it), while the recipe probe trains its choices in forked
    children: the run exits 143 or 130 within seconds, every child gone, and no claim is left
    for the next run to wait on."""
    overrides = [*LONG, "train.lr=auto", "processes=2", "search.n_trials=2"]
    name = default_study(overrides)
    with open(tmp_path / "out.txt", "ab") as out:  # a session of its own: a group to signal
        proc = subprocess.Popen([sys.executable, str(ROOT / "run_sweep.py"), *overrides,
                                 "hydra.run.dir=run"], cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    deadline, kids = time.time() + 120, []
    while time.time() < deadline and len(kids) < 2 and proc.poll() is None:
        kids = children_of(proc.pid)
        time.sleep(0.2)
    assert len(kids) == 2, (tmp_path / "out.txt").read_text()[-3000:]
    time.sleep(1.0)  # into the first fit (about 5 s)
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    assert proc.wait(timeout=30) == 128 + signum, (tmp_path / "out.txt").read_text()[-3000:]
    deadline = time.time() + 10
    while any(alive(k) for k in kids) and time.time() < deadline:
        time.sleep(0.1)
    assert not [k for k in kids if alive(k)]
    storage = journal_storage(tmp_path / "studies" / name / "journal.log")
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert name + study_module.RECIPE_SUFFIX not in names


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_during_trials_side_by_side_fails_both_and_a_rerun_completes(tmp_path, signum):
    """``processes=2``: Ctrl-C (SIGINT to the group, as a terminal sends it) or SIGTERM while two
    trials train in forked children: the run exits within seconds, every child gone, both
    trials FAIL with the stop's reason, and the same command again completes the study."""
    overrides = [*LONG, "processes=2", "search.n_trials=3"]
    name = default_study(overrides)
    args = [*overrides, "hydra.run.dir=run"]
    with open(tmp_path / "out.txt", "ab") as out:  # a session of its own: a group to signal
        proc = subprocess.Popen([sys.executable, str(ROOT / "run_sweep.py"), *args],
                                cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip
    watch(tmp_path, name, lambda s: len(training(s)) == 2, proc)
    deadline, kids = time.time() + 60, []  # the second child forks once its trial is stored
    while time.time() < deadline and len(kids) < 2 and proc.poll() is None:
        kids = children_of(proc.pid)
        time.sleep(0.1)
    assert len(kids) == 2, (tmp_path / "out.txt").read_text()[-3000:]
    time.sleep(1.0)  # into their fits (about 5 s each)
    os.killpg(proc.pid, signum)
    took = gone_within(proc, tmp_path, 30)
    log = (tmp_path / "out.txt").read_text()
    print(f"{signal.Signals(signum).name}: the run and its children gone {took:.1f}s after it")
    assert proc.returncode == 128 + signum and took < 10, (took, log[-3000:])
    assert not [k for k in kids if alive(k)]
    word = signal.Signals(signum).name
    stopped = [t for t in load(tmp_path, name).get_trials()
               if t.user_attrs.get("fail_reason") == f"stopped: {word}"]  # fmt: skip
    assert len(stopped) == 2 and {t.state for t in stopped} == {State.FAIL}, log[-3000:]
    check_no_running_and_rerun(tmp_path, name, args, 3)


def test_an_interrupt_fails_the_trial_in_training_and_reports_it(tiny_overrides, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    """In process, without the handlers (a notebook, a test): Ctrl-C's KeyboardInterrupt in the
    second trial's training is that trial's failure, "stopped: SIGINT", and goes on up."""
    real_fit, fits = trial_module.fit, []

    def interrupted_fit(*args, **kwargs):
        fits.append(1)
        if len(fits) == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(trial_module, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        runner.run(compose_config(tiny_overrides), tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert table["state"].tolist() == ["COMPLETE", "FAIL"]
    assert table["fail_reason"].tolist()[1] == "stopped: SIGINT"
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Stopped by SIGINT" in page and "1 of 3 trials finished" in page


# A trial starts at most this long after the budget's deadline: the deadline is checked just
# before the storage is read and the trial asked.
ASK_TOLERANCE_S = 2.0


def test_the_time_budget_stops_asking_and_reports_the_trials_it_reached(tiny_overrides, tmp_path):
    """search.timeout_s shorter than the asked trials: no trial starts after the deadline (within
    ASK_TOLERANCE_S), the trials that started finish, and the log and the page say that the
    budget ended the run and how many trials it reached. (The exit code 0: the slow test.)"""
    started = time.time()  # a moment before the run's own start: the bound is looser, not tighter
    cfg = compose_config([*tiny_overrides, "search.n_trials=500", "search.timeout_s=3"])
    result = runner.run(cfg, tmp_path / "out")
    table = result.table
    finished = int((table["state"] == "COMPLETE").sum())
    assert 1 <= finished < 500 and set(table["state"]) == {"COMPLETE"}
    starts = pd.to_datetime(table["datetime_start"]).map(lambda t: t.timestamp())
    assert starts.max() <= started + 3 + ASK_TOLERANCE_S
    page = (tmp_path / "out" / "report.html").read_text()
    assert "The time budget (search.timeout_s=3) ended the run after" in page
    assert f"{finished} of 500 trials finished" in page


def test_past_the_grace_a_trial_still_training_is_stopped(tiny_overrides, tmp_path):
    """search.timeout_grace_s: a trial still training that long past the budget is failed with
    the reason, and the run goes on to its reports (no exception: exit code 0)."""
    cfg = compose_config([*tiny_overrides, "train.epochs=100000", "train.patience=100000",
                          "search.timeout_s=1.5", "search.timeout_grace_s=0.5"])  # fmt: skip
    started = time.time()
    result = runner.run(cfg, tmp_path / "out")
    took = time.time() - started
    (failed,) = result.table.to_dict("records")  # 100000 epochs: the first trial never ends
    assert failed["state"] == "FAIL"
    assert failed["fail_reason"] == (
        "stopped: the time budget (search.timeout_s=1.5) ended and its grace "
        "(search.timeout_grace_s=0.5) passed"
    )
    assert took < 60, took  # (the trial alone would take minutes)
    assert "0 of 3 trials finished" in (tmp_path / "out" / "report.html").read_text()


def test_a_stop_is_held_back_across_a_deferred_write():
    switch = stop._SWITCH
    assert switch.signalled is None
    with pytest.raises(stop.Stopped, match="held") as raised, stop.deferred():
        switch.trip(stop.Stopped("held"))  # no signal: the process goes on after it
        done = True  # the write was not cut
    assert done and raised.value.exit_code == 0 and switch.signalled is None
    assert stop.Stopped("stopped: SIGTERM", signal.SIGTERM).exit_code == 143
    assert stop.stop_of(KeyboardInterrupt()).exit_code == 130


def test_the_exit_code_of_a_run_with_workers(tmp_path):
    assert parallel.verdict([0, -9], True, None, tmp_path) == 0  # a worker died, none missing
    assert parallel.verdict([0, -9], False, None, tmp_path) == parallel.INCOMPLETE
    assert parallel.verdict([2, 2], False, None, tmp_path) == 2  # bad input, in every worker
    term = stop.Stopped("stopped: SIGTERM", signal.SIGTERM)
    assert parallel.verdict([143, 143], False, term, tmp_path) == 143
    assert parallel.how_it_ended(-9) == "was killed by SIGKILL"


def test_a_worker_ends_when_its_parent_is_killed(tmp_path):
    """A worker of search.workers gets SIGTERM when its parent dies by SIGKILL, which the
    parent cannot pass on (PR_SET_PDEATHSIG)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    child = (
        "import os, sys, time; sys.path.insert(0, sys.argv[1]); "
        "from sweep.parallel import tie_to_parent; tie_to_parent(); "
        "open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(120)"
    )
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c",
        "import os, subprocess, sys, time; "
        f"env = {{**os.environ, {parallel.PARENT_PID!r}: str(os.getpid())}}; "
        f"subprocess.Popen([sys.executable, '-c', {child!r}, {str(ROOT)!r}, {str(pid_file)!r}], env=env); "
        "time.sleep(120)"])  # fmt: skip
    deadline = time.time() + 60
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    worker = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(worker)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def watch(tmp_path: Path, name: str, ready, proc: subprocess.Popen, timeout: float = 300):
    study = watch_study(tmp_path / "studies" / name / "journal.log", name, ready, timeout)
    assert study is not None, (tmp_path / "out.txt").read_text()[-3000:]
    assert proc.poll() is None, (tmp_path / "out.txt").read_text()[-3000:]
    return study


def check_no_running_and_rerun(tmp_path: Path, name: str, args: list[str], n_trials: int):
    """No trial is left RUNNING; the same command again completes the study (exit 0)."""
    assert not load(tmp_path, name).get_trials(states=(State.RUNNING,))
    again = subprocess.run([sys.executable, str(ROOT / "run_sweep.py"), *args], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert study_module.count_finished(load(tmp_path, name)) >= n_trials


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_parent_stops_every_worker_and_a_rerun_completes(tmp_path, signum):
    """search.workers=2, the parent signalled mid-study: within 30 seconds no process of the run
    is left, no trial is RUNNING, the combined report says so, and the command resumes."""
    overrides = [*LONGER, "search.n_trials=6"]
    name = default_study(overrides)
    args = [*overrides, "search.workers=2", "hydra.run.dir=run"]
    proc = start(args, tmp_path)
    watch(tmp_path, name, lambda s: len(training(s)) == 2, proc)
    proc.send_signal(signum)
    took = gone_within(proc, tmp_path, 30)
    log = (tmp_path / "out.txt").read_text()
    assert proc.returncode == 128 + signum, log[-3000:]
    word = signal.Signals(signum).name
    stopped = [t for t in load(tmp_path, name).get_trials()
               if t.user_attrs.get("fail_reason") == f"stopped: {word}"]  # fmt: skip
    assert len(stopped) == 2 and {t.state for t in stopped} == {State.FAIL}, log[-3000:]
    assert f"Stopped by {word}" in (tmp_path / "run" / "report.html").read_text()
    assert (tmp_path / "run" / "trials.csv").is_file()
    print(f"{word}: every process of the run gone {took:.1f}s after the signal")
    check_no_running_and_rerun(tmp_path, name, args, 6)


@pytest.mark.slow
def test_the_time_budget_with_workers_and_packs_exits_0_and_says_so(tmp_path):
    """search.workers=2 search.pack=2 with a budget of 20 s for 500 trials: exit 0, no trial
    starts after the deadline (counted from the parent's start, which comes after the
    interpreter's own start-up: within ASK_TOLERANCE_S plus 15 s of the command's launch), the
    combined report says the budget ended the run, and no process is left."""
    args = [*TINY, "search.n_trials=500", "search.workers=2", "search.pack=2",
            "search.timeout_s=20", "hydra.run.dir=run"]  # fmt: skip
    launched = time.time()
    proc = start(args, tmp_path)
    assert proc.wait(timeout=300) == 0, (tmp_path / "out.txt").read_text()[-3000:]
    assert not processes_of(tmp_path)
    table = pd.read_csv(tmp_path / "run" / "trials.csv")
    finished = int((table["state"] == "COMPLETE").sum())
    assert 2 <= finished < 500 and table["worker"].nunique() == 2
    starts = pd.to_datetime(table["datetime_start"]).map(lambda t: t.timestamp())
    assert starts.max() <= launched + 20 + 15 + ASK_TOLERANCE_S
    assert table["pack"].notna().any()  # packed rounds ran within the budget
    page = (tmp_path / "run" / "report.html").read_text()
    assert "The time budget (search.timeout_s=20) ended the run after" in page
    assert f"{finished} of 500 trials finished" in page


@pytest.mark.slow
def test_kill_9_of_workers_the_others_go_on_and_the_parent_names_their_logs(tmp_path):
    """search.workers=2: SIGKILL one worker mid-trial; the other goes on (it finishes a trial
    after the kill); then SIGKILL it too: the parent fails both trials, names both logs and
    exits INCOMPLETE (3); the same command again completes the study."""
    overrides = [*LONG, "search.n_trials=8"]
    name = default_study(overrides)
    args = [*overrides, "search.workers=2", "hydra.run.dir=run"]
    proc = start(args, tmp_path)
    study = watch(tmp_path, name, lambda s: len(training(s)) == 2, proc)
    first = training(study)[0]
    os.kill(int(first.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    killed_at = time.time()

    def the_other_went_on(s):
        later = [t for t in s.get_trials(states=(State.COMPLETE,))
                 if t.datetime_complete.timestamp() > killed_at]  # fmt: skip
        return later and [t for t in training(s) if t.user_attrs["worker"] != first.user_attrs["worker"]]  # fmt: skip

    study = watch(tmp_path, name, the_other_went_on, proc)
    second = [t for t in training(study) if t.user_attrs["worker"] != first.user_attrs["worker"]][0]
    os.kill(int(second.user_attrs["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
    assert proc.wait(timeout=120) == parallel.INCOMPLETE
    log = (tmp_path / "out.txt").read_text()
    for trial in (first, second):
        stored = load(tmp_path, name).trials[trial.number]
        assert stored.state == State.FAIL, stored
        assert stored.user_attrs["fail_reason"].startswith("interrupted: its worker")
    assert log.count("was killed by SIGKILL; its log: ") == 2, log[-3000:]
    assert "worker-0/run_sweep.log" in log and "worker-1/run_sweep.log" in log
    assert "the study is short of search.n_trials" in log
    check_no_running_and_rerun(tmp_path, name, args, 8)


@pytest.mark.slow
def test_sigint_during_data_preparation_ends_the_run_within_5_seconds_and_a_rerun_completes(
    tmp_path,
):
    """Ctrl-C while a large corpus is generated and tokenized (a single-process run): the run
    ends within 5 seconds with code 130, no study is left half made, and the same command then
    completes."""
    big = [*TINY, "data.synthetic.num_docs=400000", "data.synthetic.vocab_words=20000",
           "search.n_trials=2", "hydra.run.dir=run"]  # fmt: skip
    proc = start(big, tmp_path)
    time.sleep(4)  # generating and tokenizing 400k documents takes well over that on 2 cores
    assert proc.poll() is None, (tmp_path / "out.txt").read_text()[-2000:]
    assert "running trials" not in (tmp_path / "out.txt").read_text()
    proc.send_signal(signal.SIGINT)
    assert gone_within(proc, tmp_path / "run", 5.0) <= 5.0
    assert proc.returncode == 130, (tmp_path / "out.txt").read_text()[-2000:]
    again = subprocess.run([sys.executable, str(ROOT / "run_sweep.py"), *big], cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(pd.read_csv(tmp_path / "run" / "trials.csv")) >= 2


def _value(x):
    return x


def _raise(message):
    raise ValueError(message)


def _killed():
    os.kill(os.getpid(), signal.SIGKILL)  # as the out-of-memory killer does


RAN: list[str] = []


def _record(what):
    RAN.append(what)


class _Planted:
    """An object whose unpickling would run code: ``_record``."""

    def __reduce__(self):
        return (_record, ("planted",))


def test_what_a_child_sends_back_is_read_as_data_never_as_code():
    """DESIGN.md decision 10: a child's result comes back through ``torch.load(weights_only=
    True)``; bytes that name code are refused, and nothing runs."""
    import io

    import torch

    payload = io.BytesIO()
    torch.save((True, _Planted()), payload)
    with pytest.raises(Exception, match="(?i)weights_only|unpickl|unsupported"):
        forked._decode(payload.getvalue())
    assert RAN == []
    ok, value = forked._decode(forked._encode((True, {"a": [1.5, 2], "t": torch.ones(2)})))
    assert ok and value["a"] == [1.5, 2] and value["t"].tolist() == [1.0, 1.0]
    ok, error = forked._decode(forked._encode((False, FloatingPointError("loss is nan"))))
    assert not ok and type(error) is FloatingPointError and str(error) == "loss is nan"


def test_jobs_side_by_side_come_back_in_order_and_a_dead_child_fails_its_job():
    """``sweep.common.forked``: results in the order submitted, a job's error raised where its
    result is asked for, and a child killed outright (SIGKILL) fails its job with the reason
    instead of leaving the run waiting; no child outlives the block."""
    with forked.Forked(2) as side:
        jobs = [side.submit(_value, i) for i in range(5)]  # 2 at a time
        assert [job.get() for job in jobs] == list(range(5))
        with pytest.raises(ValueError, match="its own message"):
            side.submit(_raise, "its own message").get()
        with pytest.raises(RuntimeError, match=r"killed by signal 9 \(SIGKILL: the out-of-memory"):
            side.submit(_killed).get()
        started = [job.process.pid for job in jobs]
    assert not [pid for pid in started if alive(pid)]
    with forked.Forked(1) as alone:  # one process: on the spot, the same answers
        assert alone.submit(_value, 7).get() == 7
