"""optkit loadtest --slo-p99 / --target-rps: the capacity search (with a fake service), the nodes
formula at its edges, the CLI's one-line errors, and one short run against a real server on
127.0.0.1."""
from __future__ import annotations

import json
import math

import pytest

from conftest import invoke

from optkit.common.errors import InputError
from optkit.serve import capacity as cap
from optkit.serve.loadtest import StepResult


def fake_step(rate: float, p99_ms: float, answered_share: float = 1.0, shed: int = 0) -> StepResult:
    sent = max(1, int(rate * 5))
    duration = sent / (rate * answered_share) + p99_ms / 1e3  # the schedule (stretched when not kept) + the tail
    return StepResult(concurrency=None, offered_rate=rate, duration_s=duration, sent=sent, ok=sent - shed, shed=shed,
                      errors=0, dropped=0, timeouts=0, status_counts={"200": sent - shed}, qps=(sent - shed) / duration,
                      min_ms=1.0, p50_ms=p99_ms / 2, p90_ms=p99_ms, p99_ms=p99_ms, max_ms=p99_ms,
                      p99_all_ms=p99_ms if shed <= 0.01 * sent else math.inf)


class KneeService:
    """p99 5 ms up to ``knee`` requests/s, 500 ms above it; records the rates it was asked for."""

    def __init__(self, knee: float, flaky_at: float | None = None):
        self.knee, self.flaky_at, self.rates = knee, flaky_at, []

    def __call__(self, rate: float) -> StepResult:
        self.rates.append(rate)
        if self.flaky_at is not None and rate == self.flaky_at and self.rates.count(rate) == 2:
            return fake_step(rate, 80.0)  # passes once, fails on the repeat
        return fake_step(rate, 5.0 if rate <= self.knee else 500.0)


CFG = cap.CapacityConfig(slo_p99_ms=50, target_rps=1000, headroom=0.3, tolerance=0.05, max_trials=20, max_rate=5000)


@pytest.mark.parametrize("knee, start", [(137.0, 10.0), (137.0, 900.0), (3.3, 40.0), (1234.0, 1.0)])
def test_search_finds_the_knee_within_tolerance_confirms_and_counts_nodes(knee, start):
    svc = KneeService(knee)
    s = cap.find_capacity(svc, CFG, start)
    assert s.confirmed and s.stopped == "confirmed" and not s.lower_bound
    assert knee * (1 - CFG.tolerance) <= s.rate <= knee  # passing, and within the tolerance of the knee
    assert s.trials[-1].purpose == "confirm" and s.trials[-1].rate == s.rate and s.trials[-1].passed
    assert svc.rates.count(s.rate) == 2  # measured, then repeated
    assert all(t.passed == (t.rate <= knee) for t in s.trials)
    assert len(s.trials) <= CFG.max_trials
    assert s.p99_ms == 5.0
    assert cap.nodes_needed(1000, s.rate, 0.3) == math.ceil(1000 / s.rate * 1.3)


def test_search_with_knee_137_gives_10_nodes_for_1000_rps_at_30_percent():
    s = cap.find_capacity(KneeService(137.0), CFG, 10.0)
    assert s.rate == 135.0  # 10, 20, 40, 80 pass, 160 fails; 120, 140 fails, 130, 135; confirm 135
    assert cap.nodes_needed(1000, s.rate, 0.3) == 10  # 1000 / 135 x 1.3 = 9.63


def test_a_rate_that_fails_its_repeat_is_not_the_answer():
    svc = KneeService(137.0, flaky_at=135.0)
    s = cap.find_capacity(svc, CFG, 10.0)
    assert s.confirmed and s.rate < 135.0
    assert [t.passed for t in s.trials if t.rate == 135.0] == [True, False]
    assert s.rate >= 130.0 * (1 - CFG.tolerance)  # searched again between 130 and 135


