"""The int8 search's later trials and its plain answer: classes of ops kept in float, the
MAC-weighed ranking, the greedy fallback, dynamic quantisation of an LSTM, and what to ship when
no trial passes or int8 does not pay."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
torch = pytest.importorskip("torch")

from int8_models import TinyAttention, TinyLSTM, export  # noqa: E402
from optkit.model.artifact import Artifact  # noqa: E402
from optkit.passes import get_pass  # noqa: E402
from optkit.passes.quantize_int8 import Int8SearchFailed, QuantizeInt8Config  # noqa: E402
from optkit.quantization.int8_search import TrialResult, TrialSpec, search  # noqa: E402
from optkit.quantization import trials  # noqa: E402

METHODS = ["percentile", "mse", "entropy", "minmax"]


def fake_runner(passes, ran: list[TrialSpec]):
    """A run_trial whose result depends on the excluded nodes only: agreement grows with each
    node kept in float; ``passes(spec)`` says which pass."""
    def run_trial(index, spec):
        ran.append(spec)
        ok = passes(spec)
        agreement = 1.0 if ok else 0.5 + len(spec.excluded_nodes) / 100
        return TrialResult(spec, Path(f"trial{index}.onnx"), {"p": {"agreement": agreement, "mean_abs": 0.0}},
                           None, None, [] if ok else ["fails"], {"share": {"int8": 1.0}, "total_macs": 0,
                                                                 "unquantized_heavy_nodes": []}, 0.0)
    return run_trial


def test_a_class_of_ops_in_float_is_tried_and_chosen_where_single_nodes_do_not_suffice():
    adds = tuple(f"add{i}" for i in range(10))
    ranked = [{"node": n, "growth_db": 1.0} for n in ("conv0", *adds[:4], "conv1", "conv2", *adds[4:])]
    ran: list[TrialSpec] = []
    first = TrialSpec("plain", "plain int8", "minmax")
    out = search(first, run_trial=fake_runner(lambda s: set(adds) <= set(s.excluded_nodes), ran), budget=16,
                 do_search=True, methods=METHODS, equalization=None, rank=lambda base: ranked,
                 classes={"elementwise": adds, "normalisation": ("ln0",)},
                 node_macs={"conv0": 10, "conv1": 10, "conv2": 10}, total_macs=100)
    names = [t.spec.name for t in out.trials]
    # the sensitive-node trials ran first and failed (8 nodes never hold all ten Adds) ...
    assert [n for n in names if "sensitive" in n] == ["1 sensitive node in float", "2 sensitive nodes in float",
                                                      "4 sensitive nodes in float", "8 sensitive nodes in float"]
    assert not any(t.passed for t in out.trials if "sensitive" in t.spec.name)
    # ... then the class of elementwise ops, all of them, while the convs stay int8
    chosen = out.trials[out.chosen]
    assert chosen.spec.name == "elementwise in float" and set(chosen.spec.excluded_nodes) == set(adds)
    assert not {"conv0", "conv1", "conv2"} & set(chosen.spec.excluded_nodes)
    assert len(out.trials) == out.chosen + 1


def test_op_classes_of_a_real_graph_skip_matmuls_with_weights(tmp_path):
    from optkit.quantization.calibration import default_op_types

    model = onnx.load(str(export(TinyAttention(), (6, 16), tmp_path / "att.onnx")))
    classes = trials.op_classes(model, default_op_types())
    by_name = {n.name: n.op_type for n in model.graph.node}
    assert [by_name[n] for n in classes["normalisation"]] == ["LayerNormalization"]
    att = classes["attention"]
    assert sorted(by_name[n] for n in att) == ["MatMul", "MatMul", "Softmax"]
    # q/k/v/fc read weights: never in the attention class
    weighted = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.name not in att]
    assert len(weighted) >= 3
    assert all(by_name[n] in ("Add", "Mul") for n in classes["elementwise"])


def test_the_ranking_weighs_error_against_macs():
    ranked = [{"node": "big", "growth_db": 3.0}, {"node": "cheap", "growth_db": 2.0},
              {"node": "first", "growth_db": 7.0, "grows": True}, {"node": "huge", "growth_db": 9.0}]
    macs = {"big": 20, "cheap": 1, "first": 2, "huge": 60}
    order = [r["node"] for r in trials.weigh_ranking(ranked, macs, 100, 0.25)]
    # growing nodes first; then error per MAC share (cheap beats big); a node over the limit is dropped
    assert order == ["first", "cheap", "big"]


def test_the_greedy_fallback_grows_the_float_set_and_a_larger_budget_tries_more():
    nodes = [f"n{i:02d}" for i in range(12)]
    ranked = [{"node": n, "growth_db": 1.0} for n in nodes]

    def passes(spec):
        return {"n10", "n11"} <= set(spec.excluded_nodes)

    def run(budget):
        ran: list[TrialSpec] = []
        out = search(TrialSpec("plain", "plain int8", "minmax"), run_trial=fake_runner(passes, ran), budget=budget,
                     do_search=True, methods=METHODS, equalization=None, rank=lambda base: ranked)
        return out

    small = run(8)
    assert small.chosen is None and len(small.trials) == 8
    big = run(16)
    greedy = [t for t in big.trials if t.spec.name.startswith("greedy")]
    assert len(big.trials) > len(small.trials) and big.chosen is not None
    assert greedy and big.trials[big.chosen] is greedy[-1]
    sets = [set(t.spec.excluded_nodes) for t in greedy]
    assert all(a < b for a, b in zip(sets, sets[1:])), "each greedy step keeps more nodes in float"
    assert set(nodes[:8]) < sets[0]  # it starts from the best trial so far (8 nodes in float)


def test_the_greedy_fallback_stops_at_the_float_share_limit():
    ranked = [{"node": n, "growth_db": 1.0} for n in ("a", "b", "c")]
    ran: list[TrialSpec] = []
    out = search(TrialSpec("plain", "plain int8", "minmax"), run_trial=fake_runner(lambda s: False, ran), budget=30,
                 do_search=True, methods=METHODS, equalization=None, rank=lambda base: ranked,
                 node_macs={"a": 10, "b": 10, "c": 10}, total_macs=100)
    assert all(trials.float_share(t.spec.excluded_nodes, {"a": 10, "b": 10, "c": 10}, 100) <= 0.25
               for t in out.trials)
    assert len(out.trials) < 30 and any("greedy fallback ended" in n for n in out.notes)


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    d = tmp_path_factory.mktemp("lstm")
    model = export(TinyLSTM(), (20, 16), d / "lstm.onnx")
    calib = d / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((24, 20, 16)).astype(np.float32))
    return model, calib


def _run(model, out, **cfg):
    try:
        return get_pass("quantize-int8").run(Artifact.from_file(model), QuantizeInt8Config(**cfg), out), True
    except Int8SearchFailed as exc:
        return exc.result, False


def test_dynamic_lstm_is_tried_and_accepted_by_the_gate(lstm, tmp_path):
    model, calib = lstm
    result, ok = _run(model, tmp_path / "q.onnx", calibration=str(calib), latency_rounds=3)
    search_info = result.info["int8_search"]
    rows = search_info["trials"]
    assert rows[0]["passed"] and rows[0]["int8_mac_share"] < 0.1  # static QDQ leaves the LSTM in fp32
    dyn = [i for i, t in enumerate(rows) if t["dynamic_nodes"]]
    assert dyn, "a dynamic trial of the float LSTM"
    d = rows[dyn[0]]
    assert d["passed"] == (search_info["chosen"] == dyn[0])
    if d["passed"]:  # accepted: the LSTM runs in int8 (DynamicQuantizeLSTM)
        assert ok and result.info["macs"]["share"]["int8"] > 0.9
        q = onnx.load(str(tmp_path / "q.onnx"))
        assert "DynamicQuantizeLSTM" in {n.op_type for n in q.graph.node}
        assert result.artifact.extra["chosen"]["dynamic_nodes"] == d["dynamic_nodes"]


def test_dynamic_lstm_rejected_by_a_gate_it_fails(lstm, tmp_path):
    """A gate plain static int8 (LSTM in fp32) passes and the dynamic LSTM does not: not chosen."""
    model, calib = lstm
    probe, _ = _run(model, tmp_path / "probe.onnx", calibration=str(calib), latency_rounds=0)
    rows = probe.info["int8_search"]["trials"]
    static, dynamic = rows[0]["mean_abs_dp"], next(t for t in rows if t["dynamic_nodes"])["mean_abs_dp"]
    if not dynamic > static:
        pytest.skip(f"the dynamic LSTM is as close to fp32 as static int8 here ({dynamic} vs {static})")
    gate = {"mean_abs": (static + dynamic) / 2, "min_agreement": 0.0}
    result, ok = _run(model, tmp_path / "q.onnx", calibration=str(calib), latency_rounds=0, gates=gate)
    rows = result.info["int8_search"]["trials"]
    assert ok and result.info["int8_search"]["chosen"] == 0
    assert rows[1]["dynamic_nodes"] and not rows[1]["passed"]
    assert not result.artifact.extra["chosen"]["dynamic_nodes"]


def test_no_trial_passes_then_the_plain_answer_is_measured(lstm, tmp_path):
    model, calib = lstm
    result, ok = _run(model, tmp_path / "q.onnx", calibration=str(calib), latency_rounds=3, budget=3,
                      gates={"mean_abs": 1e-9})
    assert not ok
    rec = result.info["recommendation"]
    assert rec["ship"] in ("fp16", "fp32") and rec["measured"]
    fp16 = rec["fp16"]
    assert fp16["agreement"] is not None and fp16["passed"] == (not fp16["failures"])
    timing = rec["timing"]
    assert timing["fp32"]["p50_ms"] > 0 and timing["fp16"]["p50_ms"] > 0
    ratio = timing["fp32"]["p50_ms"] / timing["fp16"]["p50_ms"]
    assert timing["fp16_speedup_p50"] == pytest.approx(ratio, rel=1e-3)
    assert rec["ship"] == ("fp16" if fp16["passed"] and ratio > 1.0 else "fp32")
    text = "\n".join(result.messages)
    assert "RECOMMENDATION: no int8 model passes; ship " + rec["ship"] in text
    assert f"fp32 {timing['fp32']['p50_ms']:.3f} ms" in text
    assert result.info["int8_search"]["recommendation"] == rec


def test_int8_that_does_not_pay_says_so_with_the_numbers():
    from optkit.quantization.answer import int8_verdict

    def lat(fp32, chosen):
        return {"models": [{"model": "fp32", "p50_ms": fp32}, {"model": "plain int8", "p50_ms": chosen}],
                "speedup": {"chosen_vs_fp32": {"p50": round(fp32 / chosen, 4), "min": round(fp32 / chosen, 4)}}}

    slow = int8_verdict(lat(1.0, 0.95), "cpu")
    assert slow["ship"] == "fp32" and slow["verdict"] == "int8 does not pay for this model here"
    assert "1.05x fp32" in slow["line"] and "0.950 ms vs 1.000 ms" in slow["line"]
    fast = int8_verdict(lat(1.0, 0.5), "cpu")
    assert fast["ship"] == "int8" and "2.00x" in fast["line"] and "verdict" not in fast
    assert int8_verdict(None, "cpu")["measured"] is False
    assert int8_verdict(lat(1.0, 0.95), "tensorrt")["ship"] == "int8"  # CPU timing says nothing about TensorRT


def test_the_verdict_reaches_the_output_and_the_info(lstm, tmp_path):
    model, calib = lstm
    result, ok = _run(model, tmp_path / "q.onnx", calibration=str(calib), latency_rounds=5)
    assert ok
    rec = result.info["recommendation"]
    p50 = result.info["int8_search"]["latency"]["speedup"]["chosen_vs_fp32"]["p50"]
    assert rec["int8_speedup_p50"] == p50
    says = "int8 does not pay for this model here" in "\n".join(result.messages)
    assert says == (p50 < 1.2) == (rec["ship"] == "fp32")
    assert result.artifact.extra["recommendation"]["ship"] == rec["ship"]
