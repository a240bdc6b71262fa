"""The standard inference protocols' bodies, as pure functions (numpy in, numpy out; no web framework).

- Open Inference Protocol (KServe V2; spoken by Triton, KServe, OpenVINO Model Server): a request
  is ``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "data"|"parameters":
  {"binary_data_size"}}], "outputs"?: [{"name", "parameters"?: {"binary_data"}}]}``; tensors are
  flattened row-major. With the binary tensor extension the JSON header is followed by the raw
  tensor bytes, and the ``Inference-Header-Content-Length`` header gives the JSON's length.
- TF Serving REST predict: ``{"instances": [...]}`` (one entry per sample, the tensor or
  ``{input_name: tensor}``) answered with ``{"predictions": [...]}``, or ``{"inputs": tensor |
  {input_name: tensor}}`` (batch first) answered with ``{"outputs": ...}``.

Every malformed request raises :class:`ProtocolError` with an HTTP status and one line; the routes
(``serve.protocol_routes``) answer it as ``{"error": "..."}``, the error shape of both protocols.
No library parses these bodies on the server side (tritonclient and kserve's client build them),
so this is written here; tritonclient and kserve's REST client drive it in the tests.

JSON is read and written with orjson (``optkit[serve]``): a V2 body of the bundled model's 9,640
numbers is parsed about 4 times faster, whole parser included, than with the standard library's json
(benchmarks/protocol_json.py);
the standard library's json is used where orjson is not installed. Either way the raw bytes are
checked first (``payload.check_json_size``: nesting depth and value count), so no parser recurses
into, or builds, more than ``ParseLimits`` allows.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from optkit.serve.payload import DEFAULT_LIMITS, ParseLimits, RequestRejected, check_json_size, check_values


def json_codec(name: str) -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    """(loads, dumps) of ``name``: "orjson" or "json" (the standard library's, compact)."""
    if name == "orjson":
        import orjson

        return orjson.loads, orjson.dumps
    return json.loads, lambda obj: json.dumps(obj, separators=(",", ":")).encode()


def _default_codec() -> tuple[Callable[[bytes], Any], Callable[[Any], bytes]]:
    try:
        return json_codec("orjson")
    except ImportError:  # optkit[serve] brings orjson; without it the standard library (slower)
        return json_codec("json")


loads, dumps = _default_codec()  # module globals: benchmarks/protocol_json.py swaps them to compare


def _parse_json(body: bytes, limits: ParseLimits) -> Any:
    try:
        check_json_size(body, limits)
    except RequestRejected as exc:
        raise ProtocolError(str(exc), exc.status) from None
    try:
        return loads(body)
    except (ValueError, UnicodeDecodeError) as exc:  # orjson.JSONDecodeError is a ValueError
        raise ProtocolError(f"the request is not valid JSON ({' '.join(str(exc).split())[:200]})", 400) from None

HEADER_LENGTH = "Inference-Header-Content-Length"
# V2 datatype names <-> numpy dtypes (BYTES, strings, has no numeric dtype: refused for this model kind)
V2_DTYPES = {"BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
             "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64", "FP16": "float16",
             "FP32": "float32", "FP64": "float64"}
NUMPY_TO_V2 = {v: k for k, v in V2_DTYPES.items()}
# the output beside the model's own: the decision at the service's threshold
DECISION_OUTPUT = "accepted"


class ProtocolError(RequestRejected):
    """A request one of the protocols cannot use (a 4xx), or a model/version that cannot answer."""


def v2_datatype(dtype: str) -> str:
    return NUMPY_TO_V2.get(str(np.dtype(dtype)), "BYTES")


def _shape(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in value):
        raise ProtocolError(f"{what}: 'shape' must be a list of integers", 400)
    if any(d < 0 for d in value):
        raise ProtocolError(f"{what}: 'shape' {value} has a negative dimension", 400)
    return tuple(value)


def _count(shape: Sequence[int]) -> int:
    return math.prod(shape)  # Python ints: a declared shape of 10**12 cannot overflow


def fit_batch(arr: np.ndarray, sample_shape: Sequence[int | None], dtype: str, what: str) -> np.ndarray:
    """``arr`` as (batch, *sample_shape) with the model's dtype and finite values, or ProtocolError(400).

    One sample without its batch axis is taken as a batch of one."""
    sample = tuple(sample_shape)
    if arr.ndim == len(sample):
        arr = arr[None]
    ok = arr.ndim == len(sample) + 1 and all(w is None or w == s for s, w in zip(arr.shape[1:], sample))
    if not ok or arr.shape[0] == 0:
        want = ", ".join("-1" if d is None else str(d) for d in sample)
        raise ProtocolError(f"{what} has shape {list(arr.shape)}; the model takes [-1, {want}] (batch first)", 400)
    try:
        return check_values(arr, dtype)
    except RequestRejected as exc:
        raise ProtocolError(f"{what}: {exc}", 400) from None


def _numbers(data: Any, dtype: str, what: str) -> np.ndarray:
    """JSON numbers (flat or nested lists) as a flat array of ``dtype``."""
    if not isinstance(data, list):
        raise ProtocolError(f"{what}: 'data' must be a list of numbers", 400)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise ProtocolError(f"{what}: 'data' is ragged (nested lists of different lengths)", 400) from None
    if arr.size and arr.dtype.kind not in "fiu":
        raise ProtocolError(f"{what}: 'data' must hold numbers only", 400)
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dtype).reshape(-1)


