"""Tiny ONNX models (built in code, seeded) whose output is not one probability per sample: a
speaker-encoder-like embedding and a voice-activity-like per-frame score. Input ``feats``
(batch, CHANNELS, FRAMES): a few MFCC-like channels over a fixed number of frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np

CHANNELS, FRAMES, HIDDEN, EMB = 4, 16, 8, 16


def _conv_stack(rng: np.random.Generator) -> tuple[list, list]:
    from onnx import helper, numpy_helper

    w1 = (rng.standard_normal((HIDDEN, CHANNELS, 3)) / np.sqrt(3 * CHANNELS)).astype(np.float32)
    b1 = (0.1 * rng.standard_normal(HIDDEN)).astype(np.float32)
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1")]
    nodes = [helper.make_node("Conv", ["feats", "w1", "b1"], ["c1"], pads=[1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1")]
    return nodes, inits


def _save(nodes: list, inits: list, output: object, path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "kinds", [helper.make_tensor_value_info(
        "feats", TensorProto.FLOAT, ["batch", CHANNELS, FRAMES])], [output], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def build_embedding_model(path: Path, seed: int = 0) -> Path:
    """feats -> Conv1d -> ReLU -> average over frames -> MatMul -> ``emb`` (batch, EMB): unbounded."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = _conv_stack(rng)
    w2 = (rng.standard_normal((HIDDEN, EMB)) / np.sqrt(HIDDEN)).astype(np.float32)
    inits.append(numpy_helper.from_array(w2, "w2"))
    nodes += [helper.make_node("GlobalAveragePool", ["r1"], ["pool"], name="pool"),
              helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
              helper.make_node("MatMul", ["flat", "w2"], ["emb"], name="proj")]
    return _save(nodes, inits, helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", EMB]), path)


def build_frame_model(path: Path, seed: int = 0) -> Path:
    """feats -> Conv1d -> ReLU -> 1x1 Conv -> Sigmoid -> ``vad`` (batch, FRAMES): one probability per frame."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = _conv_stack(rng)
    w2 = (rng.standard_normal((1, HIDDEN, 1)) / np.sqrt(HIDDEN)).astype(np.float32)
    inits += [numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(1, np.float32), "b2"),
              numpy_helper.from_array(np.array([1], np.int64), "axis1")]
    nodes += [helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
              helper.make_node("Squeeze", ["c2", "axis1"], ["z"], name="squeeze"),
              helper.make_node("Sigmoid", ["z"], ["vad"], name="sigmoid")]
    return _save(nodes, inits, helper.make_tensor_value_info("vad", TensorProto.FLOAT, ["batch", FRAMES]), path)


def feats(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, CHANNELS, FRAMES)).astype(np.float32)


def write_calibration(directory: Path, n: int = 24, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(feats(n, seed)):
        np.save(directory / f"s{i:03d}.npy", x)
    return directory


def ort_outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"feats": x})[0]
