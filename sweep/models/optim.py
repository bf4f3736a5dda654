"""The optimizers a trial trains with: Adam for dense parameters, lazy Adam for sparse tables.

Why not ``torch.optim.Adam(fused=True)`` for the dense parameters: it runs the same kernel, but
its per-step bookkeeping (param groups, hooks, checks) made a default synthetic trial 10% slower
on 2 CPU cores (1.81 s against 2.01 s, same accuracy; ``python -m sweep.benchmarks.optim``), and
the first ``torch.optim`` optimizer of a process imports ``torch._dynamo`` (about a second, paid
again by every worker). ``FusedAdam`` is a plain object with the same update and a
``state_dict``. ``LazyAdam`` is a real ``torch.optim.Optimizer``: it only runs for sparse tables,
where steps are large and that overhead does not show.

torch's private names that no public API replaces are read in one place, ``torch_private``,
which fails with a message naming the torch version when a release renamed one (a test pins
them): the fused Adam kernel ``torch._fused_adam_``, ``torch._foreach_add_`` (the step counts
of every parameter in one call) and the parts of an uncoalesced sparse gradient
(``Tensor._indices``, ``Tensor._values``: the public ``indices()`` would coalesce, a sort). The
fused kernel is also checked once against the public formula: without it, or if a torch
release changes it, the same update runs op by op (``adam_step``). The pack's Adam
(``sweep.models.pack.optim``) reads and writes each trial's state through ``FusedAdam``'s own
methods (``state_of``, ``set_steps``, ``step_rows``), nothing private.
"""

from __future__ import annotations

import functools
import logging
import math
import types
from collections.abc import Iterable

import torch
from torch import nn

from sweep.models.embedding import distinct_ids

log = logging.getLogger(__name__)

# The private names torch_private reads: (where, name). No other code of the package reads a
# private name of torch (tests/test_fast_paths.py checks both).
PRIVATE_NAMES = (
    (torch, "_fused_adam_"),
    (torch, "_foreach_add_"),
    (torch.Tensor, "_indices"),
    (torch.Tensor, "_values"),
)


def torch_private(owner, name: str):
    """``owner.<name>``, a private torch function or tensor method (``PRIVATE_NAMES``), or a
    RuntimeError naming the torch version when this release has none by that name."""
    try:
        return getattr(owner, name)
    except AttributeError:
        where = owner.__name__ if isinstance(owner, types.ModuleType) else type(owner).__name__
        raise RuntimeError(
            f"torch {torch.__version__} has no {where}.{name}, which sweep.models.optim calls "
            "for Adam's updates; install the torch release pyproject.toml names or report it"
        ) from None


def _foreach_add_(tensors: list[torch.Tensor], value: float) -> None:
    """Add ``value`` to every tensor of the list in one call (each parameter's step count)."""
    torch_private(torch, "_foreach_add_")(tensors, value)


def _adam_by_ops(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps):
    """Adam (no weight decay) with public ops: the fallback, and the reference of the check."""
    for p, g, m, v, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps, strict=True):
        t = float(step)
        m.mul_(beta1).add_(g, alpha=1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / math.sqrt(1 - beta2**t)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - beta1**t))


def _fused(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps):
    torch_private(torch, "_fused_adam_")(
        params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr, beta1=beta1, beta2=beta2,
        weight_decay=0.0, eps=eps, amsgrad=False, maximize=False,
    )  # fmt: skip


@functools.cache
def fused_kernel_works() -> bool:
    """Whether ``torch._fused_adam_`` exists here and gives the public formula's update."""
    g = torch.Generator().manual_seed(0)
    tensors = [torch.randn(3, 2, generator=g) for _ in range(2)]
    results = []
    for update in (_fused, _adam_by_ops):
        p, grad = tensors[0].clone(), tensors[1].clone()
        m, v, step = torch.zeros_like(p), torch.zeros_like(p), torch.full((), 2.0)
        try:
            update([p], [grad], [m], [v], [step], lr=0.1, beta1=0.9, beta2=0.99, eps=1e-3)
        except (RuntimeError, TypeError) as error:  # gone, renamed arguments, removed overload
            log.warning("torch._fused_adam_ failed its check (%s); Adam runs op by op", error)
            return False
        results.append(p)
    same = torch.allclose(results[0], results[1], rtol=1e-5, atol=1e-6)
    if not same:
        log.warning("torch._fused_adam_ disagrees with Adam's formula here; Adam runs op by op")
    return same


def adam_step(params, grads, exp_avgs, exp_avg_sqs, steps, *, lr, beta1, beta2, eps) -> None:
    """One Adam update of every tensor in ``params`` (in place; ``steps`` already counted): one
    fused kernel call where it passed its check, else public ops."""
    update = _fused if fused_kernel_works() else _adam_by_ops
    update(params, grads, exp_avgs, exp_avg_sqs, steps, lr=lr, beta1=beta1, beta2=beta2, eps=eps)


