"""The packed models: N trials' models as one module (``sweep.models.pack.fit`` trains them).

Every layout keeps the trials' parameters disjoint: one table holding every trial's rows (row
offsets; widths padded to the widest trial with columns held at zero), and per model
(``sweep.models.kinds``): for the bag, stacked layers in batched matrix products (``PackedBag``);
for the CNN, grouped convolutions, one group per trial (``PackedCNN``); for the RNN, block-diagonal
recurrent layers, one cuDNN call for all (``PackedRNN``); for the Transformer, stacked layers,
each trial's own layer norm and heads (``PackedTransformer``). ``Packed.pieces`` says where each
trial's tensors sit in the packed ones: loading, storing and the optimizer follow it, and the
tests check that every gradient outside those pieces is exactly zero.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sweep.data.vocab import PAD
from sweep.models.classifiers import (
    attention_padding,
    check_length,
    max_over_windows,
    pool_states,
)


class Member(Protocol):
    """What a packed model reads of a trial in its pack (``sweep.models.pack.member.Member``)."""

    model: nn.Module
    rng: torch.Generator | None  # its dropout masks' stream

    @property
    def table(self) -> nn.Parameter: ...

    @property
    def linears(self) -> list[nn.Linear]: ...


class Piece(NamedTuple):
    """One trial's tensor, or a part of it (``part``: an index into ``own``), and where it sits
    in a packed tensor (``packed[where]``, transposed or not)."""

    member: Member
    packed: torch.Tensor
    where: tuple
    own: torch.Tensor  # the trial's own parameter (the key of its Adam state)
    part: Any = ...
    transposed: bool = False

    def own_part(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` (``own`` or a tensor shaped like it: an Adam moment) as packed stores it."""
        tensor = tensor[self.part]
        return tensor.t() if self.transposed else tensor


class Packed(nn.Module):
    """N models as one (subclasses: the layers): a shared table (row 0 the common padding row,
    then each trial's rows at its offset, columns past its width zero) and ``pieces``: how each
    trial's own tensors sit in the packed ones, for load, store and the optimizer."""

    def __init__(self, members: Sequence[Member]):
        super().__init__()
        widths = [m.table.shape[1] for m in members]
        rows = [m.table.shape[0] for m in members]
        self.width = max(widths)
        self.offsets = [1 + sum(rows[:i]) for i in range(len(members))]
        self.device = members[0].table.device
        self.like = {"device": self.device, "dtype": members[0].table.dtype}  # new tensors
        self.table = nn.Parameter(torch.zeros(1 + sum(rows), self.width, **self.like))

    def table_pieces(self, members: Sequence[Member]):
        for i, member in enumerate(members):
            rows, width = member.table.shape
            where = (slice(self.offsets[i], self.offsets[i] + rows), slice(0, width))
            yield Piece(member, self.table, where, member.table)

    def pieces(self, members: Sequence[Member]) -> Iterator[Piece]:
        """Where each trial's tensors (or their parts) sit in the packed ones."""
        raise NotImplementedError

    def stack_out(self, members: Sequence[Member]) -> None:
        """The members' output layers (``model.out``) stacked: ``out_weight`` (N, classes,
        features; padded to the widest), ``out_bias`` (N, classes); and their dropout (rate,
        each trial's stream)."""
        out = members[0].model.out
        self.features = [m.model.out.in_features for m in members]
        self.out_weight = nn.Parameter(torch.zeros(len(members), out.out_features,
                                                   max(self.features), **self.like))  # fmt: skip
        self.out_bias = nn.Parameter(torch.zeros(len(members), out.out_features,
                                                 **self.like))  # fmt: skip
        self.p = members[0].model.dropout.p
        self.rngs = [m.rng for m in members]

    def out_pieces(self, i: int, member: Member) -> Iterator[Piece]:
        features = slice(0, member.model.out.in_features)
        yield Piece(member, self.out_weight, (i, slice(None), features), member.model.out.weight)
        yield Piece(member, self.out_bias, (i,), member.model.out.bias)

    def out(self, z: torch.Tensor) -> torch.Tensor:
        """(N, batch, features) pooled -> (N, batch, classes): each trial's dropout mask from
        its own stream (``Member.rng``), drawn as alone, then its output layer."""
        z = self.dropout(z, self.features)
        return torch.baddbmm(self.out_bias[:, None, :], z, self.out_weight.transpose(1, 2))

    def dropout(
        self, x: torch.Tensor, widths: Sequence[int] | None = None, seq_first: bool = False
    ) -> torch.Tensor:
        """``x`` (N, ...) with each trial's dropout mask, drawn from its own stream in the
        shape (and order: ``_mask``) the trial alone draws (``widths``: its size of the last
        dimension, the rest padding; default all)."""
        if not self.training or self.p == 0:
            return x
        if widths is None or len(set(widths)) == 1 and widths[0] == x.shape[-1]:
            return x * torch.stack(
                [_mask(x[i], self.p, rng, seq_first) for i, rng in enumerate(self.rngs)]
            )
        masks = torch.ones_like(x)
        for i, (rng, width) in enumerate(zip(self.rngs, widths, strict=True)):
            masks[i, ..., :width] = _mask(x[i, ..., :width], self.p, rng, seq_first)
        return x * masks

    @torch.no_grad()
    def load(self, members: Sequence[Member]) -> None:
        for piece in self.pieces(members):
            piece.packed[piece.where] = piece.own_part(piece.own)

    @torch.no_grad()
    def store(self, members: Sequence[Member], only: Sequence[Member] | None = None) -> None:
        """Write the packed tensors back into the members' own (``only``: into these)."""
        for piece in self.pieces(members):
            if only is not None and not any(piece.member is m for m in only):
                continue
            own = piece.own[piece.part]
            own.copy_(
                piece.packed[piece.where].t() if piece.transposed else piece.packed[piece.where]
            )


