"""Where ONNX Runtime ran each node, from its profiling JSON, and a refusal when heavy compute
fell back to the CPU.

``session.get_providers()`` only says which providers a session *registered*: a CUDA session
whose convolutions ORT assigned to the CPU provider (an op or data type the CUDA EP lacks) still
lists CUDA first and runs many times slower, with CPU numerics. ORT's profiler (Chrome trace
format) records one ``"cat": "Node"`` event per node run, with ``args.provider`` and
``args.op_name``: the only per-node record of placement ORT exposes, so it is parsed here.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from optkit.common.errors import InputError, RuntimeUnavailable

# Op types whose placement matters: any op type containing one of these (so FusedConv,
# QLinearConv, ConvInteger, FusedMatMul, MatMulInteger, FusedGemm, ConvTranspose count too).
DEFAULT_HEAVY_OPS = ("Conv", "Gemm", "MatMul")
_SUFFIXES = ("_kernel_time", "_fence_before", "_fence_after")


@dataclass
class NodePlacement:
    node: str
    op: str
    provider: str
    micros: int  # total kernel time over the profiled runs


def parse_profile(source: str | os.PathLike | list[dict[str, Any]]) -> list[NodePlacement]:
    """Per-node placement from an ORT profile file (or its parsed events)."""
    if isinstance(source, list):
        events = source
    else:
        try:
            events = json.loads(Path(source).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{source}: not a readable ONNX Runtime profile ({exc})") from exc
    if not isinstance(events, list):
        raise InputError("an ONNX Runtime profile is a JSON list of events")
    nodes: dict[str, NodePlacement] = {}
    for e in events:
        if not isinstance(e, dict) or e.get("cat") != "Node":
            continue
        args = e.get("args") or {}
        provider, op = args.get("provider"), args.get("op_name")
        if not provider or not op:
            continue
        name = str(e.get("name", ""))
        if not name.endswith("_kernel_time"):
            continue  # fence events carry no compute time
        for s in _SUFFIXES:
            if name.endswith(s):
                name = name[: -len(s)]
        p = nodes.setdefault(name, NodePlacement(name, str(op), str(provider), 0))
        p.micros += int(e.get("dur") or 0)
    return list(nodes.values())


def is_heavy(op: str, heavy_ops: Iterable[str] = DEFAULT_HEAVY_OPS) -> bool:
    return any(h in op for h in heavy_ops)


def summarize(nodes: list[NodePlacement], heavy_ops: Iterable[str] = DEFAULT_HEAVY_OPS) -> dict[str, Any]:
    """Counts and time per provider, and the heavy nodes per provider (for reports)."""
    heavy_ops = tuple(heavy_ops)
    by_provider: dict[str, dict[str, Any]] = {}
    for n in nodes:
        d = by_provider.setdefault(n.provider, {"nodes": 0, "micros": 0, "heavy_nodes": 0, "heavy_micros": 0})
        d["nodes"] += 1
        d["micros"] += n.micros
        if is_heavy(n.op, heavy_ops):
            d["heavy_nodes"] += 1
            d["heavy_micros"] += n.micros
    return {"by_provider": by_provider, "heavy_ops": list(heavy_ops),
            "nodes": [{"node": n.node, "op": n.op, "provider": n.provider, "micros": n.micros} for n in nodes]}


def check_placement(nodes: list[NodePlacement], wanted: str, label: str = "model",
                    heavy_ops: Iterable[str] = DEFAULT_HEAVY_OPS, max_cpu_share: float = 0.0) -> dict[str, Any]:
    """Refuse (RuntimeUnavailable) when more than ``max_cpu_share`` of the heavy nodes' time ran
    on the CPU provider while ``wanted`` (a GPU provider) was asked for. 0.0 = any heavy node on
    the CPU refuses. Returns the summary for the runner's report."""
    if not 0.0 <= max_cpu_share <= 1.0:
        raise InputError(f"max_cpu_share must be in [0, 1], got {max_cpu_share}")
    heavy_ops = tuple(heavy_ops)
    summary = summarize(nodes, heavy_ops)
    if wanted == "CPUExecutionProvider":
        return summary
    heavy = [n for n in nodes if is_heavy(n.op, heavy_ops)]
    on_cpu = [n for n in heavy if n.provider == "CPUExecutionProvider"]
    total = sum(n.micros for n in heavy)
    cpu = sum(n.micros for n in on_cpu)
    # time share where the profile has times, else the share of nodes
    share = cpu / total if total > 0 else (len(on_cpu) / len(heavy) if heavy else 0.0)
    summary["heavy_cpu_share"] = share
    if on_cpu and (max_cpu_share == 0.0 or share > max_cpu_share):
        shown = ", ".join(f"{n.node} ({n.op})" for n in on_cpu[:5])
        more = f" and {len(on_cpu) - 5} more" if len(on_cpu) > 5 else ""
        raise RuntimeUnavailable(
            f"ONNX Runtime ran {len(on_cpu)} of {len(heavy)} heavy nodes of {label} on the CPU instead of "
            f"{wanted} ({share:.0%} of their time, limit {max_cpu_share:.0%}): {shown}{more}; refusing to report "
            "its numbers as GPU numbers")
    return summary
