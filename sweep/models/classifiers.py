"""Stage 3, models: four text classifiers on one embedding front end (``sweep.models.frontends``:
the word table, ``EmbeddingFrontEnd``).

Each takes ``num_embeddings`` (cutoff K + 2 specials + hash buckets) and ``embedding_dim`` from the
trial and ``num_classes`` from the data, passed at the call site by ``hydra.utils.instantiate``;
every other size is the model's own config default. ``num_params`` counts the built model (the
embedding front end and the total); the tests check it against closed forms
(``tests/param_oracles.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sweep.data.vocab import PAD
from sweep.models.frontends import named


def table(num_embeddings: int, embedding_dim: int, factorized_dim: int | None, sparse: bool,
          frontend: str, mixed_alpha: float, mixed_bands: int) -> nn.Module:  # fmt: skip
    """The table of the front-end kind ``frontend`` (``model.frontend``), with its options."""
    return named(frontend).table(num_embeddings, embedding_dim, factorized_dim, sparse,
                                 alpha=mixed_alpha, bands=mixed_bands)  # fmt: skip


class TextClassifier(nn.Module):
    """Base: owns ``self.frontend`` and counts parameters."""

    frontend: nn.Module  # the kind's table: EmbeddingFrontEnd, or the mixed kind's bands

    def num_params(self) -> dict[str, int]:
        """Trainable parameters: ``embedding`` (front end: table, pad row included, and the
        factorized projection) and ``total`` (everything, the embedding included)."""
        total = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"total": total, "embedding": self.frontend.num_params()}


class BagClassifier(TextClassifier):
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
        factorized_dim: int | None = None,
        sparse: bool = True,
        frontend: str = "word",
        mixed_alpha: float = 0.5,
        mixed_bands: int = 4,
    ):
        super().__init__()
        self.frontend = table(num_embeddings, embedding_dim, factorized_dim, sparse, frontend,
                              mixed_alpha, mixed_bands)  # fmt: skip
        width = self.frontend.out_dim
        layers: list[nn.Module] = [nn.Dropout(dropout)]
        if hidden_dim > 0:
            layers += [nn.Linear(width, hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes))
        self.head = nn.Sequential(*layers)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.frontend.mean(ids)  # (batch, width): mean over non-pad tokens, fused
        return self.head(x)  # (batch, num_classes) logits


def max_over_windows(h: torch.Tensor, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """ReLU of a wide convolution's output ``h`` (batch, filters, seq + k - 1: window t ends at
    token t), then its max over the windows that hold a token of each document (``lengths``)."""
    h = torch.relu(h)
    windows = torch.arange(h.shape[2], device=h.device)
    valid = windows[None, :] < (lengths + k - 1)[:, None]
    return h.masked_fill(~valid[:, None, :], 0.0).amax(dim=2)


class CNNClassifier(TextClassifier):
    """Kim (2014): parallel 1-D convolutions, max-over-time pooling, dropout, linear.

    Convolutions are wide (k - 1 zero vectors on both sides, as in Kim's code), so the first
    and last words of short texts sit in as many windows as the others. Windows that hold no
    token of the document are masked out of the max, so a batch's padding never changes a
    prediction.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_classes: int,
        kernel_sizes: Sequence[int] = (3, 4, 5),
        num_filters: int = 100,
        dropout: float = 0.5,
        factorized_dim: int | None = None,
        sparse: bool = True,
        frontend: str = "word",
        mixed_alpha: float = 0.5,
        mixed_bands: int = 4,
    ):
        super().__init__()
        self.frontend = table(num_embeddings, embedding_dim, factorized_dim, sparse, frontend,
                              mixed_alpha, mixed_bands)  # fmt: skip
        width = self.frontend.out_dim
        self.kernel_sizes = tuple(kernel_sizes)
        self.convs = nn.ModuleList(
            nn.Conv1d(width, num_filters, k, padding=k - 1) for k in self.kernel_sizes
        )
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(num_filters * len(self.kernel_sizes), num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = (ids != PAD).sum(dim=1).clamp(min=1)  # (batch,)
        x = self.frontend(ids).transpose(1, 2)  # (batch, width, seq)
        pooled = []
        for k, conv in zip(self.kernel_sizes, self.convs, strict=True):
            pooled.append(max_over_windows(conv(x), lengths, k))  # (batch, filters)
        return self.out(self.dropout(torch.cat(pooled, dim=1)))  # (batch, num_classes)


def pool_states(h: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """An RNN's states ``h`` (batch, seq, features; zeros past each length) pooled over each
    document's own ``lengths``: their max or their mean."""
    if pooling == "max":
        mask = torch.arange(h.shape[1], device=h.device)[None, :] < lengths[:, None]
        return h.masked_fill(~mask[..., None], float("-inf")).amax(dim=1)
    return h.sum(dim=1) / lengths[:, None].to(h.dtype)


def attention_padding(ids: torch.Tensor) -> torch.Tensor:
    """(batch, seq) True at padding: the keys attention skips. A document with no token would
    mask every key (NaN); it attends to its first slot instead."""
    pad = ids == PAD
    pad[:, 0] &= ~pad.all(dim=1)
    return pad


def check_length(seq: int, max_length: int) -> None:
    """Learned positions stop at ``max_length``: longer documents are a configuration error."""
    if seq > max_length:
        raise ValueError(
            f"documents of {seq} tokens exceed model.max_length={max_length}: "
            "raise model.max_length or lower data.max_length"
        )


class RNNClassifier(TextClassifier):
    """Bidirectional GRU or LSTM over packed sequences (padding is never read), pooled states."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_classes: int,
        cell: str = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        pooling: str = "max",
        dropout: float = 0.3,
        factorized_dim: int | None = None,
        sparse: bool = True,
        frontend: str = "word",
        mixed_alpha: float = 0.5,
        mixed_bands: int = 4,
    ):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"model.cell={cell!r} is unknown: use gru or lstm")
        if pooling not in ("max", "mean"):
            raise ValueError(f"model.pooling={pooling!r} is unknown: use max or mean")
        self.frontend = table(num_embeddings, embedding_dim, factorized_dim, sparse, frontend,
                              mixed_alpha, mixed_bands)  # fmt: skip
        rnn_cls = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn_cls(
            self.frontend.out_dim,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden_size, num_classes)
        # Packed sequences skip padding; the memory estimate turns this off for its trace on the
        # meta device, whose lengths cannot reach the host (sweep.measure).
        self.pack_sequences = True

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        lengths = (ids != PAD).sum(dim=1).clamp(min=1)
        x = self.frontend(ids)  # (batch, seq, width)
        if self.pack_sequences:
            # Packing needs the lengths on the host: one small copy per batch.
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            states, _ = self.rnn(packed)
            h, _ = pad_packed_sequence(states, batch_first=True, total_length=ids.shape[1])
        else:  # every step of the padded length: the worst case of a bucket
            h = self.rnn(x)[0]
        return self.out(self.dropout(pool_states(h, lengths, self.pooling)))  # (batch, classes)


def heads_for(width: int, max_heads: int) -> int:
    """The largest head count <= ``max_heads`` that divides ``width`` (1 always does)."""
    return max(h for h in range(1, max(max_heads, 1) + 1) if width % h == 0)


class TransformerClassifier(TextClassifier):
    """A small pre-norm Transformer encoder with learned positions, a padding mask, mean pooling.

    Any width works: attention uses the largest head count up to ``num_heads`` that divides the
    width (``heads_for``), so an odd ``embedding_dim`` never crashes a trial.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        num_classes: int,
        num_layers: int = 2,
        num_heads: int = 4,
        ff_dim: int = 256,
        dropout: float = 0.1,
        max_length: int = 512,
        factorized_dim: int | None = None,
        sparse: bool = True,
        frontend: str = "word",
        mixed_alpha: float = 0.5,
        mixed_bands: int = 4,
    ):
        super().__init__()
        self.frontend = table(num_embeddings, embedding_dim, factorized_dim, sparse, frontend,
                              mixed_alpha, mixed_bands)  # fmt: skip
        width = self.frontend.out_dim
        self.heads = heads_for(width, num_heads)
        self.max_length = max_length
        self.position = nn.Embedding(max_length, width)
        nn.init.normal_(self.position.weight, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width, self.heads, ff_dim, dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(width, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        seq = ids.shape[1]
        check_length(seq, self.max_length)
        pad = attention_padding(ids)  # (batch, seq)
        positions = torch.arange(seq, device=ids.device)
        x = self.frontend(ids) + self.position(positions)[None]  # (batch, seq, width)
        h = self.norm(self.encoder(x, src_key_padding_mask=pad))  # (batch, seq, width)
        keep = (~pad)[..., None].to(h.dtype)
        pooled = (h * keep).sum(dim=1) / keep.sum(dim=1)  # mean over non-pad positions
        return self.out(self.dropout(pooled))  # (batch, num_classes)
