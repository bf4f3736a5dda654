"""The fast training paths give the same numbers as the plain PyTorch ones they replace."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from sweep.models.classifiers import BagClassifier, CNNClassifier
from sweep.models.embedding import CountMean, distinct_ids
from sweep.models.optim import FusedAdam, LazyAdam, Optimizers


def batch(seed: int, rows=6, width=9, vocab=40):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, width), generator=g)
    ids[2] = 0  # an all-pad row
    ids[3, 4:] = 0  # a short row
    return ids


def test_distinct_ids_leave_out_padding():
    rows, position = distinct_ids(torch.tensor([5, 0, 3, 5, 9, 0]), 12)
    assert rows.tolist() == [3, 5, 9]
    assert position.tolist()[::2] == [1, 0, 2] and position[3] == 1


@pytest.mark.parametrize("skip", [0, None])
def test_distinct_ids_sorting_and_marking_agree(monkeypatch, skip):
    """The batch-sized path (sorting, for a table much larger than the batch) and the
    table-sized one (marking) give the same rows and positions, padding left out or not."""
    from sweep.models import embedding

    torch.manual_seed(0)
    for rows_count in (50, 5_000, 2_000_000):
        flat = torch.randint(0, rows_count, (640,))
        flat[::7] = 0  # padding
        results = []
        for per_id in (0, 10**9):  # 0: always sort; 10**9: always mark
            monkeypatch.setattr(embedding, "_SORT_ROWS_PER_ID", per_id)
            results.append(distinct_ids(flat, rows_count, skip=skip))
        (rows_a, pos_a), (rows_b, pos_b) = results
        assert torch.equal(rows_a, rows_b) and torch.equal(pos_a, pos_b)
        keep = flat != 0 if skip == 0 else torch.ones_like(flat, dtype=torch.bool)
        assert torch.equal(rows_a[pos_a[keep]], flat[keep])  # each id finds its row


def test_fused_mean_gradient_on_a_table_far_larger_than_the_batch():
    """The fused mean on a 3M-row table (its ids sorted, not marked): the same values and
    gradient as embedding_bag."""
    torch.manual_seed(0)
    weight = torch.randn(3_000_000, 4, requires_grad=True)
    plain = weight.detach().clone().requires_grad_()
    ids = torch.randint(1, 3_000_000, (8, 12))
    ids[0, 6:] = 0
    CountMean.apply(weight, ids).sum().backward()
    F.embedding_bag(ids, plain, mode="mean", padding_idx=0).sum().backward()
    grad = weight.grad.coalesce()
    used = grad.indices()[0]
    assert torch.allclose(grad.values(), plain.grad[used], atol=1e-6)
    assert int(plain.grad.abs().sum(dim=1).gt(0).sum()) == len(used)


def test_fused_mean_matches_embedding_bag_values_and_gradients():
    torch.manual_seed(0)
    weight = torch.randn(40, 8, requires_grad=True)
    plain = weight.detach().clone().requires_grad_()
    ids = batch(0)
    ours, theirs = (
        CountMean.apply(weight, ids),
        F.embedding_bag(ids, plain, mode="mean", padding_idx=0),
    )
    torch.testing.assert_close(ours, theirs)
    assert torch.count_nonzero(ours[2]) == 0
    upstream = torch.randn_like(ours)
    ours.backward(upstream)
    theirs.backward(upstream)
    assert weight.grad.is_sparse
    torch.testing.assert_close(weight.grad.to_dense(), plain.grad)
    assert torch.count_nonzero(weight.grad.to_dense()[0]) == 0  # <pad> gets no gradient


def test_bag_model_uses_the_fused_mean_only_when_training_sparse_on_cpu(monkeypatch):
    calls = []
    real = CountMean.apply
    monkeypatch.setattr(CountMean, "apply", lambda *a: calls.append(1) or real(*a))
    model = BagClassifier(40, 8, 3, sparse=True)
    model(batch(1)).sum().backward()
    assert calls == [1]
    with torch.no_grad():
        model(batch(1))  # evaluation: embedding_bag
    BagClassifier(40, 8, 3, sparse=False)(batch(1)).sum().backward()
    assert calls == [1]


@pytest.mark.parametrize("model_class", [BagClassifier, CNNClassifier])
def test_lazy_adam_trains_like_sparse_adam(model_class):
    def train(optimizer_class):
        torch.manual_seed(0)
        model = model_class(40, 8, 3, sparse=True)
        table = [model.frontend.embed.weight]
        dense = [p for p in model.parameters() if p is not table[0]]
        optimizers = [optimizer_class(table, lr=0.01), torch.optim.Adam(dense, lr=0.01)]
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        for step in range(20):
            for o in optimizers:
                o.zero_grad()
            F.cross_entropy(model(batch(step % 4)), labels).backward()
            for o in optimizers:
                o.step()
        return model.frontend.embed.weight.detach()

    torch.manual_seed(0)
    initial = model_class(40, 8, 3, sparse=True).frontend.embed.weight.detach()
    lazy, reference = train(LazyAdam), train(torch.optim.SparseAdam)
    assert (lazy - initial).abs().max() > 0.05  # it trained
    torch.testing.assert_close(lazy, reference)  # the same update rule, to float precision


def test_lazy_adam_leaves_unused_rows_alone():
    torch.manual_seed(0)
    table = nn.Embedding(30, 4, padding_idx=0, sparse=True)
    before = table.weight.detach().clone()
    optimizer = LazyAdam([table.weight], lr=0.1)
    table(torch.tensor([[3, 5, 5, 0]])).sum().backward()
    optimizer.step()
    changed = (table.weight.detach() != before).any(dim=1).nonzero().flatten().tolist()
    assert changed == [3, 5]


def test_optimizers_split_sparse_and_dense_parameters():
    model = BagClassifier(40, 8, 3, hidden_dim=5, sparse=True)
    kinds = sorted(type(o).__name__ for o in Optimizers(model, 0.01).optimizers)
    assert kinds == ["FusedAdam", "LazyAdam"]


def test_fused_adam_trains_like_torch_adam():
    def train(make):
        torch.manual_seed(0)
        model = CNNClassifier(40, 8, 3, sparse=False)
        optimizer = make(model.parameters())
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
        for step in range(15):
            optimizer.zero_grad()
            F.cross_entropy(model(batch(step % 4)), labels).backward()
            optimizer.step()
        return [p.detach() for p in model.parameters()]

    ours = train(lambda params: FusedAdam(params, lr=0.01))
    theirs = train(lambda params: torch.optim.Adam(params, lr=0.01))
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("sparse", [True, False])
def test_a_batch_of_documents_without_tokens_trains(sparse):
    # Length buckets put documents whose text yields no token (e.g. "!!!" with pattern \w+)
    # into one all-pad batch: the step must be a harmless no-op for the table.
    model = BagClassifier(50, 8, 3, sparse=sparse)
    optimizers = Optimizers(model, 0.01)
    before = model.frontend.embed.weight.detach().clone()
    optimizers.zero_grad()
    F.cross_entropy(
        model(torch.zeros(4, 6, dtype=torch.int32)), torch.tensor([0, 1, 2, 0])
    ).backward()
    optimizers.step()
    torch.testing.assert_close(model.frontend.embed.weight.detach(), before)


def test_the_private_fused_kernel_keeps_the_signature_and_formula_we_call():
    """``torch._fused_adam_`` is private: this pins the call ``sweep.models.optim`` makes. If a torch
    release changes it, this fails (the optimizers would quietly fall back to op by op)."""
    from sweep.models import optim

    assert hasattr(torch, "_fused_adam_") and optim.fused_kernel_works()


def test_torch_private_names_are_read_in_one_guarded_place():
    """The optimizers read torch's private names through ``optim.torch_private`` only: each one
    it reads exists in this torch, a missing one is an error naming the torch version, and no
    module of the package reads one of them itself."""
    import ast
    import re

    from conftest import ROOT

    from sweep.models import optim

    for owner, name in optim.PRIVATE_NAMES:
        assert callable(optim.torch_private(owner, name)), name
    version = re.escape(torch.__version__)
    with pytest.raises(RuntimeError, match=rf"torch {version} has no torch\._gone_, which"):
        optim.torch_private(torch, "_gone_")
    with pytest.raises(RuntimeError, match=rf"torch {version} has no Tensor\._gone_, which"):
        optim.torch_private(torch.zeros(1), "_gone_")
    private = {name for _, name in optim.PRIVATE_NAMES}
    direct = []
    for path in (ROOT / "sweep").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in private:
                direct.append(f"{path.relative_to(ROOT)}:{node.lineno} {ast.unparse(node)}")
    assert direct == []


@pytest.mark.parametrize("betas,eps", [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-2)])
def test_fused_adam_fallback_keeps_betas_and_eps(monkeypatch, betas, eps):
    from sweep.models import optim

    def run(fused: bool):
        monkeypatch.setattr(optim, "fused_kernel_works", lambda: fused)
        torch.manual_seed(0)
        model = CNNClassifier(40, 8, 3, sparse=False)
        optimizer = optim.FusedAdam(model.parameters(), lr=0.05, betas=betas, eps=eps)
        for step in range(5):
            optimizer.zero_grad()
            F.cross_entropy(model(batch(step % 4)), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
            optimizer.step()
        return [p.detach() for p in model.parameters()]

    for fused, by_ops in zip(run(True), run(False), strict=True):
        torch.testing.assert_close(fused, by_ops, rtol=1e-5, atol=1e-6)


def test_optimizer_state_round_trips_through_state_dict():
    """Saved after 3 steps and loaded into fresh optimizers, 3 more steps land where 6 do."""

    def steps(model, optimizers, start, count):
        for step in range(start, start + count):
            optimizers.zero_grad()
            F.cross_entropy(model(batch(step % 4)), torch.tensor([0, 1, 2, 0, 1, 2])).backward()
            optimizers.step()

    torch.manual_seed(0)
    straight = BagClassifier(40, 8, 3, hidden_dim=5, sparse=True)
    torch.manual_seed(0)
    resumed = BagClassifier(40, 8, 3, hidden_dim=5, sparse=True)
    first = Optimizers(straight, 0.05)
    steps(straight, first, 0, 3)
    resumed.load_state_dict(straight.state_dict())
    saved = copy.deepcopy(first.state_dict())  # torch hands out the live state tensors
    steps(straight, first, 3, 3)
    second = Optimizers(resumed, 0.05)
    second.load_state_dict(saved)
    steps(resumed, second, 3, 3)
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert isinstance(second.optimizers[1], torch.optim.Optimizer)  # LazyAdam: a real one
