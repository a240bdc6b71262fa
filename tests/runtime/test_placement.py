"""Issue 11: per-node provider placement from ORT's profile, and the refusal of CPU fallback.

The parser and the check run here on real CPU profiles and on a profile shaped like a CUDA one;
the check inside a real CUDA session runs only on a GPU (test_gpu_providers.py, marked gpu).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from optkit.common.errors import RuntimeUnavailable
from optkit.runtime.placement import check_placement, parse_profile, summarize


def _cuda_like_profile(cpu_nodes: dict[str, str]) -> list[dict]:
    """Events as ORT writes them: fence events, kernel_time events, session events."""
    events = [{"cat": "Session", "name": "model_run", "dur": 900, "args": {}}]
    ops = {"/conv1/Conv": "Conv", "/fc/Gemm": "Gemm", "/relu/Relu": "Relu", "/attn/MatMul": "MatMul",
           "/q/QLinearConv": "QLinearConv", "/shape/Shape": "Shape"}
    for name, op in ops.items():
        provider = cpu_nodes.get(name, "CUDAExecutionProvider")
        for suffix, dur in (("_fence_before", 0), ("_kernel_time", 100), ("_fence_after", 0)):
            events.append({"cat": "Node", "name": name + suffix, "dur": dur, "ph": "X",
                           "args": {"op_name": op, "provider": provider}})
    return events


def test_all_heavy_nodes_on_the_gpu_pass():
    nodes = parse_profile(_cuda_like_profile({"/shape/Shape": "CPUExecutionProvider"}))
    assert len(nodes) == 6
    summary = check_placement(nodes, "CUDAExecutionProvider", label="m.onnx")
    assert summary["by_provider"]["CPUExecutionProvider"] == {"nodes": 1, "micros": 100, "heavy_nodes": 0,
                                                             "heavy_micros": 0}
    assert summary["heavy_cpu_share"] == 0.0


@pytest.mark.parametrize("node", ["/conv1/Conv", "/fc/Gemm", "/attn/MatMul", "/q/QLinearConv"])
def test_any_heavy_node_on_the_cpu_refuses(node):
    nodes = parse_profile(_cuda_like_profile({node: "CPUExecutionProvider"}))
    with pytest.raises(RuntimeUnavailable, match=rf"ran 1 of 4 heavy nodes of m.onnx on the CPU .*{node}"):
        check_placement(nodes, "CUDAExecutionProvider", label="m.onnx")


def test_chosen_share_allows_a_small_fallback():
    nodes = parse_profile(_cuda_like_profile({"/fc/Gemm": "CPUExecutionProvider"}))
    assert check_placement(nodes, "CUDAExecutionProvider", max_cpu_share=0.3)["heavy_cpu_share"] == 0.25
    with pytest.raises(RuntimeUnavailable, match="25% of their time, limit 20%"):
        check_placement(nodes, "CUDAExecutionProvider", max_cpu_share=0.2)
    # only Conv counts as heavy: the Gemm on the CPU is then allowed
    assert check_placement(nodes, "CUDAExecutionProvider", heavy_ops=("Conv",))


def test_real_cpu_profile_of_the_tiny_model(tiny_onnx, tmp_path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    s = ort.InferenceSession(str(tiny_onnx), so, providers=["CPUExecutionProvider"])
    s.run(None, {"input_mfcc": np.zeros((1, 1, 40, 241), np.float32)})
    nodes = parse_profile(s.end_profiling())
    ops = {n.op for n in nodes}
    assert any("Conv" in op for op in ops) and all(n.provider == "CPUExecutionProvider" for n in nodes)
    assert check_placement(nodes, "CPUExecutionProvider")  # what was asked for
    # the same placement for a session that asked for CUDA: every conv fell back -> refused
    with pytest.raises(RuntimeUnavailable, match="heavy nodes of tiny.onnx on the CPU instead of CUDAExecutionProvider"):
        check_placement(nodes, "CUDAExecutionProvider", label="tiny.onnx")
    assert summarize(nodes)["by_provider"]["CPUExecutionProvider"]["heavy_nodes"] >= 4


def test_unreadable_profile_is_one_clear_error(tmp_path):
    from optkit.common.errors import InputError

    p = tmp_path / "p.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not a readable ONNX Runtime profile"):
        parse_profile(p)
    p.write_text(json.dumps({"a": 1}))
    with pytest.raises(InputError, match="JSON list"):
        parse_profile(p)


def test_runner_checks_placement_after_its_first_run(tiny_onnx, monkeypatch):
    """The runner wiring, on CPU: pretend the session asked for CUDA and got this CPU profile."""
    from optkit.runtime.onnxruntime import OnnxRuntimeRunner
    from optkit.common.workspace import open_work_dir

    r = OnnxRuntimeRunner(tiny_onnx)
    r.activate()
    import onnxruntime as ort

    so = ort.SessionOptions()
    r._profile_dir = open_work_dir("optkit-profile-")
    so.enable_profiling = True
    so.profile_file_prefix = str(r._profile_dir[0] / "ort")
    r.session = ort.InferenceSession(str(tiny_onnx), so, providers=["CPUExecutionProvider"])
    r.provider = "cuda"
    work = r._profile_dir[0]
    with pytest.raises(RuntimeUnavailable, match="on the CPU instead of CUDAExecutionProvider"):
        r.infer({"input_mfcc": np.zeros((1, 1, 40, 241), np.float32)})
    assert not work.exists()  # the profile is not left behind
