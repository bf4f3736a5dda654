"""The model you ship: the recommended trial as a folder that predicts on its own.

At the end of a sweep (``report.export=recommended``, the default; ``front`` for every front
trial; ``none``) the trial's best weights, kept when it trained (``KeptStates``), are written as
below. A trial whose weights were not kept (trained by an older version, or on another machine
of a database study) is re-created by training it again with its seed and settings: on a CPU the
same weights; on a GPU nondeterministic kernels may differ slightly, and the log says when the
validation accuracy does.

    model/                  (front: models/trial-<n>/)
      model.safetensors     the weights at the trial's ship_precision (sweep.ship.quantize: fp32,
                            fp16, or int8 / int4 row-wise), safetensors layout (sweep.ship.tensorfile)
      vocab.txt             the words the model has ids for, one a line, in id order
      config.json           model config and sizes, precision, tokenizer settings, max_length,
                            cutoff, hash buckets, label names, and the trial's figures
      SHA256SUMS            the digest of each file above

The weights and vocabulary are the trial's ``file_bytes_<precision>``, to the byte.
``report.prune_rows=N`` keeps only N word rows (``report.prune_by``: the largest norm after
training, as fastText's quantization does, or the most frequent) and measures the pruned model.

``sweep.load(folder)`` checks the digests and returns a ``Predictor`` whose ``predict(texts)``
and ``predict_proba(texts)`` tokenize exactly as training did; ``python -m sweep.predict``
prints labels.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf

from sweep.common.atomic import WriteError, free_space, replacing, write_atomic
from sweep.common.digest import file_digest, json_digest
from sweep.data.prepared import SplitTensors
from sweep.models.fit import evaluate
from sweep.models.frontends import WORD, left_out
from sweep.models.kinds import NOT_MODEL_ARGS, SIZES, build_kind, build_model, kind_of
from sweep.ship import manifest, quantize, tensorfile
from sweep.ship.manifest import ExportError

log = logging.getLogger(__name__)

# The weights, the front end's files (the word table's vocab.txt: sweep.models.frontends.word),
# config.json: in the order written and listed in SHA256SUMS.
FILES = ("model.safetensors", *WORD.files, "config.json")
# A folder exported before precisions existed: fp32 torch.save state dict, JSON word list.
LEGACY_FILES = ("model.pt", "config.json", "vocab.json")
# model.* keys the trial sets (sizes) or that are no constructor arguments.
_SET_PER_TRIAL = (*NOT_MODEL_ARGS, *SIZES)
DIGESTS = "SHA256SUMS"


class KeptStates:
    """The best weights of the trials a sweep may export, kept beside the study storage
    (``<storage_dir>/<study>/states/``), so that export never trains again: each trial's after
    it trained (seed repeats are not kept), dropped once the trial is dominated (it can never
    return to the front). Workers of one machine share the folder; a resumed run finds it."""

    def __init__(self, folder: Path, seed: int):
        self.folder, self.seed = Path(folder), seed

    def path(self, params: dict[str, Any]) -> Path:
        return self.folder / f"{json_digest({k: _plain(v) for k, v in params.items()}, 16)}.pt"

    def save(self, params: dict[str, Any], seed: int, model: torch.nn.Module) -> None:
        if seed != self.seed:
            return
        state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with replacing(self.path(params)) as tmp:
                torch.save(state, tmp)
        except (OSError, RuntimeError) as error:  # a full disk: torch says RuntimeError
            # Keeping weights only spares the export a retraining: never fail the trial for it.
            log.warning("could not keep the trained weights in %s (%s); the export will train "
                        "the trial again", self.folder, str(error).strip()[:200])  # fmt: skip

    def load(self, params: dict[str, Any]) -> dict | None:
        path = self.path(params)
        if not path.is_file():
            return None
        try:  # tensors only: weights_only refuses a pickle that names code
            state = torch.load(path, weights_only=True, map_location="cpu")
            if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor)
                                                    for v in state.values())):  # fmt: skip
                raise ValueError("not a state dict of tensors")
            return state
        except OSError as error:  # unreadable now (permissions, a network file): kept
            log.warning("export: cannot read the kept weights %s now (%s); the trial is "
                        "trained again, the file kept", path, error)  # fmt: skip
            return None
        except Exception as error:  # a damaged file (each reader has its own error): retrain
            self.forget(path, error)
            return None

    def forget(self, path: Path, error: BaseException) -> None:
        """Drop damaged kept weights (the trial is trained again instead), with a warning."""
        log.warning("export: the kept weights %s cannot be used (%s: %s); the trial is trained "
                    "again", path, type(error).__name__, str(error).strip()[:200])  # fmt: skip
        path.unlink(missing_ok=True)

    def drop(self, params_list) -> None:
        """Forget the weights of these (dominated) trials."""
        for params in params_list:
            self.path(params).unlink(missing_ok=True)


def trained_model(trial_runner, params, figures, kept: KeptStates | None, setup) -> torch.nn.Module:
    """The trial's trained model: its kept weights, or (none kept: an older run, another
    machine) re-created by training it again with its seed, with a note when it differs.
    ``setup``: the trial's (config, sizes) from ``TrialRunner.setup``."""
    trial_cfg, sizes = setup
    state = kept.load(params) if kept is not None else None
    if state is not None:
        model = build_model(trial_cfg.model, sizes.num_embeddings, sizes.embedding_dim,
                            trial_runner.data.num_classes)  # fmt: skip
        try:
            model.load_state_dict(state)
            return model
        except RuntimeError as error:  # weights of another shape under this trial's name
            kept.forget(kept.path(params), error)
    trained: list[torch.nn.Module] = []
    again = trial_runner.train(params, wrap_model=lambda m: trained.append(m) or m)
    stored = figures.get("val_accuracy")
    log.info("export: trial %s re-created (no kept weights)", figures.get("trial"))
    if stored is not None and abs(float(again["val_accuracy"]) - float(stored)) > 1e-9:
        log.warning(
            "export: trial %s re-created with validation accuracy %.2f, the sweep measured "
            "%.2f (nondeterministic kernels); the exported weights are the re-created ones",
            figures.get("trial"), again["val_accuracy"], stored,
        )  # fmt: skip
    return trained[0]


