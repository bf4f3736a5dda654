"""Names derived from the config: the default study name's setup digest and unique run folders.

Registered as OmegaConf resolvers (``register_resolvers``) by whatever composes or resolves the
configs: ``run_sweep.py``, ``sweep.cli.compose_user``, ``sweep.runner.run`` and
``sweep.parallel.launch`` (importing the package registers nothing), so the YAML can say
``study_name: ${data.name}-${model.name}-${search.name}-${setup_digest:}`` and
``--cfg job --resolve`` shows the name a run will use.

The digest covers what makes trials comparable (the data settings, the model, training, the
search space, objectives, directions and the seed) and nothing that may change between runs of
one study (``search.n_trials``, storage, workers, device, threads, processes, reports, cache
folders). So the same command resumes its study, a changed setup starts a new one, and a
``--multirun`` over any such key gives every job its own study.
"""

from __future__ import annotations

import os

from omegaconf import DictConfig, OmegaConf

from sweep.common.digest import json_digest
from sweep.models.frontends import FRONT_ENDS, left_out

# data.* keys that say where files live or how to fetch them, not what the data is.
_DATA_PLUMBING = ("cache_dir", "root", "download_retries")


def kind_setup(model: dict | None, data: dict | None = None) -> tuple[dict | None, dict | None]:
    """``model`` and ``data`` (plain copies) without what the front end's kind does not read
    (``sweep.models.frontends.left_out``): a word-table setup reads as it did before kinds were
    named, so its studies keep their names and signatures (they resume), and no other kind's
    setting changes them."""
    if not isinstance(model, dict):
        return model, data
    name = model.get("frontend") or "word"  # an unknown kind is refused later, naming the key
    model_keys, data_keys = left_out(FRONT_ENDS.get(name) if isinstance(name, str) else None)
    model = {k: v for k, v in model.items() if k not in model_keys}
    if isinstance(data, dict):
        data = {k: v for k, v in data.items() if k not in data_keys}
    return model, data


def setup_parts(root: DictConfig) -> dict:
    """The parts of a composed config that identify a study's setup (values resolved)."""

    def plain(node):
        return OmegaConf.to_container(node, resolve=True) if node is not None else None

    data = {k: v for k, v in (plain(root.get("data")) or {}).items() if k not in _DATA_PLUMBING}
    model, data = kind_setup(plain(root.get("model")), data)
    search = root.get("search") or {}
    return {
        "data": data,
        "model": model,
        "train": plain(root.get("train")),
        "space": plain(search.get("space")),
        "objectives": plain(search.get("objectives")),
        "directions": plain(search.get("directions")),
        "seed": root.get("seed"),
    }


def setup_digest(*, _root_: DictConfig) -> str:
    """Eight hex digits of the setup (``setup_parts``)."""
    return json_digest(setup_parts(_root_), 8)


def register_resolvers() -> None:
    """``${setup_digest:}`` and ``${pid:}`` (this process id: run folders unique per process)."""
    OmegaConf.register_new_resolver("setup_digest", setup_digest, replace=True)
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