class PackedBag(Packed):
    """N bag models: the shared table and stacked layers (``weights[i]``: (N, in, out),
    ``biases[i]``: (N, out)) applied with batched matrix products."""

    def __init__(self, members: Sequence[Member]):
        super().__init__(members)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer in range(len(members[0].linears)):
            n_in = self.width if layer == 0 else members[0].linears[layer].in_features
            n_out = members[0].linears[layer].out_features
            self.weights.append(nn.Parameter(torch.zeros(len(members), n_in, n_out, **self.like)))
            self.biases.append(nn.Parameter(torch.zeros(len(members), n_out, **self.like)))

    def pieces(self, members: Sequence[Member]):
        yield from self.table_pieces(members)
        for i, member in enumerate(members):
            for layer, linear in enumerate(member.linears):
                where = (i, slice(0, linear.in_features))
                yield Piece(member, self.weights[layer], where, linear.weight, transposed=True)
                yield Piece(member, self.biases[layer], (i,), linear.bias)

    def forward(self, ids: torch.Tensor, host_lengths=None) -> torch.Tensor:
        """``ids``: (N, batch, width) packed ids (offsets applied, padding 0) -> (N, batch, C)."""
        n, batch, width = ids.shape
        x = F.embedding_bag(ids.reshape(n * batch, width), self.table, mode="mean",
                            padding_idx=PAD).view(n, batch, self.width)  # fmt: skip
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if layer:
                x = torch.relu(x)
            x = torch.baddbmm(bias[:, None, :], x, weight)
        return x


