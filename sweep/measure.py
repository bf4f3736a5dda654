"""Stage 5, measure: parameter counts, model size, GPU peak memory and a memory estimate.

GPU memory is measured with the CUDA caching allocator's peak counters; on any other device it is
missing (NaN), never 0, and the analytic estimate stands beside it.
"""

from __future__ import annotations

import gc
import math
import os
import re
from contextlib import contextmanager
from pathlib import Path

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


# Environment variables: the workers sharing this device's memory (set by sweep.parallel for
# each worker), and an override of the memory available (tests; a machine whose figure is known).
DEVICE_WORKERS_VARIABLE = "SWEEP_DEVICE_WORKERS"
AVAILABLE_VARIABLE = "SWEEP_AVAILABLE_MEMORY_MB"


def available_mb(device: torch.device) -> tuple[float, str]:
    """(MiB this process may still allocate on ``device``, where the figure comes from): on a
    GPU the free memory ``torch.cuda.mem_get_info`` reports; on a CPU the host's available
    memory (``MemAvailable``), or a container's room (cgroup ``memory.max`` less what it
    uses) where that is smaller. ``SWEEP_AVAILABLE_MEMORY_MB`` overrides both."""
    override = os.environ.get(AVAILABLE_VARIABLE, "").strip()
    if override:
        try:
            return float(override), f"{AVAILABLE_VARIABLE}"
        except ValueError:
            raise ValueError(f"{AVAILABLE_VARIABLE}={override!r} must be a number of MiB; "
                             "unset it to measure the device") from None  # fmt: skip
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / MB, "free GPU memory"
    figures = [(value, source) for value, source in (_meminfo_available(), _cgroup_room())
               if value is not None]  # fmt: skip
    if not figures:
        return math.inf, "unknown (no /proc/meminfo)"
    value, source = min(figures)
    return value / MB, source


def _meminfo_available() -> tuple[int | None, str]:
    try:
        lines = Path("/proc/meminfo").read_text(encoding="ascii").splitlines()
    except OSError:
        return None, ""
    for line in lines:
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024, "available host memory"
    return None, ""


