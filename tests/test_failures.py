"""Nothing lost, nothing leaked: torn journals, secrets, study names, full disks, messy data,
config mistakes, the reproduce command, concurrent seed repeats, run folders."""

from __future__ import annotations

import logging
import shlex
import sqlite3
import subprocess
import sys

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import ROOT, TINY, compose_config, run_cli

from sweep import parallel, runner
from sweep.common import atomic, forked
from sweep.common.secrets import install_log_masking, mask
from sweep.config import ConfigError, check_config
from sweep.data import corpus, vocab
from sweep.data import prepared as prepared_module
from sweep.data.corpus import DataError
from sweep.report import build as report
from sweep.report import page
from sweep.search import loop as trials
from sweep.search import study as study_module
from sweep.search.settings import SearchError
from sweep.search.space import SearchSpace
from sweep.search.storage import StorageError, journal_storage, make_storage
from sweep.trial import lone as trial_module

State = optuna.trial.TrialState
PASSWORD = "s3cr/et:p@ss"  # '/', ':' and '@' all inside one password


# 1. A torn last journal record (disk full, crash mid-append) is repaired, not fatal.


def test_torn_journal_tail_is_dropped_and_the_study_goes_on(tiny_overrides, tmp_path, caplog):
    cfg = compose_config(tiny_overrides)
    # The first run is a process of its own that ends, as a crashed one would.
    first = run_cli([*TINY, "hydra.run.dir=first"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    name = cfg.search.study_name
    journal = tmp_path / "studies" / name / "journal.log"
    data = journal.read_bytes()
    # About 60% of the file, 20 bytes into a record (every record is longer than that).
    cut = data.rfind(b"\n", 0, int(len(data) * 0.6)) + 1 + 20
    kept = data[: data[:cut].rfind(b"\n") + 1]
    assert len(kept) == cut - 20 and data[cut - 1 : cut] != b"\n"
    journal.write_bytes(data[:cut])
    (tmp_path / "kept.log").write_bytes(kept)
    kept_study = optuna.load_study(study_name=name, storage=journal_storage(tmp_path / "kept.log"))
    survived = {t.number: t.values for t in kept_study.get_trials(states=(State.COMPLETE,))}

    with caplog.at_level(logging.WARNING, logger="sweep.search.storage"):
        runner.run(cfg, tmp_path / "second")
    runner.run(compose_config([*tiny_overrides, "search.n_trials=4"]), tmp_path / "third")
    assert f"dropped its {cut - len(kept)} bytes" in caplog.text and str(journal) in caplog.text
    backups = list(journal.parent.glob("journal.log.torn-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == data[:cut]
    assert journal.read_bytes().startswith(kept)  # every complete record kept as it was
    study = optuna.load_study(study_name=name, storage=journal_storage(journal))
    after = {t.number: t.values for t in study.get_trials(states=(State.COMPLETE,))}
    assert len(after) == 4  # the cut trial was failed as interrupted and replaced
    assert all(after[number] == values for number, values in survived.items())
    rebuilt = report.rebuild(str(journal), name, tmp_path / "rebuilt")
    assert len(rebuilt) == len(study.trials)


def test_a_damaged_journal_record_stops_with_the_file_and_line(tmp_path):
    journal = tmp_path / "journal.log"
    journal.write_text('{"op_code": 0}\nnot json at all\n{"op_code": 1}\n')
    with pytest.raises(StorageError, match=r"journal\.log'?: line 2 is not a journal record"):
        journal_storage(journal)


# 2. No secret reaches a file, a log line, argv, an error message or the page.


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:s3cr/et:p@ss@db:5432/x", "postgresql://u:***@db:5432/x"),
        ("postgresql://u:pw@db/x?sslmode=require", "postgresql://u:***@db/x?sslmode=require"),
        ("mysql://db/x?user=u&password=pw&x=1", "mysql://db/x?user=u&password=***&x=1"),
        ("search.storage=postgresql://u:${oc.env:PG}@db/x", "search.storage=postgresql://u:${oc.env:PG}@db/x"),
        ("sqlite:///a.db", "sqlite:///a.db"),
        ("two: a://u:x@h b://v:y@k", "two: a://u:***@h b://v:***@k"),
    ],
)  # fmt: skip
def test_mask_hides_any_password(url, expected):
    assert mask(url) == expected


def test_log_records_and_tracebacks_are_masked():
    import io

    stream = io.StringIO()
    logger = logging.getLogger("test-masking")
    logger.addHandler(logging.StreamHandler(stream))
    factory = logging.getLogRecordFactory()
    try:
        install_log_masking()
        install_log_masking()  # idempotent
        try:
            raise RuntimeError(f"cannot connect to postgresql://u:{PASSWORD}@h/db")
        except RuntimeError:
            logger.exception("storage %s down", f"postgresql://u:{PASSWORD}@h/db")
    finally:
        logging.setLogRecordFactory(factory)
    text = stream.getvalue()
    assert PASSWORD not in text and text.count("postgresql://u:***@h/db") >= 2
    assert "Traceback" in text


def test_workers_get_the_storage_url_through_their_environment(tmp_path):
    url = f"postgresql://u:{PASSWORD}@h/db"
    commands = parallel.worker_commands(
        ["model=bag", f"search.storage={url}"], 2, tmp_path, [], storage=url
    )
    for argv, env in commands:
        assert not any(PASSWORD in a for a in argv)
        assert "search.storage=${oc.env:SWEEP_STORAGE_URL}" in argv
        assert env["SWEEP_STORAGE_URL"] == url


def test_unreachable_database_is_one_masked_line(tmp_path):
    # A closed port on loopback: the server is "down". The password is typed on the command
    # line, the worst case: it must still reach no output and no file.
    url = f"postgresql://sweep:{PASSWORD}@127.0.0.1:9/sweep"
    result = run_cli([*TINY, f"search.storage={url}", "hydra.run.dir=run"], cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "cannot open the study storage postgresql://sweep:***@127.0.0.1:9/sweep" in output
    assert "Traceback" not in output and "Error executing job" not in output
    assert PASSWORD not in output
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "overrides.yaml" for p in written)
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes(), path


def test_page_and_stored_context_mask_the_storage(tiny_overrides, tmp_path):
    # The page shows the run's overrides and the stored context keeps them: both masked.
    overrides = [*tiny_overrides, f"+note=postgresql://u:{PASSWORD}@h/db"]
    cfg = compose_config([*tiny_overrides])
    runner.run(cfg, tmp_path / "out", overrides)
    html_text = (tmp_path / "out" / "report.html").read_text()
    assert PASSWORD not in html_text
    # runnable as printed: the secret of +note is read from its own variable
    assert "postgresql://u:${oc.env:SWEEP_SECRET_NOTE}@h/db" in html_text
    assert "export SWEEP_SECRET_NOTE=" in html_text
    study = study_module.load_study(make_storage(cfg.search), cfg.search.study_name)
    context = str(study.user_attrs["report_context"])
    assert PASSWORD not in context and "postgresql://u:***@h/db" in context


# 3. Study names are one folder name.


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/b", "..", ".hidden", "a b"])
def test_study_names_that_are_paths_are_refused(name):
    cfg = compose_config([f"search.study_name='{name}'"])
    with pytest.raises(SearchError, match=r"search\.study_name=.* is not allowed"):
        check_config(cfg)


# 4. A full disk: the cache is skipped, a report write stops with one line after the storage.


def test_cache_that_cannot_be_written_is_skipped(tiny_cfg, tmp_path, monkeypatch, caplog):
    real_save = vocab.torch.save

    def full_disk(
        obj, path, *args, **kwargs
    ):  # the cache's file only: it is full when we get there
        if "encoded-" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(vocab.torch, "save", full_disk)
    with caplog.at_level(logging.WARNING, logger="sweep.data.vocab"):
        result = runner.run(tiny_cfg, tmp_path / "out")
    assert (result.table["state"] == "COMPLETE").sum() == 3
    assert "could not write the encoded-corpus cache" in caplog.text
    assert not list((tmp_path / "cache").glob("*.pt")) and not list((tmp_path / "cache").glob(".*"))


def test_report_that_cannot_be_written_stops_after_the_storage_has_the_trial(
    tiny_cfg, tmp_path, monkeypatch
):
    real = atomic.replacing

    def no_space(path, suffix=".tmp"):
        if path.name == "report.html":
            raise OSError(28, "No space left on device")
        return real(path, suffix)

    monkeypatch.setattr(atomic, "replacing", no_space)
    with pytest.raises(atomic.WriteError) as caught:
        runner.run(tiny_cfg, tmp_path / "out")
    message = str(caught.value)
    assert "No space left on device" in message and "MB free in" in message
    assert str(tmp_path / "out") in message and "\n" not in message
    study = study_module.load_study(make_storage(tiny_cfg.search), tiny_cfg.search.study_name)
    assert len(study.get_trials(states=(State.COMPLETE,))) == 1  # stored before the report


# 5. Messy data.


def write_csv(path, rows, header="text,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def files_cfg(train, **extra):
    return compose_config(
        ["data=files", f"data.train={train}", "data.cache_dir=null"]
        + [f"data.{k}={v}" for k, v in extra.items()]
    )


def sample_rows(n=60):
    rng = np.random.default_rng(0)
    return [f"word{rng.integers(50)} cue{i % 2} text,{'ab'[i % 2]}" for i in range(n)]


def test_nan_and_null_labels_are_missing_not_classes(tmp_path, caplog):
    rows = [*sample_rows(), "orphan text,NaN", "another,null", "third,N/A"]
    cfg = files_cfg(write_csv(tmp_path / "t.csv", rows))
    with caplog.at_level(logging.WARNING):
        loaded = corpus.load_corpus(cfg.data, 0)
    assert loaded.label_names == ["a", "b"]
    assert loaded.stats["dropped_empty"]["train"] == 3
    assert "dropped 3 rows" in caplog.text


def test_bytes_columns_are_decoded_with_a_warning(tmp_path, caplog):
    texts = [r.rsplit(",", 1)[0] for r in sample_rows()]
    labels = [r.rsplit(",", 1)[1] for r in sample_rows()]
    path = tmp_path / "t.parquet"
    pd.DataFrame({"text": [t.encode() for t in texts], "label": labels}).to_parquet(path)
    with caplog.at_level(logging.WARNING):
        loaded = corpus.load_corpus(files_cfg(path).data, 0)
    every = [t for s in corpus.SPLITS for t in loaded.texts[s]]
    assert not any(t.startswith("b'") for t in every) and set(every) <= set(texts)
    assert "column 'text' (data.train) holds bytes values" in caplog.text


def test_numbers_as_texts_are_warned_about(tmp_path, caplog):
    rows = [f"{i % 7},{'ab'[i % 2]}" for i in range(60)]
    with caplog.at_level(logging.WARNING):
        corpus.load_corpus(files_cfg(write_csv(tmp_path / "t.csv", rows)).data, 0)
    assert "texts are numbers" in caplog.text and "check data.text_column" in caplog.text


def test_a_folder_given_as_a_file_is_named_as_a_folder(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match=r"data\.train: .*dir' is a folder; pass one file"):
        corpus.load_corpus(files_cfg(tmp_path / "dir").data, 0)


def test_a_label_column_of_unique_values_says_so(tmp_path):
    rows = [f"text number {i},id{i}" for i in range(50)]
    with pytest.raises(DataError, match=r"every label occurs once"):
        corpus.load_corpus(files_cfg(write_csv(tmp_path / "t.csv", rows)).data, 0)


def test_a_huge_headerless_line_is_cut_in_the_message(tmp_path):
    long_line = "word " * 200_000 + ",a"
    path = write_csv(tmp_path / "t.csv", sample_rows(), header=long_line)
    with pytest.raises(DataError) as caught:
        corpus.load_corpus(files_cfg(path).data, 0)
    assert "is not a column" in str(caught.value) and len(str(caught.value)) < 1000


# 6. Config mistakes stop before any data is read, with the key; exit code 2.


@pytest.mark.parametrize("override", ["train.lr=inf", "train.lr=nan", "report.tolerance=-inf"])
def test_non_finite_numbers_are_refused(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].replace(".", r"\.")):
        check_config(compose_config([override]))


def test_an_extra_search_key_must_name_a_config_key(monkeypatch):
    cfg = compose_config(["+search.space.b={type:int,low:16,high:256,key:train.batchsize}"])
    monkeypatch.setattr(prepared_module, "load_corpus", lambda *a: pytest.fail("data was read"))
    with pytest.raises(
        ConfigError,
        match=r"search\.space\.b\.key='train\.batchsize'.*did you mean train\.batch_size",
    ):
        runner.run(cfg, "unused")


def test_sqlite_in_a_missing_folder_and_a_corrupt_sqlite_file(tmp_path):
    missing = compose_config([f"search.storage=sqlite:///{tmp_path}/nope/s.db"])
    with pytest.raises(StorageError, match=r"the folder .*nope' does not exist"):
        make_storage(missing.search)
    corrupt = tmp_path / "bad.db"
    corrupt.write_bytes(b"this is no database" * 100)
    cfg = compose_config([f"search.storage=sqlite:///{corrupt}"])

    with pytest.raises(StorageError, match=r"cannot open the study storage sqlite:///.*bad\.db"):
        study_module.open_study(cfg.search, 0, "sig", SearchSpace(cfg.search.space, 1000))


def test_report_rebuild_never_creates_a_storage(tmp_path):
    for storage in (str(tmp_path / "typo.log"), f"sqlite:///{tmp_path}/typo.db"):
        result = subprocess.run(
            [sys.executable, "-m", "sweep.report", "--storage", storage, "--study", "s",
             "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert "typo" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_hydra_errors_exit_2(tmp_path):
    for args in (["train.epoch=1"], ["model=nope"], ["train.lr=[oops"]):
        result = run_cli(args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr[-2000:])


# 7. The reproduce command runs as printed.


def test_reproduce_command_is_shell_quoted_and_leaves_secrets_out():
    overrides = ["data=files", "data.train=my data $(rm -rf x).csv", "data.name=café",
                 "search.storage=postgresql://u:***@h/db"]  # fmt: skip
    command, note = page.reproduce_command(overrides)
    parsed = shlex.split(command)
    assert parsed[:2] == ["python", "run_sweep.py"]
    assert parsed[2:4] == overrides[:2] and parsed[4] == "data.name=café"
    assert parsed[5] == "search.storage=postgresql://u:${oc.env:SWEEP_PASSWORD}@h/db"
    assert "export SWEEP_PASSWORD=... (the secret of search.storage)" in note
    assert page.reproduce_command(overrides[:1]) == ("python run_sweep.py data=files", "")


# 8. Concurrent runs never repeat each other's seed repeats; run folders are per process.


def test_seed_repeat_claims_are_exclusive_and_dead_holders_are_taken_over(tmp_path):
    storage = journal_storage(tmp_path / "j.log")
    study = optuna.create_study(storage=storage, study_name="s")
    claim = study_module.claim_repeat(study, 3, 1, stale_after_s=600)
    assert claim is not None
    assert (
        study_module.claim_repeat(study, 3, 1, stale_after_s=600) is None
    )  # held by a live process
    calls = []
    ran = trials.repeat_trials(study, [3], [1], lambda *a, **k: calls.append(a), 600)
    assert ran == 0 and calls == []
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    claim.set_user_attr("worker", f"{study_module.socket.gethostname()}:{dead.pid}")
    assert study_module.claim_repeat(study, 3, 1, stale_after_s=600) is not None  # taken over
    study_module.release_repeat(study, 3, 1)
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert names == ["s"]


def test_run_folders_are_unique_per_process(tmp_path):
    # Two runs started in the same second (plan mode: no training) get a folder each.
    argv = [sys.executable, str(ROOT / "run_sweep.py"), *TINY, "plan=true", "plan_points=2"]
    procs = [subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for _ in range(2)]  # fmt: skip
    assert [proc.wait(timeout=300) for proc in procs] == [0, 0]
    folders = list((tmp_path / "outputs").glob("*/*"))
    assert len(folders) == 2 and all((f / "plan.csv").is_file() for f in folders)


# 9. Default study names follow the setup (tests/test_runner.py runs both sides of it).


def test_multirun_over_a_training_key_gives_each_job_its_own_study():
    names = {compose_config([f"train.lr={lr}"]).search.study_name for lr in (0.001, 0.01)}
    assert len(names) == 2
    same = {compose_config([f"search.n_trials={n}"]).search.study_name for n in (5, 50)}
    assert len(same) == 1


def test_sqlite_storage_file_is_a_real_database(tiny_overrides, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    runner.run(compose_config([*tiny_overrides, f"search.storage={url}"]), tmp_path / "out")
    with sqlite3.connect(tmp_path / "s.db") as db:
        assert db.execute("select count(*) from trials").fetchone()[0] == 3


# 10. Threads: a worker uses the cores it was given and no more.


def test_thread_count_follows_the_setting_the_environment_and_the_cores(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert compose_config([]).threads == 1  # the default: one thread per trial process
    assert runner.thread_count(3) == 3
    assert runner.thread_count(None) == forked.usable_cores()
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert runner.thread_count(None) == 5 and runner.thread_count(2) == 2


def test_workers_share_the_cores_when_threads_is_null(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    commands = parallel.worker_commands(["threads=null"], 4, tmp_path, [], threads=None)
    assert all("threads=2" in argv and "threads=null" not in argv for argv, _ in commands)
    commands = parallel.worker_commands([], 4, tmp_path, [], threads=3)
    assert all("threads=3" in argv for argv, _ in commands)
    # the workers are the side by side: each trains one thing at a time, whatever was asked
    commands = parallel.worker_commands(["processes=auto"], 4, tmp_path, [], threads=1)
    assert all("processes=1" in argv and "processes=auto" not in argv for argv, _ in commands)


def test_a_missing_optional_reader_is_named(tmp_path, monkeypatch):
    import builtins

    path = write_csv(tmp_path / "t.csv", sample_rows())
    real_import = builtins.__import__

    def no_zstandard(name, *args, **kwargs):
        if name == "zstandard":
            raise ImportError("Missing optional dependency 'zstandard'.")
        return real_import(name, *args, **kwargs)

    zst = tmp_path / "t.csv.zst"
    zst.write_bytes(b"\x28\xb5\x2f\xfd" + path.read_bytes())  # a zstd magic number, then junk
    monkeypatch.setattr(builtins, "__import__", no_zstandard)
    with pytest.raises(DataError, match=r"needs a package that is not installed.*zstandard"):
        corpus.load_corpus(files_cfg(zst).data, 0)


def test_a_failed_trial_reason_is_stored_masked(tiny_cfg, tmp_path, monkeypatch):
    real_fit, calls = trial_module.fit, []

    def leaky_fit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError(f"lost postgresql://u:{PASSWORD}@db/x mid-trial")
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(trial_module, "fit", leaky_fit)
    runner.run(tiny_cfg, tmp_path / "out")
    table = pd.read_csv(tmp_path / "out" / "trials.csv")
    assert table.loc[0, "fail_reason"] == "RuntimeError: lost postgresql://u:***@db/x mid-trial"
    for path in (p for p in (tmp_path / "out").rglob("*") if p.is_file()):
        assert PASSWORD.encode() not in path.read_bytes(), path
