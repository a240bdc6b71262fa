"""Activation functions as lookup tables: build, measure, plot, and put into ONNX models.

A table holds ``f(x_i)`` at ``x_i = x_min + i * delta`` (``i = 0 .. n-1``, ``n = ceil((x_max -
x_min) / delta) + 1``, so the last key ``x_last`` is ``x_max`` or the first step past it). Looking
up ``x`` first clips it to ``[x_min, x_last]`` — outside, the table *saturates* at its end values,
which is right for sigmoid and tanh and wrong by a growing amount for relu, gelu and silu — then:

- ``nearest``: ``y = T[floor((x - x_min) / delta + 1/2)]``; error up to about ``delta / 2 * max|f'|``.
- ``linear``:  ``t = (x - x_min) / delta``, ``i = min(floor(t), n - 2)``,
  ``y = T[i] + (t - i) * (T[i+1] - T[i])``; error up to about ``delta² / 8 * max|f''|``.

The table values are float32 (what a model stores); errors are measured against the exact
function in float64 on a grid of points per table interval (its ends and midpoint included)
inside ``[x_min, x_max]``, and on windows of the same width on each side outside it.

:func:`apply_to_model` replaces a model's activation nodes by the same lookup written with
standard ONNX operators (Clip, Sub, Div, Floor, Min, Cast to int32, Gather, Mul, Add). ONNX Runtime
and OpenVINO run it (tested); every one of these operators, with fp32 data and int32 indices, is
in the support matrix of TensorRT's ONNX parser (onnx/onnx-tensorrt docs/operators.md), though no
TensorRT was available here to run it. No library does this rewrite, hence the hand-written graph
surgery here.
"""
from __future__ import annotations

import html
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np

from optkit.common.errors import InputError

MAX_ENTRIES = 10_000_000
INTERPS = ("nearest", "linear")
EVAL_POINTS_PER_INTERVAL = 16          # even: the midpoint of every interval is on the grid
MAX_EVAL_POINTS = 4_000_000            # above this the inside grid is uniform instead of per interval
OUTSIDE_POINTS = 200_001               # per side


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


_erf = np.frompyfunc(math.erf, 1, 1)  # exact to float64; numpy has no erf


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "gelu": _gelu,                      # the exact (erf) GELU, as torch.nn.GELU() computes it
    "silu": lambda x: x * _sigmoid(x),  # x * sigmoid(x), also called swish
}


def parse_number(text: str | float) -> float:
    """A float, or a fraction like 1/16."""
    if isinstance(text, (int, float)):
        return float(text)
    try:
        return float(str(text).strip())
    except ValueError:
        pass
    try:
        return float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise InputError(f"{text!r} is not a number (give e.g. 0.0625 or 1/16)") from None


@dataclass(frozen=True)
class LutSpec:
    activation: str
    x_min: float
    x_max: float
    delta: float
    interp: str = "linear"

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise InputError(f"unknown activation {self.activation!r}; use one of {', '.join(ACTIVATIONS)}")
        if self.interp not in INTERPS:
            raise InputError(f"unknown interpolation {self.interp!r}; use nearest or linear")
        for name in ("x_min", "x_max", "delta"):
            if not math.isfinite(getattr(self, name)):
                raise InputError(f"{name.replace('_', '-')} must be a finite number, got {getattr(self, name)}")
        if not self.delta > 0:
            raise InputError(f"delta must be > 0, got {self.delta:g}")
        if not self.x_min < self.x_max:
            raise InputError(f"x-min must be less than x-max, got [{self.x_min:g}, {self.x_max:g}]")
        if self.entries > MAX_ENTRIES:
            n = f"{self.entries:,}" if self.entries < 1e15 else f"{self.entries:.3g}"
            raise InputError(f"the table would have {n} entries (range {self.x_max - self.x_min:g} / "
                             f"delta {self.delta:g}); the limit is {MAX_ENTRIES:.0e}: use a larger delta or a smaller range")

    @property
    def entries(self) -> int:
        steps = (self.x_max - self.x_min) / self.delta
        if steps > MAX_ENTRIES * 10:  # no need to count exactly how far past the limit
            return int(min(steps, 1e300))
        return int(math.ceil(steps - 1e-9)) + 1

    @property
    def x_last(self) -> float:
        return self.x_min + (self.entries - 1) * self.delta

    def keys(self) -> np.ndarray:
        return self.x_min + np.arange(self.entries, dtype=np.float64) * self.delta

    def describe(self) -> str:
        frac = Fraction(self.delta).limit_denominator(1 << 20)
        d = f"{self.delta:g}" + (f" (1/{frac.denominator})" if frac.numerator == 1 and frac.denominator > 1
                                  and float(frac) == self.delta else "")
        return (f"{self.activation} table on [{self.x_min:g}, {self.x_max:g}], delta {d}, "
                f"{self.interp} interpolation")