class PackedCNN(Packed):
    """N CNNs (``sweep.models.CNNClassifier``) as one: the shared table; per kernel size one
    grouped convolution (groups = N: trial i's filters see only its own channels; widths padded
    to the widest with zero weights, which get zero gradient); the max over each document's
    windows; each trial's dropout mask from its own generator (``Member.rng``), drawn as alone;
    the output layers stacked (``out_weight``: (N, classes, features)) in one batched product.
    One grouped convolution replaces N small ones: a GPU launches one kernel, not N."""

    def __init__(self, members: Sequence[Member]):
        super().__init__(members)
        first = members[0].model
        n, filters = len(members), first.convs[0].out_channels
        self.kernel_sizes, self.filters = first.kernel_sizes, filters
        self.conv_weights = nn.ParameterList(
            nn.Parameter(torch.zeros(n * filters, self.width, k, **self.like))
            for k in self.kernel_sizes
        )
        self.conv_biases = nn.ParameterList(
            nn.Parameter(torch.zeros(n * filters, **self.like)) for _ in self.kernel_sizes
        )
        self.stack_out(members)

    def pieces(self, members: Sequence[Member]):
        yield from self.table_pieces(members)
        f = self.filters
        for i, member in enumerate(members):
            rows = slice(i * f, (i + 1) * f)
            for layer, conv in enumerate(member.model.convs):
                where = (rows, slice(0, conv.in_channels))
                yield Piece(member, self.conv_weights[layer], where, conv.weight)
                yield Piece(member, self.conv_biases[layer], (rows,), conv.bias)
            yield from self.out_pieces(i, member)

    def forward(self, ids: torch.Tensor, host_lengths=None) -> torch.Tensor:
        """``ids``: (N, batch, length) packed ids -> (N, batch, C); see ``CNNClassifier``."""
        n, batch, length = ids.shape
        lengths = (ids[0] != PAD).sum(dim=1).clamp(min=1)  # the same in every trial's cut
        x = F.embedding(ids, self.table, padding_idx=PAD)  # (N, batch, length, width)
        x = x.permute(1, 0, 3, 2).reshape(batch, n * self.width, length)
        pooled = [
            max_over_windows(F.conv1d(x, w, b, padding=k - 1, groups=n), lengths, k).view(
                batch, n, -1
            )
            for k, w, b in zip(self.kernel_sizes, self.conv_weights, self.conv_biases, strict=True)
        ]
        return self.out(torch.cat(pooled, dim=2).transpose(0, 1))  # (N, batch, features)


