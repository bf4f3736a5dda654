"""The mixed-dimension table: the word table's rows in frequency bands, rarer bands narrower.

Ginart et al. (2019), "Mixed Dimension Embeddings": a row's width follows its popularity, so
frequent words keep the full width D and rare ones, which the data says little about, cost
few parameters. The rows are the word table's (the train words by frequency, cut at K: its
encoding, view, vocabulary file and encoder are the word table's), cut into
``model.mixed_bands`` bands at geometric ranks (band j ends at rank K^((j+1)/bands)), band i
``about D * (p_i / p_0)^alpha`` wide (``model.mixed_alpha``, 0 to 1: 0 is the plain table),
where p_i is the band's popularity. It is taken from the rank by Zipf's law (p ~ 1/rank, at
the band's geometric middle): what a frequency-ranked table knows before training, and what an
exported folder rebuilds from its config alone. Each band narrower than D is projected to D by
a bias-free linear map (``MixedEmbedding``); the model body sees D.

Counts in closed form (``band_layout``, ``num_params``); dense gradients (the table is small
by design); int8 and int4 as every table (each band and projection is quantized row-wise); no
hash buckets, no factorized table (the bands already project), no sparse gradients, no pruning:
each refused before the study with the key to change (``check``); its trials train alone (a
pack's table is one matrix of one width).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import OmegaConf
from torch import nn
from torch.nn import functional as F

from sweep.data.vocab import PAD, SPECIALS
from sweep.models.frontends.kind import Sizes
from sweep.models.frontends.word import WordTable


def band_layout(rows: int, dim: int, bands: int, alpha: float) -> list[tuple[int, int]]:
    """[(rows, width)] per band for a table of ``rows`` ids (specials first) of width ``dim``:
    the band edges at ranks K^(j/bands) past the specials (repeats merged), widths
    ``max(1, round(dim * (m_0 / m_i)^alpha))`` with m_i the band's geometric middle rank."""
    words = rows - len(SPECIALS)
    edges = sorted({0, rows, *(len(SPECIALS) + round(words ** (j / bands))
                               for j in range(1, bands) if words > 0)})  # fmt: skip
    edges = [e for e in edges if e <= rows]
    layout, first = [], None
    for low, high in zip(edges, edges[1:], strict=False):
        middle = math.sqrt(max(low, 1) * high)
        first = first or middle
        layout.append((high - low, max(1, min(dim, round(dim * (first / middle) ** alpha)))))
    return layout


MAX_BANDS = 64  # more bands than this are refused (a folder's config.json cannot ask a million)


