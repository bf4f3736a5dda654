"""Several workers on one study, a worker killed mid-run, multirun fan-out, storage URLs."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose_config, default_study, run_cli

from sweep import parallel
from sweep.search import study as study_module
from sweep.search.storage import journal_storage

State = optuna.trial.TrialState
SLOWER = [
    *TINY,
    "data.synthetic.num_docs=2000",
    "train.epochs=15",
    "train.patience=15",
    "threads=1",
]


def test_workers_share_one_study_and_write_one_report(tmp_path):
    result = run_cli(
        [*TINY, "search.workers=2", "search.n_trials=6", "hydra.run.dir=out"], cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    assert 6 <= len(done) <= 7  # two workers asking at the same instant may overshoot by one
    assert table["trial"].is_unique and done["worker"].nunique() == 2
    assert (tmp_path / "out" / "worker-0" / "trials.csv").is_file()
    assert (tmp_path / "out" / "worker-1" / "trials.csv").is_file()
    assert "Recommended configuration" in (tmp_path / "out" / "report.html").read_text()
    # The parent exports the whole study's recommendation; the workers export nothing.
    assert (tmp_path / "out" / "model" / "SHA256SUMS").is_file()
    assert not (tmp_path / "out" / "worker-0" / "model").exists()
    # The parent measured the front at every precision once; the workers measured nothing.
    front = table[table["pareto"]]
    assert front["val_accuracy_int8"].notna().all() and front["ship_precision"].notna().all()
    assert table.loc[~table["pareto"], "val_accuracy_int8"].isna().all()


def test_workers_on_a_grid_train_each_point_once(tmp_path):
    """The grid sampler with search.workers=2: every point of the grid is trained by one worker,
    none twice (each worker's grid order is the same, whatever its sampler seed)."""
    result = run_cli(
        [*TINY, "search.workers=2", "search/sampler=grid", "search.n_trials=4",
         "search.sampler.values={embedding_dim: [4, 8, 16, 32], vocab_size: [null]}",
         "report.repeats=0", "report.export=none", "report.quantize=none", "hydra.run.dir=out"],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    assert sorted(done["embedding_dim"]) == [4, 8, 16, 32]
    assert done["worker"].nunique() == 2


def test_workers_run_packs_on_one_study(tmp_path):
    """search.workers with search.pack: each worker asks and trains its own packs of the study
    (search.pack_padding=100: any two trials of a round share a pack, whatever their widths)."""
    result = run_cli(
        [*TINY, "search.workers=2", "search.pack=2", "search.pack_padding=100",
         "search.n_trials=6", "report.repeats=0", "hydra.run.dir=out"], cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    done = table[table["state"] == "COMPLETE"]
    assert 6 <= len(done) <= 7 and table["trial"].is_unique and done["worker"].nunique() == 2
    packed = done[done["pack"].notna()]
    assert packed["worker"].nunique() == 2  # both workers trained packs
    for pack, trials in packed.groupby("pack"):
        # A pack is one worker's, named by its first trial, and holds at most search.pack.
        assert trials["worker"].nunique() == 1 and len(trials) <= 2
        assert pack == trials["trial"].min()


def test_worker_commands_pin_gpus_round_robin(tmp_path):
    commands = parallel.worker_commands(
        ["model=cnn", "search.workers=4", "hydra.run.dir=x"], 4, tmp_path, ["0", "1"]
    )
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in commands] == ["0", "1", "0", "1"]
    argv = commands[3][0]
    assert "model=cnn" in argv and "search.workers=1" in argv and "search.worker_index=3" in argv
    assert "hydra.run.dir=x" not in argv and f"hydra.run.dir={tmp_path / 'worker-3'}" in argv
    assert "report.export=keep" in argv and "report.quantize=none" in argv
    argv = parallel.worker_commands(["report.quantize=all"], 1, tmp_path, [], quantize="all")[0][0]
    assert "report.quantize=all" in argv and "report.quantize=none" not in argv
    cfg = compose_config(["search.workers=auto", "search.trials_per_gpu=3"])
    assert parallel.worker_count(cfg.search, ["0", "1"]) == 6
    assert parallel.worker_count(cfg.search, []) == 1


def test_bad_workers_or_storage_stop_before_any_worker_starts(tiny_overrides, tmp_path):
    """A bad search.workers or time budget, or a storage URL that cannot be opened, is one
    message naming the key, from the parent, before any worker starts."""
    bad = {
        "search.workers=0": r"search\.workers=0 must be an integer >= 1",
        "search.workers=two": r"search\.workers='two' must be an integer >= 1",
        "search.workers=auto search.trials_per_gpu=0": r"search\.trials_per_gpu=0 must be",
        "search.workers=2 search.storage=nosuchdb://x/y": r"study storage nosuchdb://x/y .*search\.storage",
        "search.workers=2 search.timeout_s=0": r"search\.timeout_s=0 must be a number of seconds > 0",
        "search.workers=2 search.timeout_s=soon": r"search\.timeout_s='soon' must be a number",
        "search.workers=2 search.timeout_grace_s=-1": r"search\.timeout_grace_s=-1 must be a number of seconds >= 0",
    }  # fmt: skip
    for overrides, message in bad.items():
        cfg = compose_config([*tiny_overrides, *overrides.split()])
        with pytest.raises(ValueError, match=message):
            parallel.launch(cfg, tmp_path / "run", [])
        assert not list(tmp_path.glob("run/worker-*")), overrides


def start_workers(tmp_path, storage_args, count=3, n_trials=6):
    procs = []
    for index in range(count):
        argv = [sys.executable, str(ROOT / "run_sweep.py"), *SLOWER, *storage_args,
                f"search.n_trials={n_trials}", f"search.worker_index={index}",
                f"hydra.run.dir=w{index}"]  # fmt: skip
        procs.append(subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True))  # fmt: skip
    return procs


def kill_one_mid_trial(procs, load_study, timeout=300):
    """SIGKILL the worker that runs a trial; return the trial's number."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        if all(p.poll() is not None for p in procs):  # every worker ended: show why
            raise AssertionError("workers exited early: " + procs[0].stderr.read()[-2000:])
        try:
            study = load_study()
        except Exception:  # not created yet
            continue
        for trial in study.get_trials(states=(State.RUNNING,)):
            pid = int(str(trial.user_attrs.get("worker", ":0")).rsplit(":", 1)[1] or 0)
            victim = [p for p in procs if p.pid == pid]
            if victim and "params_total" in trial.user_attrs:
                os.kill(pid, signal.SIGKILL)
                victim[0].wait()
                return trial.number
    raise AssertionError("no running trial seen")


def check_shared_study(study, killed_number, n_trials):
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[killed_number].state == State.FAIL
    assert "interrupted" in by_number[killed_number].user_attrs["fail_reason"]
    finished = [t for t in study.get_trials() if t.state == State.COMPLETE]
    assert n_trials <= len(finished) <= n_trials + 1  # none lost; at most one overshoot
    numbers = [t.number for t in study.get_trials()]
    assert len(numbers) == len(set(numbers))
    workers = {t.user_attrs["worker"] for t in finished}
    assert len(workers) >= 2


@pytest.mark.slow
def test_three_workers_one_killed_on_the_journal_storage(tmp_path):
    name = default_study([*SLOWER, "search.n_trials=6"])
    journal = tmp_path / "studies" / name / "journal.log"
    procs = start_workers(tmp_path, [])

    def load():
        return optuna.load_study(study_name=name, storage=journal_storage(journal))

    killed = kill_one_mid_trial(procs, load)
    for proc in procs:
        proc.wait(timeout=600)
    alive = [p for p in procs if p.returncode != -signal.SIGKILL]
    assert len(alive) == 2 and all(p.returncode == 0 for p in alive), [
        p.stderr.read()[-2000:] for p in alive
    ]
    check_shared_study(load(), killed, 6)


POSTGRES = os.environ.get("SWEEP_TEST_POSTGRES_URL")


@pytest.mark.slow
@pytest.mark.skipif(
    not POSTGRES and not os.environ.get("CI"),
    reason="set SWEEP_TEST_POSTGRES_URL (CI starts a server)",
)
def test_three_workers_one_killed_on_postgresql(tmp_path):
    assert POSTGRES, "CI must export SWEEP_TEST_POSTGRES_URL (see .ci/run)"
    name = f"pg-{os.getpid()}-{int(time.time())}"
    procs = start_workers(tmp_path, [f"search.storage={POSTGRES}", f"search.study_name={name}"])

    def load():
        return optuna.load_study(study_name=name, storage=POSTGRES)

    killed = kill_one_mid_trial(procs, load)
    for proc in procs:
        proc.wait(timeout=600)
    check_shared_study(load(), killed, 6)
    # One combined report from the storage; the password appears nowhere.
    password = POSTGRES.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
    rebuilt = subprocess.run(
        [sys.executable, "-m", "sweep.report", "--storage", POSTGRES, "--study", name, "--out", "combined"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert password not in rebuilt.stdout + rebuilt.stderr
    files = [
        p for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".csv", ".html", ".log")
    ]
    assert any(p.name == "report.html" for p in files)
    for path in files:
        assert password not in path.read_text(errors="ignore"), path


# TINY with the training recipe left to its probe: the workers then open the storage at their
# very start (settle_recipe), the moment a fresh database's tables are made.
PROBED = [o for o in TINY if not o.startswith(("train.lr=", "data.tokenizer.", "train.recipe."))]


def fresh_runs(tmp_path, storage_for, load, times=5, workers=4, n_trials=4):
    """Run ``search.workers`` on a fresh storage (``storage_for(i)``) ``times`` times in a row:
    every run exits 0 and its study holds ``n_trials`` trials, every one COMPLETE."""
    for i in range(times):
        name = f"fresh-{i}"
        result = run_cli([*PROBED, f"search.workers={workers}", f"search.n_trials={n_trials}",
                          f"search.storage='{storage_for(i)}'", f"search.study_name={name}",
                          f"hydra.run.dir=run-{i}", "device=cpu"], cwd=tmp_path, timeout=600)  # fmt: skip
        logs = "".join(p.read_text() for p in (tmp_path / f"run-{i}").rglob("*.log"))
        assert result.returncode == 0, f"run {i}: " + (result.stderr + logs)[-4000:]
        assert "IntegrityError" not in logs and "Traceback" not in logs, logs[-4000:]
        states = [t.state for t in load(name, i).get_trials()]
        assert len(states) >= n_trials and set(states) == {State.COMPLETE}, (i, states)


@pytest.mark.slow
def test_four_workers_on_a_fresh_sqlite_file_five_times(tmp_path):
    """Four workers opening a database file that does not exist yet raced to make Optuna's
    tables (UNIQUE constraint failed: alembic_version.version_num): the parent makes the storage
    and the study before any worker starts."""

    def url(i):
        return f"sqlite:///{tmp_path}/fresh-{i}.db"

    fresh_runs(tmp_path, url, lambda name, i: optuna.load_study(study_name=name, storage=url(i)))


def with_schema(url: str, schema: str) -> str:
    """``url`` with PostgreSQL's search_path set to ``schema``: a database with no tables yet."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@pytest.mark.slow
@pytest.mark.skipif(
    not POSTGRES and not os.environ.get("CI"),
    reason="set SWEEP_TEST_POSTGRES_URL (CI starts a server)",
)
def test_four_workers_on_a_fresh_postgresql_database_five_times(tmp_path):
    """The same on PostgreSQL: each run on a schema of its own, empty (a fresh database)."""
    assert POSTGRES, "CI must export SWEEP_TEST_POSTGRES_URL (see .ci/run)"
    import sqlalchemy

    engine = sqlalchemy.create_engine(POSTGRES)
    schemas = [f"fresh_{os.getpid()}_{int(time.time())}_{i}" for i in range(5)]
    try:
        with engine.begin() as connection:
            for schema in schemas:
                connection.execute(sqlalchemy.text(f"CREATE SCHEMA {schema}"))

        def url(i):
            return with_schema(POSTGRES, schemas[i])

        fresh_runs(
            tmp_path, url, lambda name, i: optuna.load_study(study_name=name, storage=url(i))
        )
    finally:
        with engine.begin() as connection:
            for schema in schemas:
                connection.execute(sqlalchemy.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
        engine.dispose()


def test_a_queued_trial_popped_by_two_workers_at_once_is_run_by_one(tmp_path):
    """Optuna pops a queued trial by reading it WAITING and setting it RUNNING, which SQLite
    cannot lock: two workers asking at once may both get it. Each claims it; one wins."""
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 1.0})
    mine = study.ask()
    twin = optuna.Trial(study, study_module._private(mine, "_trial_id"))  # the other's copy
    assert study_module.owns(study, mine) and not study_module.owns(study, twin)
    assert study_module.owns(study, study.ask())  # a trial made for its asker: no claim needed
    # The claims are no studies of the user's: a report lists none of them.
    with pytest.raises(study_module.SearchError, match=r"holds \['s'\]"):
        study_module.load_study(storage, "typo")


