"""The pack's Adam: one ``FusedAdam`` over the packed tensors, built from and written back to
each trial's own Adam state, with a learning rate per trial where they differ."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sweep.models.optim import FusedAdam
from sweep.models.pack.member import Member
from sweep.models.pack.modules import Packed

__all__ = ["PackedOptimizer"]


def own_adam(member: Member) -> FusedAdam:
    """The member's own Adam (a model with a dense table has that one optimizer)."""
    adam = member.optimizers.dense
    if adam is None or len(member.optimizers.optimizers) != 1:
        raise TypeError("a packed trial trains with one dense Adam (a sparse table trains alone)")
    return adam


class PackedOptimizer:
    """The pack's Adam (FusedAdam, as each trial alone uses for its dense tensors), built from
    and written back to each trial's own Adam state. Trials of one pack may have their own
    learning rates (a searched ``train.lr``): then each step updates each learning rate's trials
    by their slices of the packed tensors, one fused call per distinct rate."""

    def __init__(self, packed: Packed, members: Sequence[Member]):
        self.packed, self.members = packed, members
        rates = [own_adam(m).lr for m in members]
        self.adam = FusedAdam(list(packed.parameters()), lr=rates[0])
        self.steps = 0
        with torch.no_grad():
            for piece in packed.pieces(members):
                m, v, self.steps = own_adam(piece.member).state_of(piece.own)  # equal for all
                exp_avg, exp_avg_sq, _ = self.adam.state_of(piece.packed)
                exp_avg[piece.where] = piece.own_part(m)
                exp_avg_sq[piece.where] = piece.own_part(v)
        self.adam.set_steps(self.steps)
        # {lr: [(packed tensor, the trial's leading slice)]}; None: one rate for all.
        # A leading slice (rows of the table, the trial's filters, gates or stacked layer) is
        # whole rows, so contiguous; its other columns (padding; in a block-diagonal layer the
        # other trials' blocks) have zero gradient and stay zero.
        self.by_rate: dict[float, list] | None = None
        if len(set(rates)) > 1:
            self.by_rate = {}
            rate_of = {id(m): rate for m, rate in zip(members, rates, strict=True)}
            seen = set()
            for piece in packed.pieces(members):
                rows = piece.where[0]
                key = (id(piece.packed), rows if isinstance(rows, int) else rows.start)
                if key not in seen:  # a row block may hold several parts of one tensor
                    seen.add(key)
                    rate = rate_of[id(piece.member)]
                    self.by_rate.setdefault(rate, []).append((piece.packed, rows))

    def zero_grad(self) -> None:
        self.adam.zero_grad()

    @torch.no_grad()
    def step(self) -> None:
        if self.by_rate is None:
            self.adam.step()
        else:
            self.adam.step_rows(self.by_rate)
        self.steps += 1

    @torch.no_grad()
    def store(self, only: Sequence[Member] | None = None) -> None:
        """Write the moments and the step count back into each member's own optimizer (``only``:
        into these members')."""
        only = self.members if only is None else only
        for piece in self.packed.pieces(self.members):
            if not any(piece.member is m for m in only):
                continue
            m, v, _ = own_adam(piece.member).state_of(piece.own)
            exp_avg, exp_avg_sq, _ = self.adam.state_of(piece.packed)
            for own, packed in ((m, exp_avg), (v, exp_avg_sq)):
                packed = packed[piece.where]
                own[piece.part].copy_(packed.t() if piece.transposed else packed)
        for member in only:
            own_adam(member).set_steps(self.steps)
