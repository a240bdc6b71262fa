"""quantize --int8: QDQ form per target, streaming calibration, cache, exclusions, bad inputs."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_SHAPE, invoke, listdir_names

onnx = pytest.importorskip("onnx")
from onnx import numpy_helper  # noqa: E402

from optkit.quantization import calibration  # noqa: E402
from optkit.model.artifact import Artifact  # noqa: E402
from optkit.data.samples import fingerprint  # noqa: E402
from optkit.common.errors import InputError  # noqa: E402
from optkit.model.onnx_utils import model_precision  # noqa: E402
from optkit.passes import get_pass  # noqa: E402
from optkit.passes.quantize_int8 import QuantizeInt8Config, preprocess, resolve_weights  # noqa: E402
from optkit.verification.reference import load_reference, reference_path_for  # noqa: E402

LIMIT = "8"  # calibration samples used by most tests (fast on 2 cores)


def quantize_cli(cli_runner, model: Path, out: Path, calib: Path, *extra: str):
    return invoke(cli_runner, ["quantize", model, "-o", out, "--int8", "--calibration", calib,
                               "--calibration-limit", LIMIT, *extra])


# -- helpers reading a QDQ model ------------------------------------------------------------------

def _inits(model) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _axis(node) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 1)


def qdq_nodes(model):
    return [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]


def weight_qdq(model) -> list[tuple[object, np.ndarray, np.ndarray, object]]:
    """(Q or DQ node, float/int weight array, scale, consumer op) for every weight quantisation."""
    inits = _inits(model)
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for n in qdq_nodes(model):
        if n.input[0] not in inits:
            continue
        dq = n
        if n.op_type == "QuantizeLinear":  # weight kept fp32 behind Q -> DQ (TensorRT form)
            dq = consumers[n.output[0]][0]
        consumer_ops = [c.op_type for c in consumers.get(dq.output[0], [])]
        out.append((n, inits[n.input[0]], inits[n.input[1]], consumer_ops))
    return out


def activation_zero_points(model) -> list[np.ndarray]:
    inits = _inits(model)
    return [inits[n.input[2]] for n in qdq_nodes(model)
            if n.input[0] not in inits and len(n.input) > 2 and n.input[2] in inits]


def quantized_node_names(model) -> set[str]:
    """Compute nodes that run in int8: they read a DequantizeLinear output and feed QuantizeLinear."""
    producers = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    return {n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(i in producers and producers[i].op_type == "DequantizeLinear" for i in n.input)
            and all("QuantizeLinear" in consumers.get(o, []) for o in n.output)}


def run_ort(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


# -- QDQ form per target ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quantized(tmp_path_factory, tiny_onnx_session):
    """The tiny model quantised once per target (module-scoped: ~2 s each)."""
    d = tmp_path_factory.mktemp("int8")
    calib = d / "calib"
    calib.mkdir()
    rng = np.random.default_rng(7)
    for i in range(8):
        np.save(calib / f"s{i}.npy", rng.standard_normal(TINY_SHAPE).astype(np.float32))
    step = get_pass("quantize-int8")
    src = Artifact.from_file(tiny_onnx_session)
    results = {}
    for target in ("cpu", "openvino", "tensorrt"):
        out = d / f"tiny.{target}.int8.onnx"
        results[target] = (out, step(src, QuantizeInt8Config(calibration=str(calib), target=target), out))
    return results


@pytest.mark.parametrize("target", ["cpu", "openvino", "tensorrt"])
def test_qdq_model_is_int8_runs_and_matches_reference(quantized, tiny_onnx_session, target):
    out, result = quantized[target]
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert model_precision(model) == "int8"
    assert result.artifact.precision == "int8"
    ref = load_reference(reference_path_for(tiny_onnx_session))
    x, y = ref.inputs["input_mfcc"], ref.outputs["output_wvp"]
    got = run_ort(out, x)
    assert got.shape == y.shape and np.isfinite(got).all()
    err = np.abs(got - y)
    assert err.max() < 0.02, f"{target}: int8 differs from the PyTorch reference by {err.max():.3g}"
    assert np.mean((got >= 0.5) == (y >= 0.5)) >= 0.9
    # Most compute nodes are quantised and the result says so.
    assert result.info["quantized_nodes"] >= 0.8 * result.info["total_nodes"]
    assert result.info["by_op_type"]["Conv"]["quantized"] == result.info["by_op_type"]["Conv"]["total"] > 0
    assert result.info["target"] == target
    assert result.info["samples"] + result.info["validation_samples"] == 8


@pytest.mark.parametrize("target", ["cpu", "openvino", "tensorrt"])
def test_weights_are_per_channel_int8_on_output_channels(quantized, target):
    model = onnx.load(str(quantized[target][0]))
    weights = weight_qdq(model)
    conv_weights = [(n, w, s) for n, w, s, ops in weights if "Conv" in ops and w.ndim == 4]
    assert conv_weights, "no quantised Conv weights found"
    for node, w, scale in conv_weights:
        assert _axis(node) == 0
        assert scale.size == w.shape[0], f"{node.name}: {scale.size} scales for {w.shape[0]} output channels"
        assert (scale > 0).all()
        if w.dtype != np.float32:  # stored quantised (cpu/openvino) rather than fp32 behind Q->DQ
            # s8, or u8 where --weights auto chose it for this CPU (AVX2 without VNNI)
            form = resolve_weights("auto", target)[0]
            assert w.dtype == (np.uint8 if form == "u8" else np.int8)


def test_cpu_form_has_unsigned_activations(quantized):
    zps = activation_zero_points(onnx.load(str(quantized["cpu"][0])))
    assert zps and all(z.dtype == np.uint8 for z in zps)


def test_openvino_form_has_unsigned_activations(quantized):
    # measured: OpenVINO 2026.4 runs u8-activation QDQ in int8, asymmetric s8 not at all
    zps = activation_zero_points(onnx.load(str(quantized["openvino"][0])))
    assert zps and all(z.dtype == np.uint8 for z in zps)


def test_tensorrt_form_is_symmetric_int8_with_zero_zero_points(quantized):
    model = onnx.load(str(quantized["tensorrt"][0]))
    inits = _inits(model)
    nodes = qdq_nodes(model)
    assert nodes
    for n in nodes:
        scale = inits[n.input[1]]
        assert scale.dtype == np.float32 and (scale > 0).all(), n.name
        assert len(n.input) > 2, f"{n.name} has no zero point (defaults to uint8)"
        zp = inits[n.input[2]]
        assert zp.dtype == np.int8, f"{n.name}: zero point {zp.dtype}"
        assert not zp.any(), f"{n.name}: non-zero zero point {zp}"
        if scale.size > 1:
            assert zp.size == scale.size
    assert not any(t.data_type in (onnx.TensorProto.UINT8, onnx.TensorProto.INT32) for t in model.graph.initializer), \
        "uint8 data or an int32 (quantised bias) initializer in the TensorRT form"
    # QuantizeBias=False: Conv biases stay fp32 initializers read directly.
    for n in model.graph.node:
        if n.op_type == "Conv" and len(n.input) > 2:
            assert n.input[2] in inits and inits[n.input[2]].dtype == np.float32


# -- calibration -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, tiny_onnx_session) -> Path:
    dst = tmp_path_factory.mktemp("pre") / "pre.onnx"
    preprocess(tiny_onnx_session, dst)
    return dst


def test_calibrate_rejects_bad_chunk_size(preprocessed):
    x = np.zeros((2, *TINY_SHAPE), np.float32)
    with pytest.raises(InputError, match="chunk size"):
        calibration.calibrate(preprocessed, x, "input_mfcc", chunk_size=0)


# -- the command and its cache ---------------------------------------------------------------------

def test_cli_quantizes_and_reuses_then_invalidates_the_cache(cli_runner, tiny_onnx, calib_dir, tmp_path):
    out = tmp_path / "tiny.int8.onnx"
    cache = tmp_path / "tiny.int8.calib.npz"
    settings = tmp_path / "tiny.int8.search.json"
    r1 = quantize_cli(cli_runner, tiny_onnx, out, calib_dir)
    assert r1.exit_code == 0, r1.output
    assert out.exists() and cache.exists() and settings.exists()
    assert "collected calibration statistics" in r1.output and "no statistics cache yet" in r1.output
    assert "on 6 samples" in r1.output and "validation: 2 held-out calibration samples" in r1.output
    first = out.read_bytes()

    r2 = quantize_cli(cli_runner, tiny_onnx, out, calib_dir)
    assert r2.exit_code == 0, r2.output
    assert "reused calibration statistics tiny.int8.calib.npz" in r2.output
    assert "collected" not in r2.output and "no search needed" in r2.output
    assert out.read_bytes() == first, "cached statistics must give the same model"

    r3 = quantize_cli(cli_runner, tiny_onnx, out, calib_dir, "--recalibrate")
    assert r3.exit_code == 0 and "recalibrating (--recalibrate)" in r3.output
    assert out.read_bytes() == first

    # Another range method needs no new statistics (ranges are computed from them).
    r4 = quantize_cli(cli_runner, tiny_onnx, out, calib_dir, "--method", "percentile", "--no-search")
    assert r4.exit_code == 0 and "reused calibration statistics" in r4.output, r4.output
    assert "trial 0: requested" in r4.output

    # New data invalidates the cache; a corrupt cache is recomputed, not trusted.
    np.save(calib_dir / "s000.npy", np.full(TINY_SHAPE, 3.0, np.float32))
    r5 = quantize_cli(cli_runner, tiny_onnx, out, calib_dir)
    assert r5.exit_code == 0 and "stale (data_fingerprint" in r5.output, r5.output
    assert out.read_bytes() != first
    cache.write_bytes(b"{not npz")
    r6 = quantize_cli(cli_runner, tiny_onnx, out, calib_dir)
    assert r6.exit_code == 0 and "unreadable" in r6.output, r6.output
    from optkit.quantization.calib_stats import CalibStats

    assert CalibStats.load(cache).samples == 6


def test_pass_info_and_fingerprint(tiny_onnx, calib_dir, tmp_path):
    step = get_pass("quantize-int8")
    # gates wide enough that the pass succeeds on any CPU's int8 kernels: this test reads its info
    cfg = step.make_config({"calibration": str(calib_dir), "calibration_limit": 4, "method": "percentile",
                            "exclude_op_types": "Sigmoid", "gates": {"mean_abs": 0.5, "min_agreement": 0.0}})
    assert cfg.exclude_op_types == ("Sigmoid",)
    assert step.fingerprint(cfg).startswith(fingerprint(calib_dir) + ":weights=")
    before = step.fingerprint(cfg)
    np.save(calib_dir / "extra.npy", np.zeros(TINY_SHAPE, np.float32))
    assert step.fingerprint(cfg) != before
    out = tmp_path / "m.int8.onnx"
    result = step(Artifact.from_file(tiny_onnx), cfg, out)
    info = result.info
    assert info["samples"] == 3 and info["validation_samples"] == 1 and info["cache_hit"] is False
    assert info["int8_search"]["trials"][0]["method"] == "percentile"
    assert info["calibration_seconds"] > 0
    assert set(info["by_op_type"]) >= {"Conv", "Add", "Gemm"}
    assert any("Sigmoid" in n for n in info["fp32_nodes"])
    assert result.side_files == [tmp_path / "m.int8.calib.npz", tmp_path / "m.int8.search.json"]
    assert any("left in fp32" in m for m in result.messages)


def test_exclusions_are_not_quantized(cli_runner, tiny_onnx, calib_dir, tmp_path):
    out = tmp_path / "ex.onnx"
    node = "/layer1/layer1.0/conv2/Conv"
    r = quantize_cli(cli_runner, tiny_onnx, out, calib_dir, "--exclude-nodes", node, "--exclude-op-types", "Add",
                     "--no-search")
    assert r.exit_code == 0, r.output
    model = onnx.load(str(out))
    quantized = quantized_node_names(model)
    assert node not in quantized
    adds = [n.name for n in model.graph.node if n.op_type == "Add"]
    assert adds and not set(adds) & quantized
    # Its weight is the plain fp32 initializer, not a DequantizeLinear output.
    conv = next(n for n in model.graph.node if n.name == node)
    assert _inits(model)[conv.input[1]].dtype == np.float32
    # Every other Conv is still quantised, and the pass reports what stayed fp32.
    others = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name != node]
    assert set(others) <= quantized
    assert "Add 0/4" in r.output and "Conv 16/17" in r.output
    assert node in r.output.split("left in fp32:")[1]


def test_unknown_exclusions_are_input_errors(cli_runner, tiny_onnx, calib_dir, tmp_path):
    out = tmp_path / "ex.onnx"
    r = quantize_cli(cli_runner, tiny_onnx, out, calib_dir, "--exclude-nodes", "no/such/node")
    assert r.exit_code == 1 and "no node named no/such/node" in r.output
    r = quantize_cli(cli_runner, tiny_onnx, out, calib_dir, "--exclude-op-types", "LSTM")
    assert r.exit_code == 1 and "has no LSTM nodes" in r.output
    assert not out.exists() and not (tmp_path / "ex.calib.npz").exists()


def test_refuses_an_already_quantized_model(cli_runner, quantized, calib_dir, tmp_path):
    out = tmp_path / "again.onnx"
    r = quantize_cli(cli_runner, quantized["cpu"][0], out, calib_dir)
    assert r.exit_code == 1 and "already a int8 model" in r.output
    assert not out.exists()


# -- bad inputs: exit code, message, nothing left behind -------------------------------------------

def _bad_calib(tmp_path: Path, kind: str) -> Path:
    d = tmp_path / f"calib_{kind}"
    if kind == "missing":
        return d
    d.mkdir()
    if kind == "shape":
        np.save(d / "a.npy", np.zeros((1, 40, 100), np.float32))
    elif kind == "nan":
        a = np.zeros(TINY_SHAPE, np.float32)
        a[0, 0, 0] = np.nan
        np.save(d / "a.npy", a)
    elif kind == "dtype":
        np.save(d / "a.npy", np.zeros(TINY_SHAPE, np.int32))
    return d


@pytest.mark.parametrize("kind,message", [
    ("missing", "does not exist"),
    ("empty", "has no .npy files"),
    ("shape", "does not match the model input"),
    ("nan", "NaN"),
    ("dtype", "does not match the model input dtype"),
])
def test_bad_calibration_data(cli_runner, tiny_onnx, tmp_path, kind, message):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    calib = _bad_calib(tmp_path, kind)
    r = quantize_cli(cli_runner, tiny_onnx, out_dir / "m.onnx", calib)
    assert r.exit_code == 1, r.output
    assert message in r.output
    assert r.output.count("\n") == 1 and "Traceback" not in r.output
    assert listdir_names(out_dir) == set()


@pytest.mark.parametrize("kind", ["missing", "corrupt", "empty"])
def test_bad_model(cli_runner, calib_dir, tmp_path, kind):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    model = tmp_path / "m.onnx"
    if kind == "corrupt":
        model.write_bytes(b"this is not protobuf \x00\x01\x02" * 10)
    elif kind == "empty":
        model.write_bytes(b"")
    r = quantize_cli(cli_runner, model, out_dir / "q.onnx", calib_dir)
    assert r.exit_code == 1, r.output
    assert {"missing": "does not exist", "corrupt": "not a readable ONNX model", "empty": "is empty"}[kind] in r.output
    assert listdir_names(out_dir) == set()


def test_usage_errors(cli_runner, tiny_onnx, calib_dir, tmp_path):
    out = tmp_path / "q.onnx"
    r = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--int8"])
    assert r.exit_code == 2 and "--calibration" in r.output
    r = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--int8", "--fp16", "--calibration", calib_dir])
    assert r.exit_code == 2 and "exactly one of --int8 or --fp16" in r.output
    r = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out])
    assert r.exit_code == 2
    r = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--int8", "--calibration", calib_dir,
                            "--overflow", "fail"])
    assert r.exit_code == 2 and "--overflow cannot be used with --int8" in r.output
    r = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--int8", "--calibration", calib_dir, "--chunk-size", "0"])
    assert r.exit_code == 2
    r = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--int8", "--calibration", calib_dir, "--target", "gpu"])
    assert r.exit_code == 2
    assert not out.exists()


def test_output_dir_missing_or_read_only(cli_runner, tiny_onnx, calib_dir, tmp_path, monkeypatch):
    r = quantize_cli(cli_runner, tiny_onnx, tmp_path / "nope" / "q.onnx", calib_dir)
    assert r.exit_code == 1 and "does not exist" in r.output
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # root ignores directory permissions: make the permission check see what a user would.
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode, **k: False if Path(p) == ro else real_access(p, mode, **k))
    try:
        r = quantize_cli(cli_runner, tiny_onnx, ro / "q.onnx", calib_dir)
        assert r.exit_code == 1 and "not writable" in r.output
        assert listdir_names(ro) == set()
    finally:
        ro.chmod(0o755)


def test_failure_after_calibration_leaves_nothing(tiny_onnx, calib_dir, tmp_path, monkeypatch):
    """A failure in the self-check removes the model and writes no cache."""
    from optkit.common.errors import PassFailed
    from optkit.passes import quantize_int8

    def boom(*a, **k):
        raise PassFailed("simulated check failure")

    monkeypatch.setattr(quantize_int8.QuantizeInt8, "_compare", staticmethod(boom))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    step = get_pass("quantize-int8")
    with pytest.raises(PassFailed, match="simulated"):
        step(Artifact.from_file(tiny_onnx), QuantizeInt8Config(calibration=str(calib_dir), calibration_limit=4),
                 out_dir / "q.onnx")
    assert listdir_names(out_dir) == set()


def test_help_has_description_and_example(cli_runner):
    r = invoke(cli_runner, ["quantize", "--help"])
    assert r.exit_code == 0
    assert "Examples:" in r.output and "optkit quantize model.onnx -o model.int8.onnx --int8" in r.output
    assert "--target" in r.output and "--recalibrate" in r.output


def test_copying_the_model_elsewhere_hits_the_same_cache(cli_runner, tiny_onnx, calib_dir, tmp_path):
    """The cache key is the model's content, not its path."""
    out = tmp_path / "q.onnx"
    assert quantize_cli(cli_runner, tiny_onnx, out, calib_dir).exit_code == 0
    other = tmp_path / "copy" / "tiny.onnx"
    other.parent.mkdir()
    shutil.copy(tiny_onnx, other)
    r = quantize_cli(cli_runner, other, out, calib_dir)
    assert r.exit_code == 0 and "reused calibration statistics" in r.output