# -- Open Inference Protocol (V2) ----------------------------------------------------------------

class V2Request:
    """A parsed V2 infer request: the input batch, the request id, the outputs asked for and how."""

    def __init__(self, x: np.ndarray, request_id: str | None, outputs: list[str] | None,
                 binary: dict[str, bool], binary_default: bool):
        self.x = x
        self.id = request_id
        self.outputs = outputs  # None: all of them
        self.binary = binary  # output name -> binary_data asked for
        self.binary_default = binary_default

    def wants_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_default)


def parse_v2_request(body: bytes, header_length: str | None, input_name: str, sample_shape: Sequence[int | None],
                     dtype: str, output_names: Sequence[str], limits: ParseLimits = DEFAULT_LIMITS) -> V2Request:
    """A V2 infer body (JSON, or JSON + binary tensors) -> V2Request, or ProtocolError(400)."""
    if header_length is not None:
        try:
            json_size = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} {header_length!r} is not a number", 400) from None
        if not 0 < json_size <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {json_size}, the body has {len(body)} bytes", 400)
        header, blob = body[:json_size], memoryview(body)[json_size:]
    else:
        header, blob = body, memoryview(b"")
    req = _parse_json(header, limits)
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise ProtocolError("a V2 infer request is a JSON object with a list 'inputs'", 400)
    rid = req.get("id")
    if rid is not None and not isinstance(rid, str):
        raise ProtocolError("'id' must be a string", 400)
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object", 400)
    inputs = req["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ProtocolError(f"this model takes one input, {input_name!r}; the request has {len(inputs)}", 400)
    tensor = inputs[0]
    if tensor.get("name") != input_name:
        raise ProtocolError(f"unknown input {tensor.get('name')!r}; the model's input is {input_name!r}", 400)
    what = f"input {input_name!r}"
    shape = _shape(tensor.get("shape"), what)
    datatype = tensor.get("datatype")
    want = v2_datatype(dtype)
    if datatype not in V2_DTYPES and datatype != "BYTES":
        raise ProtocolError(f"{what}: unknown datatype {datatype!r}; the V2 names are {', '.join(V2_DTYPES)}, BYTES",
                            400)
    if datatype != want:
        raise ProtocolError(f"{what}: datatype {datatype}, but the model's input is {want}", 400)
    count = _count(shape)
    tparams = tensor.get("parameters") or {}
    if not isinstance(tparams, dict):
        raise ProtocolError(f"{what}: 'parameters' must be an object", 400)
    size = tparams.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ProtocolError(f"{what}: binary_data_size must be a non-negative integer", 400)
        if size != len(blob):
            raise ProtocolError(f"{what}: binary_data_size is {size}, the body holds {len(blob)} bytes after the "
                                "JSON header", 400)
        if size != count * np.dtype(dtype).itemsize:
            raise ProtocolError(f"{what}: shape {list(shape)} of {datatype} is {count * np.dtype(dtype).itemsize} "
                                f"bytes, binary_data_size says {size}", 400)
        flat = np.frombuffer(blob, dtype=dtype, count=count)
    else:
        if len(blob):
            raise ProtocolError(f"{len(blob)} bytes after the JSON header, but no input has binary_data_size", 400)
        if "data" not in tensor:
            raise ProtocolError(f"{what}: no 'data' (or parameters.binary_data_size)", 400)
        flat = _numbers(tensor["data"], dtype, what)
        if flat.size != count:
            raise ProtocolError(f"{what}: shape {list(shape)} holds {count} values, 'data' has {flat.size}", 400)
    x = fit_batch(flat.reshape(shape), sample_shape, dtype, what)
    outputs, binary = None, {}
    if req.get("outputs") is not None:
        if not isinstance(req["outputs"], list) or not all(isinstance(o, dict) for o in req["outputs"]):
            raise ProtocolError("'outputs' must be a list of objects", 400)
        outputs = []
        for o in req["outputs"]:
            name = o.get("name")
            if name not in output_names:
                raise ProtocolError(f"unknown output {name!r}; this model gives {', '.join(output_names)}", 400)
            outputs.append(name)
            binary[name] = bool((o.get("parameters") or {}).get("binary_data", False))
    return V2Request(x, rid, outputs, binary, bool(params.get("binary_data_output", False)))


def v2_response(model: str, version: str, request: V2Request, tensors: dict[str, np.ndarray]) -> tuple[bytes, int | None]:
    """The V2 infer response body, and the JSON header's length when binary tensors follow it."""
    outs, blobs = [], []
    for name in request.outputs or list(tensors):
        arr = tensors[name]
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(str(arr.dtype)), "shape": list(arr.shape)}
        if request.wants_binary(name):
            raw = np.ascontiguousarray(arr).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = arr.reshape(-1).tolist()
        outs.append(entry)
    body: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": outs}
    if request.id is not None:
        body["id"] = request.id
    head = dumps(body)
    return (head + b"".join(blobs), len(head)) if blobs else (head, None)