def check_options(alpha, bands) -> None:
    """``model.mixed_alpha`` in [0, 1] and ``model.mixed_bands`` a count up to ``MAX_BANDS``;
    ``ValueError`` naming the key."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"model.mixed_alpha={alpha!r} must be a number from 0 (every band D "
                         "wide) to 1 (width in proportion to popularity)")  # fmt: skip
    if isinstance(bands, bool) or not isinstance(bands, int) or not 1 <= bands <= MAX_BANDS:
        raise ValueError(f"model.mixed_bands={bands!r} must be a whole number of bands, from 1 "
                         f"to {MAX_BANDS}")  # fmt: skip


class MixedEmbedding(nn.Module):
    """Token ids -> D-wide vectors from frequency bands of narrower tables (module docstring).

    Band i holds its rows and, past band 0, one zero row (its index 0) that every id outside
    the band reads: each band is one gather of every id (static shapes, any device, the
    memory estimate's meta trace), an id's vector the sum over bands of the projected rows,
    the others being zero. ``<pad>`` is band 0's row 0: zero, no gradient."""

    def __init__(self, num_embeddings: int, embedding_dim: int, alpha: float, bands: int,
                 sparse: bool = False, init_std: float = 0.1):  # fmt: skip
        super().__init__()
        self.layout = band_layout(num_embeddings, embedding_dim, bands, alpha)
        self.out_dim = embedding_dim
        self.tables = nn.ModuleList()
        self.projections = nn.ModuleList()
        self.starts = []
        start = 0
        for i, (rows, width) in enumerate(self.layout):
            table = nn.Embedding(rows + (i > 0), width, padding_idx=PAD, sparse=sparse)
            nn.init.normal_(table.weight, std=init_std)
            with torch.no_grad():
                table.weight[PAD].zero_()
            self.tables.append(table)
            self.projections.append(nn.Linear(width, embedding_dim, bias=False)
                                    if width < embedding_dim else nn.Identity())  # fmt: skip
            self.starts.append(start)
            start += rows

    def local(self, ids: torch.Tensor, band: int) -> torch.Tensor:
        """Band ``band``'s index of every id: its row (past the zero row), or 0 outside."""
        if band == 0:
            return torch.where(ids < self.layout[0][0], ids, PAD)
        low = self.starts[band]
        inside = (ids >= low) & (ids < low + self.layout[band][0])
        return torch.where(inside, ids - low + 1, PAD)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        ids = ids.long()
        out = None
        for band, (table, project) in enumerate(zip(self.tables, self.projections, strict=True)):
            x = project(table(self.local(ids, band)))
            out = x if out is None else out + x
        return out

    def mean(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean vector of each row's non-pad tokens: per band a sum of its rows
        (``embedding_bag``), projected (a linear map commutes with the sum), over the count."""
        ids = ids.long()
        count = (ids != PAD).sum(dim=1, keepdim=True).clamp(min=1)
        out = None
        for band, (table, project) in enumerate(zip(self.tables, self.projections, strict=True)):
            x = F.embedding_bag(self.local(ids, band), table.weight, mode="sum",
                                padding_idx=PAD, sparse=table.sparse)  # fmt: skip
            x = project(x)
            out = x if out is None else out + x
        return out / count.to(out.dtype)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


class MixedTable(WordTable):
    """The word table's rows in frequency bands of decreasing width (module docstring)."""

    name = "mixed"
    own_keys = ("mixed_alpha", "mixed_bands")

    def check(self, cfg, data) -> None:
        """Its options in range, and none of the word table's it cannot take."""
        model = cfg.model
        check_options(model.get("mixed_alpha"), model.get("mixed_bands"))
        for name, spec in (OmegaConf.select(cfg, "search.space") or {}).items():
            key = spec.get("key")  # a searched option: its range's ends and its choices
            if key not in ("model.mixed_alpha", "model.mixed_bands"):
                continue
            ends = [spec.get(end) for end in ("low", "high") if spec.get(end) is not None]
            for value in [*ends, *(spec.get("choices") or [])]:
                alpha, bands = model.get("mixed_alpha"), model.get("mixed_bands")
                alpha, bands = (value, bands) if key.endswith("alpha") else (alpha, value)
                try:
                    check_options(alpha, bands)
                except ValueError as error:
                    raise ValueError(f"search.space.{name} (sets {key}): {error}") from None
        for key, why, fix in (
            ("model.hash_buckets", "the bands hold every row", "0"),
            ("model.factorized_dim", "the bands project to D themselves", "null"),
            ("model.sparse", "its gradients are dense: the narrow bands keep the table small",
             "auto"),
            ("report.prune_rows", "it narrows its rare rows already: choose a smaller K",
             "null"),
        ):  # fmt: skip
            value = OmegaConf.select(cfg, key)
            if value not in (None, 0, False, "auto"):
                raise ValueError(f"{key}={value}: model.frontend=mixed takes none ({why}); set "
                                 f"{key}={fix}")  # fmt: skip

    def sparse(self, model_cfg, sizes: Sizes) -> bool:
        """Dense gradients: the narrow bands keep the table small (``check``)."""
        return False

    def grad_bytes(self, sizes: Sizes, *, sparse: bool, params: int, tokens: int) -> int:
        """The whole table's (dense) gradient."""
        return params * 4

    def table(self, num_embeddings: int, embedding_dim: int, factorized_dim: int | None = None,
              sparse: bool = False, **options: Any) -> MixedEmbedding:  # fmt: skip
        alpha, bands = options.get("alpha", 0.5), options.get("bands", 4)
        check_options(alpha, bands)
        if factorized_dim:
            raise ValueError("model.factorized_dim: model.frontend=mixed projects its bands to "
                             "D itself; set model.factorized_dim=null")  # fmt: skip
        return MixedEmbedding(num_embeddings, embedding_dim, alpha, bands)  # dense: ``sparse``

    def packs(self, model_settings: Mapping[str, Any], sparse: bool) -> bool:
        """Never: a pack holds its trials' rows in one matrix of one width."""
        return False

    def num_params(self, sizes: Sizes, model_cfg) -> int:
        """Per band its rows (and, past the first, its zero row) x its width, and width x D
        for each band narrower than D."""
        layout = band_layout(sizes.num_embeddings, sizes.embedding_dim,
                             model_cfg.get("mixed_bands", 4), model_cfg.get("mixed_alpha", 0.5))  # fmt: skip
        return sum((rows + (i > 0)) * width + (width * sizes.embedding_dim
                                                if width < sizes.embedding_dim else 0)
                   for i, (rows, width) in enumerate(layout))  # fmt: skip

    def prune(self, model, sizes, rows, by):
        raise ValueError("report.prune_rows: model.frontend=mixed already narrows its rare rows; "
                         "choose a smaller K instead (set report.prune_rows=null)")  # fmt: skip

    def export_config(self, sizes: Sizes, data_cfg, vocab_size: int) -> dict[str, Any]:
        return {"frontend": self.name, **super().export_config(sizes, data_cfg, vocab_size)}


MIXED = MixedTable()
