"""Per-layer error localisation between an fp32 model and its quantised version."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from optkit.model.artifact import Artifact  # noqa: E402
from optkit.common.errors import InputError  # noqa: E402
from optkit.verification.localize import localize_error  # noqa: E402
from optkit.passes import get_pass  # noqa: E402
from optkit.passes.quantize_fp16 import QuantizeFp16Config  # noqa: E402
from optkit.passes.quantize_int8 import QuantizeInt8Config  # noqa: E402

KEYS = {"index", "node", "op_type", "output", "sqnr_db", "rel_error", "max_abs_error", "input_sqnr_db",
        "growth_db", "grows", "quantized", "exclude_nodes", "samples"}
BROKEN = "/layer2/layer2.0/conv2/Conv"


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_onnx_session):
    d = tmp_path_factory.mktemp("loc")
    calib = d / "calib"
    calib.mkdir()
    rng = np.random.default_rng(11)
    for i in range(6):
        np.save(calib / f"s{i}.npy", rng.standard_normal(TINY_SHAPE).astype(np.float32))
    src = Artifact.from_file(tiny_onnx_session)
    int8 = d / "tiny.int8.onnx"
    get_pass("quantize-int8")(src, QuantizeInt8Config(calibration=str(calib), target="tensorrt"), int8)
    fp16 = d / "tiny.fp16.onnx"
    get_pass("quantize-fp16")(src, QuantizeFp16Config(check_samples=2), fp16)
    # A deliberately broken copy: the activation quantisation after BROKEN is 64x too coarse.
    model = onnx.load(str(int8))
    out_name = next(n.output[0] for n in model.graph.node if n.name == BROKEN)
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == out_name)
    scales = {q.input[1]}
    scales |= {n.input[1] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]}
    for init in model.graph.initializer:
        if init.name in scales:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 64, init.name))
    broken = d / "tiny.broken.onnx"
    onnx.save(model, str(broken))
    x = rng.standard_normal((4, *TINY_SHAPE)).astype(np.float32)
    return {"fp32": tiny_onnx_session, "int8": int8, "fp16": fp16, "broken": broken, "x": x}


def test_all_layers_in_graph_order_with_documented_keys(models):
    rows = localize_error(models["fp32"], models["int8"], {"input_mfcc": models["x"]}, top=None)
    assert len(rows) >= 20
    assert [r["index"] for r in rows] == sorted(r["index"] for r in rows)
    for r in rows:
        assert set(r) == KEYS
        assert r["exclude_nodes"] == [r["node"]] and r["samples"] == 4
        assert np.isfinite(r["sqnr_db"]) and r["rel_error"] >= 0
    # A sane int8 model: every layer tracks fp32 reasonably, none is far off.
    assert min(r["sqnr_db"] for r in rows) > 10
    assert all(r["quantized"] for r in rows if r["op_type"] == "Conv")


def test_finds_the_broken_layer(models):
    rows = localize_error(models["fp32"], models["broken"], {"input_mfcc": models["x"]}, top=3)
    assert len(rows) == 3
    growing = [r for r in rows if r["grows"]]
    assert growing and growing[0]["node"] == BROKEN, rows
    assert growing[0]["growth_db"] > 20
    # The healthy model has no such jump there.
    healthy = {r["node"]: r for r in localize_error(models["fp32"], models["int8"], {"input_mfcc": models["x"]},
                                                    top=None)}
    assert healthy[BROKEN]["growth_db"] < growing[0]["growth_db"] - 15


def test_suggested_exclusion_is_accepted_by_quantize(models, cli_runner, tmp_path, calib_dir):
    node = localize_error(models["fp32"], models["broken"], {"input_mfcc": models["x"]}, top=1)[0]["exclude_nodes"][0]
    out = tmp_path / "fixed.onnx"
    r = invoke(cli_runner, ["quantize", models["fp32"], "-o", out, "--int8", "--calibration", calib_dir,
                            "--calibration-limit", "4", "--exclude-nodes", node])
    assert r.exit_code == 0, r.output
    assert node in r.output.split("left in fp32:")[1]


def test_identical_models_show_no_error(models):
    rows = localize_error(models["fp32"], models["fp32"], {"input_mfcc": models["x"][:2]}, top=None)
    assert rows and all(not r["grows"] and r["rel_error"] == 0.0 for r in rows)


def test_fp16_model_and_model_protos(models):
    fp32 = onnx.load(str(models["fp32"]))
    rows = localize_error(fp32, onnx.load(str(models["fp16"])), {"input_mfcc": models["x"]}, top=None,
                          max_samples=2)
    assert rows and all(r["samples"] == 2 for r in rows)
    assert min(r["sqnr_db"] for r in rows) > 40  # fp16 is far more precise than int8
    assert not any(r["quantized"] for r in rows)


def test_bad_arguments(models, tmp_path):
    with pytest.raises(InputError, match="at least one input"):
        localize_error(models["fp32"], models["int8"], {})
    with pytest.raises(InputError, match="leading sample axis"):
        localize_error(models["fp32"], models["int8"], {"input_mfcc": models["x"], "other": models["x"][:2]})
    with pytest.raises(InputError, match="does not exist"):
        localize_error(tmp_path / "missing.onnx", models["int8"], {"input_mfcc": models["x"]})
    assert isinstance(Path(models["fp32"]), Path)