# -- TF Serving REST -----------------------------------------------------------------------------

def parse_tf_request(body: bytes, input_name: str, sample_shape: Sequence[int | None], dtype: str,
                     limits: ParseLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, str]:
    """A TF Serving predict body -> (input batch, "row" or "columnar"), or ProtocolError(400)."""
    req = _parse_json(body, limits)
    if not isinstance(req, dict) or ("instances" in req) == ("inputs" in req):
        raise ProtocolError("a predict request is a JSON object with either 'instances' or 'inputs'", 400)
    sig = req.get("signature_name", "serving_default")
    if sig != "serving_default":
        raise ProtocolError(f"unknown signature_name {sig!r}; this model has 'serving_default'", 400)

    def named(value: Any, what: str) -> Any:
        if isinstance(value, dict):
            if set(value) != {input_name}:
                raise ProtocolError(f"{what} names {sorted(value)}; the model's input is {input_name!r}", 400)
            return value[input_name]
        return value

    if "instances" in req:
        rows = req["instances"]
        if not isinstance(rows, list) or not rows:
            raise ProtocolError("'instances' must be a non-empty list (one entry per sample)", 400)
        data, form = [named(r, "an instance") for r in rows], "row"
    else:
        data, form = named(req["inputs"], "'inputs'"), "columnar"
    if not isinstance(data, list):
        raise ProtocolError("the input must be a (nested) list of numbers", 400)
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise ProtocolError("the input is ragged (nested lists of different lengths)", 400) from None
    if arr.dtype.kind not in "fiu":
        raise ProtocolError("the input must hold numbers only", 400)
    with np.errstate(over="ignore", invalid="ignore"):
        arr = arr.astype(dtype)
    return fit_batch(arr, sample_shape, dtype, "the input"), form


def tf_response(probabilities: np.ndarray, form: str) -> dict[str, Any]:
    """TF Serving's answer: one prediction per sample (the output row, batch axis removed)."""
    rows = probabilities.reshape(-1, 1).tolist()
    return {"predictions": rows} if form == "row" else {"outputs": rows}