class PackedRNN(Packed):
    """N bidirectional RNNs (``sweep.models.RNNClassifier``, GRU or LSTM) as one whose layers are
    block-diagonal: trial i's state units are i*H..(i+1)*H of every gate and direction and read
    only its own inputs (its padded embedding columns; in a deeper layer its own states). The
    other blocks start at zero and a gradient hook zeroes theirs, so the trials stay apart; one
    cuDNN call (one launch per layer and direction) replaces N. The price: the recurrent
    products are N times a lone trial's arithmetic, so it pays where launches dominate."""

    def __init__(self, members: Sequence[Member]):
        super().__init__(members)
        first = members[0].model
        rnn = first.rnn
        self.n, self.hidden, self.pooling = len(members), rnn.hidden_size, first.pooling
        self.gates = 3 if isinstance(rnn, nn.GRU) else 4
        self.rnn = type(rnn)(self.n * self.width, self.n * self.hidden, rnn.num_layers,
                             batch_first=True, bidirectional=True, **self.like)  # fmt: skip
        for param in self.rnn.parameters():
            nn.init.zeros_(param)
        self.stack_out(members)
        masks: dict[int, torch.Tensor] = {}  # packed weight id -> where its trials are
        weights = {id(p) for p in self.rnn.parameters() if p.dim() == 2}
        for piece in self.pieces(members):
            if id(piece.packed) in weights:
                if id(piece.packed) not in masks:
                    masks[id(piece.packed)] = torch.zeros_like(piece.packed, dtype=torch.bool)
                masks[id(piece.packed)][piece.where] = True
        for param in self.rnn.parameters():
            if id(param) in masks:
                param.register_hook(masks[id(param)].mul)  # bool: a quarter of a float mask

    def pieces(self, members: Sequence[Member]) -> Iterator[Piece]:
        yield from self.table_pieces(members)
        n, h = self.n, self.hidden
        for i, member in enumerate(members):
            for name, own in member.model.rnn.named_parameters():
                packed = getattr(self.rnn, name)
                layer = int(name.split("_l")[1].split("_")[0])  # weight_ih_l1_reverse: 1
                for gate in range(self.gates):
                    rows, own_rows = (
                        slice((gate * n + i) * h, (gate * n + i + 1) * h),
                        slice(gate * h, (gate + 1) * h),
                    )
                    if own.dim() == 1:  # a bias
                        yield Piece(member, packed, (rows,), own, (own_rows,))
                    elif name.startswith("weight_hh"):  # its own states
                        yield Piece(member, packed, (rows, slice(i * h, (i + 1) * h)), own,
                                    (own_rows, slice(None)))  # fmt: skip
                    elif layer == 0:  # its embedding columns
                        cols = slice(i * self.width, i * self.width + own.shape[1])
                        yield Piece(member, packed, (rows, cols), own, (own_rows, slice(None)))
                    else:  # the layer below's states: [forward N*H | backward N*H]
                        for d in (0, 1):
                            cols = slice((d * n + i) * h, (d * n + i + 1) * h)
                            yield Piece(member, packed, (rows, cols), own,
                                        (own_rows, slice(d * h, (d + 1) * h)))  # fmt: skip
            yield from self.out_pieces(i, member)

    def forward(self, ids: torch.Tensor, host_lengths=None) -> torch.Tensor:
        """``ids``: (N, batch, length) packed ids -> (N, batch, C); see ``RNNClassifier``.
        ``host_lengths``: the batch's lengths on the host (packing needs them there; given, no
        device sync)."""
        n, batch, length = ids.shape
        lengths = (ids[0] != PAD).sum(dim=1).clamp(min=1)  # the same in every trial's cut
        host = lengths.cpu() if host_lengths is None else host_lengths.clamp(min=1)
        # Sorted by length here, as pack_padded_sequence would sort (the same torch.sort), but
        # the orders travel to the device without blocking (it would copy them blocking).
        host, order = torch.sort(host, descending=True)
        to_device = order.to(ids.device, non_blocking=True)
        back = torch.argsort(order).to(ids.device, non_blocking=True)
        x = F.embedding(ids, self.table, padding_idx=PAD)  # (N, batch, length, width)
        x = x.permute(1, 2, 0, 3).reshape(batch, length, n * self.width).index_select(0, to_device)
        states, _ = self.rnn(pack_padded_sequence(x, host, batch_first=True))
        h, _ = pad_packed_sequence(states, batch_first=True, total_length=length)
        h = h.index_select(0, back)  # the batch's order again
        pooled = pool_states(h, lengths, self.pooling)
        # (batch, [forward | backward] x N x H) -> (N, batch, [forward H | backward H])
        z = pooled.view(batch, 2, n, self.hidden).permute(2, 0, 1, 3).reshape(n, batch, -1)
        return self.out(z)


