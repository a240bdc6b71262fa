"""Issue 11: byte-mutated models through `verify` and `simplify` (fixed seed).

Every mutant must give exit 0 with a correct result, or exit 1 (one clear line) / 3 (a gate
failure): never a traceback or an internal error, and never a file left behind.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import invoke

N_MUTANTS = 300
SEED = 11


def _tiny_graph(path: Path) -> Path:
    """Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Sigmoid, input (N, 2, 6, 6)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
        numpy_helper.from_array(rng.standard_normal((1, 4)).astype(np.float32), "fw"),
        numpy_helper.from_array(np.zeros(1, np.float32), "fb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["l"], name="fc", transB=1),
        helper.make_node("Sigmoid", ["l"], ["y"], name="sig"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip a few bytes
        for _ in range(int(rng.integers(1, 5))):
            b[int(rng.integers(0, len(b)))] ^= int(rng.integers(1, 256))
    elif kind == 1:  # truncate
        b = b[: int(rng.integers(0, len(b)))]
    elif kind == 2:  # insert random bytes
        at = int(rng.integers(0, len(b)))
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 8))).astype(np.uint8).tobytes()
    else:  # delete a span
        at = int(rng.integers(0, len(b)))
        del b[at : at + int(rng.integers(1, 8))]
    return bytes(b)


def _run(path: Path, x: np.ndarray | None = None) -> np.ndarray:
    """Outputs on ``x``, or on seeded random data shaped like the model's own (maybe mutated) input."""
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if x is None:
        inp = s.get_inputs()[0]
        shape = [d if isinstance(d, int) else 2 for d in inp.shape]
        x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        return s.run(None, {inp.name: x})[0], x
    return s.run(None, {"x": x})[0]


def _clean(res) -> None:
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    if res.exit_code != 0:
        lines = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
        assert len(lines) == 1, res.output


@pytest.mark.timeout(120)
def test_mutated_models_through_verify_and_simplify(cli_runner, tmp_path):
    from optkit.verification.reference import Reference, save_reference

    good = _tiny_graph(tmp_path / "good.onnx")
    x = np.random.default_rng(1).standard_normal((4, 2, 6, 6)).astype(np.float32)
    y = _run(good, x)
    ref = save_reference(tmp_path / "ref.npz", Reference({"x": x}, {"y": y}))
    data = good.read_bytes()
    work = tmp_path / "work"
    work.mkdir()
    rng = np.random.default_rng(SEED)
    counts = {"verify": {0: 0, 1: 0, 3: 0}, "simplify": {0: 0, 1: 0}}
    for i in range(N_MUTANTS):
        m = work / "m.onnx"
        m.write_bytes(_mutate(data, rng))
        res = invoke(cli_runner, ["verify", m, "--reference", ref])
        assert res.exit_code in (0, 1, 3), (i, res.output)
        _clean(res)
        counts["verify"][res.exit_code] += 1
        if res.exit_code == 0:  # a PASS must be true: the mutant computes what the original does
            assert np.abs(_run(m, x) - y).max() <= 1e-4, i
        out = work / "s.onnx"
        res = invoke(cli_runner, ["simplify", m, "-o", out])
        assert res.exit_code in (0, 1), (i, res.output)
        _clean(res)
        counts["simplify"][res.exit_code] += 1
        if res.exit_code == 0:  # simplify's promise: the same function as its input
            import onnx

            onnx.checker.check_model(onnx.load(out), full_check=True)
            before, xm = _run(m)
            after = _run(out, xm)
            assert np.allclose(after, before, atol=1e-4, rtol=1e-4, equal_nan=True), i
            out.unlink()
        assert sorted(p.name for p in work.iterdir()) == ["m.onnx"], (i, list(work.iterdir()))
    # the mutations reach every outcome, so the test exercises what it claims
    assert counts["verify"][1] > 0 and counts["verify"][3] > 0 and counts["verify"][0] > 0, counts
    assert counts["simplify"][1] > 0 and counts["simplify"][0] > 0, counts
    print(counts)
