"""ONNX models built in code for the serving tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def build_slow_model(path: Path, channels: int = 48, convs: int = 4, seed: int = 0) -> Path:
    """A deliberately slow tiny model: input_mfcc (batch, 1, 40, 241) -> output_wvp (batch, 1).

    A few 3x3 convolutions over the whole 40x241 grid (~0.8 GMAC per sample, tens of ms on 2 cores)
    and a sigmoid head: slow enough for a short load ramp to saturate it, with a dynamic batch axis."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    prev, prev_c = "input_mfcc", 1
    for i in range(convs):
        w = (rng.standard_normal((channels, prev_c, 3, 3)) / np.sqrt(prev_c * 9)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, prev_c = f"r{i}", channels
    head = (rng.standard_normal((channels, 1)) / np.sqrt(channels)).astype(np.float32)
    inits.append(numpy_helper.from_array(head, "head"))
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("MatMul", ["flat", "head"], ["logit"]),
              helper.make_node("Sigmoid", ["logit"], ["output_wvp"])]
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info("input_mfcc", TensorProto.FLOAT, ["batch", 1, 40, 241])],
        [helper.make_tensor_value_info("output_wvp", TensorProto.FLOAT, ["batch", 1])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def build_user_model(path: Path, sample_shape: tuple[int, ...] = (3, 8, 8), head: str = "sigmoid",
                     extra_output: bool = False, batch: int | str = "batch", input_name: str = "image",
                     bias: float = -3.0, seed: int = 0) -> Path:
    """A model a user brings (not the voice model): input ``input_name`` (batch, *sample_shape) ->
    Flatten -> MatMul + Add -> ``head`` -> ``score`` (batch, 1).

    ``head``: "sigmoid" (a probability), "logit" (no activation: the raw score; ``bias`` pushes it
    below 0 so it cannot pass for a probability), "softmax2" (two-class softmax, class 1 taken with
    Gather: a probability). ``extra_output`` adds the flattened input as a second output ``flat``,
    listed first. ``batch``: a name (dynamic) or a fixed size."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    n = int(np.prod(sample_shape))
    width = 2 if head == "softmax2" else 1
    w = (rng.standard_normal((n, width)) / np.sqrt(n)).astype(np.float32)
    b = np.full((width,), bias if head == "logit" else 0.0, np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    nodes = [helper.make_node("Flatten", [input_name], ["flat"]),
             helper.make_node("MatMul", ["flat", "w"], ["mm"]),
             helper.make_node("Add", ["mm", "b"], ["z"])]
    if head == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", ["z"], ["score"]))
    elif head == "logit":
        nodes.append(helper.make_node("Identity", ["z"], ["score"]))
    elif head == "softmax2":
        inits.append(numpy_helper.from_array(np.array([1], np.int64), "class1"))
        nodes += [helper.make_node("Softmax", ["z"], ["p2"], axis=-1),
                  helper.make_node("Gather", ["p2", "class1"], ["score"], axis=1)]
    else:
        raise ValueError(head)
    outputs = [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])]
    if extra_output:
        outputs.insert(0, helper.make_tensor_value_info("flat", TensorProto.FLOAT, [batch, n]))
    graph = helper.make_graph(
        nodes, "user", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [batch, *sample_shape])],
        outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def build_int_model(path: Path, dtype: str = "int64") -> Path:
    """An integer-input model: ids (batch, 4) of ``dtype`` -> Cast -> MatMul -> Sigmoid -> score (batch, 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.array([[0.1], [-0.2], [0.05], [0.01]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Cast", ["ids"], ["f"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["f", "w"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["score"])], "ints",
        [helper.make_tensor_value_info("ids", getattr(TensorProto, dtype.upper()), ["batch", 4])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch", 1])],
        initializer=[numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


class FakeVoiceRunner:
    """A stand-in runner with the voice model's interface (input_mfcc (batch, 1, 40, 241) ->
    output_wvp (batch, 1)); subclasses define ``infer``."""

    name = "fake"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    @property
    def inputs(self):
        from optkit.model.onnx_utils import TensorSpec

        return [TensorSpec("input_mfcc", ("batch", 1, 40, 241), "float32")]

    @property
    def output_names(self):
        return ["output_wvp"]

    def describe(self):
        return {"runner": self.name}
