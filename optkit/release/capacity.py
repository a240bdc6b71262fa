"""The capacity rows of a load test in the release report (``optkit verify ... --loadtest-json
FILE``, FILE written by ``optkit loadtest --slo-p99 MS --target-rps N --json FILE``): per artifact,
runtime and serving variant, the highest rate whose p99 kept the SLO and the nodes the target load
needs, with the machine it was measured on. A row whose artifact (by sha256) is one of this
report's is marked as such; the others are shown as measured, not claimed for this release.

Reads the JSON only (the load test itself lives in ``optkit.serve``, above this layer).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optkit.common.errors import InputError

CAPACITY_FORMAT_VERSION = 1  # optkit.serve.capacity.CAPACITY_FORMAT_VERSION
ROW_KEYS = ("artifact", "provider", "variant", "precision", "sha256", "max_rate", "confirmed", "lower_bound",
            "p99_ms_at_rate", "nodes_needed", "error")


def load_capacity(path: str | Path) -> dict[str, Any]:
    """The capacity result in ``path``, checked and reduced to what the report shows."""
    from optkit.common.fileio import require_file

    p = require_file(path, "--loadtest-json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "optkit_capacity_version" not in data:
        raise InputError(f"{p}: not a capacity result (write one with optkit loadtest --slo-p99 MS --target-rps N "
                         "--json FILE)")
    if data["optkit_capacity_version"] != CAPACITY_FORMAT_VERSION:
        raise InputError(f"{p}: capacity format {data['optkit_capacity_version']!r}; this optkit reads "
                         f"{CAPACITY_FORMAT_VERSION}")
    rows = data.get("rows")
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"{p}: 'rows' must be a list of objects")
    for k in ("slo_p99_ms", "target_rps", "headroom"):
        if not isinstance(data.get(k), (int, float)):
            raise InputError(f"{p}: {k!r} missing or not a number")
    return {"source": p.name, "created": data.get("created"), "slo_p99_ms": data["slo_p99_ms"],
            "target_rps": data["target_rps"], "headroom": data["headroom"],
            "machine_text": str(data.get("machine_text") or ""), "machine": data.get("machine"),
            "rows": [{k: r.get(k) for k in ROW_KEYS} for r in rows]}


def attach(capacity: dict[str, Any], release_sha256: set[str]) -> dict[str, Any]:
    """``capacity`` with each row marked ``in_release`` (its sha256 is one of the report's artifacts)."""
    rows = [dict(r, in_release=bool(r.get("sha256")) and r.get("sha256") in release_sha256)
            for r in capacity["rows"]]
    return dict(capacity, rows=rows)


def heading(cap: dict[str, Any]) -> str:
    return (f"Capacity at p99 <= {cap['slo_p99_ms']:g} ms for {cap['target_rps']:g} requests/s with "
            f"{cap['headroom']:.0%} headroom ({cap['source']}, {cap.get('created') or '?'})")


def table(cap: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    head = ["artifact", "runtime", "serving", "precision", "max rate/s", "p99 ms", "nodes", "this release"]
    rows = []
    for r in cap["rows"]:
        if r.get("error"):
            rows.append([str(r["artifact"]), str(r["provider"]), r.get("variant") or "-", "-", "not run", "-", "-",
                         str(r["error"])[:80]])
            continue
        rate = r.get("max_rate") or 0
        mark = "+" if r.get("lower_bound") else "" if r.get("confirmed") else "?"
        rows.append([str(r["artifact"]), str(r["provider"]), r.get("variant") or "-", str(r.get("precision") or "?"),
                     f"{rate:.4g}{mark}" if rate else "-",
                     "-" if r.get("p99_ms_at_rate") is None else f"{r['p99_ms_at_rate']:.2f}",
                     "-" if r.get("nodes_needed") is None else str(r["nodes_needed"]),
                     "yes" if r.get("in_release") else "no"])
    return head, rows


def lines(cap: dict[str, Any]) -> list[str]:
    head, rows = table(cap)
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head))]
    out = [heading(cap)] + ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]
    if cap.get("machine_text"):
        out.append(cap["machine_text"])
    return out
