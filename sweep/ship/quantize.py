"""Precision: a trained model stored at fp32, fp16, int8 or int4, and what it predicts then.

Post-training quantization, as small shipped text classifiers use it: the matrices that hold
nearly all the bytes (every ``nn.Embedding`` table and ``nn.Linear`` weight: the embedding table,
its factorized projection, the hidden and output layers) are stored row-wise: each row its own
scale (fp16, the row's largest magnitude over 127 or 7) and integer codes (int8, or int4 packed
two to a byte); everything else (biases, convolutions, recurrent weights, norms) in fp16. fp16
stores every float tensor in fp16; fp32 stores the model as it trained.

``encode`` gives the tensors of the exported file (``sweep.ship.tensorfile``), ``decode`` the fp32
state dict they load as, and ``at_precision`` the model that predicts exactly as the exported
file does; the sweep evaluates that model for the ``*_accuracy_<precision>`` columns.
``file_bytes`` runs ``encode`` on a meta-device model: the file's exact size before training.
"""

from __future__ import annotations

import copy
import json

import torch
from torch import nn

from sweep.schema import PRECISIONS
from sweep.ship import tensorfile

BITS = {"int8": 8, "int4": 4}
_SHAPES = "shapes"  # metadata key: the quantized matrices' own shapes (int4 packs columns)


def check_precision(precision: str, key: str = "precision") -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"{key}={precision!r} must be one of {', '.join(PRECISIONS)}")
    return precision


def matrices(model: nn.Module) -> set[str]:
    """State-dict names of the weights quantized row-wise: embedding tables and linear layers."""
    return {
        f"{name}.weight" if name else "weight"
        for name, module in model.named_modules()
        if isinstance(module, (nn.Embedding, nn.Linear))
    }


def quantize_rows(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes, scales): symmetric per-row codes in [-(2^(bits-1)-1), 2^(bits-1)-1]; int8 codes as
    they are, int4 codes offset by 8 and packed two per byte (low nibble first)."""
    if weight.is_meta:  # file_bytes: only the shapes and types count; meta ops cost 0.1 ms each
        rows, columns = weight.shape[0], int(torch.Size(weight.shape[1:]).numel())
        width, dtype = (columns, torch.int8) if bits == 8 else ((columns + 1) // 2, torch.uint8)
        return (torch.empty(rows, width, dtype=dtype, device="meta"),
                torch.empty(rows, dtype=torch.float16, device="meta"))  # fmt: skip
    rows = weight.detach().reshape(weight.shape[0], -1).float()
    qmax = 2 ** (bits - 1) - 1
    scale = (rows.abs().amax(dim=1) / qmax).half()  # stored in fp16: quantize with that value
    divisor = scale.float()
    divisor = torch.where(divisor > 0, divisor, torch.ones_like(divisor)).unsqueeze(1)
    codes = torch.round(rows / divisor).clamp(-qmax, qmax)
    if bits == 8:
        return codes.to(torch.int8), scale
    nibbles = (codes + 8).to(torch.uint8)  # 1..15; 8 is zero
    if nibbles.shape[1] % 2:
        pad = torch.full((nibbles.shape[0], 1), 8, dtype=torch.uint8, device=nibbles.device)
        nibbles = torch.cat([nibbles, pad], dim=1)
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4), scale


def dequantize_rows(codes: torch.Tensor, scale: torch.Tensor, bits: int, shape) -> torch.Tensor:
    """The fp32 matrix of ``shape`` that ``quantize_rows`` codes stand for."""
    if bits == 8:
        values = codes.float()
    else:
        unpacked = torch.stack([codes & 15, codes >> 4], dim=2).reshape(codes.shape[0], -1)
        columns = int(torch.Size(shape[1:]).numel())
        values = unpacked[:, :columns].float() - 8
    return (values * scale.float().unsqueeze(1)).reshape(shape)


def encode(
    state: dict[str, torch.Tensor], quantized: set[str], precision: str
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of the weights file at ``precision`` (see the module docstring)."""
    check_precision(precision)
    tensors: dict[str, torch.Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for name, tensor in state.items():
        tensor = tensor.detach()
        if precision in BITS and name in quantized and tensor.dim() >= 2:
            tensors[f"{name}.q"], tensors[f"{name}.scale"] = quantize_rows(tensor, BITS[precision])
            shapes[name] = list(tensor.shape)
        elif precision != "fp32" and tensor.is_floating_point():
            tensors[name] = tensor.half()
        else:
            tensors[name] = tensor
    return tensors, {"precision": precision, _SHAPES: json.dumps(shapes)}


def decode(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """The fp32 state dict the file's tensors stand for."""
    precision = check_precision(metadata.get("precision", "fp32"), "the file's precision")
    shapes = json.loads(metadata.get(_SHAPES, "{}"))
    state = {}
    for name, shape in shapes.items():
        state[name] = dequantize_rows(
            tensors[f"{name}.q"], tensors[f"{name}.scale"], BITS[precision], shape
        )
    for name, tensor in tensors.items():
        if name.endswith((".q", ".scale")) and name.rsplit(".", 1)[0] in shapes:
            continue
        state[name] = tensor.float() if tensor.is_floating_point() else tensor
    return state


def state_at(model: nn.Module, precision: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's weights file content at ``precision``."""
    return encode(model.state_dict(), matrices(model), precision)


def at_precision(model: nn.Module, precision: str) -> nn.Module:
    """A copy of ``model`` with the weights its ``precision`` file loads as (fp32: the model)."""
    if check_precision(precision) == "fp32":
        return model
    copied = copy.deepcopy(model)
    copied.load_state_dict(decode(*state_at(model, precision)))
    return copied


def file_bytes(model: nn.Module, precision: str) -> int:
    """Exact bytes of the model's weights file at ``precision`` (a meta-device model will do)."""
    return tensorfile.size(*state_at(model, precision))
