"""Stage 3, models: text classifiers built on an ``nn.Embedding``-style front end.

Each model takes ``num_embeddings`` (vocabulary cutoff K + 2 specials) and ``embedding_dim`` from
the trial and ``num_classes`` from the data, all passed at the call site by
``hydra.utils.instantiate``; every other size is the model's own config default. Each model counts
its parameters with ``num_params`` (embedding table and the rest) and states the same count in
closed form with ``expected_params``, so the search knows a trial's size before training it.
"""

from __future__ import annotations

import torch
from torch import nn

from sweep.vocab import PAD


class BagClassifier(nn.Module):
    """Mean of word embeddings (padding excluded), an optional hidden layer, a linear classifier.

    The fastText-style baseline: cheap, strong on topic-like tasks, and the purest probe of the
    embedding front end since almost all its parameters sit in the table.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_classes: int,
        hidden_dim: int = 0,
        dropout: float = 0.0,
        sparse: bool = True,
    ):
        super().__init__()
        # sparse=True: the backward pass touches only the rows a batch used (SparseAdam updates
        # them), so a step costs O(batch tokens), not O(vocabulary).
        self.embed = nn.EmbeddingBag(
            num_embeddings, embedding_dim, mode="mean", padding_idx=PAD, sparse=sparse
        )
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        width = embedding_dim
        if hidden_dim > 0:
            layers += [nn.Linear(embedding_dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # A small init keeps the mean of many rows from saturating early; the pad row stays zero.
        nn.init.normal_(self.embed.weight, std=0.1)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # (batch, seq) -> (batch, embedding_dim), mean over non-pad tokens
        return self.head(x)  # (batch, num_classes) logits

    def num_params(self) -> dict[str, int]:
        """Trainable parameters: ``embedding`` (the table, pad row included) and ``total``."""
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "embedding": self.embed.weight.numel()}

    @staticmethod
    def expected_params(
        num_embeddings: int, embedding_dim: int, num_classes: int, hidden_dim: int = 0, **_
    ) -> dict[str, int]:
        """The same counts as ``num_params``, in closed form (no model is built)."""
        embedding = num_embeddings * embedding_dim
        if hidden_dim > 0:
            head = embedding_dim * hidden_dim + hidden_dim + hidden_dim * num_classes + num_classes
        else:
            head = embedding_dim * num_classes + num_classes
        return {"total": embedding + head, "embedding": embedding}
