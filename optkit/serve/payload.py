"""Request bodies -> one validated model input, or a RequestRejected with an HTTP status.

``POST /verify`` accepts the model input three ways (chosen by Content-Type, or by the body's first
bytes when the type is missing or generic):

- JSON (``application/json``): the MFCC array as nested lists, or ``{"mfcc": [...]}``;
- raw ``.npy`` bytes (``application/x-npy`` / ``application/octet-stream``), as ``numpy.save``
  writes them; the dtype must be the model's (float32); pickled objects are refused;
- audio (``audio/wav``, ``audio/flac``, ... as the body, or a multipart upload in a field named
  ``audio`` or ``file``): decoded by libsndfile and turned into MFCCs by ``optkit.data.features``,
  the front end the bundled model was trained with.

Accepted shapes are the model's per-sample shape (``(1, 40, 241)``), the same with a leading batch
of 1, or without the leading channel of 1 (``(40, 241)``); on a model with a dynamic time axis any
length fits here (the inference loop checks it against the model's declared range). Everything else is a 4xx with a
one-line reason: 400 undecodable, 413 too large, 415 unknown type, 422 wrong shape/dtype/NaN.

Parsing is bounded before any work proportional to what a body *claims* (ParseLimits): JSON nesting
depth and value count are read off the raw bytes before ``json.loads`` (which recurses, and would
build the whole tree); a ``.npy`` header's shape and descr are checked (no negative or overflowing
dimension, no sub-array or structured descr, the model's dtype, at most the bytes the body holds)
before any data is read; audio is measured from its header (frames, channels, rate) and refused over
``max_audio_seconds`` before anything is decoded, and never more than that is decoded whatever the
header says. Integer model inputs take integers only, within the dtype's range.
"""
from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from optkit.common.errors import InputError

NPY_TYPES = ("application/x-npy", "application/npy", "application/octet-stream")
JSON_TYPES = ("application/json",)
AUDIO_PREFIX = "audio/"
NPY_MAGIC = b"\x93NUMPY"
AUDIO_MAGIC = (b"RIFF", b"fLaC", b"OggS", b"FORM")
AUDIO_FIELDS = ("audio", "file")


@dataclass(frozen=True)
class ParseLimits:
    """What one request body may make the server parse (ServeSettings carries the values)."""

    max_json_depth: int = 32  # nesting of arrays/objects; a model input needs a handful
    max_json_elements: int = 1_000_000  # values in a JSON body (the bundled model takes 9,640)
    max_audio_seconds: float = 60.0  # decoded audio, judged from the header before decoding
    # samples (frames x channels) decoded per second allowed: 48 kHz stereo; bounds the decoded buffer
    # whatever rate or channel count a header claims (60 s: 5.8 M float32 samples, 23 MB)
    audio_samples_per_second: int = 96_000


DEFAULT_LIMITS = ParseLimits()
NPY_MAX_DIMS = 32


class RequestRejected(InputError):
    """A request the server cannot use; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(" ".join(str(message).split()))
        self.status = status


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def body_kind(content_type: str | None, body: bytes) -> str:
    """'json', 'npy', 'audio' or 'multipart' for a request's Content-Type and first bytes."""
    mt = media_type(content_type)
    if mt.startswith("multipart/form-data"):
        return "multipart"
    if mt in JSON_TYPES or mt.endswith("+json"):
        return "json"
    if mt.startswith(AUDIO_PREFIX):
        return "audio"
    if mt in ("application/x-npy", "application/npy"):
        return "npy"
    if mt in ("", "application/octet-stream", "text/plain"):
        head = body[:8]
        if head.startswith(NPY_MAGIC):
            return "npy"
        if head.startswith(AUDIO_MAGIC):
            return "audio"
        if head.lstrip()[:1] in (b"[", b"{"):
            return "json"
        if mt == "application/octet-stream":
            return "npy"  # say what is wrong with it as .npy
        raise RequestRejected("cannot tell what the body is; send Content-Type application/json, "
                              "application/x-npy or audio/wav", 415)
    raise RequestRejected(f"unsupported Content-Type {mt!r}; use application/json, application/x-npy, "
                          "audio/wav or a multipart upload", 415)