def test_the_last_step_of_the_budget_confirms_and_the_rate_is_a_lower_bound():
    cfg = cap.CapacityConfig(slo_p99_ms=50, target_rps=100, max_trials=4, max_rate=5000)
    s = cap.find_capacity(KneeService(137.0), cfg, 10.0)
    assert [(t.rate, t.purpose) for t in s.trials] == [(10, "bracket"), (20, "bracket"), (40, "bracket"),
                                                       (40, "confirm")]
    assert s.confirmed and s.lower_bound and s.rate == 40.0
    assert "lower bound: the step budget ended" in s.stopped


def test_budget_spent_before_confirmation_is_reported_not_hidden():
    cfg = cap.CapacityConfig(slo_p99_ms=50, target_rps=100, max_trials=4, max_rate=5000)
    s = cap.find_capacity(KneeService(137.0, flaky_at=40.0), cfg, 10.0)
    assert [t.passed for t in s.trials] == [True, True, True, False]  # 40 fails its repeat
    assert not s.confirmed and s.rate == 20.0  # the best rate that passed below it, once
    assert "budget spent (4 steps)" in s.stopped
    assert "not confirmed" in cap.answer_text(100, s.rate, 0.3, s.confirmed)


def test_search_time_budget_bounds_it():
    ticks = iter(range(0, 10_000, 100))  # each clock read advances 100 s
    cfg = cap.CapacityConfig(slo_p99_ms=50, target_rps=100, max_seconds=250, max_rate=5000)
    s = cap.find_capacity(KneeService(137.0), cfg, 10.0, clock=lambda: float(next(ticks)))
    assert not s.confirmed and "250 s" in s.stopped and len(s.trials) <= 3


def test_nothing_passes_gives_rate_0_and_a_clear_answer():
    s = cap.find_capacity(lambda r: fake_step(r, 900.0), CFG, 8.0)
    assert s.rate == 0.0 and not s.confirmed
    assert "no rate down to 0.5/s" in s.stopped
    assert [round(t.rate, 3) for t in s.trials] == [8.0, 4.0, 2.0, 1.0, 0.5]
    assert cap.nodes_needed(1000, s.rate, 0.3) is None
    assert cap.answer_text(1000, 0.0, 0.3).startswith("no answer: no tested rate kept p99 under the SLO")


def test_passing_at_the_ceiling_is_reported_as_at_least():
    cfg = cap.CapacityConfig(slo_p99_ms=50, target_rps=1000, max_rate=100)
    s = cap.find_capacity(KneeService(1e9), cfg, 30.0)
    assert s.confirmed and s.lower_bound and s.rate == 100.0 and "maximum rate 100/s passed" in s.stopped
    assert [t.rate for t in s.trials] == [30.0, 60.0, 100.0, 100.0]


def test_a_few_failures_within_the_one_percent_a_p99_allows_do_not_fail_a_step():
    ok, why = cap.judge(fake_step(100, 5.0, shed=3), 100, 50)  # 3 of 500
    assert ok and why == "p99 5.00 ms <= 50 ms; 3 shed with 503, within the 1 % a p99 allows"
    ok, why = cap.judge(fake_step(100, 70.0, shed=3), 100, 50)
    assert not ok and why.startswith("p99 70.00 ms > 50 ms; 3 shed")


def test_the_p99_over_every_request_counts_a_failed_one_as_infinitely_slow():
    from optkit.serve.loadtest import _Recorder

    rec = _Recorder()
    for i in range(198):
        rec.add("ok", 200, (i + 1) / 1000)  # 1 .. 198 ms
    rec.add("shed", 503, 0.001)
    rec.add("ok", 200, 0.5)
    r = rec.result(None, 100.0, 2.0)
    assert r.sent == 200 and r.failed == 1
    assert r.p99_all_ms == pytest.approx(198.0)  # 2 slowest of 200 are the shed one and the 500 ms one
    rec.add("timeout", None, 10.0)
    rec.add("dropped", None, 0.0)
    assert rec.result(None, 100.0, 2.0).p99_all_ms == math.inf  # 3 of 202 failed: more than 1 %


