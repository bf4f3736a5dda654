"""Precision: row-wise int8/int4 and fp16 storage, the safetensors file, its exact size, and the
report's choice of the file each trial ships."""

from __future__ import annotations

import json
import struct

import pandas as pd
import pytest
import torch
from conftest import compose_config, fixed_config

from sweep import schema
from sweep.models.kinds import build_model
from sweep.report import build as report
from sweep.search.settings import SearchError, budgets, parse_bytes
from sweep.ship import quantize, tensorfile


@pytest.mark.parametrize("shape", [(5, 3), (4, 8), (6, 2, 3)])
@pytest.mark.parametrize("bits", [8, 4])
def test_codes_of_a_meta_weight_have_the_real_shapes_and_types(shape, bits):
    """file_bytes sizes the file from a meta-device model: its codes and scales must be the ones
    a real weight of that shape gets (odd column counts pad an int4 row)."""
    real = quantize.quantize_rows(torch.randn(shape), bits)
    meta = quantize.quantize_rows(torch.empty(shape, device="meta"), bits)
    assert [(t.shape, t.dtype) for t in meta] == [(t.shape, t.dtype) for t in real]
    assert all(t.is_meta for t in meta)


def test_row_wise_codes_by_hand():
    weight = torch.tensor([[1.0, -0.5, 0.25], [0.0, 0.0, 0.0], [-2.0, 1.0, 0.1]])
    codes, scale = quantize.quantize_rows(weight, 8)
    assert scale.dtype == torch.float16 and codes.dtype == torch.int8
    # Row 0: scale 1/127, codes round(w * 127); the zero row stays zero; row 2 scale 2/127.
    assert codes[0].tolist() == [127, -64, 32] and codes[1].tolist() == [0, 0, 0]
    assert codes[2].tolist() == [-127, 64, round(0.1 / scale[2].item())]
    back = quantize.dequantize_rows(codes, scale, 8, weight.shape)
    assert torch.all((back - weight).abs() <= scale.float().unsqueeze(1) / 2 + 1e-6)

    codes4, scale4 = quantize.quantize_rows(weight, 4)
    # Three columns pack into two bytes a row: low nibble first, offset 8, the pad nibble 8 (0).
    assert codes4.shape == (3, 2) and codes4.dtype == torch.uint8
    assert [codes4[0, 0].item() & 15, codes4[0, 0].item() >> 4, codes4[0, 1].item() & 15] == [
        15, 8 - 4, 8 + 2  # 1 -> +7, -0.5 -> round(-3.5) = -4, 0.25 -> round(1.75) = 2
    ]  # fmt: skip
    assert codes4[0, 1].item() >> 4 == 8
    back4 = quantize.dequantize_rows(codes4, scale4, 4, weight.shape)
    assert back4.shape == weight.shape
    assert torch.all((back4 - weight).abs() <= scale4.float().unsqueeze(1) / 2 + 1e-6)


def test_tensorfile_layout_and_round_trip(tmp_path):
    tensors = {"a": torch.arange(6, dtype=torch.uint8).reshape(2, 3), "b": torch.randn(3, 5),
               "c": torch.randn(4).half()}  # fmt: skip
    path = tmp_path / "w.safetensors"
    tensorfile.write(path, tensors, {"precision": "fp32"})
    raw = path.read_bytes()
    assert len(raw) == tensorfile.size(tensors, {"precision": "fp32"})
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    assert length % 8 == 0 and header["b"] == {"dtype": "F32", "shape": [3, 5],
                                               "data_offsets": [6, 66]}  # fmt: skip
    back, metadata = tensorfile.read(path)
    assert metadata == {"precision": "fp32"}
    assert all(
        torch.equal(back[k], tensors[k]) and back[k].dtype == tensors[k].dtype for k in tensors
    )
    path.write_bytes(raw[:-10])  # cut short
    with pytest.raises(tensorfile.TensorFileError, match="damaged"):
        tensorfile.read(path)


@pytest.mark.parametrize("name", ["bag", "cnn", "rnn", "transformer"])
def test_every_model_file_is_its_predicted_size_and_loads_as_measured(name, tmp_path):
    model_cfg = fixed_config([f"model={name}", "data.max_length=16"]).model
    torch.manual_seed(0)
    model = build_model(model_cfg, 1003, 33, 5)
    with torch.device("meta"):
        meta = build_model(model_cfg, 1003, 33, 5)
    ids = torch.randint(2, 1003, (4, 16))
    sizes = {}
    for precision in schema.PRECISIONS:
        path = tmp_path / f"{precision}.safetensors"
        tensorfile.write(path, *quantize.state_at(model, precision))
        sizes[precision] = path.stat().st_size
        assert sizes[precision] == quantize.file_bytes(meta, precision)  # known before training
        loaded = build_model(model_cfg, 1003, 33, 5)
        loaded.load_state_dict(quantize.decode(*tensorfile.read(path)))
        expected = quantize.at_precision(model, precision)
        with torch.no_grad():
            assert torch.equal(loaded.eval()(ids), expected.eval()(ids))
    assert sizes["fp32"] > sizes["fp16"] > sizes["int8"] > sizes["int4"]
    # The embedding table: 1003 x 33 at 4, 2, 1 and 17/33 bytes a value plus a 2-byte scale a row.
    table = 1003 * 33
    assert sizes["fp32"] - sizes["fp16"] >= table * 2
    assert sizes["fp16"] - sizes["int8"] >= table - 1003 * 2
    assert sizes["int8"] - sizes["int4"] >= 1003 * (33 - 17)


