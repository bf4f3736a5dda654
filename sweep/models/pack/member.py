"""One trial in a pack: its own model and optimizer (the trial alone), its views and progress,
and the random stream its dropout masks come from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from sweep.data.prepared import SplitTensors
from sweep.models.fit import EarlyStopping, Work
from sweep.models.optim import Optimizers

__all__ = ["Member", "trial_generator"]


@dataclass
class Member:
    """One trial in a pack: its own model and optimizer (the trial alone), views and progress."""

    model: nn.Module  # a TextClassifier of a PACKABLE kind
    optimizers: Optimizers
    views: dict[str, SplitTensors]
    on_epoch: Callable[[int, float], None] | None
    stopping: EarlyStopping
    work: Work = field(default_factory=Work)
    done: bool = False
    outcome: Any = None  # FitResult, or the exception that ended the trial
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