def _cgroup_room() -> tuple[int | None, str]:
    """A cgroup's memory limit less its usage (v2, then v1), or None without a limit."""
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):  # fmt: skip
        try:
            cap = Path(limit).read_text(encoding="ascii").strip()
            used = int(Path(usage).read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            continue
        if cap.isdigit() and int(cap) < 1 << 60:  # "max" or a huge number: no limit
            return int(cap) - used, "the container's memory limit less its use"
    return None, ""


def model_mb(num_params: int, bytes_per_param: int = 4) -> float:
    """Size of ``num_params`` parameters in MiB at ``bytes_per_param`` (4 = fp32)."""
    return num_params * bytes_per_param / MB


class DeviceMemory:
    """The CUDA caching allocator's counters for one device: what every measured figure reads.
    Tests pass an object with the same methods (a fake) to run the measuring code on a CPU."""

    def __init__(self, device: torch.device):
        self.device = device

    def synchronize(self) -> None:
        torch.cuda.synchronize(self.device)

    def allocated(self) -> int:
        return torch.cuda.memory_allocated(self.device)

    def reset_peak(self) -> None:
        torch.cuda.reset_peak_memory_stats(self.device)

    def peak(self) -> int:
        return torch.cuda.max_memory_allocated(self.device)

    def reserved_peak(self) -> int:
        return torch.cuda.max_memory_reserved(self.device)


def memory_reader(device: torch.device) -> DeviceMemory | None:
    """The counters of ``device``; None where there are none (a CPU)."""
    return DeviceMemory(device) if device.type == "cuda" else None


class Peak(dict):
    """The figures of ``gpu_peak`` (a dict: ``peak_mb``, ``baseline_mb``, ``reserved_mb``),
    NaN where there are no counters; ``read`` fills them with the peak so far."""

    def __init__(self, reader: DeviceMemory | None):
        super().__init__(peak_mb=math.nan, baseline_mb=math.nan, reserved_mb=math.nan)
        self.reader = reader
        self.baseline = 0
        if reader is not None:
            reader.synchronize()
            reader.reset_peak()
            self.baseline = reader.allocated()

    def read(self) -> None:
        if self.reader is None:
            return
        self.reader.synchronize()
        self["peak_mb"] = max(self.reader.peak() - self.baseline, 0) / MB
        self["baseline_mb"] = self.baseline / MB
        self["reserved_mb"] = self.reader.reserved_peak() / MB


@contextmanager
def gpu_peak(device: torch.device, reader: DeviceMemory | None = None):
    """Measure the block's own peak device memory; yields a ``Peak`` filled on exit (and by its
    ``read`` inside the block: the peak so far).

    ``peak_mb``: the allocator's peak inside the block minus what was allocated when it began
    (the trial itself); ``baseline_mb``: that starting allocation (the process's context
    workspaces, the corpus on the device); ``reserved_mb``: the allocator's reserved peak. NaN
    where there are no counters (``reader`` None and not CUDA), never 0.
    """
    peak = Peak(reader if reader is not None else memory_reader(device))
    try:
        yield peak
    finally:
        peak.read()


def warm_up(device: torch.device) -> None:
    """Create, before the first trial, what a process keeps once it has trained anything: the
    cuBLAS handles and their workspaces of the main thread and of autograd's device thread (a
    matmul forward and backward). They then count in every trial's baseline alike, instead of
    in the first trial's own peak. Nothing to do off CUDA."""
    if device.type != "cuda":
        return
    layer = torch.nn.Linear(8, 8, device=device)
    layer(torch.ones(4, 8, device=device)).sum().backward()
    torch.cuda.synchronize(device)


# One cuBLAS workspace per handle, and one handle per thread that runs matmuls on the device:
# the main thread (forward, optimizer) and autograd's device thread (backward). On the H200
# 64.0 MiB stayed allocated after the first matmul forward and backward (2 x 32 MiB), and 0 with
# CUBLAS_WORKSPACE_CONFIG=:0:0 (../shared/gpu/README.md).
CUBLAS_HANDLES = 2


def cublas_workspace_bytes(capability: tuple[int, int] | None, config: str | None) -> int:
    """Bytes of one cuBLAS handle's workspace as PyTorch sizes it (``parseChosenWorkspaceSize``
    in ATen's CublasHandlePool.cpp): the ``:SIZE:COUNT`` pairs of ``CUBLAS_WORKSPACE_CONFIG``
    (SIZE in KiB, times COUNT, summed); without it, or when it does not parse (PyTorch warns),
    the architecture's default: 32 MiB on Hopper and Blackwell (compute capability 9 to 12;
    releases before Blackwell support: 9.0 only), else ``:4096:2:16:8`` (8.125 MiB); 0 without
    a CUDA ``capability``. cuBLASLt's own workspace (``CUBLASLT_WORKSPACE_SIZE``, 1 MiB by
    default, at most the cuBLAS one) is not counted: the H200 run allocated none."""
    if capability is None:
        return 0
    pairs = re.findall(r":([0-9]+):([0-9]+)", config or "")
    if pairs:
        return sum(int(size) * int(count) for size, count in pairs) * 1024
    if capability[0] in (9, 10, 11, 12):
        return 4096 * 8 * 1024
    return 4096 * 1024 * 2 + 16 * 1024 * 8


def baseline_bytes(device: torch.device, corpus_bytes: int) -> dict[str, int]:
    """The process baseline a trial runs on, term by term: the corpus on the device and the
    cuBLAS workspaces ``warm_up`` creates (CUDA only)."""
    capability = None
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
    workspace = cublas_workspace_bytes(capability, os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    return {"corpus": corpus_bytes, "cublas_workspaces": CUBLAS_HANDLES * workspace}


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


def attention_kernel(capability: tuple[int, int] | None, head_dim: int) -> str:
    """The kernel ``F.scaled_dot_product_attention`` runs for a float32 training step, as
    PyTorch chooses it (``sdp_utils.cpp``): flash and cuDNN attention take half precision only,
    so on CUDA (compute capability 5.0 on) it is memory-efficient attention when the head width
    is a multiple of the GEMM alignment (4 from Ampere on, where float32 runs on tensor cores;
    1 before), else the math path; ``math`` on a CPU (``capability`` None)."""
    if capability is None or capability < (5, 0):
        return "math"
    alignment = 4 if capability[0] >= 8 else 1
    return "efficient" if head_dim % alignment == 0 else "math"


class _EfficientAttention(torch.autograd.Function):
    """What memory-efficient attention keeps for backward (``_efficient_attention_backward``'s
    inputs): q, k, v, the bias (the mask), the output and the log-sum-exp of each query row,
    (batch, heads, queries rounded up to 32), float32; no (queries x keys) matrix and no dropout
    mask (the kernel redraws it from its Philox seed). Trace only: it has no backward."""

    @staticmethod
    def forward(ctx, q, k, v, bias, out, lse):  # noqa: ARG004
        ctx.save_for_backward(q, k, v, bias, out, lse)
        return out.clone()

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - the estimate never runs backward
        raise NotImplementedError("a memory trace only")


def efficient_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
    """``F.scaled_dot_product_attention`` as memory-efficient attention on CUDA holds it, for a
    trace on the meta device: the math result without its saved tensors, then what the kernel
    saves (``_EfficientAttention``). A mask whose key length is not a multiple of 16 is copied
    into a padded one first (``preprocess_mask``), and that copy is what is kept."""
    with torch.no_grad():
        out = _sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)
    bias = attn_mask
    if bias is not None and bias.shape[-1] % 16:
        padded = -(-bias.shape[-1] // 16) * 16
        bias = bias.new_empty(*bias.shape[:-1], padded)[..., : bias.shape[-1]]
    if bias is None:
        bias = q.new_empty(0)
    rows = -(-q.shape[-2] // 32) * 32
    lse = q.new_empty(*q.shape[:-2], rows, dtype=torch.float32)
    return _EfficientAttention.apply(q, k, v, bias, out, lse)


_sdpa = torch.nn.functional.scaled_dot_product_attention


@contextmanager
def attention_as_on(capability: tuple[int, int] | None):
    """Trace attention as the device runs it: where ``attention_kernel`` says memory-efficient,
    ``torch.nn.functional.scaled_dot_product_attention`` (which ``nn.MultiheadAttention``
    calls) is ``efficient_attention`` inside this block."""

    if capability is None:  # a CPU: the math path, as traced
        yield
        return

    def dispatch(q, k, v, *args, **kwargs):
        if attention_kernel(capability, q.shape[-1]) == "efficient":
            return efficient_attention(q, k, v, *args, **kwargs)
        return _sdpa(q, k, v, *args, **kwargs)

    functional = torch.nn.functional
    functional.scaled_dot_product_attention = dispatch
    try:
        yield
    finally:
        functional.scaled_dot_product_attention = _sdpa


def saved_activation_bytes(
    model: torch.nn.Module,
    batch_size: int,
    length: int,
    capability: tuple[int, int] | None = None,
) -> dict[str, int]:
    """Bytes a training step keeps for backward, traced on the ``meta`` device (nothing allocated).

    ``model`` must live on the meta device. Every tensor autograd saves is counted once (by
    storage); parameters are excluded (they are counted as weights). ``capability``: the CUDA
    device's, for attention as it runs there (``attention_as_on``); None: a CPU. Returns
    ``total`` and ``largest`` (the biggest single saved tensor: a proxy for the transient peak
    of a layer).
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
        with (
            attention_as_on(capability),
            torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
        ):
            logits = model(ids)
    finally:
        for module in packing:
            module.pack_sequences = True
    out = logits.numel() * logits.element_size()
    return {"total": sum(seen.values()) + out, "largest": max([out, *seen.values()])}


def table_grad_bytes(params_embedding: int, embedding_dim: int, sparse: bool, tokens: int) -> int:
    """Bytes of a table's gradient at one step of ``tokens`` batch tokens: a sparse table's
    (``nn.Embedding(sparse=True)``: a (tokens, width) float32 values tensor and its int64
    indices), or a dense table's, every parameter of it (``params_embedding``)."""
    if sparse:
        return tokens * embedding_dim * 4 + tokens * 8  # values + indices
    return params_embedding * 4


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
    capability: tuple[int, int] | None = None,
    table_grad: int | None = None,
) -> dict[str, float]:
    """Analytic peak memory of the trial itself in MiB (fp32 weights, Adam), on any device: what
    it allocates above the process baseline (``baseline_bytes``). Every term is a tensor the
    trial really holds at its peak:

    - ``data_bytes``: its cutoff view of the corpus (made at the start, held to the end);
    - weights, Adam's two moments for every parameter (FusedAdam and LazyAdam keep them dense,
      as SparseAdam does), and the best epoch's weights early stopping keeps (a device copy);
    - gradients: of the rest of the model, and of the table (``table_grad``, its front-end
      kind's count; default ``table_grad_bytes``: a sparse table's the batch's rows, values and
      indices, a dense one's every parameter);
    - training step: the activations saved for backward at the longest batch (traced on the meta
      device, ``saved_activation_bytes``; attention as the device ``capability`` runs it);
    - evaluation: the training state above plus about two of its largest layer outputs at
      ``eval_batch_size``.

    Not modelled: cuDNN's transient workspaces (convolution, RNN) and the attention backward's
    own buffers; on CUDA the probe (``TrialRunner.probe``) measures the step exactly. Returns
    ``est_peak_mb`` and ``est_embedding_mb`` (the table's share: weights, moments, gradient).
    """
    tokens = batch_size * max_length
    if table_grad is None:
        table_grad = table_grad_bytes(params_embedding, embedding_dim, sparse, tokens)
    grad = (params_total - params_embedding) * 4 + table_grad
    state = params_total * 4 * 4 + grad  # weights, 2 moments, best copy; gradients
    activations = saved_activation_bytes(meta_model, batch_size, max_length, capability)
    train = state + activations["total"]
    evaluation = state + 2 * activations["largest"] * eval_batch_size / batch_size
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