def fit_shape(arr: np.ndarray, sample_shape: Sequence[int | None]) -> np.ndarray:
    """``arr`` as a batch of one: (1, *sample_shape), or RequestRejected(422)."""
    sample = tuple(sample_shape)

    def matches(shape: tuple[int, ...], want: tuple[int | None, ...]) -> bool:
        return len(shape) == len(want) and all(w is None or w == s for s, w in zip(shape, want))

    shape = tuple(int(d) for d in arr.shape)
    if matches(shape, sample):
        return arr[None]
    if matches(shape, (1, *sample)):
        return arr
    if sample and sample[0] == 1 and matches(shape, sample[1:]):
        return arr[None, None]
    want = "x".join("?" if d is None else str(d) for d in sample)
    raise RequestRejected(f"input has shape {shape}; the model expects one sample shaped ({want.replace('x', ', ')}) "
                          f"(or with a leading batch of 1)", 422)


def check_values(arr: np.ndarray, dtype: str) -> np.ndarray:
    if arr.dtype != np.dtype(dtype):
        raise RequestRejected(f"input has dtype {arr.dtype}; the model expects {dtype}", 422)
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise RequestRejected("input contains NaN or infinite values", 422)
    return np.ascontiguousarray(arr)


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b"[]{},")


def check_json_size(body: bytes, limits: ParseLimits) -> None:
    """Refuse a JSON body nested deeper than ``limits.max_json_depth`` or holding more values than
    ``limits.max_json_elements``, from its bytes, before a JSON parser recurses into it. Brackets
    and commas inside strings count too: an input has no strings but its field name, so this can
    only over-count on a body that would be refused anyway. (Python's json has no depth limit of
    its own; it raises RecursionError near the interpreter's, so the scan is written here: one
    ``bytes.translate`` in C keeps only the brackets and commas, about one byte per value, and numpy
    sums those: less time than numpy comparing every byte, benchmarks/protocol_json.py.)"""
    kept = np.frombuffer(body.translate(None, _NOT_STRUCTURE), np.uint8)
    step = ((kept == 0x5B) | (kept == 0x7B)).astype(np.int32) - ((kept == 0x5D) | (kept == 0x7D))  # [ { minus ] }
    depth = int(np.cumsum(step).max()) if kept.size else 0
    if depth > limits.max_json_depth:
        raise RequestRejected(f"JSON nested {depth} levels deep; at most {limits.max_json_depth} are accepted", 400)
    values = int(np.count_nonzero(kept == 0x2C)) + 1  # commas + 1 bounds the values
    if values > limits.max_json_elements:
        raise RequestRejected(f"JSON body holds about {values} values; at most {limits.max_json_elements} are "
                              "accepted", 413)


def to_model_dtype(arr: np.ndarray, dtype: str) -> np.ndarray:
    """JSON numbers (ints, floats, Python ints too large for int64) -> the model's dtype. An integer
    input takes integers within its range only (no truncation of 1.5, no wrap-around of 1e20)."""
    want = np.dtype(dtype)
    if want.kind in "iu":
        if arr.dtype.kind == "O" and not all(isinstance(v, int) and not isinstance(v, bool) for v in arr.flat):
            raise RequestRejected(f"the model's input is {dtype}: the JSON array must hold integers only", 422)
        if arr.dtype.kind == "f" and not (np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise RequestRejected(f"the model's input is {dtype}: the JSON array holds non-integers", 422)
        info = np.iinfo(want)
        lo, hi = (min(arr.flat), max(arr.flat)) if arr.dtype.kind == "O" else (arr.min(), arr.max())
        if lo < info.min or hi > info.max:
            raise RequestRejected(f"the model's input is {dtype}: values must lie in [{info.min}, {info.max}], "
                                  f"the JSON array holds {lo if lo < info.min else hi:.6g}", 422)
        return arr.astype(want)
    if arr.dtype.kind == "O":  # Python ints beyond int64: as floats (inf beyond the dtype: refused later)
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError, OverflowError):
            raise RequestRejected("JSON array must hold numbers only", 422) from None
    with np.errstate(over="ignore"):
        return arr.astype(want)


def _holds_bool(obj: object) -> bool:
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            return True
        if isinstance(item, list):
            stack.extend(item)
    return False


