"""Secrets, one way: passwords and tokens of any spelling reach no file of the run, no study
storage and no console line, whether typed on the command line or read from the environment."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY, run_cli

from sweep.common import secrets
from sweep.common.secrets import mask, remember, remember_config, secrets_in
from sweep.report import page

# Every character the issue names: a quote, a double quote, a space, '@' and '%'.
NASTY = "p'a\"s s@w%rd9"
TOKEN = "tok3nXYZ"
SIGNATURE = "s1gnatureABC"


@pytest.fixture(autouse=True)
def _forget():
    secrets.forget()
    yield
    secrets.forget()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://TOKEN123@host/x.csv", "http://***@host/x.csv"),  # a lone user part: a token
        ("postgresql://sweep@host/db", "postgresql://sweep@host/db"),  # a database role
        ("https://u:pw@h/f.csv?token=abc&x=1", "https://u:***@h/f.csv?token=***&x=1"),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=ab&X-Amz-Credential=c%2Fd&X-Amz-Date=1",
         "https://b.s3.amazonaws.com/k?X-Amz-Signature=***&X-Amz-Credential=***&X-Amz-Date=1"),
        ("https://a.blob.core.windows.net/c/f.csv?sv=2020&sig=ab%2Bc", "https://a.blob.core.windows.net/c/f.csv?sv=2020&sig=***"),
        ("gs://b/f.csv?X-Goog-Signature=ff", "gs://b/f.csv?X-Goog-Signature=***"),
        ("https://h/f.csv?api_key=k&key=v&secret=s", "https://h/f.csv?api_key=***&key=***&secret=***"),
        ("hf://datasets/org/name@main/train.csv", "hf://datasets/org/name@main/train.csv"),
        ("u=${oc.env:PGPASSWORD} https://h/f?token=${oc.env:T}", "u=${oc.env:PGPASSWORD} https://h/f?token=${oc.env:T}"),
        ("http://localhost:8000/files/train@v2.csv", "http://localhost:8000/files/train@v2.csv"),  # a port
        ("http://[::1]:8080/a@b", "http://[::1]:8080/a@b"),  # an IPv6 host
    ],
)  # fmt: skip
def test_every_form_of_user_info_and_credential_query_is_masked(text, expected):
    assert mask(text) == expected


def test_a_remembered_password_is_masked_in_every_spelling():
    url = f"postgresql://sweep:{NASTY}@db/x"
    assert secrets_in(url, whole=True) == [NASTY]
    remember(f"search.storage={url}")
    spellings = [url, repr(url), json.dumps(url), url.replace("'", "''"),
                 f"postgresql://sweep:{NASTY.replace('%', '%25')}@db/x"]  # fmt: skip
    for text in spellings:
        assert NASTY not in mask(f"cannot open {text} now"), text
        assert "db/x" in mask(text)  # only the secret goes
    assert mask("an ordinary line") == "an ordinary line"


def test_a_plain_password_is_masked_where_it_stands_not_everywhere():
    """postgresql://postgres:postgres@...: the URL's password is masked, but the word
    "postgres" elsewhere is ordinary text (replacing it everywhere broke the scheme, the log
    and the reproduce command)."""
    url = "postgresql://postgres:postgres@localhost/optuna"
    remember(f"search.storage={url}")
    assert mask(f"storage {url}; postgres is up") == (
        "storage postgresql://postgres:***@localhost/optuna; postgres is up"
    )
    command, note = page.reproduce_command([f"search.storage={mask(url)}"])
    assert command.count("${oc.env:") == 1 and "SWEEP_PASSWORD_2" not in note


def test_secrets_read_from_the_environment_are_remembered_once_resolved(monkeypatch):
    from omegaconf import OmegaConf

    monkeypatch.setenv("SWEEP_TEST_PW", NASTY)
    cfg = OmegaConf.create({"storage": "postgresql://u:${oc.env:SWEEP_TEST_PW}@h/db"})
    remember_config(cfg)
    assert mask(f"storage postgresql://u:{NASTY}@h/db") == "storage postgresql://u:***@h/db"


def test_the_reproduce_command_names_one_variable_per_secret():
    overrides = ["search.storage=postgresql://u:***@h/db",
                 "data.train=https://***@h/t.csv?token=***"]  # fmt: skip
    command, note = page.reproduce_command(overrides)
    parsed = shlex.split(command)
    assert parsed[2] == "search.storage=postgresql://u:${oc.env:SWEEP_PASSWORD}@h/db"
    assert parsed[3] == ("data.train=https://${oc.env:SWEEP_SECRET_DATA_TRAIN}@h/t.csv"
                         "?token=${oc.env:SWEEP_SECRET_DATA_TRAIN_2}")  # fmt: skip
    for name in ("SWEEP_PASSWORD", "SWEEP_SECRET_DATA_TRAIN", "SWEEP_SECRET_DATA_TRAIN_2"):
        assert f"export {name}=" in note


def _leaks(root: Path, secret_values: list[str]) -> list[str]:
    """Files under ``root`` holding any of the secrets, in any plain spelling."""
    found = []
    for path in root.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for value in secret_values:
            for form in {value, json.dumps(value)[1:-1], value.replace("'", "''")}:
                if form.encode() in data:
                    found.append(f"{path}: {value!r}")
    return found


def test_a_data_url_with_credentials_leaks_into_no_file_and_no_console(tmp_path, file_server):
    """A whole run from a CSV at a URL with a user, a password of every awkward character and
    a token query: the run folder (report, CSV, .hydra/, log, exported model), the study
    journal and the caches hold none of them, nor does the console."""
    rows = [{"text": f"{'good fine' if i % 2 else 'bad poor'} words {i}", "label": i % 2}
            for i in range(240)]  # fmt: skip
    file_server.files["/data/train.csv"] = pd.DataFrame(rows).to_csv(index=False).encode()
    host = file_server.url.removeprefix("http://")
    escaped = NASTY.replace("'", "\\'")  # Hydra's quoted value: \' is a quote
    url = f"http://reader:{escaped}@{host}/data/train.csv?token={TOKEN}&X-Amz-Signature={SIGNATURE}"
    tiny = [o for o in TINY if not o.startswith("data.synthetic.")]
    args = [*tiny, "data=files", f"data.train='{url}'", "hydra.run.dir=run",
            "search.storage_dir=studies", "data.cache_dir=cache"]  # fmt: skip
    result = run_cli(args, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "run" / "model").is_dir()
    values = [NASTY, escaped, TOKEN, SIGNATURE]
    assert not [v for v in values if v in output], output[-3000:]
    assert _leaks(tmp_path, values) == []
    page_text = (tmp_path / "run" / "report.html").read_text()
    assert "SWEEP_SECRET_DATA_TRAIN" in page_text  # the reproduce command reads them back


@pytest.mark.parametrize("how", ["typed", "environment"])
def test_a_storage_password_of_every_awkward_character_is_masked(tmp_path, how):
    """An unreachable PostgreSQL server (a closed loopback port): the run stops with one
    masked line, and the password is in no file and no output, typed or from the
    environment."""
    if how == "typed":
        escaped = NASTY.replace("'", "\\'")
        storage, env = f"search.storage='postgresql://sweep:{escaped}@127.0.0.1:9/sweep'", None
    else:
        storage = "search.storage=postgresql://sweep:${oc.env:SWEEP_TEST_PW}@127.0.0.1:9/sweep"
        env = {**os.environ, "SWEEP_TEST_PW": NASTY}
    result = run_cli([*TINY, storage, "hydra.run.dir=run"], cwd=tmp_path, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "cannot open the study storage postgresql://sweep:***@127.0.0.1:9/sweep" in output
    assert NASTY not in output and "s s@w" not in output
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").is_file()
    assert _leaks(tmp_path, [NASTY, NASTY.replace("'", "\\'")]) == []