def export_trial(
    trial_runner, params, figures, folder: Path, kept: KeptStates | None = None
) -> Path:
    """Write the trial's folder (its kept weights, or re-created: ``trained_model``) at its
    ``ship_precision`` (fp32 when the report chose none), pruned as ``report.prune_rows`` says."""
    trial_cfg, sizes = setup = trial_runner.setup(params)
    model = trained_model(trial_runner, params, figures, kept, setup).cpu()
    data, report_cfg = trial_runner.data, trial_runner.cfg.report
    frontend = trial_runner.frontend
    precision = figures.get("ship_precision")
    precision = precision if isinstance(precision, str) and precision else "fp32"
    words = frontend.vocabulary(data, sizes)
    vocab_size, figures = sizes.vocab_size, dict(figures)
    if report_cfg.get("prune_rows") is not None:
        words, vocab_size, figures["pruned"] = prune(trial_runner, setup, model, precision)
    model_cfg = OmegaConf.to_container(trial_cfg.model, resolve=True)
    others, _ = left_out(frontend)  # other kinds' options; a word folder's config as before kinds
    config = {
        "model": {k: v for k, v in model_cfg.items() if k not in (*_SET_PER_TRIAL, *others)},
        "model_name": kind_of(model).name,  # the kind (model.name is a free label)
        "precision": precision,
        # the front end's keys: kind, sizes, cutoff, tokenizer settings (manifest.top's order)
        **frontend.export_config(sizes, trial_runner.cfg.data, vocab_size),
        "num_classes": data.num_classes,
        "labels": list(data.encoded.label_names),
        "params": {k: _plain(v) for k, v in params.items()},
        "figures": {k: _plain(v) for k, v in figures.items()},
    }
    try:
        files = frontend.files_of(words)  # vocab.txt: refused if a word holds a newline
    except ValueError as error:
        raise ExportError(str(error)) from None
    write_folder(Path(folder), model, precision, files, config)
    return Path(folder)