def build_table(spec: LutSpec) -> np.ndarray:
    """The float32 table values f(x_i)."""
    return ACTIVATIONS[spec.activation](spec.keys()).astype(np.float32)


def lookup(spec: LutSpec, table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """What the table gives for ``x`` (float64 arithmetic on the float32 table)."""
    n = len(table)
    t = (np.clip(x, spec.x_min, spec.x_last) - spec.x_min) / spec.delta
    tab = table.astype(np.float64)
    if spec.interp == "nearest":
        return tab[np.clip(np.floor(t + 0.5), 0, n - 1).astype(np.int64)]
    i = np.clip(np.floor(t), 0, n - 2).astype(np.int64)
    return tab[i] + (t - i) * (tab[i + 1] - tab[i])


def _err_stats(spec: LutSpec, table: np.ndarray, x: np.ndarray) -> tuple[float, float, float]:
    """(max |error|, sum |error|, x of the max) over x, in chunks to bound memory."""
    f = ACTIVATIONS[spec.activation]
    worst, total, at = 0.0, 0.0, float(x[0]) if len(x) else 0.0
    for s in range(0, len(x), 1_000_000):
        part = x[s : s + 1_000_000]
        err = np.abs(lookup(spec, table, part) - f(part))
        k = int(np.argmax(err))
        if err[k] > worst:
            worst, at = float(err[k]), float(part[k])
        total += float(err.sum())
    return worst, total, at


def _inside(spec: LutSpec, table: np.ndarray) -> dict[str, Any]:
    intervals = max(1, int(math.ceil((spec.x_max - spec.x_min) / spec.delta - 1e-9)))
    k = EVAL_POINTS_PER_INTERVAL
    if intervals * k + 1 <= MAX_EVAL_POINTS:
        inside = spec.x_min + np.arange(intervals * k + 1, dtype=np.float64) * (spec.delta / k)
        inside = np.minimum(inside, spec.x_max)
        grid = f"{k} points per table interval, ends and midpoints included ({len(inside)} points)"
    else:
        inside = np.linspace(spec.x_min, spec.x_max, MAX_EVAL_POINTS)
        grid = f"{MAX_EVAL_POINTS} evenly spaced points (the table has too many intervals for {k} per interval)"
    i_max, i_sum, i_at = _err_stats(spec, table, inside)
    return {"range": [spec.x_min, spec.x_max], "max_abs_error": i_max, "mean_abs_error": i_sum / len(inside),
            "max_at_x": i_at, "grid": grid}


def measure(spec: LutSpec, table: np.ndarray | None = None) -> dict[str, Any]:
    """Size and max/mean absolute error inside [x_min, x_max] and outside it (saturation)."""
    table = build_table(spec) if table is None else table
    width = spec.x_max - spec.x_min
    below = np.linspace(spec.x_min - width, spec.x_min, OUTSIDE_POINTS)[:-1]
    above = np.linspace(spec.x_max, spec.x_max + width, OUTSIDE_POINTS)[1:]
    b_max, b_sum, b_at = _err_stats(spec, table, below)
    a_max, a_sum, a_at = _err_stats(spec, table, above)
    o_max, o_at = (b_max, b_at) if b_max >= a_max else (a_max, a_at)
    return {
        "activation": spec.activation, "x_min": spec.x_min, "x_max": spec.x_max, "delta": spec.delta,
        "interp": spec.interp, "entries": spec.entries, "x_last": spec.x_last,
        "bytes_float32": spec.entries * 4,
        "inside": _inside(spec, table),
        "outside": {"ranges": [[spec.x_min - width, spec.x_min], [spec.x_max, spec.x_max + width]],
                    "max_abs_error": o_max, "mean_abs_error": (b_sum + a_sum) / (2 * len(below)), "max_at_x": o_at,
                    "below": {"max_abs_error": b_max, "mean_abs_error": b_sum / len(below)},
                    "above": {"max_abs_error": a_max, "mean_abs_error": a_sum / len(above)},
                    "note": "inputs outside the table are clipped to its ends (saturation)"},
    }


def delta_sweep(spec: LutSpec, factors: tuple[float, ...] = (16, 8, 4, 2, 1, 1 / 2, 1 / 4, 1 / 8)) -> list[dict[str, Any]]:
    """Inside-range errors for both interpolations at deltas around ``spec.delta`` (for the plot)."""
    rows = []
    for f in factors:
        d = spec.delta * f
        if (spec.x_max - spec.x_min) / d < 1 or (spec.x_max - spec.x_min) / d + 1 > min(MAX_ENTRIES, 2_000_000):
            continue
        row: dict[str, Any] = {"delta": d}
        for interp in INTERPS:
            s = LutSpec(spec.activation, spec.x_min, spec.x_max, d, interp)
            m = _inside(s, build_table(s))
            row[interp] = {"max_abs_error": m["max_abs_error"], "mean_abs_error": m["mean_abs_error"],
                           "entries": s.entries}
        rows.append(row)
    return rows


def _key(x: float) -> str:
    return repr(float(x))


def to_json(spec: LutSpec, table: np.ndarray, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The table as the lesson lays it out: keyed by x from x_min to x_last in steps of delta."""
    doc: dict[str, Any] = {
        "activation": spec.activation, "x_min": spec.x_min, "x_max": spec.x_max, "delta": spec.delta,
        "interp": spec.interp, "entries": spec.entries, "x_last": spec.x_last,
        "lookup": ("x is clipped to [x_min, x_last]; t = (x - x_min) / delta; nearest: table[round(t)]; "
                   "linear: i = min(floor(t), entries - 2), y = y_i + (t - i) * (y_{i+1} - y_i)"),
        "table": {_key(x): float(y) for x, y in zip(spec.keys(), table)},
    }
    if metrics is not None:
        doc["errors"] = {"inside": metrics["inside"], "outside": metrics["outside"]}
    return doc


def summary_lines(metrics: dict[str, Any], spec: LutSpec, json_bytes: int | None = None) -> list[str]:
    i, o = metrics["inside"], metrics["outside"]
    size = f"{spec.entries} entries ({spec.entries * 4} B as float32" + (
        f", {json_bytes} B as JSON)" if json_bytes is not None else ")")
    (lo0, lo1), (hi0, hi1) = o["ranges"]
    return [
        f"{spec.describe()}: {size}; last key {spec.x_last:g}",
        f"inside  [{spec.x_min:g}, {spec.x_max:g}]: max |error| {i['max_abs_error']:.3e} (at x = {i['max_at_x']:.6g}), "
        f"mean {i['mean_abs_error']:.3e}  [{i['grid']}]",
        f"outside [{lo0:g}, {lo1:g}) and ({hi0:g}, {hi1:g}] (saturation): max |error| {o['max_abs_error']:.3e} "
        f"(at x = {o['max_at_x']:.6g}), mean {o['mean_abs_error']:.3e}",
    ]


# -------------------------------------------------------------------------------------------------
# HTML page

def _svg_loglog(sweep: list[dict[str, Any]], chosen: float, width: int = 560, height: int = 360) -> str:
    pad_l, pad_r, pad_t, pad_b = 70, 130, 20, 45
    pts = [(r["delta"], r[i][k]) for r in sweep for i in INTERPS for k in ("max_abs_error", "mean_abs_error")]
    ys = [y for _, y in pts if y > 0]
    if not ys:
        return "<p>(every error is 0: nothing to plot)</p>"
    xs = [r["delta"] for r in sweep]
    x0, x1 = math.log10(min(xs)) - 0.1, math.log10(max(xs)) + 0.1
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys)))
    y1 = max(y1, y0 + 1)

    def sx(v: float) -> float:
        return pad_l + (math.log10(v) - x0) / (x1 - x0) * (width - pad_l - pad_r)

    def sy(v: float) -> float:
        return height - pad_b - (math.log10(max(v, 10.0 ** y0)) - y0) / (y1 - y0) * (height - pad_t - pad_b)

    p = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
         'aria-label="table error against delta">',
         f'<rect x="{pad_l}" y="{pad_t}" width="{width - pad_l - pad_r}" height="{height - pad_t - pad_b}" '
         'fill="#fafafa" stroke="#999"/>']
    for e in range(y0, y1 + 1):
        y = sy(10.0 ** e)
        p.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{width - pad_r}" y2="{y:.1f}" stroke="#e4e4e4"/>'
                 f'<text x="{pad_l - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">1e{e}</text>')
    for d in xs:
        p.append(f'<text x="{sx(d):.1f}" y="{height - pad_b + 16}" font-size="10" text-anchor="middle">{d:.3g}</text>')
    p.append(f'<line x1="{sx(chosen):.1f}" y1="{pad_t}" x2="{sx(chosen):.1f}" y2="{height - pad_b}" '
             'stroke="#d33" stroke-dasharray="4,3"/>')
    styles = {("linear", "max_abs_error"): ("#36c", ""), ("linear", "mean_abs_error"): ("#36c", "5,4"),
              ("nearest", "max_abs_error"): ("#e80", ""), ("nearest", "mean_abs_error"): ("#e80", "5,4")}
    for n, ((interp, key), (color, dash)) in enumerate(styles.items()):
        coords = " ".join(f"{sx(r['delta']):.1f},{sy(r[interp][key]):.1f}" for r in sweep)
        p.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"'
                 + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        for r in sweep:
            p.append(f'<circle cx="{sx(r["delta"]):.1f}" cy="{sy(r[interp][key]):.1f}" r="2.5" fill="{color}"/>')
        ly = pad_t + 14 + 18 * n
        p.append(f'<line x1="{width - pad_r + 10}" y1="{ly - 4}" x2="{width - pad_r + 34}" y2="{ly - 4}" '
                 f'stroke="{color}" stroke-width="2"' + (f' stroke-dasharray="{dash}"' if dash else "") + "/>"
                 f'<text x="{width - pad_r + 38}" y="{ly}" font-size="11">{interp} {key.split("_")[0]}</text>')
    p.append(f'<text x="{width - pad_r + 10}" y="{pad_t + 14 + 18 * 4}" font-size="11" fill="#d33">-- chosen delta</text>')
    p.append(f'<text x="{(pad_l + width - pad_r) / 2}" y="{height - 8}" font-size="12" text-anchor="middle">delta (log)</text>'
             f'<text x="14" y="{height / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {height / 2})">'
             "|table − exact| inside the range (log)</text></svg>")
    return "".join(p)


def render_html(spec: LutSpec, metrics: dict[str, Any], sweep: list[dict[str, Any]]) -> str:
    e = html.escape
    lines = summary_lines(metrics, spec)
    rows = "".join(
        f"<tr><td>{r['delta']:.6g}</td><td>{r['linear']['entries']}</td>"
        + "".join(f"<td>{r[i][k]:.3e}</td>" for i in INTERPS for k in ("max_abs_error", "mean_abs_error")) + "</tr>"
        for r in sweep)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>optkit lut — {e(spec.describe())}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1000px;color:#222}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:right}}
th{{background:#f0f0f0}} code{{font-size:13px}}
</style></head><body>
<h1>Lookup table: {e(spec.describe())}</h1>
<ul>{''.join(f'<li><code>{e(line)}</code></li>' for line in lines)}</ul>
<p>Errors are absolute, against the exact function in float64, for the float32 table. Outside the
range the lookup clips its input to the table ends (saturation).</p>
<h2>Error against delta (inside [{spec.x_min:g}, {spec.x_max:g}])</h2>
{_svg_loglog(sweep, spec.delta)}
<table><tr><th>delta</th><th>entries</th><th>nearest max</th><th>nearest mean</th><th>linear max</th><th>linear mean</th></tr>
{rows}</table>
</body></html>
"""


# -------------------------------------------------------------------------------------------------
# ONNX: replace activation nodes by the lookup

@dataclass
class _Match:
    x: str             # the activation's input tensor
    y: str             # the tensor it produces
    nodes: list[Any]   # nodes the lookup replaces (the last one is where it goes)


def _find_activations(model: Any, activation: str) -> list[_Match]:
    graph = model.graph
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    single = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "gelu": "Gelu"}
    matches = []
    for node in graph.node:
        if activation in single and node.op_type == single[activation] and node.domain in ("", "ai.onnx", "com.microsoft"):
            matches.append(_Match(node.input[0], node.output[0], [node]))
        elif activation == "silu" and node.op_type == "Mul" and len(node.input) == 2:
            for a, b in (node.input, node.input[::-1]):
                sig = producers.get(b)
                if sig is not None and sig.op_type == "Sigmoid" and sig.input[0] == a \
                        and len(consumers.get(b, [])) == 1:
                    matches.append(_Match(a, node.output[0], [sig, node]))
                    break
        elif activation == "gelu" and node.op_type == "Erf":
            m = _match_erf_gelu(node, producers, consumers)
            if m is not None:
                matches.append(m)
    return matches


def _match_erf_gelu(erf: Any, producers: dict[str, Any], consumers: dict[str, list[Any]]) -> _Match | None:
    """torch's exact GELU as exported at opsets < 20: Div(x, √2) → Erf → Add(1) → Mul(x) → Mul(0.5)."""
    div = producers.get(erf.input[0])
    if div is None or div.op_type != "Div":
        return None
    x = div.input[0]
    chain = [div, erf]
    cur = erf.output[0]
    for op in ("Add", "Mul", "Mul"):
        users = consumers.get(cur, [])
        if len(users) != 1 or users[0].op_type != op:
            return None
        chain.append(users[0])
        cur = users[0].output[0]
    if x not in chain[3].input and x not in chain[4].input:
        return None
    if len(consumers.get(erf.output[0], [])) != 1 or len(consumers.get(div.output[0], [])) != 1:
        return None
    return _Match(x, cur, chain)


def _lookup_nodes(helper: Any, TensorProto: Any, m: _Match, prefix: str, spec: LutSpec, names: dict[str, str]) -> list[Any]:
    """Nodes computing the table lookup of m.x into m.y (shared initializers named in ``names``)."""
    p = prefix
    nodes = [
        helper.make_node("Clip", [m.x, names["lo"], names["hi"]], [f"{p}/clipped"], name=f"{p}/Clip"),
        helper.make_node("Sub", [f"{p}/clipped", names["lo"]], [f"{p}/shifted"], name=f"{p}/Sub"),
        helper.make_node("Div", [f"{p}/shifted", names["delta"]], [f"{p}/t"], name=f"{p}/Div"),
    ]
    if spec.interp == "nearest":
        nodes += [
            helper.make_node("Add", [f"{p}/t", names["half"]], [f"{p}/t_half"], name=f"{p}/AddHalf"),
            helper.make_node("Floor", [f"{p}/t_half"], [f"{p}/i_float"], name=f"{p}/Floor"),
            helper.make_node("Cast", [f"{p}/i_float"], [f"{p}/i"], name=f"{p}/Cast", to=TensorProto.INT32),
            helper.make_node("Gather", [names["table"], f"{p}/i"], [m.y], name=f"{p}/Gather", axis=0),
        ]
    else:
        nodes += [
            helper.make_node("Floor", [f"{p}/t"], [f"{p}/floor"], name=f"{p}/Floor"),
            helper.make_node("Min", [f"{p}/floor", names["i_max"]], [f"{p}/i_float"], name=f"{p}/Min"),
            helper.make_node("Sub", [f"{p}/t", f"{p}/i_float"], [f"{p}/frac"], name=f"{p}/Frac"),
            helper.make_node("Cast", [f"{p}/i_float"], [f"{p}/i"], name=f"{p}/Cast", to=TensorProto.INT32),
            helper.make_node("Gather", [names["table"], f"{p}/i"], [f"{p}/y0"], name=f"{p}/GatherValue", axis=0),
            helper.make_node("Gather", [names["slope"], f"{p}/i"], [f"{p}/dy"], name=f"{p}/GatherSlope", axis=0),
            helper.make_node("Mul", [f"{p}/frac", f"{p}/dy"], [f"{p}/step"], name=f"{p}/Mul"),
            helper.make_node("Add", [f"{p}/y0", f"{p}/step"], [m.y], name=f"{p}/Add"),
        ]
    return nodes


def apply_to_model(model: Any, spec: LutSpec, table: np.ndarray | None = None) -> tuple[Any, int]:
    """A copy of ``model`` whose ``spec.activation`` nodes are table lookups; returns (model, count)."""
    from optkit.common.lazy import lazy_import
    from optkit.model.onnx_utils import model_precision

    onnx = lazy_import("onnx")
    from onnx import TensorProto, helper, numpy_helper

    precision = model_precision(model)
    if precision != "fp32":
        raise InputError(f"the model is {precision}; apply the table to the fp32 model (then quantise it)")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < 13:
        raise InputError(f"the model's opset {opset} is older than 13; re-export it with opset >= 13")
    matches = _find_activations(model, spec.activation)
    if not matches:
        ops = sorted({n.op_type for n in model.graph.node})
        raise InputError(f"the model has no {spec.activation} activation to replace (its ops: {', '.join(ops)})")
    table = build_table(spec) if table is None else np.asarray(table, np.float32)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    base = f"lut_{spec.activation}"
    while any(t.startswith(base) for t in taken):
        base += "_"
    names = {k: f"{base}.{k}" for k in ("lo", "hi", "delta", "half", "i_max", "table", "slope")}
    consts = {
        "lo": np.float32(spec.x_min), "hi": np.float32(spec.x_last), "delta": np.float32(spec.delta),
        "half": np.float32(0.5), "i_max": np.float32(len(table) - 2), "table": table,
        "slope": (table[1:] - table[:-1]).astype(np.float32) if len(table) > 1 else np.zeros(1, np.float32),
    }
    used = ("lo", "hi", "delta", "table") + (("half",) if spec.interp == "nearest" else ("i_max", "slope"))
    for k in used:
        graph.initializer.append(numpy_helper.from_array(np.asarray(consts[k], np.float32), names[k]))
    replace_at = {id(m.nodes[-1]): m for m in matches}
    drop = {id(n) for m in matches for n in m.nodes}
    new_nodes = []
    for node in model.graph.node:  # the matches point at these (the original model's) nodes
        if id(node) in replace_at:
            prefix = f"{base}/{len(new_nodes)}_{node.name or node.op_type}"
            new_nodes += _lookup_nodes(helper, TensorProto, replace_at[id(node)], prefix, spec, names)
        elif id(node) not in drop:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)  # copies, in the original order: still topologically sorted
    produced = {o for n in graph.node for o in n.output}
    keep = [vi for vi in graph.value_info if vi.name in produced]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    return out, len(matches)
