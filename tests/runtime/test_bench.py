"""optkit.runtime.bench (statistics, interleaving, report) and the ``optkit bench`` command."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import invoke, listdir_names
from optkit.runtime import bench as bench_lib
from optkit.common.errors import InputError
from optkit.model.onnx_utils import TensorSpec
from optkit.runtime.base import Runner


# -- statistics --------------------------------------------------------------------------------
def test_latency_stats_of_known_timings():
    times = [0.004, 0.001, 0.003, 0.002, 0.010]  # seconds, unsorted
    s = bench_lib.latency_stats(times, batch=2)
    assert s.n == 5
    assert s.min_ms == pytest.approx(1.0)
    assert s.max_ms == pytest.approx(10.0)
    assert s.p50_ms == pytest.approx(3.0)
    # linear interpolation between order statistics: sorted [1,2,3,4,10], p90 at rank 3.6
    assert s.p90_ms == pytest.approx(4 + 0.6 * 6)
    assert s.p99_ms == pytest.approx(4 + 0.96 * 6)
    assert s.mean_ms == pytest.approx(4.0)
    assert s.std_ms == pytest.approx(np.std([1, 2, 3, 4, 10]))
    assert s.throughput_sps == pytest.approx(2 / 0.004)  # batch / mean


def test_latency_stats_even_count_median_and_bad_input():
    assert bench_lib.latency_stats([0.002, 0.004]).p50_ms == pytest.approx(3.0)
    with pytest.raises(InputError, match="no timings"):
        bench_lib.latency_stats([])
    with pytest.raises(InputError, match="finite"):
        bench_lib.latency_stats([0.001, float("nan")])


def test_speedups_by_min_and_median():
    base = bench_lib.latency_stats([0.010, 0.012, 0.014])
    fast = bench_lib.latency_stats([0.004, 0.006, 0.008])
    sp = bench_lib.speedups(base, fast)
    assert sp["min"] == pytest.approx(10 / 4)
    assert sp["p50"] == pytest.approx(12 / 6)


# -- interleaving ------------------------------------------------------------------------------
class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


class FakeRunner(Runner):
    """Records its calls in a shared log and advances a fake clock by a fixed cost per sample."""

    def __init__(self, label: str, log: list, clock: FakeClock, cost_s: float, shape=(None, 3)):
        super().__init__(Path(label))
        self.label, self.log, self.clock, self.cost_s, self.shape = label, log, clock, cost_s, shape
        self.activations = 0

    def activate(self):
        self.activations += 1
        self.active = True

    @property
    def inputs(self):
        return [TensorSpec("x", self.shape, "float32")]

    @property
    def output_names(self):
        return ["y"]

    def infer(self, feed):
        x = feed["x"]
        self.log.append((self.label, x.shape[0]))
        self.clock.now += self.cost_s * x.shape[0]
        return {"y": x.sum(axis=1, keepdims=True)}

    def describe(self):
        return {"runner": "fake", "threads": None}


def test_interleaved_times_is_round_robin_with_idle_before_each_timed_call():
    clock = FakeClock()
    order = []

    def make(name, cost):
        def call(r):
            order.append((name, r))
            clock.now += cost
        return call

    times = bench_lib.interleaved_times([make("a", 0.003), make("b", 0.001), make("c", 0.002)],
                                        iterations=3, warmup=2, idle_s=0.005, clock=clock, sleep=clock.sleep)
    expected_rounds = [(n, r) for r in range(2) for n in "abc"] + [(n, r) for r in range(3) for n in "abc"]
    assert order == expected_rounds
    assert clock.slept == [0.005] * 9  # only before timed calls, never timed
    assert times[0] == pytest.approx([0.003] * 3)
    assert times[1] == pytest.approx([0.001] * 3)
    assert times[2] == pytest.approx([0.002] * 3)


def _fake_items(log, clock, costs=(0.004, 0.002, 0.001)):
    return [bench_lib.BenchItem(name, FakeRunner(name, log, clock, cost))
            for name, cost in zip(("slow", "mid", "fast"), costs)]


def test_benchmark_order_speedups_and_json(tmp_path):
    log, clock = [], FakeClock()
    items = _fake_items(log, clock)
    cfg = bench_lib.BenchConfig(batches=(1, 4), warmup=1, iterations=5, idle_ms=2.0)
    seen = {}
    report = bench_lib.benchmark(items, cfg, environment={"cpu": {"model": "test"}}, clock=clock,
                                 sleep=clock.sleep, on_first_output=lambda l, b, o: seen.__setitem__((l, b), o["y"]))
    # per batch: one priming call each, then warm-up and timed rounds, all round-robin
    per_batch = 1 + cfg.warmup + cfg.iterations
    assert log == [(n, b) for b in (1, 4) for _ in range(per_batch) for n in ("slow", "mid", "fast")]
    assert all(i.runner.activations == 1 for i in items)
    # same inputs for every artifact
    assert np.array_equal(seen[("slow", 4)], seen[("fast", 4)]) and seen[("slow", 4)].shape == (4, 1)

    r = report.result("fast", 4)
    assert r.stats.min_ms == pytest.approx(4.0) and r.stats.throughput_sps == pytest.approx(1000.0)
    assert report.result("slow", 1).speedup == {"min": pytest.approx(1.0), "p50": pytest.approx(1.0)}
    assert report.result("mid", 1).speedup["min"] == pytest.approx(2.0)
    assert report.result("fast", 4).speedup["p50"] == pytest.approx(4.0)

    data = report.to_json()
    json.dumps(data)
    assert data["config"]["batches"] == [1, 4] and data["config"]["iterations"] == 5
    assert data["request_pattern"]["idle_ms"] == 2.0 and "2 ms idle gap" in data["request_pattern"]["description"]
    assert "round-robin" in data["method"]["interleaved"]
    assert "allow_spinning=0" in data["method"]["ort_intra_op_spinning"]
    assert [a["label"] for a in data["artifacts"]] == ["slow", "mid", "fast"]
    assert data["artifacts"][0]["runner"]["runner"] == "fake"
    assert data["environment"]["cpu"]["model"] == "test"
    row = next(x for x in data["results"] if x["artifact"] == "mid" and x["batch"] == 4)
    assert row["latency_ms"]["p50_ms"] == pytest.approx(8.0)
    assert row["speedup_vs_first"]["min"] == pytest.approx(2.0)
    assert row["throughput_samples_per_s"] == pytest.approx(500.0)

    table = "\n".join(report.table_lines())
    assert "speed-up relative to slow" in table and "4.00x" in table and "2 ms idle gap" in table


class RenamedInputRunner(FakeRunner):
    """The fake runner with its input called ``features``: another model's interface."""

    @property
    def inputs(self):
        return [TensorSpec("features", self.shape, "float32")]

    def infer(self, feed):
        return super().infer({"x": feed["features"]})


