"""What the tool reads back is data, never code: a crafted model folder or a tampered study
storage is refused with one clear error, and nothing it names runs (a sentinel file that a
code-carrying value would create is never created)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from conftest import ROOT, TINY, compose_config

import sweep
from sweep import runner
from sweep.common.digest import file_digest
from sweep.search.settings import SearchError
from sweep.search.storage import make_storage
from sweep.ship.export import FILES, ExportError


def _code(sentinel: Path) -> dict:
    """A value that, instantiated by Hydra, opens (creates) ``sentinel``."""
    return {"_target_": "builtins.open", "_args_": [str(sentinel), "w"]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """A real exported model folder (a tiny sweep's recommendation)."""
    root = tmp_path_factory.mktemp("export")
    cfg = compose_config([*TINY, f"search.storage_dir={root / 'studies'}",
                          f"data.cache_dir={root / 'cache'}", "device=cpu"])  # fmt: skip
    runner.run(cfg, root / "out")
    return root / "out" / "model"


def craft(folder: Path, out: Path, change) -> Path:
    """A copy of ``folder`` whose config.json ``change(config)`` altered, its SHA256SUMS
    recomputed as anyone can: the folder passes the integrity check."""
    shutil.copytree(folder, out)
    config = json.loads((out / "config.json").read_text())
    change(config)
    (out / "config.json").write_text(json.dumps(config))
    sums = "".join(f"{file_digest(out / name)}  {name}\n" for name in FILES)
    (out / "SHA256SUMS").write_text(sums)
    return out


def _set(path: str, value):
    def change(config: dict) -> None:
        node, keys = config, path.split(".")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value

    return change


def _both(first, second):
    def change(config: dict) -> None:
        first(config)
        second(config)

    return change


def test_a_model_name_label_loads_by_its_kind(folder, tmp_path):
    """model.name is a free label (a user's model=bag_wide option): a folder whose model_name
    is such a label, its _target_ a kind's own, loads as that kind."""
    labelled = craft(folder, tmp_path / "labelled", _set("model_name", "bag_wide"))
    assert sweep.load(labelled).predict(["a text"]) == sweep.load(folder).predict(["a text"])


def _crafted(sentinel: Path) -> dict[str, tuple]:
    """{case: (change, the error's pattern)}: code-carrying values in several places and forms,
    unknown keys, wrong types, a kind outside the registry."""
    code = _code(sentinel)
    return {
        "nested target in a setting": (_set("model.dropout", code), r"model\.dropout=.* plain value"),
        "target in a list": (_set("model.hidden_dim", [code]), r"model\.hidden_dim=.* plain value"),
        "the model's own target": (_set("model._target_", "builtins.open"), r"_target_='builtins\.open' is not"),
        "target under a new key": (_set("model.extra", code), r"model\.extra is no setting"),
        "kind outside the registry": (_both(_set("model_name", "os"), _set("model._target_", "os.system")),
                                      r"model\._target_='os\.system' is not|model_name='os' is no model kind"),
        "mapping for a number": (_set("embedding_dim", code), r"embedding_dim=.* must be an integer"),
        "unknown top-level key": (_set("hooks", code), r"'hooks' is not a key"),
        "target in the tokenizer": (_set("tokenizer.pattern", code), r"pattern=.* must be a regular"),
        "interpolation": (_set("model.hidden_dim", "${oc.env:HOME}"), r"hidden_dim=.* plain value"),
        "bool for an int": (_set("model.hidden_dim", True), r"hidden_dim=True is not a plain"),
        "target among the figures": (_set("figures.extra", code), r"figures=.* must be a mapping of plain"),
        "wrong row count": (_set("num_embeddings", 5), r"num_embeddings=5 must be vocab_size"),
    }  # fmt: skip


def test_crafted_folders_are_refused_and_run_nothing(folder, tmp_path):
    sentinel = tmp_path / "sentinel"
    for case, (change, pattern) in _crafted(sentinel).items():
        crafted = craft(folder, tmp_path / case.replace(" ", "-"), change)
        with pytest.raises(ExportError, match=pattern):
            sweep.load(crafted)
            pytest.fail(f"{case}: loaded")
        assert not sentinel.exists(), case
    assert sweep.load(folder).predict(["a text"])  # the real folder still loads


def test_predict_refuses_a_crafted_folder_in_a_fresh_process(folder, tmp_path):
    sentinel = tmp_path / "sentinel"
    crafted = craft(folder, tmp_path / "crafted", _set("model.dropout", _code(sentinel)))
    result = subprocess.run(
        [sys.executable, "-m", "sweep.predict", "--model", str(crafted)],
        input="some text\n", capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "model.dropout=" in result.stderr and "plain value" in result.stderr
    assert result.stdout == "" and not sentinel.exists()


def test_damaged_folders_and_inputs_get_one_line(folder, tmp_path):
    """Broken JSON, a vocabulary that is not UTF-8, damaged weights (digests recomputed), and an
    input file that is not UTF-8: one line naming the file, no traceback."""
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "config.json").write_text('{"model": ')
    (broken / "SHA256SUMS").write_text("".join(f"{file_digest(broken / n)}  {n}\n" for n in FILES))
    with pytest.raises(ExportError, match=r"config\.json is not valid JSON"):
        sweep.load(broken)
    weights = tmp_path / "weights"
    shutil.copytree(folder, weights)
    (weights / "model.safetensors").write_bytes(b"\xff" * 64)
    (weights / "SHA256SUMS").write_text(
        "".join(f"{file_digest(weights / n)}  {n}\n" for n in FILES)
    )
    with pytest.raises(ExportError, match=r"model\.safetensors: cannot read the weights"):
        sweep.load(weights)
    latin = tmp_path / "in.txt"
    latin.write_bytes("first line\nd\xe9j\xe0 vu\n".encode("latin-1"))
    for model in (broken, folder):
        args = ["--model", str(model)] + (["--input", str(latin)] if model == folder else [])
        result = subprocess.run([sys.executable, "-m", "sweep.predict", *args], input="x\n",
                                capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        expected = "is not valid JSON" if model == broken else f"{latin} is not UTF-8 text (line 2"
        assert expected in result.stderr


def test_a_tampered_recipe_in_the_storage_is_refused_on_resume(tmp_path):
    """A probed study whose stored recipe someone replaced by a code-carrying mapping: the
    resumed run (which also exports, building the model) stops with a SearchError, runs
    nothing, and the study is left as it was."""
    sentinel = tmp_path / "sentinel"
    overrides = [*TINY, f"search.storage_dir={tmp_path / 'studies'}",
                 f"data.cache_dir={tmp_path / 'cache'}", "device=cpu", "search.n_trials=2",
                 "model.hidden_dim=auto", "train.recipe.hidden_dim=[0,16]"]  # fmt: skip
    cfg = compose_config(overrides)
    runner.run(cfg, tmp_path / "first")
    storage = make_storage(cfg.search)
    claim = optuna.load_study(study_name=f"{cfg.search.study_name}~recipe", storage=storage)
    stored = copy.deepcopy(claim.user_attrs["recipe"])
    assert set(stored["choice"]) == {"model.hidden_dim"}
    for value in (_code(sentinel), "${oc.env:HOME}", 7):
        stored["choice"]["model.hidden_dim"] = value
        claim.set_user_attr("recipe", stored)
        with pytest.raises(
            SearchError, match=r"recipe stored in study .*\(model\.hidden_dim=.* is not in train"
        ):
            runner.run(compose_config(overrides), tmp_path / "again")
        assert not sentinel.exists()


def test_a_tampered_trial_value_never_reaches_the_config(tmp_path):
    """A stored trial's extra-axis value replaced by a mapping (the seed repeats and the export
    read trials' values back): refused by the space, nothing built."""
    from sweep.data.prepared import PreparedData
    from sweep.trial import TrialRunner, recipe

    cfg = recipe.fixed(compose_config([
        *TINY, "device=cpu", f"data.cache_dir={tmp_path / 'cache'}",
        "+search.space.dropout={type: categorical, choices: [0.0, 0.5], key: model.dropout}",
    ]))  # fmt: skip
    data = PreparedData.load(cfg.data, cfg.seed, torch.device("cpu"))
    trial = TrialRunner(cfg, data)
    sentinel = tmp_path / "sentinel"
    params = {"embedding_dim": 4, "vocab_size": 50, "dropout": _code(sentinel)}
    with pytest.raises(SearchError, match=r"search\.space\.dropout=.* is not a value this axis"):
        trial.train(params)
    assert not sentinel.exists()
    assert trial.train({**params, "dropout": 0.5})["val_accuracy"] >= 0