def test_a_step_that_does_not_keep_the_rate_or_sheds_fails_even_with_low_p99():
    ok, why = cap.judge(fake_step(100, 5.0, answered_share=0.8), 100, 50)
    assert not ok and why == "answered 80/s of 100/s offered"
    ok, why = cap.judge(fake_step(100, 5.0, shed=6), 100, 50)
    assert not ok and why == "6 shed with 503 (1.2% of 500: a p99 allows 1 %)"
    assert cap.judge(fake_step(100, 50.0), 100, 50) == (True, "p99 50.00 ms <= 50 ms")


@pytest.mark.parametrize("target, rate, headroom, nodes", [
    (1000, 135, 0.3, 10),
    (100, 130, 0.3, 1),  # 100 x 1.3 / 130 is 1 exactly: not 2 by a floating-point hair
    (100, 50, 0.0, 2),  # exact multiple, no headroom
    (100, 49.99, 0.0, 3),
    (1, 1e6, 0.3, 1),  # at least one node
    (1e6, 0.5, 0.3, 2_600_000),
    (100, 0, 0.3, None),  # nothing met the SLO: no node count, no ZeroDivisionError
    (100, -1, 0.3, None),
    (100, float("nan"), 0.3, None),
])
def test_nodes_formula_edges(target, rate, headroom, nodes):
    assert cap.nodes_needed(target, rate, headroom) == nodes


@pytest.mark.parametrize("kwargs, message", [
    ({"slo_p99_ms": 0, "target_rps": 10}, "--slo-p99 must be a latency in milliseconds > 0, got 0"),
    ({"slo_p99_ms": -5, "target_rps": 10}, "--slo-p99 must be"),
    ({"slo_p99_ms": float("nan"), "target_rps": 10}, "--slo-p99 must be"),
    ({"slo_p99_ms": 50, "target_rps": 0}, "--target-rps must be a rate in requests per second > 0, got 0"),
    ({"slo_p99_ms": 50, "target_rps": float("inf")}, "--target-rps must be"),
    ({"slo_p99_ms": 50, "target_rps": 10, "headroom": -0.1}, "--headroom must be"),
    ({"slo_p99_ms": 50, "target_rps": 10, "start_rate": 5000}, "--start-rate must be in"),
    ({"slo_p99_ms": 50, "target_rps": 10, "max_trials": 2}, "--max-trials must be in [3, 100]"),
])
def test_config_refuses_bad_values(kwargs, message):
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        cap.CapacityConfig(**kwargs)