def test_no_speed_up_against_a_model_with_other_inputs():
    """Ratios compare forms of one model; against an unrelated first model (other input names or
    shapes) they are left out, with one note, while related artifacts keep theirs."""
    log, clock = [], FakeClock()
    items = [bench_lib.BenchItem("base", FakeRunner("base", log, clock, 0.004)),
             bench_lib.BenchItem("fixed-batch", FakeRunner("fixed-batch", log, clock, 0.002, shape=(1, 3))),
             bench_lib.BenchItem("wider", FakeRunner("wider", log, clock, 0.001, shape=(None, 5))),
             bench_lib.BenchItem("renamed", RenamedInputRunner("renamed", log, clock, 0.001))]
    report = bench_lib.benchmark(items, bench_lib.BenchConfig(batches=(1,), warmup=1, iterations=3), environment={},
                                 clock=clock, sleep=clock.sleep)
    assert report.result("fixed-batch", 1).speedup["min"] == pytest.approx(2.0)  # the batch dimension is not compared
    assert report.result("wider", 1).speedup is None and report.result("renamed", 1).speedup is None
    assert report.result("wider", 1).stats.min_ms == pytest.approx(1.0)  # the numbers stay
    notes = [n for n in report.notes if "No speed-up" in n]
    assert notes == ["No speed-up for wider, renamed: their inputs (names, shapes) differ from base's, so a ratio "
                     "would compare different models rather than forms of one; their times are shown as measured."]
    rows = {r["artifact"]: r for r in report.to_json()["results"]}
    assert rows["wider"]["speedup_vs_first"] is None and rows["renamed"]["speedup_vs_first"] is None
    assert rows["fixed-batch"]["speedup_vs_first"]["min"] == pytest.approx(2.0)
    assert notes[0] in report.to_json()["notes"]
    table = report.table_lines()
    wider = next(line for line in table if line.startswith("wider "))
    assert wider.split()[-2:] == ["-", "-"] and "x" not in wider.split()[-1]
    assert next(line for line in table if line.startswith("fixed-batch ")).split()[-2:] == ["2.00x", "2.00x"]
    assert table.count(f"Note: {notes[0]}") == 1
    md = report.markdown_lines()
    assert next(line for line in md if line.startswith("| wider |")).endswith("| - | - |") and notes[0] in md