def test_a_logits_model_is_judged_as_logits_like_verify_does(cli_runner, tmp_path):
    """The int8 search judges a logit output by its decisions at 0 and |Δp| of its sigmoid (as
    verify does); taken for a probability by override, it would be decided at 0.5 on raw scores,
    where a flip cannot be seen: the pass warns then, as verify does. All 16 scores are below 0
    here, so both parts hold one class only: a warning, not an error."""
    from serve_models import build_user_model

    path = build_user_model(tmp_path / "logit.onnx", head="logit")
    calib = tmp_path / "calib"
    calib.mkdir()
    rng = np.random.default_rng(3)
    for i in range(16):
        np.save(calib / f"s{i:03d}.npy", rng.standard_normal((3, 8, 8)).astype(np.float32))
    res = quantize_cli(cli_runner, path, tmp_path / "a.int8.onnx", calib, "--no-search", "--latency-rounds", "0",
                       "--calibration-limit", "16")
    assert res.exit_code == 0, res.output
    assert "output score: logit (one value per sample over [" in res.output
    assert "judged by decisions at 0 (sigmoid >= 0.5), |Δp| of sigmoid(logit)" in res.output
    assert not [ln for ln in res.output.splitlines() if "outside [0, 1]" in ln], res.output
    assert "WARNING: the validation part holds one class only (reject, by fp32 decision)" in res.output
    res = quantize_cli(cli_runner, path, tmp_path / "b.int8.onnx", calib, "--no-search", "--latency-rounds", "0",
                       "--calibration-limit", "16", "--output-kind", "score=probability")
    warnings = [ln for ln in res.output.splitlines() if ln.lstrip().startswith("WARNING:") and "outside [0, 1]" in ln]
    assert warnings and "--threshold 0" in warnings[0], res.output


