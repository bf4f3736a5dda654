"""Shared fixtures: compose the project's configs with tiny, fast data and temp folders."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from sweep.naming import register_resolvers
from sweep.trial import lone as trial_module

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"

# A corpus small enough for a trial to take a fraction of a second.
TINY = [
    "data.synthetic.num_docs=400",
    "data.synthetic.vocab_words=2000",
    "data.synthetic.cue_min_rank=50",
    "data.synthetic.cue_words=20",
    "train.epochs=2",
    "train.patience=1",
    "search.n_trials=3",
    "search.space.embedding_dim.high=32",
    "search.space.vocab_size.low=20",
    "report.repeats=0",
    # The training recipe fixed (no probe): the old defaults. tests/test_recipe.py probes.
    "train.lr=0.01",
    "data.tokenizer.word_ngrams=1",
    "train.recipe.hidden_dim=[64]",
    # Trainings one after another in this process, where the tests' spies count them; the
    # tests of processes=2 (side by side in forked children) say so.
    "processes=1",
]


def compose_config(overrides: list[str] | tuple[str, ...] = ()):
    """The composed primary config, as ``run_sweep.py`` would see it (without hydra keys)."""
    register_resolvers()  # as run_sweep.py does: the configs' ${setup_digest:} and ${pid:}
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="sweep", overrides=list(overrides))


def fixed_config(overrides: list[str] | tuple[str, ...] = ()):
    """``compose_config`` with the training recipe's ``auto`` keys at their first choices (the
    old defaults), as a sweep sets them when nothing is probed: for tests that build a model or
    load data from the config themselves."""
    from sweep.trial import recipe

    return recipe.fixed(compose_config(overrides))


def assert_refused(base: list[str], bad: dict[str, str], error: type, out: Path) -> None:
    """Each override of ``bad`` added to ``base`` stops the sweep with ``error``, its message
    matching the pattern ``bad`` gives it (the key named, and what to do)."""
    from sweep import runner

    for override, message in bad.items():
        with pytest.raises(error, match=message):
            runner.run(compose_config([*base, override]), out)


def assert_ships_as_measured(cfg, result, folder: Path):
    """The exported folder's files are the recommended trial's ``file_bytes`` at its shipped
    precision, and the loaded folder predicts the test split with the accuracy the sweep
    measured (text read as in training). Returns the loaded predictor."""
    import numpy as np

    import sweep
    from sweep.data.corpus import load_corpus

    rec = result.recommended
    on_disk = sum((folder / name).stat().st_size for name in ("model.safetensors", "vocab.txt"))
    assert on_disk == rec[f"file_bytes_{rec['ship_precision']}"]
    predictor = sweep.load(folder)
    corpus = load_corpus(cfg.data, cfg.seed)
    predicted = predictor.predict(corpus.texts["test"])
    truth = [corpus.label_names[t] for t in corpus.labels["test"]]
    accuracy = 100.0 * np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    assert accuracy == pytest.approx(rec["ship_test_accuracy"])
    return predictor


def default_study(overrides: list[str] | tuple[str, ...] = TINY) -> str:
    """The default study name (``<data>-<model>-<search>-<setup digest>``) these overrides get."""
    return str(compose_config(overrides).search.study_name)


@pytest.fixture
def tiny_overrides(tmp_path: Path) -> list[str]:
    """Overrides for a tiny sweep whose storage and cache live in this test's temp folder."""
    return [
        *TINY,
        f"search.storage_dir={tmp_path / 'studies'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "device=cpu",
    ]


@pytest.fixture
def tiny_cfg(tiny_overrides):
    return compose_config(tiny_overrides)


def watch_study(journal: Path, name: str, ready, timeout: float = 240):
    """Poll a running sweep's journal study until ``ready(study)`` is true; the study then, or
    None at the timeout (a kill -9 test kills the sweep at that moment)."""
    import time

    import optuna

    from sweep.search.storage import journal_storage

    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        if not journal.exists():
            continue
        try:
            study = optuna.load_study(study_name=name, storage=journal_storage(journal))
        except KeyError:  # the journal exists, its study record is not written yet
            continue
        if ready(study):
            return study
    return None


def run_cli(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None):
    """Run ``run_sweep.py`` as a user would, in ``cwd`` (``env``: its environment, default
    this one's); return the CompletedProcess."""
    import subprocess

    return subprocess.run(
        [sys.executable, str(ROOT / "run_sweep.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture
def count_fits(monkeypatch):
    """Count calls of the training function (the only place a model is trained)."""
    calls = []
    real_fit = trial_module.fit

    def counting_fit(*args, **kwargs):
        calls.append(kwargs)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(trial_module, "fit", counting_fit)
    return calls


class FileServer:
    """A loopback HTTP server for download tests: serves ``files``, honours Range requests, and
    can drop the connection part-way (``drop_after[path] = [bytes, ...]``, one entry per
    request to break) or ignore Range (``no_range``). ``requests`` logs (path, Range header)."""

    def __init__(self):
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.drop_after: dict[str, list[int]] = {}
        self.no_range = False
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                data = server.files.get(self.path.split("?", 1)[0])  # a token query is no path
                if data is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and not server.no_range:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                drops = server.drop_after.get(self.path)
                if drops:
                    self.wfile.write(body[: drops.pop(0)])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def file_server():
    server = FileServer()
    yield server
    server.close()