class PackedTransformer(Packed):
    """N Transformers (``sweep.models.TransformerClassifier``) as one: every layer's weights
    stacked per trial (leading dimension N, widths padded to the widest with zeros) and applied
    with batched products; layer norm over each trial's own columns; attention with each
    trial's own heads (``heads_for`` its width) gathered into a common (heads, head width)
    layout, padded slots reading a zero column, scaled by its own head width; each trial's
    dropout masks drawn from its own stream in the shapes and order it draws alone (attention
    weights, after attention, inside and after the feed-forward block, on the pooled vector).
    Padded columns stay exactly zero in the residual stream, so they get zero gradient."""

    def __init__(self, members: Sequence[Member]):
        super().__init__(members)
        first = members[0].model
        n, w = len(members), self.width
        self.widths = [m.model.frontend.out_dim for m in members]
        self.heads = [m.model.heads for m in members]
        self.max_length, self.eps = first.max_length, first.norm.eps
        layers, ff = len(first.encoder.layers), first.encoder.layers[0].linear1.out_features

        def zeros(*shape):
            return nn.Parameter(torch.zeros(n, *shape, **self.like))

        self.position = zeros(self.max_length, w)
        self.qkv_w, self.qkv_b = [nn.ParameterList(zeros(3, *s) for _ in range(layers))
                                  for s in ((w, w), (w,))]  # fmt: skip
        self.proj_w, self.proj_b, self.ff1_w, self.ff1_b, self.ff2_w, self.ff2_b = [
            nn.ParameterList(zeros(*s) for _ in range(layers))
            for s in ((w, w), (w,), (ff, w), (ff,), (w, ff), (w,))
        ]
        self.norms = nn.ParameterList(zeros(w) for _ in range(4 * layers + 2))  # (weight, bias)
        self.stack_out(members)
        columns = torch.arange(w, device=self.device)
        self.own = (columns < torch.tensor(self.widths, device=self.device)[:, None])[:, None, None]
        self.count = torch.tensor(self.widths, device=self.device, dtype=self.table.dtype)
        self.head_layout()

    def head_layout(self) -> None:
        """Index maps between each trial's columns and a common (heads, head width) layout:
        ``to_heads`` (N, H*D) picks column j*d+c for head j, slot c (``width``, a zero column,
        where the trial has no such head or slot), ``from_heads`` (N, width) maps back (H*D:
        a zero slot, for padded columns); ``scale`` is 1/sqrt(d) of each trial's heads."""
        d = [w // h for w, h in zip(self.widths, self.heads, strict=True)]
        hmax, dmax = max(self.heads), max(d)
        to_heads = torch.full((len(d), hmax * dmax), self.width, dtype=torch.long)
        from_heads = torch.full((len(d), self.width), hmax * dmax, dtype=torch.long)
        for i, (width, head_width) in enumerate(zip(self.widths, d, strict=True)):
            c = torch.arange(width)
            slots = c // head_width * dmax + c % head_width
            to_heads[i, slots], from_heads[i, c] = c, slots
        self.to_heads, self.from_heads = to_heads.to(self.device), from_heads.to(self.device)
        self.hmax, self.dmax = hmax, dmax
        self.scale = torch.tensor([x**-0.5 for x in d], **self.like)[:, None, None, None, None]

    def pieces(self, members: Sequence[Member]) -> Iterator[Piece]:
        yield from self.table_pieces(members)
        for i, member in enumerate(members):
            model, w = member.model, slice(0, member.model.frontend.out_dim)
            every = slice(None)
            yield Piece(member, self.position, (i, every, w), model.position.weight)
            norms = iter(self.norms)
            for n, layer in enumerate(model.encoder.layers):
                attn = layer.self_attn
                size = attn.embed_dim
                for g in range(3):
                    rows = slice(g * size, (g + 1) * size)
                    yield Piece(member, self.qkv_w[n], (i, g, w, w), attn.in_proj_weight,
                                (rows, every))  # fmt: skip
                    yield Piece(member, self.qkv_b[n], (i, g, w), attn.in_proj_bias, (rows,))
                for packed, own, where in (
                    (self.proj_w[n], attn.out_proj.weight, (i, w, w)),
                    (self.proj_b[n], attn.out_proj.bias, (i, w)),
                    (self.ff1_w[n], layer.linear1.weight, (i, every, w)),
                    (self.ff1_b[n], layer.linear1.bias, (i,)),
                    (self.ff2_w[n], layer.linear2.weight, (i, w, every)),
                    (self.ff2_b[n], layer.linear2.bias, (i, w)),
                ):
                    yield Piece(member, packed, where, own)
                for norm in (layer.norm1, layer.norm2):
                    yield Piece(member, next(norms), (i, w), norm.weight)
                    yield Piece(member, next(norms), (i, w), norm.bias)
            yield Piece(member, next(norms), (i, w), model.norm.weight)
            yield Piece(member, next(norms), (i, w), model.norm.bias)
            yield from self.out_pieces(i, member)

    def layer_norm(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Layer norm ``k`` (its weight and bias: ``norms[2k]``, ``norms[2k+1]``) over each
        trial's own columns; padded columns come out zero."""
        weight, bias = self.norms[2 * k], self.norms[2 * k + 1]
        count = self.count[:, None, None, None]
        x = x * self.own  # padded columns are zero already; this keeps their gradient zero
        centred = (x - x.sum(-1, keepdim=True) / count) * self.own
        variance = (centred * centred).sum(-1, keepdim=True) / count
        return (
            centred * torch.rsqrt(variance + self.eps) * weight[:, None, None] + bias[:, None, None]
        )

    @staticmethod
    def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(N, batch, length, in) -> (N, batch, length, out) with each trial's own layer."""
        n, batch, length, _ = x.shape
        y = torch.baddbmm(bias[:, None], x.reshape(n, batch * length, -1), weight.transpose(1, 2))
        return y.view(n, batch, length, -1)

    def attention(self, x: torch.Tensor, n: int, pad: torch.Tensor) -> torch.Tensor:
        """Self-attention of layer ``n`` (``nn.MultiheadAttention`` as the lone model runs it:
        the math path, scores scaled on q and k alike, attention-weight dropout)."""
        trials, batch, length, _ = x.shape
        q, k, v = (self.linear(x, self.qkv_w[n][:, g], self.qkv_b[n][:, g]) for g in range(3))
        index = self.to_heads[:, None, None].expand(trials, batch, length, -1)

        def heads(t):  # (N, batch, length, width) -> (N, batch, H, length, D)
            t = F.pad(t, (0, 1)).gather(-1, index)
            return t.view(trials, batch, length, self.hmax, self.dmax).transpose(2, 3)

        root = self.scale.sqrt()
        scores = (heads(q) * root) @ (heads(k) * root).transpose(-1, -2)
        weights = scores.masked_fill(pad[None, :, None, None, :], float("-inf")).softmax(-1)
        if self.training and self.p > 0:
            masks = torch.ones_like(weights)
            for i, (rng, h) in enumerate(zip(self.rngs, self.heads, strict=True)):
                masks[i, :, :h] = _mask(weights[i, :, :h], self.p, rng)
            weights = weights * masks
        out = (weights @ heads(v)).transpose(2, 3).reshape(trials, batch, length, -1)
        back = self.from_heads[:, None, None].expand(trials, batch, length, -1)
        return self.linear(F.pad(out, (0, 1)).gather(-1, back), self.proj_w[n], self.proj_b[n])

    def forward(self, ids: torch.Tensor, host_lengths=None) -> torch.Tensor:
        """``ids``: (N, batch, length) packed ids -> (N, batch, C); see
        ``TransformerClassifier`` (pre-norm layers, padding mask, mean pooling)."""
        length = ids.shape[2]
        check_length(length, self.max_length)
        pad = attention_padding(ids[0])  # (batch, length), the same in every trial's cut
        x = F.embedding(ids, self.table, padding_idx=PAD) + self.position[:, None, :length]
        for n in range(len(self.qkv_w)):
            attended = self.attention(self.layer_norm(x, 2 * n), n, pad)
            x = x + self.dropout(attended, self.widths, seq_first=True)
            h = torch.relu(self.linear(self.layer_norm(x, 2 * n + 1), self.ff1_w[n], self.ff1_b[n]))
            x = x + self.dropout(self.linear(self.dropout(h), self.ff2_w[n], self.ff2_b[n]),
                                 self.widths)  # fmt: skip
        h = self.layer_norm(x, len(self.norms) // 2 - 1)
        keep = (~pad)[None, ..., None].to(h.dtype)
        return self.out((h * keep).sum(dim=2) / keep.sum(dim=2))  # mean over non-pad positions


def _mask(z: torch.Tensor, p: float, rng: torch.Generator, seq_first: bool = False) -> torch.Tensor:
    """A dropout mask for ``z``'s shape, drawn as ``F.dropout`` draws it (bernoulli of keep,
    then / keep) in ``z``'s logical order, or with ``seq_first`` (``z``: batch, length, ...)
    in the order of a length-first tensor: ``F.dropout`` fills its mask in memory order, and
    the lone model's tensor after attention is one (``nn.MultiheadAttention`` works length
    first inside)."""
    keep = 1.0 - p
    shape = (z.shape[1], z.shape[0], *z.shape[2:]) if seq_first else z.shape
    mask = torch.empty(shape, device=z.device, dtype=z.dtype).bernoulli_(keep, generator=rng)
    return (mask.transpose(0, 1) if seq_first else mask).div_(keep)