@pytest.mark.parametrize("args, message", [
    (["--slo-p99", "0", "--target-rps", "10"], "Error: --slo-p99 must be a latency in milliseconds > 0, got 0.0"),
    (["--slo-p99", "-3", "--target-rps", "10"], "Error: --slo-p99 must be a latency in milliseconds > 0, got -3.0"),
    (["--slo-p99", "50", "--target-rps", "0"], "Error: --target-rps must be a rate in requests per second > 0"),
    (["--slo-p99", "50", "--target-rps", "-1"], "Error: --target-rps must be a rate in requests per second > 0"),
    (["--slo-p99", "50"], "Error: --slo-p99 and --target-rps go together"),
])
def test_cli_capacity_errors_are_one_line_exit_1(cli_runner, args, message):
    # the closed loopback port 9 is never contacted: the values are refused first
    result = invoke(cli_runner, ["loadtest", "http://127.0.0.1:9", *args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), result.output


def test_cli_refuses_ramp_options_with_capacity_and_capacity_options_without(cli_runner):
    result = invoke(cli_runner, ["loadtest", "http://127.0.0.1:9", "--slo-p99", "50", "--target-rps", "5",
                                 "--max", "4"])
    assert result.exit_code == 2 and "--max belongs to the ramp" in result.output
    result = invoke(cli_runner, ["loadtest", "http://127.0.0.1:9", "--headroom", "0.5"])
    assert result.exit_code == 2 and "--headroom needs --slo-p99 and --target-rps" in result.output


def test_capacity_table_ranks_by_nodes_and_names_the_machine():
    cfg = cap.CapacityConfig(slo_p99_ms=50, target_rps=1000)
    slow = cap.CapacityRow("a.onnx", "cpu", search=cap.CapacitySearch(100.0, True, "confirmed"),
                           server={"precision": "fp32"})
    fast = cap.CapacityRow("b.onnx", "openvino", search=cap.CapacitySearch(400.0, True, "confirmed"),
                           server={"precision": "int8"})
    broken = cap.CapacityRow("c.onnx", "cuda", error="no GPU")
    none = cap.CapacityRow("d.onnx", "cpu", search=cap.CapacitySearch(0.0, False, "no rate"), server={})
    rows = cap.rank([slow, broken, none, fast], cfg)
    assert [r.artifact for r in rows] == ["b.onnx", "a.onnx", "c.onnx", "d.onnx"]
    machine = {"cpu_model": "Test CPU", "usable_cpus": 2, "logical_cpus": 4, "physical_cores": 2,
               "int8_acceleration": "AVX512-VNNI", "gpu": {"available": False, "reason": "x"}, "load_average": [3.5]}
    lines = cap.table_lines(rows, cfg, machine)
    table = [ln.split() for ln in lines[2:7]]
    assert table[1][:6] == ["b.onnx", "openvino", "int8", "400", "-", "0"] and table[1][-1] == "4"
    assert table[2][0] == "a.onnx" and table[2][-1] == "13"
    assert table[3][:4] == ["c.onnx", "cuda", "not", "run:"]
    assert table[4][:5] == ["d.onnx", "cpu", "?", "-", "-"] and table[4][-1] == "-"  # no rate, no nodes
    assert lines[-1] == ("measured on: Test CPU (2 usable of 4 logical CPUs, 2 physical cores), int8 acceleration: "
                         "AVX512-VNNI; GPU: none; load average 3.5")
    data = cap.capacity_json(rows, cfg, machine)
    assert [r["nodes_needed"] for r in data["rows"]] == [4, 13, None, None]  # 1000x1.3/400, 1000x1.3/100
    assert data["rows"][2]["error"] == "no GPU"


def test_machine_facts_name_cpu_features_and_gpu():
    m = cap.machine_facts()
    assert m["logical_cpus"] >= 1 and m["usable_cpus"] >= 1 and m["cpu_model"]
    assert "gpu" in m and ("name" in m["gpu"] or m["gpu"]["available"] is False)
    assert isinstance(m["cpu_features"], list) and m["int8_acceleration"]


def test_capacity_of_a_real_server_on_loopback(cli_runner, tmp_path):
    """A deliberately slow model behind a queue of 2, one thread: above what it can answer, the
    excess is shed with 503 and the step fails; the search ends on a rate between, within its
    step budget, and the nodes follow from it."""
    pytest.importorskip("fastapi", reason="optkit[serve] is not installed")
    from serve_models import build_slow_model

    model = build_slow_model(tmp_path / "slow.onnx")
    out = tmp_path / "capacity.json"
    result = invoke(cli_runner, ["loadtest", "--compare", model, "--serve-arg=--no-audio", "--serve-arg=--max-queue=2",
                                 "--serve-arg=--threads=1", "--slo-p99", "2000", "--target-rps", "100",
                                 "--start-rate", "4", "--max-rate", "400", "--step-seconds", "0.6",
                                 "--timeout", "5", "--max-trials", "9", "--tolerance", "0.25", "--json", out])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["optkit_capacity_version"] == 1 and data["slo_p99_ms"] == 2000 and data["target_rps"] == 100
    assert data["machine"]["logical_cpus"] >= 1
    (row,) = data["rows"]
    assert row["error"] is None and row["artifact"] == "slow.onnx" and row["provider"] == "cpu"
    assert 0 < row["max_rate"] < 400  # one thread of this model cannot answer 400/s
    assert 1 <= len(row["trials"]) <= 9
    assert any(not t["passed"] for t in row["trials"])  # it found a failing rate
    for t in row["trials"]:
        if t["passed"]:  # at most 1 % failed (a p99 allows that), and the answered ones in time
            assert t["failed"] <= 0.01 * t["sent"] and t["p99_ms"] <= 2000 and t["why"].startswith("p99 ")
        else:
            assert (t["why"].endswith("a p99 allows 1 %)") and t["failed"] > 0.01 * t["sent"]
                    or t["why"].startswith(("answered", "p99")))
    assert row["nodes_needed"] == math.ceil(100 * 1.3 / row["max_rate"])
    assert "nodes = ceil(target / max rate x (1 + headroom))" in result.output
    assert "measured on: " in result.output


def test_release_report_shows_the_capacity_rows_of_a_loadtest_json(cli_runner, tiny_onnx, tmp_path):
    """verify --loadtest-json: the capacity rows in the table, report.json and report.html, the
    row of this report's artifact (same sha256) marked as this release's."""
    from optkit.model.artifact import artifact_identity

    cfg = cap.CapacityConfig(slo_p99_ms=50, target_rps=1000)
    mine = cap.CapacityRow(str(tiny_onnx), "cpu", search=cap.CapacitySearch(135.0, True, "confirmed"),
                           server={"precision": "fp32", "sha256": artifact_identity(tiny_onnx)["sha256"]})
    other = cap.CapacityRow("other.onnx", "openvino", search=cap.CapacitySearch(60.0, False, "budget"),
                            server={"precision": "int8", "sha256": "0" * 64})
    machine = {"cpu_model": "Test CPU", "usable_cpus": 2, "logical_cpus": 2, "int8_acceleration": "none"}
    cj = tmp_path / "capacity.json"
    cj.write_text(json.dumps(cap.capacity_json([mine, other], cfg, machine)))
    ref = tiny_onnx.with_name("tiny.reference.npz")
    result = invoke(cli_runner, ["verify", tiny_onnx, "--reference", ref, "--loadtest-json", cj,
                                 "--report-dir", tmp_path / "rep"])
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    i = out.index("Capacity at p99 <= 50 ms for 1000 requests/s with 30% headroom (capacity.json, "
                  f"{json.loads(cj.read_text())['created']})")
    assert out[i + 2].split() == ["tiny.onnx", "cpu", "-", "fp32", "135", "-", "10", "yes"]
    assert out[i + 3].split() == ["other.onnx", "openvino", "-", "int8", "60?", "-", "22", "no"]
    assert out[i + 4].startswith("measured on: Test CPU")
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert [(r["artifact"], r["nodes_needed"], r["in_release"]) for r in report["capacity"]["rows"]] == [
        ("tiny.onnx", 10, True), ("other.onnx", 22, False)]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'id="capacity"' in page and "<td>other.onnx</td>" in page


@pytest.mark.parametrize("content, message", [
    ("{", "not valid JSON"),
    ('{"optkit_loadtest_version": 1, "rows": []}', "not a capacity result"),
    ('{"optkit_capacity_version": 9, "rows": []}', "capacity format 9"),
])
def test_verify_refuses_a_bad_loadtest_json_before_running(cli_runner, tiny_onnx, tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    result = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tiny_onnx.with_name("tiny.reference.npz"),
                                 "--loadtest-json", bad])
    assert result.exit_code == 1 and message in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_capacity_of_a_running_url_names_its_artifact_and_runtime(cli_runner, tiny_onnx, tmp_path):
    pytest.importorskip("fastapi", reason="optkit[serve] is not installed")
    from optkit.serve.server import ServerProcess

    out = tmp_path / "capacity.json"
    with ServerProcess(tiny_onnx, extra_args=["--no-audio"], startup_timeout=90) as srv:
        result = invoke(cli_runner, ["loadtest", srv.url, "--slo-p99", "1000", "--target-rps", "50",
                                     "--start-rate", "5", "--max-rate", "20", "--max-trials", "3",
                                     "--step-seconds", "0.5", "--json", out])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["artifact"], row["provider"], row["error"]) == ("tiny.onnx", "cpu", None)
    # 3 steps (on a quiet machine: 5/s, 10/s, then the last one confirms the best passing rate, a
    # lower bound); a busy machine may fail a step, so only what holds either way is asserted
    assert len(row["trials"]) == 3 and row["trials"][0]["rate"] == 5
    if row["max_rate"]:
        assert row["nodes_needed"] == math.ceil(50 * 1.3 / row["max_rate"])
        assert row["max_rate"] in [t["rate"] for t in row["trials"] if t["passed"]]
    else:
        assert row["nodes_needed"] is None
