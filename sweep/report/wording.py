"""How an accuracy is said, in one place for the console and the page: one seed's figure says it
is one seed's; a mean over retrained seeds says so, with its standard error and the figure of
the study's own seed (the one the exported model was trained with)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def _number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def accuracy(row: Mapping[str, Any], metric: str = "val_accuracy") -> str:
    """``84.90% ± 0.52 (mean ± standard error over 3 seeds; seed 0: 83.90%)`` for a trial
    retrained with more seeds, else ``83.90% (seed 0)``: one seed's figure."""
    value, seed = _number(row.get(metric)), _number(row.get("seed"))
    own = "nan" if value is None else f"{value:.2f}%"
    mean, std = _number(row.get(f"{metric}_mean")), _number(row.get(f"{metric}_std"))
    seeds = _number(row.get("seeds"))
    if mean is None or std is None or seeds is None or seeds < 2:
        return f"{own} ({'one seed' if seed is None else f'seed {int(seed)}'})"
    seed_text = "the first seed" if seed is None else f"seed {int(seed)}"
    error = std / math.sqrt(seeds)
    return (f"{mean:.2f}% ± {error:.2f} (mean ± standard error over {int(seeds)} seeds; "
            f"{seed_text}: {own})")  # fmt: skip


def recommendation_lines(row: Mapping[str, Any]) -> list[str]:
    """What the console says of the recommended trial: its size and accuracies, and the file
    it ships as, worded as the page words them."""
    lines = [
        f"recommended: embedding_dim={int(row['embedding_dim'])} vocab_size="
        f"{int(row['vocab_size'])} (num_embeddings={int(row['num_embeddings'])}): "
        f"{int(row['params_total']):,} params, validation accuracy {accuracy(row)}, test "
        f"accuracy {accuracy(row, 'test_accuracy')}"
    ]
    precision = row.get("ship_precision")
    if isinstance(precision, str) and precision:
        measured = (
            f"validation accuracy {accuracy(row, 'ship_val_accuracy')}, test accuracy "
            f"{accuracy(row, 'ship_test_accuracy')}"
            if _number(row.get("ship_val_accuracy")) is not None
            else "accuracy at it not measured (report.quantize)"
        )
        lines.append(f"ships at {precision}: {int(row['ship_bytes']):,} bytes of weights and "
                     f"vocabulary, {measured} (search.precision, search.max_model_bytes)")  # fmt: skip
    return lines