def test_cli_bench_of_two_unrelated_models_prints_no_ratio(cli_runner, tiny_onnx, tmp_path):
    from serve_models import build_user_model

    other = build_user_model(tmp_path / "image.onnx")
    out = tmp_path / "bench.json"
    res = invoke(cli_runner, ["bench", tiny_onnx, other, "--threads", "1", "--iterations", "3", "--warmup", "1",
                              "--json", out])
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("image.onnx "))
    assert row.split()[-2:] == ["-", "-"]
    assert res.output.count("No speed-up for image.onnx: its inputs (names, shapes) differ from tiny.onnx's") == 1
    data = json.loads(out.read_text())
    assert [r["speedup_vs_first"] for r in data["results"]] == [{"min": 1.0, "p50": 1.0}, None]


def test_benchmark_rejects_fixed_batch_mismatch_and_duplicate_labels():
    log, clock = [], FakeClock()
    fixed = bench_lib.BenchItem("fixed", FakeRunner("fixed", log, clock, 0.001, shape=(1, 3)))
    with pytest.raises(InputError, match="fixed batch of 1"):
        bench_lib.benchmark([fixed], bench_lib.BenchConfig(batches=(8,), iterations=1), environment={})
    with pytest.raises(InputError, match="unique"):
        bench_lib.benchmark(_fake_items(log, clock)[:1] * 2, bench_lib.BenchConfig(iterations=1), environment={})


def test_benchmark_refuses_a_batch_a_fixed_batch_model_cannot_run_before_timing_anything():
    """--batch 1,8 on a model with a fixed batch of 1: refused before batch 1 is timed (that could take
    minutes on a real model, all thrown away by the error at batch 8)."""
    log, clock = [], FakeClock()
    fixed = bench_lib.BenchItem("fixed", FakeRunner("fixed", log, clock, 0.001, shape=(1, 3)))
    with pytest.raises(InputError, match="fixed batch of 1; it cannot run batch 8"):
        bench_lib.benchmark([fixed], bench_lib.BenchConfig(batches=(1, 8), iterations=1), environment={},
                            clock=clock, sleep=clock.sleep)
    assert log == []


def test_bench_config_validation():
    with pytest.raises(InputError):
        bench_lib.BenchConfig(batches=(0,))
    with pytest.raises(InputError):
        bench_lib.BenchConfig(iterations=0)
    with pytest.raises(InputError):
        bench_lib.BenchConfig(idle_ms=-1)


