"""One trial in a pack: a member of the epoch loop (``sweep.models.fit.Member``: its own model
and optimizer, the trial alone, its views and progress) with the random stream its dropout masks
come from, and what a packed model reads of it."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sweep.models import fit

__all__ = ["Member", "trial_generator"]


@dataclass
class Member(fit.Member):
    """One trial in a pack: a member of the epoch loop (its own model and optimizer, the trial
    alone; views and progress) and its dropout masks' stream."""

    # Dropout masks: drawn from this generator, which holds the global random state the
    # trial alone would have after building its model, so the masks are the lone trial's.
    rng: torch.Generator | None = None

    @property
    def table(self) -> nn.Parameter:
        return self.model.frontend.embed.weight

    @property
    def linears(self) -> list[nn.Linear]:
        return [m for m in self.model.head if isinstance(m, nn.Linear)]


def trial_generator(device: torch.device, seed: int) -> torch.Generator:
    """The random stream a trial's dropout draws from in a pack: on a CPU the global state as
    the trial alone has it right after building its model (call this then), so its masks are
    the lone trial's; on CUDA, whose dropout kernel draws differently, a generator seeded with
    the trial's seed (the same distribution, not the same masks)."""
    if torch.device(device).type == "cpu":
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        return generator
    return torch.Generator(device=device).manual_seed(seed)