# -- the weight form where ORT's int8 kernels saturate (AVX2 without VNNI) -------------------------

@pytest.mark.parametrize("form", ["s8", "u8", "s8-7bit"])
def test_weight_form_reaches_the_model(cli_runner, tiny_onnx, calib_dir, tmp_path, form):
    out = tmp_path / f"q_{form}.onnx"
    r = quantize_cli(cli_runner, tiny_onnx, out, calib_dir, "--no-search", "--latency-rounds", "0",
                     "--weights", form)
    assert r.exit_code in (0, 3), r.output  # the form is what is tested here, not the gate
    path = out if out.exists() else tmp_path / f"q_{form}.failed.onnx"
    weights = [w for _, w, _, ops in weight_qdq(onnx.load(str(path))) if w.dtype in (np.int8, np.uint8)]
    assert weights
    if form == "u8":
        assert all(w.dtype == np.uint8 for w in weights)
    else:
        assert all(w.dtype == np.int8 for w in weights)
        widest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
        # per-channel symmetric: each channel's largest weight maps to 127, or to 64 in ORT's 7-bit range
        assert widest == (127 if form == "s8" else 64)


def test_weight_form_auto_follows_the_cpu(monkeypatch):
    from optkit.passes import quantize_int8 as q8
    from optkit.runtime import sysinfo

    avx2 = sysinfo.CpuInfo("AMD EPYC", 2, None, frozenset({"avx", "avx2"}))
    vnni = sysinfo.CpuInfo("Xeon", 2, None, frozenset({"avx2", "avx512bw", "avx512_vnni"}))
    for cpu, cpu_form, trt_form in ((avx2, "s8-7bit", "s8-7bit"), (vnni, "s8", "s8")):
        monkeypatch.setattr(sysinfo, "cpu_info", lambda cpu=cpu: cpu)
        form, why = q8.resolve_weights("auto", "cpu")
        assert form == cpu_form and (("no VNNI" in why) if form != "s8" else why == "")
        assert q8.resolve_weights("auto", "tensorrt")[0] == trt_form  # TensorRT's parser takes s8 only
        # the recipe cache sees the resolved form: a model made for another CPU is not reused
        fp = get_pass("quantize-int8").fingerprint(QuantizeInt8Config(calibration="x-does-not-exist"))
        assert fp.endswith(f"weights={cpu_form}")
    assert q8.resolve_weights("s8", "cpu")[0] == "s8"
    with pytest.raises(InputError, match="takes s8 weights only"):
        q8.resolve_weights("u8", "tensorrt")