def test_make_feeds_random_is_seeded_and_data_is_batched(tmp_path):
    spec = [TensorSpec("x", (None, 2, 3), "float32")]
    a = bench_lib.make_feeds(spec, 4, seed=1)
    b = bench_lib.make_feeds(spec, 4, seed=1)
    c = bench_lib.make_feeds(spec, 4, seed=2)
    assert a[0]["x"].shape == (4, 2, 3) and np.array_equal(a[0]["x"], b[0]["x"])
    assert not np.array_equal(a[0]["x"], c[0]["x"])
    x = np.arange(10 * 6, dtype=np.float32).reshape(10, 2, 3)
    np.savez(tmp_path / "d.npz", x=x)
    feeds = bench_lib.make_feeds(spec, 4, data=str(tmp_path / "d.npz"))
    assert len(feeds) == 2 and np.array_equal(feeds[1]["x"], x[4:8])
    with pytest.raises(InputError, match="does not match"):
        bench_lib.make_feeds([TensorSpec("x", (None, 5), "float32")], 1, data=str(tmp_path / "d.npz"))


# -- the CLI on the tiny model -----------------------------------------------------------------
def test_cli_bench_tiny_with_json(cli_runner, tiny_onnx, tmp_path):
    out = tmp_path / "bench.json"
    res = invoke(cli_runner, ["bench", tiny_onnx, tiny_onnx, "--provider", "cpu,openvino", "--batch", "1,2",
                              "--threads", "1", "--iterations", "3", "--warmup", "1", "--idle-ms", "1",
                              "--json", out])
    assert res.exit_code == 0, res.output
    assert "samples/s" in res.output and "x p50" in res.output
    assert "1 ms idle gap" in res.output
    data = json.loads(out.read_text())
    labels = [a["label"] for a in data["artifacts"]]
    assert labels == ["tiny.onnx [cpu]", "tiny.onnx [openvino]", "tiny.onnx [cpu] (2)", "tiny.onnx [openvino] (2)"]
    assert len(data["results"]) == 8 and {r["batch"] for r in data["results"]} == {1, 2}
    assert all(r["iterations"] == 3 for r in data["results"])
    first = [r for r in data["results"] if r["artifact"] == labels[0]]
    assert all(r["speedup_vs_first"] == {"min": 1.0, "p50": 1.0} for r in first)
    ort, ov = data["artifacts"][0]["runner"], data["artifacts"][1]["runner"]
    assert ort["providers_in_use"] == ["CPUExecutionProvider"] and ort["allow_spinning"] is False
    assert ov["in_effect"]["precision_hint"] == "f32" and ov["openvino"]
    assert data["artifacts"][0]["precision"] == "fp32" and len(data["artifacts"][0]["sha256"]) == 64
    env = data["environment"]
    assert env["libraries"]["onnxruntime"] and env["libraries"]["openvino"]
    assert "avx2" in env["cpu"]["features"]
    assert listdir_names(tmp_path) >= {"bench.json"} and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_cli_bench_openvino_options(cli_runner, tiny_onnx, tmp_path):
    out = tmp_path / "b.json"
    res = invoke(cli_runner, ["bench", tiny_onnx, "--provider", "openvino", "--ov-precision", "default",
                              "--ov-hint", "throughput", "--iterations", "2", "--warmup", "0", "--json", out])
    assert res.exit_code == 0, res.output
    ov = json.loads(out.read_text())["artifacts"][0]["runner"]
    assert ov["requested"] == {"precision_hint": "default", "performance_hint": "THROUGHPUT"}
    assert ov["in_effect"]["performance_hint"] == "THROUGHPUT"
    res = invoke(cli_runner, ["bench", tiny_onnx, "--ov-precision", "f32"])
    assert res.exit_code == 2 and "--provider openvino only" in res.output


def test_cli_bench_with_data_dir(cli_runner, tiny_onnx, calib_dir):
    res = invoke(cli_runner, ["bench", tiny_onnx, "--data", calib_dir, "--batch", "4", "--iterations", "2",
                              "--warmup", "0"])
    assert res.exit_code == 0, res.output
    assert "tiny.onnx" in res.output


def test_cli_bench_missing_artifact(cli_runner, tmp_path):
    out = tmp_path / "b.json"
    res = invoke(cli_runner, ["bench", tmp_path / "nope.onnx", "--json", out])
    assert res.exit_code == 1
    assert "nope.onnx does not exist" in res.output
    assert not out.exists()