def test_stale_running_trial_does_not_block_the_others(tmp_path):
    storage = journal_storage(tmp_path / "j.log")
    study = optuna.create_study(storage=storage, study_name="s")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    trial = study.ask()
    trial.set_user_attr("worker", f"{study_module.socket.gethostname()}:{dead.pid}")
    assert study_module.count_running(study) == 1
    study_module.fail_stale_trials(study, 600)
    assert study_module.count_running(study) == 0


def test_multirun_fans_out_and_summarises(tmp_path):
    result = run_cli(
        ["--multirun", "model=bag,cnn", *TINY, "search.n_trials=2", "hydra.sweep.dir=mr"],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "mr" / "summary.csv")
    names = [default_study([*TINY, f"model={m}", "search.n_trials=2"]) for m in ("bag", "cnn")]
    assert summary["study"].tolist() == names
    assert (summary["complete trials"] == 2).all()
    page = (tmp_path / "mr" / "summary.html").read_text()
    assert page.count("<polyline") + page.count("<circle") >= 2


@pytest.mark.slow
def test_workers_through_the_submitit_launcher(tmp_path):
    """The cluster path of the README, with submitit's local executor instead of SLURM."""
    result = run_cli(["--multirun", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=20",
                      "search.worker_index=0,1", *TINY, "search.n_trials=4", "hydra.sweep.dir=mr"],
                     cwd=tmp_path, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    name = default_study([*TINY, "search.n_trials=4"])
    study = optuna.load_study(
        study_name=name, storage=journal_storage(tmp_path / "studies" / name / "journal.log")
    )
    finished = [t for t in study.get_trials() if t.state == State.COMPLETE]
    assert 4 <= len(finished) <= 5
    assert len({t.user_attrs["worker"] for t in finished}) == 2  # two submitit jobs shared it


@pytest.mark.slow
@pytest.mark.skipif(
    not POSTGRES and not os.environ.get("CI"),
    reason="set SWEEP_TEST_POSTGRES_URL (CI starts a server)",
)
def test_search_workers_never_write_or_pass_the_password(tmp_path):
    """search.workers on a real database, the password typed on the command line (the worst
    case): it reaches no file of the run, no output, and no worker's command line."""
    assert POSTGRES, "CI must export SWEEP_TEST_POSTGRES_URL (see .ci/run)"
    password = POSTGRES.split("//", 1)[1].split("@", 1)[0].split(":", 1)[1]
    name = f"pgw-{os.getpid()}-{int(time.time())}"
    args = [sys.executable, str(ROOT / "run_sweep.py"), *TINY, "search.n_trials=4",
            "search.workers=2", f"search.storage={POSTGRES}", f"search.study_name={name}",
            "hydra.run.dir=run"]  # fmt: skip
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    seen = set()
    while proc.poll() is None:  # the workers' command lines, as `ps` shows them to anyone
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="ignore")
                if "worker_index=" in text and name in text:  # this test's workers only
                    seen.add(text)
        time.sleep(0.2)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert seen and all(password not in text for text in seen)
    assert all("${oc.env:SWEEP_STORAGE_URL}" in text for text in seen)
    assert password not in out + err
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.match("worker-1/.hydra/overrides.yaml") for p in written)
    for path in written:
        assert password.encode() not in path.read_bytes(), path
    study = optuna.load_study(study_name=name, storage=POSTGRES)
    assert len(study.get_trials(states=(State.COMPLETE,))) >= 4