@pytest.mark.parametrize("weight_from_dq", [True, False])
def test_a_conv_kept_in_float_between_int8_neighbours_is_not_counted_int8(weight_from_dq):
    """DQ -> Conv -> Q with float weights runs in float in ONNX Runtime (its QDQ fusion needs the
    weights from a DequantizeLinear too); the report had counted it int8, so a search's float set
    of 4 Convs read "quantised 42 of 42 nodes"."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from optkit.passes.quantize_int8 import quantized_node_report

    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(128, np.uint8), "z"),
             numpy_helper.from_array(np.ones((2, 1, 3, 3), np.float32), "w"),
             numpy_helper.from_array(np.ones((2, 1, 3, 3), np.int8), "wq"),
             numpy_helper.from_array(np.array(0, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q0"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq0")]
    if weight_from_dq:
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "s", "wz"], ["wd"], name="dqw"))
    nodes += [helper.make_node("Conv", ["xd", "wd" if weight_from_dq else "w"], ["c"], name="conv"),
              helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"], name="q1"),
              helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["y"], name="dq1")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 3])], initializer=inits)
    report = quantized_node_report(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert report["by_op_type"]["Conv"] == {"quantized": 1 if weight_from_dq else 0, "total": 1}
    assert report["fp32_nodes"] == ([] if weight_from_dq else ["conv"])
