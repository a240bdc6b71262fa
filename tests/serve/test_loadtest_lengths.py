"""optkit loadtest --lengths / --lengths-file against a real optkit serve of a model with a dynamic time
axis: each request's length drawn (seeded) from the list, lengths checked against the server's range
before the ramp, latency per length in the table, the JSON and the HTML beside the unchanged overall
rows; with --compare (the same seeded draw in every row) and in the capacity mode (every step
restarts the same draw)."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="optkit[serve] is not installed")
pytest.importorskip("aiohttp", reason="optkit[serve] is not installed")

from conftest import invoke  # noqa: E402
from optkit.common.errors import InputError  # noqa: E402
from optkit.serve import loadtest as lt  # noqa: E402
from optkit.serve.server import ServerProcess  # noqa: E402
from test_serve_lengths import HI, LO, dynamic_onnx  # noqa: E402,F401 - the module's fixture, reused

RAMP = ["--start", "1", "--max", "2", "--step-seconds", "0.5", "--timeout", "10"]


@pytest.fixture(scope="module")
def dyn_server(dynamic_onnx):  # noqa: F811
    with ServerProcess(dynamic_onnx, extra_args=["--no-audio", "--max-batch", "4", "--max-wait-ms", "5"],
                       startup_timeout=90) as srv:
        yield srv


def test_a_ramp_of_mixed_lengths_reports_latency_per_length(dyn_server, cli_runner, tmp_path):
    out = tmp_path / "load.json"
    res = invoke(cli_runner, ["loadtest", dyn_server.url, *RAMP, "--lengths", "20,60,120", "--json", out])
    assert res.exit_code == 0, res.output
    assert "per length" in res.output and "minimum latency" in res.output
    data = json.loads(out.read_text())
    rows = data["per_length"]
    assert [r["length"] for r in rows] == [20, 60, 120]
    assert all(r["count"] > 0 and r["failed"] == 0 and r["sent"] == r["count"] for r in rows)
    assert all(r["min_ms"] <= r["p50_ms"] <= r["p99_ms"] for r in rows)
    # the overall rows are unchanged in meaning: every answered request is in exactly one length row
    assert [s["concurrency"] for s in data["steps"]] == [1, 2]
    assert sum(r["count"] for r in rows) == data["summary"]["ok"] == sum(s["ok"] for s in data["steps"])
    assert data["summary"]["errors"] == data["summary"]["dropped"] == data["summary"]["timeouts"] == 0
    assert data["summary"]["min_latency_ms"] == pytest.approx(min(r["min_ms"] for r in rows), abs=1e-3)


def test_a_length_outside_the_range_is_one_line_before_any_request(dyn_server, cli_runner):
    res = invoke(cli_runner, ["loadtest", dyn_server.url, *RAMP, "--lengths", f"60,{HI + 1}"])
    assert res.exit_code == 1
    assert res.output.strip() == (f"Error: length {HI + 1} is outside the served model's length range "
                                  f"{LO}..{HI} (axis 3)")


def test_lengths_file_is_read_one_length_a_line(dyn_server, cli_runner, tmp_path):
    f = tmp_path / "lengths.txt"
    f.write_text("# lengths of a set\n40\n40\n\n90\n")
    out = tmp_path / "load.json"
    res = invoke(cli_runner, ["loadtest", dyn_server.url, *RAMP, "--lengths-file", f, "--json", out])
    assert res.exit_code == 0, res.output
    rows = json.loads(out.read_text())["per_length"]
    assert [r["length"] for r in rows] == [40, 90] and all(r["count"] > 0 for r in rows)
    bad = tmp_path / "bad.txt"
    bad.write_text("40\nabc\n")
    res = invoke(cli_runner, ["loadtest", dyn_server.url, *RAMP, "--lengths-file", bad])
    assert res.exit_code == 1 and res.output.strip() == f"Error: {bad}:2: 'abc' is not a positive whole number (one length a line)"


def test_draws_are_seeded_and_bodies_have_the_length():
    md = {"input": {"shape": [None, 1, 8, None], "dtype": "float32",
                    "length_ranges": [{"axis": 3, "min": LO, "max": HI}]}}
    a, b = lt.length_mix(md, [20, 60, 60, 120], seed=3), lt.length_mix(md, [20, 60, 60, 120], seed=3)
    draws = [a.draw().length for _ in range(200)]
    assert draws == [b.draw().length for _ in range(200)]
    assert set(draws) == {20, 60, 120} and draws.count(60) > draws.count(20)  # repeats weight the draw
    for n, p in a.payloads.items():
        assert np.load(io.BytesIO(p.body)).shape == (1, 1, 8, n)
    with pytest.raises(InputError, match="no dynamic length axis"):
        lt.length_mix({"input": {"shape": [1, 1, 8, 50]}}, [20])
    with pytest.raises(InputError, match="whole numbers"):
        lt.parse_lengths("20,x")


def test_compare_gives_every_row_the_same_seeded_draw_and_html_has_per_length(cli_runner, dynamic_onnx, tmp_path):  # noqa: F811
    out, page = tmp_path / "compare.json", tmp_path / "compare.html"
    res = invoke(cli_runner, ["loadtest", "--compare", dynamic_onnx, "--serve-arg=--no-audio", "--variant", "",
                              "--variant", "--max-batch 1", "--interleave", *RAMP, "--lengths", "20,60,60,120",
                              "--seed", "7", "--json", out, "--html", page])
    assert res.exit_code == 0, res.output
    assert "p99 ms per length (every step; the same seeded draw in every row)" in res.output
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 2 and all(r["error"] is None for r in rows)
    for r in rows:
        run = r["run"]
        assert run["length_mix"]["seed"] == 7 and run["length_mix"]["mean_length"] == 65
        assert [w["share"] for w in run["length_mix"]["rows"]] == [0.25, 0.5, 0.25]
        per = run["per_length"]
        assert [x["length"] for x in per] == [20, 60, 120]
        assert all(x["count"] > 0 and x["failed"] == 0 for x in per)
        assert sum(x["count"] for x in per) == run["summary"]["ok"]
    html_text = page.read_text()
    assert html_text.count("<h3>Per length (every step)</h3>") == 2
    assert html_text.count("<table class='per-length'>") == 2 and "seed 7" in html_text


def test_the_same_seed_repeats_the_sequence_and_many_lengths_become_buckets():
    md = {"input": {"shape": [None, 1, 8, None], "dtype": "float32",
                    "length_ranges": [{"axis": 3, "min": LO, "max": HI}]}}
    mix = lt.length_mix(md, list(range(100, 301)), seed=5)
    first = [mix.draw().length for _ in range(50)]
    again = mix.fresh()
    assert [again.draw().length for _ in range(50)] == first and again.sent == [0] * len(again.buckets)
    assert mix.buckets[0][0] == 100 and mix.buckets[-1][1] == 300 and len(mix.buckets) == lt.LENGTH_BUCKETS
    assert all(a[1] < b[0] for a, b in zip(mix.buckets, mix.buckets[1:]))  # disjoint, in order
    mix.record(150, "ok", 0.01)
    mix.record(299, "error", 0.01)
    rows = mix.rows()
    hit = [r for r in rows if r["length"] <= 150 <= r["max_length"]][0]
    assert hit["count"] == 1 and rows[-1]["failed"] == 1 and rows[-1]["max_length"] == 300
    assert sum(r["share"] for r in mix.mix_json()["rows"]) == pytest.approx(1.0, abs=1e-3)  # rounded shares


def test_capacity_with_lengths_restarts_the_draw_every_step(dyn_server, cli_runner, tmp_path):
    out = tmp_path / "cap.json"
    res = invoke(cli_runner, ["loadtest", dyn_server.url, "--lengths", "20,60,120", "--seed", "3", "--slo-p99", "5000",
                              "--target-rps", "20", "--start-rate", "5", "--max-rate", "10", "--max-trials", "3",
                              "--step-seconds", "1", "--timeout", "10", "--json", out])
    assert res.exit_code == 0, res.output
    assert "length mix: 3 lengths drawn (seed 3)" in res.output
    assert "p99 ms per length (the last passing step at the max rate" in res.output
    row = json.loads(out.read_text())["rows"][0]
    assert row["length_mix"]["seed"] == 3 and row["max_rate"] == 10
    assert [x["length"] for x in row["per_length_at_rate"]] == [20, 60, 120]
    trials = row["trials"]
    assert [t["rate"] for t in trials] == [5, 10, 10] and all(t["passed"] for t in trials)
    # every step starts the same seeded sequence: two steps at one rate send the same lengths
    assert [x["sent"] for x in trials[1]["per_length"]] == [x["sent"] for x in trials[2]["per_length"]]
    assert all(sum(x["sent"] for x in t["per_length"]) == t["sent"] for t in trials)


def test_lengths_with_payload_is_refused_in_one_line(cli_runner, dynamic_onnx, tmp_path):  # noqa: F811
    body = tmp_path / "x.npy"
    np.save(body, np.zeros((1, 1, 8, 50), np.float32))
    res = invoke(cli_runner, ["loadtest", "--compare", dynamic_onnx, "--lengths", "20,60", "--payload", body])
    assert res.exit_code == 1
    assert res.output.strip() == ("Error: --lengths/--lengths-file cannot go with --payload "
                                  "(the lengths make the request bodies)")