def write_folder(folder: Path, model, precision: str, files: dict[str, str], config: dict) -> None:
    """The files of an exported model (``files``: the front end's, by name), each written
    whole; SHA256SUMS last."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with replacing(folder / "model.safetensors") as tmp:
            tensorfile.write(tmp, *quantize.state_at(model, precision))
    except OSError as error:
        raise WriteError(
            f"cannot write the exported model {str(folder / 'model.safetensors')!r} "
            f"({str(error).strip()[:200]}); {free_space(folder)} free there. The study storage "
            "keeps every trial: free some space and run the same command again"
        ) from None
    for name, text in files.items():
        write_atomic(folder / name, text)
    write_atomic(folder / "config.json", json.dumps(config, indent=1))
    sums = "".join(f"{file_digest(folder / name)}  {name}\n" for name in FILES)
    write_atomic(folder / DIGESTS, sums)  # last: a folder without it was never finished


def prune(trial_runner, setup, model, precision: str) -> tuple[list[str], int, dict]:
    """Keep ``report.prune_rows`` rows of the table (``report.prune_by``; the front end's
    ``prune``), in place. Returns the kept vocabulary, its size and the pruned model's accuracy
    at ``precision``."""
    trial_cfg, sizes = setup
    report_cfg, frontend = trial_runner.cfg.report, trial_runner.frontend
    by = report_cfg.get("prune_by", "norm")
    try:
        index, remap = frontend.prune(model, sizes, int(report_cfg.prune_rows), by)
    except ValueError as error:  # a kind or option that cannot prune (hashed rows)
        raise ExportError(str(error)) from None
    count = min(int(report_cfg.prune_rows), sizes.vocab_size)
    stored = quantize.at_precision(model, precision)
    measured = {"rows": count, "by": by, "precision": precision}
    for column, view in trial_runner.eval_views(sizes).items():
        view = SplitTensors(remap[view.ids.cpu()], view.labels.cpu(), view.lengths)
        accuracy, _ = evaluate(stored, view, trial_cfg.train.eval_batch_size)
        measured[f"{column}_accuracy"] = accuracy
    words = frontend.vocabulary(trial_runner.data, sizes)
    return [words[i] for i in index.tolist()], count, measured


def _plain(value):
    """A JSON value: numpy and torch scalars as Python numbers, NaN as null."""
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


class Predictor:
    """An exported model: ``predict(texts)`` gives label names, ``predict_proba(texts)`` the
    class probabilities (columns in ``labels`` order)."""

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], words: list[str]):
        self.model = model.eval()
        self.config = config
        self.labels: list[str] = config["labels"]
        # config is checked (sweep.ship.manifest): its front end's settings are plain values
        self._encode = manifest.frontend_in(config).encoder(config, words)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """Ids as training made them (the front end's ``encoder``: for the word table,
        tokenize, truncate to max_length, the vocabulary's ids, the trial's cutoff)."""
        return self._encode(texts)

    @torch.no_grad()
    def predict_proba(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            logits = self.model(self.encode(list(texts[start : start + batch_size])))
            out.append(torch.softmax(logits.float(), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)))

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]


def check_folder(folder: Path) -> tuple[str, ...]:
    """Every file present and matching its digest (else an ExportError naming the file); the
    folder's file set: ``FILES``, or ``LEGACY_FILES`` for a folder exported before them."""
    sums = folder / DIGESTS
    if not sums.is_file():
        raise ExportError(f"{folder}: no {DIGESTS}; not an exported model folder (or unfinished)")
    expected = {}
    for line in sums.read_text(encoding="utf-8", errors="replace").splitlines():
        digest, separator, name = line.partition("  ")
        if separator:  # a line of another shape names no file: its file then "differs"
            expected[name] = digest
    files = LEGACY_FILES if "model.pt" in expected else FILES
    for name in files:
        path = folder / name
        if not path.is_file():
            raise ExportError(f"{path}: missing; export the model again")
        if file_digest(path) != expected.get(name):
            raise ExportError(f"{path}: its SHA-256 differs from {DIGESTS}: the file was altered")
    return files


