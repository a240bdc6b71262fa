"""Issue 21: the model suite of benchmarks/model_suite.py, at a tiny width so CI stays fast.

Every family trains deterministically and exports to ONNX with the output kind optkit detects;
the default int8 command on the same calibration samples in three file orders (by class,
reversed, shuffled with renamed files) writes byte-identical models.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch = pytest.importorskip("torch")

TINY = 0.25  # a quarter of every channel count


@pytest.fixture(scope="module")
def data():
    from benchmarks.suite_models import train

    return train.split()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", ["cnn_norm", "frame_attention", "lstm_encoder", "gru", "dscnn", "ecapa",
                                  "conformer"])
def test_family_trains_deterministically_and_exports_its_kind(name, data, tmp_path):
    from benchmarks.suite_models import train
    from optkit.verification.output_kinds import detect_kinds

    onnx_path, kind = train.train_and_export(name, data, log=lambda s: None, width=TINY, steps=2, batch=8,
                                             cache=tmp_path)
    again, _ = train.train(name, data, TINY, steps=2, batch=8)
    sa, sb = torch.load(onnx_path.with_suffix(".pt")), again.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "two seeded trainings differ"
    assert not torch.are_deterministic_algorithms_enabled()  # the setting is restored afterwards
    import onnxruntime as ort

    x = data["test"][0][:4]
    out = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input_mfcc": x})[0]
    assert out.shape[0] == 4 and np.isfinite(out).all()
    assert detect_kinds({"output": out}, onnx_path)["output"].kind == kind


@pytest.mark.timeout(180)
def test_default_int8_is_byte_identical_under_three_file_orders(data, tmp_path):
    import model_suite  # benchmarks/model_suite.py

    from benchmarks.suite_models import train

    onnx_path, _ = train.train_and_export("cnn_norm", data, log=lambda s: None, width=TINY, steps=5, batch=8,
                                          cache=tmp_path / "cache")
    x, y = (a[:64] for a in data["calib"])
    written, listings, contents = {}, {}, {}
    for order in model_suite.ORDERS:
        calib = model_suite.calibration_dir(order, x, y, tmp_path / order / "calib")
        files = sorted(calib.iterdir())
        listings[order] = [p.name for p in files]
        contents[order] = np.stack([np.load(p) for p in files])
        assert sorted(map(bytes, contents[order])) == sorted(map(bytes, x))  # the same samples
        _, _, path, _ = model_suite.quantize(onnx_path, calib, tmp_path / order / "out" / "m.int8.onnx")
        written[order] = model_suite.sha256(path)
    assert listings["by_class"][0].startswith("impostor") and listings["by_class"][-1].startswith("target")
    orders = list(contents.values())  # three different sample orders
    assert all(not np.array_equal(orders[i], orders[j]) for i in range(3) for j in range(i + 1, 3))
    assert len(set(written.values())) == 1, written


@pytest.fixture(autouse=True, scope="module")
def _benchmarks_on_path():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    yield
    sys.path.remove(str(ROOT / "benchmarks"))
