"""optkit loadtest --lengths / --lengths-file against a real optkit serve of a model with a dynamic time
axis: each request's length drawn (seeded) from the list, lengths checked against the server's range
before the ramp, latency per length in the table and the JSON beside the unchanged overall rows."""
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


def test_lengths_with_compare_is_refused_in_one_line(cli_runner, dynamic_onnx):  # noqa: F811
    res = invoke(cli_runner, ["loadtest", "--compare", dynamic_onnx, "--lengths", "20,60"])
    assert res.exit_code == 1
    assert res.output.strip() == "Error: --lengths/--lengths-file cannot go with --compare (they apply to the ramp of one URL)"