class FusedAdam:
    """Adam for dense parameters as one ``adam_step`` per step (see the module docstring)."""

    def __init__(self, params: Iterable[nn.Parameter], lr: float, betas=(0.9, 0.999), eps=1e-8):
        self.params = list(params)
        self.lr, self.betas, self.eps = lr, tuple(betas), eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = [torch.zeros((), device=p.device) for p in self.params]
        self._position = {id(p): i for i, p in enumerate(self.params)}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        steps = [self.steps[i] for i in live]
        _foreach_add_(steps, 1.0)
        adam_step(
            [self.params[i] for i in live], [self.params[i].grad for i in live],
            [self.exp_avg[i] for i in live], [self.exp_avg_sq[i] for i in live], steps,
            lr=self.lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
        )  # fmt: skip

    def state_of(self, param: nn.Parameter) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(exp_avg, exp_avg_sq, steps taken) of one of this optimizer's parameters: the moments
        are this optimizer's own tensors (writing into them changes its state)."""
        i = self._index(param)
        return self.exp_avg[i], self.exp_avg_sq[i], int(self.steps[i])

    def set_steps(self, steps: int) -> None:
        """Every parameter's step count (a pack's Adam starts from, and hands back, its trials')."""
        for counter in self.steps:
            counter.fill_(steps)

    @torch.no_grad()
    def step_rows(self, rates: dict[float, list[tuple[nn.Parameter, int | slice]]]) -> None:
        """One step in which each learning rate updates its own leading rows of the parameters
        (``{lr: [(param, rows)]}``; a pack whose trials search ``train.lr``): one fused call per
        rate. Every parameter's step count advances, as in ``step``."""
        _foreach_add_(self.steps, 1.0)
        for lr, parts in rates.items():
            where = [(self._index(p), rows) for p, rows in parts]
            adam_step(
                [self.params[i][w] for i, w in where],
                [self.params[i].grad[w] for i, w in where],
                [self.exp_avg[i][w] for i, w in where],
                [self.exp_avg_sq[i][w] for i, w in where],
                [self.steps[i] for i, _ in where],
                lr=lr, beta1=self.betas[0], beta2=self.betas[1], eps=self.eps,
            )  # fmt: skip

    def _index(self, param: nn.Parameter) -> int:
        return self._position[id(param)]

    def state_dict(self) -> dict:
        return {
            "lr": self.lr, "betas": self.betas, "eps": self.eps,
            "exp_avg": [t.clone() for t in self.exp_avg],
            "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
            "steps": [t.clone() for t in self.steps],
        }  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.lr, self.betas, self.eps = state["lr"], tuple(state["betas"]), state["eps"]
        for name in ("exp_avg", "exp_avg_sq", "steps"):
            for mine, saved in zip(getattr(self, name), state[name], strict=True):
                mine.copy_(saved)


class LazyAdam(torch.optim.Optimizer):
    """Adam for sparse embedding gradients: steps only the rows a batch used ("lazy" Adam).

    The same update as ``torch.optim.SparseAdam`` (moments of untouched rows are left as they
    are; bias correction by the global step count), in fewer, larger operations: duplicate ids
    are summed with a vocabulary-sized mask and one ``index_add_`` instead of a sort, and a
    gradient that arrives coalesced (the bag model's fused mean) skips that too. Measured 1.1-1.4x
    (TREC) and 1.8-2.0x (20 Newsgroups) faster per trial than SparseAdam over several runs
    (``python -m sweep.benchmarks.speed --ablation``; docs/benchmarks.md).
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(
                        step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p)
                    )
                state["step"] += 1
                rows, grad = self._rows(p.grad)
                m_all, v_all = state["exp_avg"], state["exp_avg_sq"]
                w, m, v = (t.index_select(0, rows) for t in (p, m_all, v_all))
                # SparseAdam adds eps before the bias correction of the second moment, Adam
                # after: scaling eps by that correction gives SparseAdam's update exactly.
                eps = group["eps"] / math.sqrt(1 - beta2 ** state["step"])
                adam_step([w], [grad.contiguous()], [m], [v], [torch.full((), float(state["step"]))],
                          lr=group["lr"], beta1=beta1, beta2=beta2, eps=eps)  # fmt: skip
                p.index_copy_(0, rows, w)
                m_all.index_copy_(0, rows, m)
                v_all.index_copy_(0, rows, v)

    @staticmethod
    def _rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distinct rows, summed gradient per row) of a sparse COO gradient."""
        if not grad.is_sparse:
            raise TypeError("LazyAdam needs sparse gradients (nn.Embedding(sparse=True))")
        # The COO parts as they are: the public indices() and values() need a coalesced tensor.
        index = torch_private(grad, "_indices")()[0]
        values = torch_private(grad, "_values")()
        if grad.is_coalesced():
            return index, values
        rows, position = distinct_ids(index, grad.shape[0], skip=None)
        if len(rows) == len(index):  # already one entry per row (the fused mean's gradient)
            return index, values
        summed = torch.zeros((len(rows), *values.shape[1:]), dtype=values.dtype,
                             device=values.device)  # fmt: skip
        return rows, summed.index_add_(0, position, values)


class Optimizers:
    """FusedAdam for dense parameters and LazyAdam for sparse tables, stepped together."""

    def __init__(self, model: nn.Module, lr: float):
        sparse_ids: set[int] = set()
        for module in model.modules():
            if isinstance(module, (nn.Embedding, nn.EmbeddingBag)) and module.sparse:
                sparse_ids.add(id(module.weight))
        sparse = [p for p in model.parameters() if id(p) in sparse_ids]
        dense = [p for p in model.parameters() if id(p) not in sparse_ids]
        self.optimizers: list = []
        if dense:
            self.optimizers.append(FusedAdam(dense, lr=lr))
        if sparse:
            self.optimizers.append(LazyAdam(sparse, lr=lr))

    @property
    def dense(self) -> FusedAdam | None:
        """The Adam of the dense parameters (a pack steps and hands back its state), if any."""
        first = self.optimizers[0] if self.optimizers else None
        return first if isinstance(first, FusedAdam) else None

    def zero_grad(self) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        for optimizer in self.optimizers:
            optimizer.step()

    def state_dict(self) -> list[dict]:
        return [optimizer.state_dict() for optimizer in self.optimizers]

    def load_state_dict(self, states: list[dict]) -> None:
        for optimizer, state in zip(self.optimizers, states, strict=True):
            optimizer.load_state_dict(state)
