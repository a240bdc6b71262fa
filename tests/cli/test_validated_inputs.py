"""Issue 22, cases 12-16 and 18: hostile inputs are refused with one line and exit 1, nothing written."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke

ROOT = Path(__file__).resolve().parents[2]


def refused(res, *words: str) -> None:
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output
    for w in words:
        assert w in errors[0], errors[0]


# -- case 13: weights JSON ------------------------------------------------------------------------
@pytest.fixture
def xor_weights(tmp_path: Path, cli_runner) -> Path:
    out = tmp_path / "aug.json"
    assert invoke(cli_runner, ["weights", "xor", "--layout", "augmented", "-o", out]).exit_code == 0
    return out


def _edit(path: Path, fn) -> Path:  # noqa: ANN001
    doc = json.loads(path.read_text())
    fn(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("case, words", [
    ("bias row deleted", ["Layer1", "'shapes' says 2 x 2"]),
    ("duplicate layer key", ["'Layer1' appears twice"]),
    ("input is output", ["'input' and 'output' are both"]),
    ("50k-deep nesting", ["nested too deeply"]),
])
def test_bad_weights_files_are_refused(xor_weights, tmp_path, cli_runner, case, words):
    if case == "bias row deleted":
        _edit(xor_weights, lambda d: d["layers"].__setitem__("Layer1", d["layers"]["Layer1"][:2]))
    elif case == "duplicate layer key":
        text = xor_weights.read_text().replace('"Layer1":', '"Layer1": [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]],\n'
                                                '"Layer1":', 1)
        xor_weights.write_text(text)
    elif case == "input is output":
        _edit(xor_weights, lambda d: d.__setitem__("output", d["input"]))
    else:
        xor_weights.write_text("[" * 50_000 + "]" * 50_000)
    res = invoke(cli_runner, ["weights", "--load", xor_weights, "-o", tmp_path / "m.onnx"])
    refused(res, *words)
    assert not (tmp_path / "m.onnx").exists()


def test_the_weights_written_by_optkit_declare_every_layers_shape_and_load_back(xor_weights, tmp_path, cli_runner):
    assert json.loads(xor_weights.read_text())["shapes"] == [[2, 2], [2, 1]]
    assert invoke(cli_runner, ["weights", "--load", xor_weights, "-o", tmp_path / "m.onnx"]).exit_code == 0


# -- case 14: baselines -----------------------------------------------------------------------------
@pytest.fixture
def release(tiny_onnx: Path, tmp_path: Path, cli_runner) -> Path:
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tiny_onnx.parent / "tiny.reference.npz",
                              "--report-dir", tmp_path / "rel1"])
    assert res.exit_code == 0, res.output
    return tmp_path / "rel1" / "report.json"


BAD_BASELINES = {
    "3 of 4 scores": (lambda d: d["artifacts"][0].__setitem__("scores", d["artifacts"][0]["scores"][:-1]), "scores"),
    "scores as strings": (lambda d: d["artifacts"][0].__setitem__("scores", [str(v) for v in d["artifacts"][0]["scores"]]),
                          "scores"),
    "scores null": (lambda d: d["artifacts"][0].__setitem__("scores", None), "scores"),
    "artifact path null": (lambda d: d["artifacts"][0].__setitem__("path", None), "path"),
    "threshold a string": (lambda d: d.__setitem__("threshold", "x"), "threshold"),
    "accuracy a string": (lambda d: d["artifacts"][0].__setitem__("task", {"accuracy": "high"}), "accuracy"),
    "samples a string": (lambda d: d["reference"]["identity"].__setitem__("samples", "64"), "samples"),
}


@pytest.mark.parametrize("case", list(BAD_BASELINES) + ["NaN score", "NaN accuracy"])
def test_corrupt_baselines_are_refused_with_one_line_and_exit_1(release, tiny_onnx, cli_runner, tmp_path, case):
    if case.startswith("NaN"):
        doc = json.loads(release.read_text())
        if case == "NaN score":
            doc["artifacts"][0]["scores"][0] = float("nan")
        else:
            doc["artifacts"][0]["task"] = {"accuracy": float("nan")}
        release.write_text(json.dumps(doc))  # json writes NaN literally, as a hand edit would
        words = ["NaN"]
    else:
        fn, word = BAD_BASELINES[case]
        _edit(release, fn)
        words = [word]
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tiny_onnx.parent / "tiny.reference.npz",
                              "--baseline", release, "--report-dir", tmp_path / "rel2"])
    refused(res, "baseline", *words)
    assert not (tmp_path / "rel2").exists()


# -- case 15: references ------------------------------------------------------------------------------
def _reference_variant(tiny_onnx: Path, tmp_path: Path, change) -> Path:  # noqa: ANN001
    z = dict(np.load(tiny_onnx.parent / "tiny.reference.npz", allow_pickle=False))
    change(z)
    out = tmp_path / "variant.npz"
    np.savez(out, **z)
    return out


def _out_key(z: dict) -> str:
    return next(k for k in z if k.startswith("output."))


@pytest.mark.parametrize("case, words", [
    ("labels 0,1,2", ["labels must be 0 or 1", "2"]),
    ("labels -1", ["labels must be 0 or 1", "-1"]),
    ("doubled output column", ["per-sample shape"]),
    ("output of another model", ["is not an output of tiny.onnx"]),
])
def test_references_that_do_not_fit_are_input_errors(tiny_onnx, tmp_path, cli_runner, case, words):
    def change(z):  # noqa: ANN001, ANN202
        n = len(z[_out_key(z)])
        if case == "labels 0,1,2":
            z["labels"] = np.arange(n) % 3
        elif case == "labels -1":
            z["labels"] = np.where(np.arange(n) % 2, 1, -1)
        elif case == "doubled output column":
            k = _out_key(z)
            z[k] = np.concatenate([z[k], z[k]], axis=-1)
        else:
            k = _out_key(z)
            z["output.not_mine"] = z.pop(k)

    ref = _reference_variant(tiny_onnx, tmp_path, change)
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", ref])
    refused(res, *words)


# -- case 16: thresholds and gates ----------------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["--threshold", "nan"], ["--threshold", "finite"]),
    (["--threshold", "inf"], ["--threshold", "finite"]),
    (["--threshold", "-inf"], ["--threshold", "finite"]),
    (["--gate", "fp32.max_abs=nan"], ["max_abs", "finite"]),
    (["--gate", "fp32.min_agreement=2"], ["min_agreement", "between 0 and 1"]),
    (["--gate", "fp32.max_abs=-1"], ["max_abs", "at least 0"]),
])
def test_thresholds_and_gates_are_finite_and_in_range(tiny_onnx, tmp_path, cli_runner, args, words):
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tiny_onnx.parent / "tiny.reference.npz",
                              "--report-dir", tmp_path / "rep", *args])
    refused(res, *words)
    assert not (tmp_path / "rep").exists()


def test_recipe_gates_are_checked_at_load_time_too():
    from optkit.common.errors import RecipeError
    from optkit.verification.verify import merge_gates

    with pytest.raises(RecipeError, match="min_agreement: 1.5 is out of range"):
        merge_gates({"int8": {"min_agreement": 1.5}})
    assert merge_gates({"int8": {"min_agreement": 0.99}})["int8"].min_agreement == 0.99


# -- case 12: loadtest URLs and --serve-arg ---------------------------------------------------------------
@pytest.mark.parametrize("args, words", [
    (["http://127.0.0.1:notaport"], ["not a valid URL"]),
    (["http://[::1"], ["not a valid URL"]),
    (["http://127.0.0.1:70000"], ["not a valid URL"]),
    (["--compare", "ART", "--serve-arg=--host=0.0.0.0"], ["--host cannot be set"]),
    (["--compare", "ART", "--serve-arg", "--port=80"], ["--port cannot be set"]),
    (["--compare", "ART", "--variant", "--max-batch 4 --host 0.0.0.0"], ["--host cannot be set"]),
])
def test_loadtest_urls_and_compare_addresses_are_refused(tiny_onnx, cli_runner, args, words):
    res = invoke(cli_runner, ["loadtest", *[str(tiny_onnx) if a == "ART" else a for a in args]])
    refused(res, *words)


# -- case 18: Ray at an address where something else answers ---------------------------------------------
class _Page(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"<html>not ray</html>")

    def log_message(self, *a):  # noqa: ANN002
        pass


def test_ray_address_that_answers_http_is_one_line_fast(tiny_onnx, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'optkit[ray]'")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        env.pop("OPTKIT_DEBUG", None)
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "optkit", "verify", str(tiny_onnx), "--reference",
                              str(tiny_onnx.parent / "tiny.reference.npz"), "--ray",
                              f"127.0.0.1:{server.server_address[1]}"], capture_output=True, text=True,
                             env=env, timeout=120)
        seconds = time.perf_counter() - t0
    finally:
        server.shutdown()
    assert res.returncode == 1, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: could not connect to the Ray cluster"), res.stderr
    assert "not as Ray's gRPC port does" in lines[0]
    assert seconds < 15, seconds  # not ray.init's ~20 s of retries (a bound, not a speed target)


def test_ray_log_lines_are_kept_out_of_stderr(capfd):
    from optkit.pipeline.distributed import _ray_logs_kept_out

    with _ray_logs_kept_out():
        os.write(2, b"[C++ core] W1207 retrying GCS\n")
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "retrying GCS" not in err and "after" in err