def load(folder: str | Path) -> Predictor:
    """The exported model in ``folder``, checked, ready to predict on the CPU. What the folder
    says is data (``sweep.ship.manifest``): a config outside the schema, a vocabulary that is not
    UTF-8 text or weights that do not fit are refused with an ``ExportError`` naming the file."""
    folder = Path(folder)
    legacy = check_folder(folder) == LEGACY_FILES
    config = manifest.read(folder)
    if legacy:  # fp32 state dict and a JSON word list
        words = _legacy_words(folder / "vocab.json")
    else:
        try:
            words = manifest.frontend_in(config).read_vocabulary(folder)
        except ValueError as error:  # not UTF-8 text
            raise ExportError(str(error)) from None
    weights = folder / ("model.pt" if legacy else "model.safetensors")
    try:  # tensors only: a pickle that names code is refused by weights_only
        state = (torch.load(weights, weights_only=True, map_location="cpu") if legacy
                 else quantize.decode(*tensorfile.read(weights)))  # fmt: skip
    except Exception as error:  # a damaged or foreign file: its reader's own error type
        raise ExportError(f"{weights}: cannot read the weights ({type(error).__name__}: "
                          f"{str(error).strip()[:200]}); export the model again") from None  # fmt: skip
    try:
        model = build_kind(config["model_name"], config["model"], config["num_embeddings"],
                           config["embedding_dim"], config["num_classes"])  # fmt: skip
        model.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as error:
        raise ExportError(f"{folder}: the weights do not fit its config.json "
                          f"({str(error).strip()[:300]})") from None  # fmt: skip
    try:  # the front end reads its files as data (a subword vocab.txt: pieces and merges)
        return Predictor(model, config, words)
    except ValueError as error:
        raise ExportError(f"{folder}: {error}") from None


def _legacy_words(path: Path) -> list[str]:
    """The word list of a folder exported before vocab.txt: ``{"words": [...]}``, checked."""
    try:
        words = json.loads(path.read_text(encoding="utf-8"))["words"]
    except (ValueError, KeyError, TypeError) as error:
        raise ExportError(f"{path} is no word list ({error}); export the model again") from None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ExportError(f"{path}: words must be a list of strings; export the model again")
    return words


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sweep.predict",
        description="Print the label an exported model predicts for each line of text.",
    )
    parser.add_argument("--model", required=True, type=Path, help="an exported model folder")
    parser.add_argument(
        "--input", type=Path, help="a text file, one document a line (default: stdin)"
    )
    args = parser.parse_args(argv)
    try:
        predictor = load(args.model)
    except (ExportError, OSError) as error:
        raise SystemExit(f"error: {error}") from None
    lines = _read_lines(args.input)
    for label in predictor.predict(lines):
        print(label)


def _read_lines(path: Path | None) -> list[str]:
    """The documents to label: one a line of ``path`` (UTF-8), or of stdin; a file that cannot
    be read or is not UTF-8 text stops with one line naming it (and the line at fault)."""
    name = str(path) if path else "standard input"
    try:
        if path is None:
            return [line.rstrip("\n") for line in sys.stdin]
        data = path.read_bytes()
        # As a text-mode file reads: universal newlines, one document a line.
        return [line.rstrip("\n") for line in io.StringIO(data.decode("utf-8"), newline=None)]
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1 if path else "?"
        raise SystemExit(f"error: --input {name} is not UTF-8 text (line {line}: "
                         f"{error.reason}); re-save it as UTF-8") from None  # fmt: skip
    except OSError as error:
        raise SystemExit(f"error: --input {name}: {error.strerror or error}") from None