@pytest.mark.parametrize("provider", ["cpu", "openvino"])
def test_cli_bench_corrupt_onnx(cli_runner, tmp_path, provider):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not protobuf")
    out = tmp_path / "b.json"
    res = invoke(cli_runner, ["bench", bad, "--provider", provider, "--json", out])
    assert res.exit_code == 1
    assert "bad.onnx" in res.output and "Traceback" not in res.output
    assert listdir_names(tmp_path) == {"bad.onnx"}


@pytest.mark.parametrize("value", ["0", "1,x", "-2", ","])
def test_cli_bench_bad_batch_is_usage_error(cli_runner, tiny_onnx, value):
    res = invoke(cli_runner, ["bench", tiny_onnx, "--batch", value])
    assert res.exit_code == 2
    assert "--batch" in res.output


def test_cli_bench_unknown_provider_is_usage_error(cli_runner, tiny_onnx):
    res = invoke(cli_runner, ["bench", tiny_onnx, "--provider", "tpu"])
    assert res.exit_code == 2
    assert "unknown provider tpu" in res.output


def test_cli_bench_cuda_on_cpu_only_machine(cli_runner, tiny_onnx, tmp_path):
    from optkit.runtime.onnxruntime import available_providers

    if "CUDAExecutionProvider" in available_providers():
        pytest.skip("this machine has the CUDA provider")
    out = tmp_path / "b.json"
    res = invoke(cli_runner, ["bench", tiny_onnx, "--provider", "cuda", "--json", out])
    assert res.exit_code == 1
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "CUDAExecutionProvider" in errors[0] and "not available" in errors[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".b.json")]


def test_cli_bench_engine_without_tensorrt(cli_runner, tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not really an engine")
    res = invoke(cli_runner, ["bench", engine])
    assert res.exit_code == 1
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and ("TensorRT" in errors[0] or "tensorrt" in errors[0])


def test_cli_bench_unwritable_json(cli_runner, tiny_onnx, tmp_path):
    res = invoke(cli_runner, ["bench", tiny_onnx, "--json", tmp_path / "missing-dir" / "b.json"])
    assert res.exit_code == 1
    assert "does not exist" in res.output
    assert not (tmp_path / "missing-dir").exists()


def test_cli_bench_read_only_json_dir(cli_runner, tiny_onnx, tmp_path, monkeypatch):
    import os
    from pathlib import Path

    ro = tmp_path / "ro"
    ro.mkdir()
    # CI runs as root, which chmod cannot lock out: simulate a read-only directory instead.
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    res = invoke(cli_runner, ["bench", tiny_onnx, "--json", ro / "b.json"])
    assert res.exit_code == 1 and "not writable" in res.output
    assert list(ro.iterdir()) == []


def test_cli_bench_help_has_example(cli_runner):
    res = invoke(cli_runner, ["bench", "--help"])
    assert res.exit_code == 0
    assert "Examples:" in res.output and "optkit bench model.onnx" in res.output


def _dynamic_time_model(path: Path) -> Path:
    """x (batch, time, 4) -> mean over time: the shape a recurrent model exported with a variable
    sequence length has."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0)], "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "time", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@pytest.mark.parametrize("provider", ["cpu", "openvino"])
def test_cli_bench_dynamic_sequence_length_is_one_honest_line(cli_runner, tmp_path, provider):
    """No option gives bench a sequence length, so the error must not promise one: it names the
    artifact, the dimension and what to do (export it fixed)."""
    model = _dynamic_time_model(tmp_path / "rnnish.onnx")
    res = invoke(cli_runner, ["bench", model, "--provider", provider, "--iterations", "1"])
    assert res.exit_code == 1, res.output
    err = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1 and "Traceback" not in res.output
    assert "rnnish.onnx" in err[0] and "dynamic dimension 1" in err[0] and "fixed" in err[0]
    if provider == "cpu":  # OpenVINO does not keep the dimension's name
        assert "('time')" in err[0]
    assert "give the shape explicitly" not in err[0]