def test_fp16_and_int8_keep_predictions_close():
    model_cfg = fixed_config(["model=bag"]).model
    torch.manual_seed(0)
    model = build_model(model_cfg, 500, 32, 3).eval()
    ids = torch.randint(2, 500, (64, 20))
    with torch.no_grad():
        full = model(ids)
        for precision, bound in (("fp16", 1e-3), ("int8", 2e-2)):
            assert (quantize.at_precision(model, precision)(ids) - full).abs().max() < bound


def test_byte_budgets_parse_and_follow_the_precision():
    assert parse_bytes("100KB") == 100_000 and parse_bytes("2M") == 2_000_000
    assert parse_bytes(12345) == 12345
    for bad in ("lots", -5, 0, True):
        with pytest.raises(SearchError, match="search.max_model_bytes"):
            parse_bytes(bad)
    search = compose_config(["search.max_model_bytes=1MB"]).search
    assert budgets(search) == [("max_model_bytes", 1e6, "file_bytes_int4")]  # best: the smallest
    search = compose_config(["search.max_model_bytes=1MB", "search.precision=int8"]).search
    assert budgets(search) == [("max_model_bytes", 1e6, "file_bytes_int8")]


def _row(trial, val, sizes, **quantized):
    return {"trial": trial, "state": "COMPLETE", "val_accuracy": val, "test_accuracy": val - 1,
            "params_total": sizes[0] // 4,
            **{f"file_bytes_{p}": s for p, s in zip(schema.PRECISIONS, sizes, strict=True)},
            **{f"val_accuracy_{p}": v for p, v in quantized.items()},
            **{f"test_accuracy_{p}": v - 1 for p, v in quantized.items()}}  # fmt: skip


def test_the_shipped_file_and_the_recommendation_under_a_byte_budget():
    rows = pd.DataFrame([
        _row(0, 90.0, (4000, 2000, 1100, 600), fp16=90.0, int8=89.9, int4=85.0),
        _row(1, 80.0, (400, 200, 110, 60), fp16=80.0, int8=80.0, int4=80.0),
        _row(2, 91.0, (40000, 20000, 11000, 6000)),  # not quantized (not on the front)
    ])  # fmt: skip
    # No budget, best: the best validation accuracy, the smaller file on a tie.
    table = report.annotate(rows, tolerance=0.5, shipping={"precision": "best"})
    assert table["ship_precision"].tolist() == ["fp16", "int4", "fp32"]  # fp16 ties fp32
    assert table["ship_bytes"].tolist() == [2000, 60, 40000]
    # A precision named: every trial ships at it, measured or not (then no accuracy).
    table = report.annotate(rows, tolerance=0.5, shipping={"precision": "int8"})
    assert table["ship_precision"].tolist() == ["int8", "int8", "int8"]
    assert table["ship_bytes"].tolist() == [1100, 110, 11000]
    assert table["ship_test_accuracy"].tolist()[:2] == [88.9, 79.0]
    assert table["ship_val_accuracy"].isna().tolist() == [False, False, True]
    # A 1500-byte budget: trial 0 ships at int8 (fp16 is over), trial 2 nowhere; the
    # recommendation is the best accuracy of the files that fit, not trial 2's fp32 figure.
    shipping = {"precision": "best", "max_model_bytes": 1500.0}
    table = report.annotate(rows, tolerance=0.5, shipping=shipping)
    assert table["ship_precision"].fillna("").tolist() == ["int8", "int4", ""]
    assert table.loc[table["recommended"], "trial"].tolist() == [0]
    unbudgeted = report.annotate(rows, tolerance=0.5)
    assert unbudgeted.loc[unbudgeted["recommended"], "trial"].tolist() == [2]


@pytest.mark.parametrize(
    "override, message",
    [
        ("report.quantize=some", r"report\.quantize='some' must be front, all or none"),
        ("report.prune_rows=0", r"report\.prune_rows=0 must be an integer >= 1"),
        ("report.prune_by=size", r"report\.prune_by='size' must be norm or frequency"),
        ("search.precision=int2", r"search\.precision='int2' must be one of best, fp32"),
        ("search.max_model_bytes=big", r"search\.max_model_bytes='big' must be a positive"),
        ("report.prune_rows=100 model.hash_buckets=64", r"prune_rows=100 needs model\.hash_bu"),
    ],
)
def test_shipping_keys_are_checked_by_name(override, message):
    from sweep.config import check_config

    with pytest.raises(ValueError, match=message):
        check_config(compose_config(override.split()))
