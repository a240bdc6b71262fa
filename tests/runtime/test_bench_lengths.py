"""optkit bench --lengths: latency per length of a dynamic time axis, interleaved, with the slope of
latency vs length; a length outside the declared range is one line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import invoke, listdir_names
from optkit.common.errors import InputError
from optkit.model.onnx_utils import TensorSpec
from optkit.runtime import bench as bench_lib
from optkit.runtime.bench_lengths import fit_line, parse_lengths
from test_bench import FakeClock, FakeRunner

MODELS = Path(__file__).resolve().parents[1] / "helpers" / "variable_length_models.py"


class LengthRunner(FakeRunner):
    """(N, 8, T) with T declared 50..1000; costs fixed_s + per_frame_s * T per call."""

    def __init__(self, label, log, clock, fixed_s, per_frame_s):
        super().__init__(label, log, clock, 0.0, shape=(None, 8, "length"))
        self.fixed_s, self.per_frame_s = fixed_s, per_frame_s

    @property
    def inputs(self):
        return [TensorSpec("x", self.shape, "float32", ((2, 50, 1000),))]

    def infer(self, feed):
        x = feed["x"]
        self.log.append((self.label, x.shape[2]))
        self.clock.now += self.fixed_s + self.per_frame_s * x.shape[2]
        return {"y": x.sum(axis=(1, 2))[:, None]}


def test_every_length_is_timed_interleaved_with_a_line_through_the_medians():
    log, clock = [], FakeClock()
    items = [bench_lib.BenchItem("fp32", LengthRunner("fp32", log, clock, 0.002, 20e-6)),
             bench_lib.BenchItem("int8", LengthRunner("int8", log, clock, 0.001, 5e-6))]
    cfg = bench_lib.BenchConfig(warmup=1, iterations=4, lengths=(100, 241, 500, 1000))
    report = bench_lib.benchmark(items, cfg, environment={}, clock=clock, sleep=clock.sleep)
    one_round = [(a, n) for n in cfg.lengths for a in ("fp32", "int8")]
    assert log == one_round * (1 + cfg.warmup + cfg.iterations)  # priming, warm-up, timed: all interleaved
    assert report.result("fp32", 1, 241).stats.p50_ms == pytest.approx(2 + 241 * 0.02)
    assert report.result("int8", 1, 1000).stats.p50_ms == pytest.approx(1 + 1000 * 0.005)
    # the speed-up compares artifacts at the same length
    assert report.result("int8", 1, 100).speedup["p50"] == pytest.approx((2 + 2) / (1 + 0.5))
    data = report.to_json()
    json.dumps(data)
    assert data["config"]["lengths"] == [100, 241, 500, 1000]
    assert [(r["artifact"], r["length"]) for r in data["results"]] == one_round
    fits = {f["artifact"]: f for f in data["length_fits"]}
    assert fits["fp32"]["slope_ms_per_s_audio"] == pytest.approx(2.0)  # 0.02 ms per frame x 100 frames/s
    assert fits["int8"]["slope_ms_per_s_audio"] == pytest.approx(0.5)
    assert fits["fp32"]["intercept_ms"] == pytest.approx(2.0) and fits["fp32"]["max_deviation_from_line"] < 1e-6
    table = "\n".join(report.table_lines())
    assert "length" in table and "2.000 ms per second of audio" in table and "0.500 ms per second" in table


def test_fit_line_reports_how_far_from_linear():
    fit = fit_line([100, 200, 300, 400], [11.0, 12.0, 13.0, 16.0])
    # least squares: 0.016 ms/frame + 9.0 ms -> 10.6, 12.2, 13.8, 15.4; the worst is 13 vs 13.8
    assert fit["slope_ms_per_s_audio"] == pytest.approx(1.6) and fit["intercept_ms"] == pytest.approx(9.0)
    assert fit["worst_length"] == 300 and fit["max_deviation_from_line"] == pytest.approx(0.8 / 13.8, abs=1e-4)
    assert fit_line([100, 200], [1.0, 2.0], frames_per_second=50)["slope_ms_per_s_audio"] == pytest.approx(0.5)


def test_a_length_outside_the_declared_range_or_no_range_is_refused_before_timing():
    log, clock = [], FakeClock()
    item = bench_lib.BenchItem("m", LengthRunner("m", log, clock, 0.001, 1e-6))
    with pytest.raises(InputError, match=r"length 1200 outside the declared range 50..1000 of m \(input x\)"):
        bench_lib.benchmark([item], bench_lib.BenchConfig(lengths=(100, 1200)), environment={})
    plain = bench_lib.BenchItem("p", FakeRunner("p", log, clock, 0.001))
    with pytest.raises(InputError, match="p declares no length range"):
        bench_lib.benchmark([plain], bench_lib.BenchConfig(lengths=(100,)), environment={})
    assert log == []
    with pytest.raises(InputError, match="does not take --data"):
        bench_lib.BenchConfig(lengths=(100,), data="d")


@pytest.mark.parametrize("text, lengths", [
    ("100,241,500,1000", (100, 241, 500, 1000)), ("500, 100,100", (100, 500)),
    ("100:1000:5", (100, 325, 550, 775, 1000)), ("100:200:2", (100, 200)),
])
def test_parse_lengths(text, lengths):
    assert parse_lengths(text) == lengths


@pytest.mark.parametrize("text", ["", "a,b", "0,100", "100:50:3", "100:200:1", "100:200", "1:2:3:4"])
def test_parse_lengths_refuses_with_one_line(text):
    with pytest.raises(InputError, match="expected positive lengths like 100,241,500,1000 or MIN:MAX:COUNT"):
        parse_lengths(text)


def test_cli_bench_lengths_of_an_exported_dynamic_model(cli_runner, tmp_path):
    model = tmp_path / "cnn.onnx"
    res = invoke(cli_runner, ["export", f"{MODELS}:gap_cnn", "-o", model, "--input-shape", "1,1,8,50",
                              "--input-name", "x", "--output-name", "y", "--reference-samples", "2",
                              "--dynamic-axis", "x:3", "--length-range", "20:300", "--check-lengths", "20,300"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "b.json"
    res = invoke(cli_runner, ["bench", model, "--lengths", "20:300:3", "--iterations", "3", "--warmup", "1",
                              "--json", out])
    assert res.exit_code == 0, res.output
    assert "ms per second of audio" in res.output
    data = json.loads(out.read_text())
    assert [r["length"] for r in data["results"]] == [20, 160, 300]
    assert data["length_fits"][0]["artifact"] == "cnn.onnx"
    bad = invoke(cli_runner, ["bench", model, "--lengths", "100,400", "--json", tmp_path / "c.json"])
    assert bad.exit_code == 1
    [err] = [line for line in bad.output.splitlines() if line.startswith("Error:")]
    assert "length 400 outside the declared range 20..300 of cnn.onnx (input x)" in err
    assert "c.json" not in listdir_names(tmp_path)
