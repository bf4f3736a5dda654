"""The embedding front end every model shares: the table the sweep sizes, and its two options.

- plain: ``nn.Embedding(num_embeddings, embedding_dim, padding_idx=0)``; the output width is
  ``embedding_dim``.
- factorized (``factorized_dim=H``): as in ALBERT, the table has width E = ``embedding_dim`` and a
  bias-free linear map projects it to the fixed width H the rest of the model sees, so the sweep
  varies E while the model body keeps its size. The projection counts as embedding parameters.
- hashed: words past the cutoff share ``hash_buckets`` rows instead of the single ``<unk>`` row.
  That happens in the data view (``sweep.data.vocab.cut``), so here it only means a larger
  ``num_embeddings`` = K + 2 + B.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sweep.data.vocab import PAD

# model.sparse=auto: sparse gradients above this many rows. Measured on 2 CPU cores (bag, D=64;
# python -m sweep.benchmarks.speed --ablation): dense 1.5x faster at 8k rows (TREC), even at 17k
# (synthetic), sparse 3.8x faster at 124k (20 Newsgroups).
SPARSE_AUTO_ROWS = 16384


def use_sparse(setting, num_embeddings: int) -> bool:
    """Resolve ``model.sparse`` (true, false or auto) for a table of ``num_embeddings`` rows."""
    if setting == "auto":
        return num_embeddings > SPARSE_AUTO_ROWS
    if isinstance(setting, bool):
        return setting
    raise ValueError(f"model.sparse={setting!r} must be true, false or auto")


# Largest (batch x distinct ids) count matrix the fused mean builds; bigger batches (evaluation)
# use F.embedding_bag, which needs no backward.
_COUNT_MATRIX_LIMIT = 1 << 22


# Above this many table rows per id of the batch, distinct_ids sorts the batch's ids instead of
# marking them in table-sized arrays. Measured on one CPU thread (2026-12-07): marking costs
# 0.11 ms at 20k rows and 55 ms at 11.46M for a 6,400-id batch (zero-filling two table-sized
# arrays), sorting 0.3 ms at any table size; they cross near 16-25 rows per id.
_SORT_ROWS_PER_ID = 16


def distinct_ids(
    flat: torch.Tensor, num_embeddings: int, skip: int | None = PAD
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted distinct ids, position of each element of ``flat`` among them).

    A step must cost in proportion to its batch, not to the table: for a table much larger
    than the batch the batch's ids are sorted (``torch.unique``, O(ids log ids)); otherwise they
    are marked in a table-sized mask, O(table + ids), several times faster there. The id
    ``skip`` (PAD by default) is left out: its elements get position 0 and must be masked by
    the caller.
    """
    if num_embeddings > _SORT_ROWS_PER_ID * flat.numel():
        rows, position = torch.unique(flat, sorted=True, return_inverse=True)
        if skip is not None:
            dropped = rows == skip
            shift = torch.cumsum(dropped.long(), 0)[position]  # skipped ids before each row
            position = torch.where(flat == skip, 0, position - shift)
            rows = rows[~dropped]
        return rows, position
    mark = torch.zeros(num_embeddings, dtype=torch.bool, device=flat.device)
    mark[flat] = True
    if skip is not None:
        mark[skip] = False
    rows = mark.nonzero().squeeze(1)
    position = torch.zeros(num_embeddings, dtype=torch.long, device=flat.device)
    position[rows] = torch.arange(len(rows), device=flat.device)
    return rows, position[flat]


class CountMean(torch.autograd.Function):
    """Mean of each row's non-pad embeddings as (row-normalised counts) @ (the rows used).

    Forward and backward are one small matrix product each, instead of per-token gathers and
    scatters, and the gradient is a coalesced sparse tensor over the distinct ids only, so the
    optimizer steps each used row once without sorting. Same values as
    ``F.embedding_bag(mode="mean", padding_idx=PAD)``.
    """

    @staticmethod
    def forward(ctx, weight: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        batch, width = ids.shape
        flat = ids.reshape(-1).long()
        rows, position = distinct_ids(flat, weight.shape[0])
        doc = torch.arange(batch, device=ids.device).repeat_interleave(width)
        used = (flat != PAD).to(weight.dtype)
        # (Sliced: with no non-pad id at all, bincount still returns one bin.)
        counts = torch.bincount(
            doc * len(rows) + position, weights=used, minlength=batch * len(rows)
        )[: batch * len(rows)].view(batch, len(rows))
        share = (counts / counts.sum(dim=1, keepdim=True).clamp(min=1.0)).to(weight.dtype)
        ctx.save_for_backward(share, rows)
        ctx.table_shape = weight.shape
        return share @ weight.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        share, rows = ctx.saved_tensors
        grad_rows = share.t() @ grad_output  # (distinct ids, dim)
        grad = torch.sparse_coo_tensor(
            rows.unsqueeze(0), grad_rows, ctx.table_shape, is_coalesced=True,
            check_invariants=False,
        )  # fmt: skip
        return grad, None


class EmbeddingFrontEnd(nn.Module):
    """Token ids -> vectors of width ``out_dim``; ``pad`` rows are zero and get no gradient."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        factorized_dim: int | None = None,
        sparse: bool = False,
        init_std: float = 0.1,
    ):
        super().__init__()
        # sparse=True: the backward pass touches only the rows a batch used (sweep.models.fit's
        # LazyAdam steps them), so a step costs O(batch tokens), not O(vocabulary).
        self.embed = nn.Embedding(num_embeddings, embedding_dim, padding_idx=PAD, sparse=sparse)
        self.project = (
            nn.Linear(embedding_dim, factorized_dim, bias=False) if factorized_dim else None
        )
        self.out_dim = factorized_dim or embedding_dim
        nn.init.normal_(self.embed.weight, std=init_std)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # (batch, seq, embedding_dim)
        if self.project is not None:
            x = self.project(x)  # (batch, seq, factorized_dim)
        return x

    def mean(self, ids: torch.Tensor) -> torch.Tensor:
        """Mean vector of each row's non-pad tokens, fused (no (batch, seq, dim) tensor)."""
        weight = self.embed.weight
        # The fused mean is measured faster on CPU only; on CUDA (unmeasured here) and in the
        # meta-device trace of the memory estimate, embedding_bag runs as before.
        if (
            self.embed.sparse
            and weight.device.type == "cpu"
            and weight.requires_grad
            and torch.is_grad_enabled()
            and ids.shape[0] * min(ids.numel(), weight.shape[0]) <= _COUNT_MATRIX_LIMIT
        ):
            x = CountMean.apply(weight, ids)  # training steps: two small matrix products
        else:
            x = F.embedding_bag(
                ids, weight, mode="mean", padding_idx=PAD, sparse=self.embed.sparse
            )  # (batch, embedding_dim); an all-pad row gives zeros
        if self.project is not None:
            x = self.project(x)  # a linear map commutes with the mean
        return x

    def num_params(self) -> int:
        """Parameters of the table and, when factorized, of its projection."""
        return sum(p.numel() for p in self.parameters())