def from_json(body: bytes, sample_shape: Sequence[int | None], dtype: str, input_name: str | None = None,
              limits: ParseLimits = DEFAULT_LIMITS) -> np.ndarray:
    """A JSON array, or an object holding it under "mfcc", "features", "input" or the model's input name."""
    check_json_size(body, limits)
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRejected(f"body is not valid JSON ({exc})", 400) from None
    except RecursionError:  # pragma: no cover - check_json_size refuses deep bodies first
        raise RequestRejected("JSON nested too deeply", 400) from None
    if isinstance(obj, dict):
        fields = ("mfcc", "features", "input", *([input_name] if input_name else []))
        keys = [k for k in fields if k in obj]
        if not keys:
            raise RequestRejected(f"JSON object needs a field {' or '.join(repr(f) for f in dict.fromkeys(fields))} "
                                  "holding the input array", 422)
        obj = obj[keys[0]]
    if not isinstance(obj, list):
        raise RequestRejected("JSON body must be an array of numbers (the MFCC features) or {\"mfcc\": [...]}", 422)
    try:
        arr = np.asarray(obj)
    except (ValueError, TypeError):
        raise RequestRejected("JSON array is ragged (rows of different lengths)", 422) from None
    if arr.dtype.kind not in "fiubO" or arr.size == 0:
        raise RequestRejected("JSON array must hold numbers only", 422)
    if arr.dtype.kind == "b" or ((b"true" in body or b"false" in body) and _holds_bool(obj)):
        raise RequestRejected("JSON array holds booleans, not numbers", 422)  # numpy would take true for 1
    # JSON has one number type: numbers are converted to the model's dtype (.npy must match it)
    arr = to_model_dtype(fit_shape(arr, sample_shape), dtype)
    return check_values(arr, dtype)


# .npy headers already parsed: header text -> (shape, fortran order, dtype). numpy parses every
# header with ast.literal_eval, which profiling `optkit loadtest` showed to be a quarter of the
# event loop's time per request; a service's clients send the same few headers over and over.
_NPY_HEADERS: dict[bytes, tuple[tuple[int, ...], bool, np.dtype]] = {}
_NPY_HEADERS_MAX = 64


