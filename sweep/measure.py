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
    """Free what a finished trial left behind so the next trial's peak starts clean.

    On CUDA: collect reference cycles that may still hold device tensors, then hand the cached
    blocks back. On a CPU a trial's tensors go with their last reference and no peak is
    measured, so nothing is done: a full ``gc.collect`` there cost 0.1 s a trial (a quarter of a
    TREC bag trial), measured with the sweep's objects loaded.
    """
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()


def storage_key(tensor: torch.Tensor) -> int:
    """Which storage a tensor views: the same number for views of one storage. Meta tensors
    have no data pointer, so this is the storage's own handle, a private attribute: checked."""
    storage = tensor.untyped_storage()
    key = getattr(storage, "_cdata", None)
    if not isinstance(key, int):
        raise RuntimeError(
            f"torch {torch.__version__}: UntypedStorage._cdata is gone, which the memory "
            "estimate uses to count each saved storage once; report it with this version"
        )
    return key


def saved_activation_bytes(model: torch.nn.Module, batch_size: int, length: int) -> dict[str, int]:
    """Bytes a training step keeps for backward, traced on the ``meta`` device (nothing allocated).

    ``model`` must live on the meta device. Every tensor autograd saves is counted once (by
    storage); parameters are excluded (they are counted as weights). Returns ``total`` and
    ``largest`` (the biggest single saved tensor: a proxy for the transient peak of a layer).
    """
    params = {storage_key(p) for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        key = storage_key(tensor)
        if key not in params:
            seen[key] = max(seen.get(key, 0), tensor.untyped_storage().nbytes())
        return tensor

    ids = torch.ones((batch_size, length), dtype=torch.long, device="meta")
    model.train()
    # Packed sequences need lengths on the host, which meta tensors cannot give: trace the
    # recurrent models over the full padded length (the worst case of a bucket).
    packing = [m for m in model.modules() if getattr(m, "pack_sequences", False)]
    for module in packing:
        module.pack_sequences = False
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            logits = model(ids)
    finally:
        for module in packing:
            module.pack_sequences = True
    out = logits.numel() * logits.element_size()
    return {"total": sum(seen.values()) + out, "largest": max([out, *seen.values()])}


def estimate_peak_mb(
    meta_model: torch.nn.Module,
    *,
    params_total: int,
    params_embedding: int,
    embedding_dim: int,
    sparse: bool,
    batch_size: int,
    eval_batch_size: int,
    max_length: int,
    data_bytes: int,
) -> dict[str, float]:
    """Analytic peak memory of a trial in MiB (fp32 weights, Adam), on any device.

    Training step: weights, gradients (a sparse table's gradient holds only the batch's rows),
    Adam's two moments for every parameter (LazyAdam keeps them dense too, as SparseAdam does), the activations a
    step saves for backward at the longest batch (traced on the meta device), and the corpus on
    the device (the ids and the trial's cutoff view). Evaluation keeps weights, moments and the
    last gradients, and holds about two of its largest layer outputs at ``eval_batch_size``.
    Returns ``est_peak_mb`` and ``est_embedding_mb`` (the table's share: its weights, moments and
    gradient).
    """
    tokens = batch_size * max_length
    sparse_grad = tokens * embedding_dim * 4 + tokens * 8 if sparse else 0  # values + indices
    dense_grad = (params_total - (params_embedding if sparse else 0)) * 4
    weights_and_moments = params_total * 4 * 3
    activations = saved_activation_bytes(meta_model, batch_size, max_length)
    train = weights_and_moments + dense_grad + sparse_grad + activations["total"]
    evaluation = (
        weights_and_moments
        + dense_grad
        + sparse_grad
        + 2 * activations["largest"] * eval_batch_size / batch_size
    )
    table_grad = sparse_grad if sparse else params_embedding * 4
    return {
        "est_peak_mb": (max(train, evaluation) + data_bytes) / MB,
        "est_embedding_mb": (params_embedding * 4 * 3 + table_grad) / MB,
    }


def size_columns(params_total: int, params_embedding: int) -> dict[str, float]:
    """Model size in MiB at fp32, fp16 and int8, for the embedding table and for the rest."""
    rest = params_total - params_embedding
    out = {"model_mb": model_mb(params_total)}
    for name, width in (("fp32", 4), ("fp16", 2), ("int8", 1)):
        out[f"embedding_mb_{name}"] = model_mb(params_embedding, width)
        out[f"rest_mb_{name}"] = model_mb(rest, width)
    return out
