"""The embedding front end every model shares: the table the sweep sizes, and its two options.

- plain: ``nn.Embedding(num_embeddings, embedding_dim, padding_idx=0)``; the output width is
  ``embedding_dim``.
- factorized (``factorized_dim=H``): as in ALBERT, the table has width E = ``embedding_dim`` and a
  bias-free linear map projects it to the fixed width H the rest of the model sees, so the sweep
  varies E while the model body keeps its size. The projection counts as embedding parameters.
- hashed: words past the cutoff share ``hash_buckets`` rows instead of the single ``<unk>`` row.
  That happens in the data view (``sweep.vocab.cut``), so here it only means a larger
  ``num_embeddings`` = K + 2 + B.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from sweep.vocab import PAD


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
        # sparse=True: the backward pass touches only the rows a batch used (SparseAdam steps
        # them), so a step costs O(batch tokens), not O(vocabulary).
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
        x = F.embedding_bag(
            ids, self.embed.weight, mode="mean", padding_idx=PAD, sparse=self.embed.sparse
        )  # (batch, embedding_dim); an all-pad row gives zeros
        if self.project is not None:
            x = self.project(x)  # a linear map commutes with the mean
        return x

    def num_params(self) -> int:
        """Parameters of the table and, when factorized, of its projection."""
        return sum(p.numel() for p in self.parameters())

    @staticmethod
    def expected_params(
        num_embeddings: int, embedding_dim: int, factorized_dim: int | None = None
    ) -> int:
        """``num_params`` in closed form."""
        return num_embeddings * embedding_dim + (
            embedding_dim * factorized_dim if factorized_dim else 0
        )
