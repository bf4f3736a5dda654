"""Stage 5, measure: parameter counts, model size, GPU peak memory and a memory estimate.

GPU memory is measured with the CUDA caching allocator's peak counters; on any other device it is
missing (NaN), never 0, and the analytic estimate stands beside it.
"""

from __future__ import annotations

import gc
import math
from contextlib import contextmanager

import torch

MB = 2**20


def resolve_device(name: str) -> torch.device:
    """Map the ``device`` config key (auto|cpu|cuda|cuda:N) to a torch device, checking it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(
            f"device={name!r} is not a device: use auto, cpu, cuda or cuda:N"
        ) from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but CUDA is not available here: use device=cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={name!r} but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type != "cpu":
        raise ValueError(f"device={name!r} is not supported: use auto, cpu, cuda or cuda:N")
    return device


def device_name(device: torch.device) -> str:
    """A human-readable name of the device, e.g. 'cuda:0 (NVIDIA H100 80GB HBM3)' or 'cpu'."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return device.type


def model_mb(num_params: int, bytes_per_param: int = 4) -> float:
    """Size of ``num_params`` parameters in MiB at ``bytes_per_param`` (4 = fp32)."""
    return num_params * bytes_per_param / MB


@contextmanager
def gpu_peak(device: torch.device):
    """Measure peak GPU memory inside the block; yields a dict filled on exit.

    ``allocated_mb`` and ``reserved_mb`` are NaN on a device that is not CUDA.
    """
    result = {"allocated_mb": math.nan, "reserved_mb": math.nan}
    if device.type != "cuda":
        yield result
        return
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield result
    finally:
        torch.cuda.synchronize(device)
        result["allocated_mb"] = torch.cuda.max_memory_allocated(device) / MB
        result["reserved_mb"] = torch.cuda.max_memory_reserved(device) / MB


def release(device: torch.device) -> None:
    """Free what a finished trial left behind so the next trial's peak starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def estimate_peak_mb(
    *,
    params_total: int,
    params_embedding: int,
    embedding_dim: int,
    sparse: bool,
    batch_size: int,
    max_length: int,
    data_bytes: int,
) -> float:
    """Analytic peak memory of a bag-model trial in MiB (fp32, Adam).

    Counts the parameters, their gradients (a sparse table's gradient holds only the batch's
    rows), Adam's two moments for every parameter, one batch of looked-up embeddings and the
    encoded corpus held on the device.
    """
    dense = params_total - (params_embedding if sparse else 0)
    batch_rows = batch_size * max_length
    gradients = dense + (batch_rows * embedding_dim if sparse else 0)
    activations = batch_rows * embedding_dim * 2  # looked-up rows and their gradient
    floats = params_total + gradients + 2 * params_total + activations
    return (floats * 4 + data_bytes) / MB
