"""The plain PyTorch trial the speed benchmark compares against: how hand-made sweeps are written.

Per trial: tokenize the texts and rebuild the vocabulary (``Counter``, the K most frequent
words), turn every document into a Python list of ids, and train through a ``DataLoader`` over
those lists with a padding collate function, ``nn.Embedding`` (dense gradients) and ``Adam``.
Same model as the benchmark's bag model (mean of the non-pad embeddings, then a linear layer),
same tokenizer, truncation, epochs, batch size, learning rate and early stopping as ours, so
only the engineering differs. Nothing here is used by a sweep.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader


class MeanBag(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, num_classes: int):
        super().__init__()
        self.embed = nn.Embedding(num_embeddings, embedding_dim, padding_idx=0)
        self.out = nn.Linear(embedding_dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        mask = (ids != 0).unsqueeze(-1).float()
        summed = (self.embed(ids) * mask).sum(dim=1)
        return self.out(summed / mask.sum(dim=1).clamp(min=1.0))


def pad_collate(batch):
    lengths = max(len(ids) for ids, _ in batch)
    padded = [ids + [0] * (lengths - len(ids)) for ids, _ in batch]
    return torch.tensor(padded, dtype=torch.long), torch.tensor([y for _, y in batch])


def accuracy(model: nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for ids, labels in loader:
            correct += (model(ids).argmax(dim=1) == labels).sum().item()
            total += len(labels)
    return 100.0 * correct / max(total, 1)


def reference_trial(
    texts: dict[str, list[str]],
    labels: dict[str, list[int]],
    tokenize: Callable[[str], list[str]],
    *,
    vocab_size: int,
    embedding_dim: int,
    num_classes: int,
    max_length: int,
    epochs: int,
    batch_size: int,
    lr: float,
    patience: int,
    seed: int,
    curve: bool = False,
) -> dict:
    """One trial; returns test accuracy at the best validation epoch and the wall time.

    With ``curve``, the test accuracy after every epoch is recorded against the trial's wall
    time so far, the time spent measuring it left out.
    """
    start = time.perf_counter()
    paused = 0.0
    points: list[tuple[float, float]] = []
    torch.manual_seed(seed)
    tokens = {split: [tokenize(t)[:max_length] for t in texts[split]] for split in texts}
    counts = Counter(word for doc in tokens["train"] for word in doc)
    stoi = {w: i + 2 for i, (w, _) in enumerate(counts.most_common(vocab_size))}  # 0 pad, 1 unk
    data = {
        split: [
            ([stoi.get(w, 1) for w in doc] or [1], y)
            for doc, y in zip(docs, labels[split], strict=True)
        ]
        for split, docs in tokens.items()
    }
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        data["train"], batch_size=batch_size, shuffle=True, collate_fn=pad_collate,
        generator=generator,
    )  # fmt: skip
    loaders = {
        s: DataLoader(data[s], batch_size=1024, collate_fn=pad_collate)
        for s in ("validation", "test")
    }
    model = MeanBag(len(stoi) + 2, embedding_dim, num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_epoch, best_state = -1.0, 0, None
    for epoch in range(1, epochs + 1):
        model.train()
        for ids, y in train_loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(ids), y)
            loss.backward()
            optimizer.step()
        val = accuracy(model, loaders["validation"])
        if val > best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(model.state_dict())
        if curve:
            now = time.perf_counter()
            points.append((now - start - paused, accuracy(model, loaders["test"])))
            paused += time.perf_counter() - now
        if epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    test = accuracy(model, loaders["test"])
    return {
        "seconds": time.perf_counter() - start - paused,
        "test_accuracy": test,
        "val_accuracy": best,
        "epochs": epoch,
        "curve": points,
    }