def _npy_header(body: bytes) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, data offset) of a .npy body, parsed by numpy's own header
    reader the first time a header text is seen."""
    major = body[6] if len(body) > 7 else -1
    width = {1: 2, 2: 4, 3: 4}.get(major)
    if width is None:
        raise ValueError(f"unsupported .npy version {major}")
    start = 8 + width
    size = int.from_bytes(body[8:start], "little")
    header = body[start:start + size]
    if len(header) != size:
        raise EOFError("the .npy header is cut short")
    hit = _NPY_HEADERS.get(header)
    if hit is None:
        f = io.BytesIO(body[:start + size])
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        hit = (tuple(int(d) for d in shape), bool(fortran), np.dtype(dtype))
        if len(_NPY_HEADERS) >= _NPY_HEADERS_MAX:
            _NPY_HEADERS.pop(next(iter(_NPY_HEADERS)))
        _NPY_HEADERS[header] = hit
    return (*hit, start + size)


def from_npy(body: bytes, sample_shape: Sequence[int | None], dtype: str) -> np.ndarray:
    if not body.startswith(NPY_MAGIC):
        raise RequestRejected("body is not a .npy array (no NUMPY header); write it with numpy.save", 400)
    try:
        shape, fortran, arr_dtype, offset = _npy_header(body)
    except Exception as exc:  # noqa: BLE001 - numpy's header reader tokenizes and evaluates the header
        # text: besides ValueError it raises tokenize.TokenError, SyntaxError, TypeError, MemoryError...
        raise RequestRejected(f"unreadable .npy ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})",
                              400) from None
    if arr_dtype.hasobject:
        raise RequestRejected("pickled object arrays are not accepted", 400)
    if arr_dtype.subdtype is not None:
        base, sub = arr_dtype.subdtype
        raise RequestRejected(f"the .npy descr is a sub-array dtype ({base} of shape {sub} per element); the model "
                              f"expects a plain {dtype} array", 422)
    if arr_dtype.names is not None:
        raise RequestRejected(f"the .npy descr is a structured dtype (fields {', '.join(arr_dtype.names)[:100]}); the "
                              f"model expects a plain {dtype} array", 422)
    if len(shape) > NPY_MAX_DIMS or any(d < 0 for d in shape):
        raise RequestRejected(f"unreadable .npy (shape {shape} in its header)", 400)
    if arr_dtype != np.dtype(dtype):  # before reading: the header says what the data is
        raise RequestRejected(f"input has dtype {arr_dtype}; the model expects {dtype}", 422)
    count = math.prod(shape)  # Python ints: a header's huge dimensions cannot overflow
    need = count * arr_dtype.itemsize
    if len(body) - offset < need:
        raise RequestRejected(f"unreadable .npy (the header says {count} values of {arr_dtype}, the body holds "
                              f"{len(body) - offset} bytes of data)", 400)
    flat = np.frombuffer(body, dtype=arr_dtype, count=count, offset=offset)
    arr = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    return check_values(fit_shape(np.array(arr), sample_shape), dtype)  # a writable copy, in C order


def decode_bounded(data: bytes, limits: ParseLimits) -> tuple[np.ndarray, int]:
    """Audio bytes -> float32 (frames, channels) and the rate, refused (413) when the header says it
    lasts over ``limits.max_audio_seconds`` or holds more samples than that many seconds of 48 kHz
    stereo; never more frames than the limit are decoded, whatever the header says."""
    from optkit.common.lazy import lazy_import

    sf = lazy_import("soundfile", extra="audio")
    with sf.SoundFile(io.BytesIO(data)) as f:
        sr, channels, frames = int(f.samplerate), int(f.channels), int(f.frames)
        if sr <= 0 or channels <= 0:
            raise RequestRejected(f"undecodable audio (rate {sr} Hz, {channels} channels)", 400)
        cap = limits.max_audio_seconds
        max_frames = min(int(cap * sr), int(cap * limits.audio_samples_per_second) // channels)
        if frames > max_frames:
            raise RequestRejected(
                f"the audio lasts {frames / sr:.1f} s ({channels} channels at {sr} Hz); this server decodes at most "
                f"{max_frames / sr:.1f} s of it (--max-audio-seconds {cap:g}, at most 48 kHz stereo's samples)", 413)
        # at most the header's length (a header claiming less than the data holds: that much is read)
        y = f.read(frames=max(frames, 0), dtype="float32", always_2d=True)
    return y, sr


def from_audio(data: bytes, sample_shape: Sequence[int | None], dtype: str,
               limits: ParseLimits = DEFAULT_LIMITS, max_frames: int | None = None) -> np.ndarray:
    """Decode audio bytes (WAV, FLAC, OGG...) and compute the bundled model's MFCC features: the
    fixed window, or (``max_frames`` given: a model with a dynamic time axis) the clip's natural
    length capped at ``max_frames`` frames."""
    from optkit.data import features
    from optkit.common.lazy import lazy_import

    sf = lazy_import("soundfile", extra="audio")
    if not data:
        raise RequestRejected("the audio upload is empty", 400)
    try:
        y, sr = decode_bounded(data, limits)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        why = " ".join(str(exc).split())
        why = why.split(": ", 1)[1] if why.startswith("Error opening") and ": " in why else why  # no object repr
        raise RequestRejected(f"undecodable audio ({why[:200]})", 400) from None
    if y.shape[0] == 0:
        raise RequestRejected("the audio contains no samples", 422)
    try:
        x = (features.mfcc_from_audio(y, int(sr)) if max_frames is None
             else features.mfcc_natural_length(y, int(sr), max_frames))
    except InputError as exc:
        raise RequestRejected(f"unusable audio: {exc}", 422) from None
    try:
        x = fit_shape(x, sample_shape)
    except RequestRejected:
        raise RequestRejected(f"audio features have shape {x.shape}, but this model expects {tuple(sample_shape)}: "
                              "it was not trained on optkit's MFCC front end; send features instead", 422) from None
    return check_values(x, dtype)


def parse_body(body: bytes, content_type: str | None, sample_shape: Sequence[int | None],
               dtype: str = "float32", input_name: str | None = None,
               limits: ParseLimits = DEFAULT_LIMITS, max_frames: int | None = None) -> np.ndarray:
    """One non-multipart request body -> a batch-of-one model input (``max_frames``: see from_audio)."""
    if not body:
        raise RequestRejected("empty request body; send MFCC features (JSON or .npy) or audio", 400)
    kind = body_kind(content_type, body)
    if kind == "json":
        return from_json(body, sample_shape, dtype, input_name, limits)
    if kind == "npy":
        return from_npy(body, sample_shape, dtype)
    if kind == "audio":
        return from_audio(body, sample_shape, dtype, limits, max_frames)
    raise RequestRejected("multipart bodies are parsed by the app", 400)  # pragma: no cover - app routes them
