"""Which trials may share a pack: the pack key (what must be equal) and the split by width.

Trials that cannot share a pack train alone, so nothing is refused: a model off the devices
where its packing pays (``PACKABLE``), a sparse table, a bag with dropout, a factorized table,
an RNN with dropout between layers, other training settings (batch size, epochs; a learning
rate of its own packs)."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from sweep.common.digest import json_digest
from sweep.models.frontends import frontend_of
from sweep.models.kinds import BY_TARGET

__all__ = ["PACKABLE", "pack_key", "split_by_width"]

# The config targets whose trials pack, and the devices where they do (None: any; the reasons:
# sweep.models.kinds). Elsewhere a trial of that model trains alone.
PACKABLE: dict[str, frozenset[str] | None] = {
    target: kind.pack_devices for target, kind in BY_TARGET.items()
}


def pack_key(trial_cfg: DictConfig, sparse: bool | None = None, device=None) -> str | None:
    """Trials with equal keys may share a pack; None: this trial trains alone.

    Packable: the models of ``PACKABLE`` on their devices (``device``: where the trials train;
    default CPU), with a front end that packs (``FrontEnd.packs``: the word table dense, by
    ``sparse``, the trial's resolved ``model.sparse``, and not factorized); the bag without
    dropout (its masks would come from the pack's stream), the CNN, the RNN and the Transformer
    with any (each trial draws its masks from its own generator, as alone), but not the RNN's
    dropout between layers (drawn inside the recurrent kernel). The key holds the rest of the
    model config and the training config but the learning rate (batches and epochs must be
    shared; each trial keeps its own lr).
    """
    model = OmegaConf.to_container(trial_cfg.model, resolve=True)
    target = model.get("_target_")
    if target not in PACKABLE or not frontend_of(model).packs(model, bool(sparse)):
        return None  # e.g. a sparse or a factorized word table: sweep.models.frontends.word
    devices = PACKABLE[target]
    if devices is not None and torch.device(device or "cpu").type not in devices:
        return None
    dropout = float(model.get("dropout") or 0)
    kind = BY_TARGET[target].name
    if kind == "bag" and dropout > 0:
        return None
    if kind == "rnn" and dropout > 0 and model.get("num_layers", 1) > 1:
        return None
    shared = {k: v for k, v in model.items() if k not in ("num_embeddings", "embedding_dim")}
    # Each trial keeps its own learning rate (PackedOptimizer); the rest is shared.
    train = {k: v for k, v in OmegaConf.to_container(trial_cfg.train).items() if k != "lr"}
    return json_digest({"model": shared, "train": train}, 16)


def split_by_width(sizes: list[tuple[int, int, int]], max_padding: float):
    """Packs of similar width from (index, rows, width) of trials that may share one: sorted by
    width, a pack grows while its table padded to its widest trial stays within ``max_padding``
    times the trials' own tables (rows x width summed; ``search.pack_padding``)."""
    packs: list[list[int]] = []
    rows_sum = real = 0
    for index, rows, width in sorted(sizes, key=lambda s: (s[2], s[0])):
        if packs and (rows_sum + rows) * width > max_padding * (real + rows * width):
            packs.append([])
            rows_sum = real = 0
        if not packs:
            packs.append([])
        packs[-1].append(index)
        rows_sum, real = rows_sum + rows, real + rows * width
    return packs
