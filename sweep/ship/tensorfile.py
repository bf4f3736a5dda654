"""The exported weights file: the safetensors layout, written and read without a dependency.

    8 bytes    little-endian length N of the header
    N bytes    JSON: {"__metadata__": {str: str}, name: {"dtype", "shape", "data_offsets"}, ...},
               padded with spaces to a multiple of 8
    the rest   each tensor's bytes, little-endian, in header order

It is the format of the ``safetensors`` package (which reads these files as they are), chosen for
the exported model because it holds no code (unlike a pickle) and its size is known from the
tensors' shapes alone: ``size`` gives the exact bytes of the file ``write`` makes, which is what
the sweep predicts for each precision before a trial trains (it runs on meta tensors too).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch

DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
_TORCH = {name: dtype for dtype, name in DTYPES.items()}


class TensorFileError(ValueError):
    """A weights file that is not in this format or is cut short; the message names the file."""


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _header(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, tensor in tensors.items():
        end = offset + _nbytes(tensor)
        header[name] = {
            "dtype": DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)  # the data starts 8-byte aligned


def size(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> int:
    """Bytes of the file ``write`` makes for these tensors (their data need not exist: meta)."""
    return 8 + len(_header(tensors, metadata or {})) + sum(_nbytes(t) for t in tensors.values())


def write(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None):
    """Write ``tensors`` (any device) and string ``metadata`` to ``path``."""
    header = _header(tensors, metadata or {})
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        for tensor in tensors.values():
            flat = tensor.detach().contiguous().cpu().reshape(-1)
            handle.write(flat.view(torch.uint8).numpy().tobytes())


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on the CPU, metadata) of a file ``write`` made."""
    data = Path(path).read_bytes()
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
    except (struct.error, ValueError) as error:
        raise TensorFileError(f"{path}: not a safetensors file ({error})") from None
    metadata = header.pop("__metadata__", {})
    start, tensors = 8 + length, {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        if start + end > len(data) or entry["dtype"] not in _TORCH:
            raise TensorFileError(f"{path}: tensor {name!r} lies past the end or has an unknown "
                                  "dtype; the file is damaged: export the model again")  # fmt: skip
        raw = bytearray(data[start + begin : start + end])
        dtype = _TORCH[entry["dtype"]]
        tensor = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        tensors[name] = tensor.reshape(entry["shape"])
    return tensors, metadata
