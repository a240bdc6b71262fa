"""The zoo: bundled trained weights of voice-resnet and its model card."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from optkit import zoo  # noqa: E402
from optkit.common.errors import InputError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CARD = REPO / "optkit" / "zoo" / "model_card.json"
VAL = REPO / "calibration_data" / "val.npz"


@pytest.fixture(scope="module")
def card():
    return json.loads(CARD.read_text())


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(2)
    return zoo.build("voice-resnet")


def test_bundled_weights_exist_and_load(model):
    path = zoo.WEIGHTS["voice-resnet"]
    assert path.exists() and path.stat().st_size <= 20 * 2**20
    state = torch.load(path, map_location="cpu", weights_only=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # the weights are the file's, not a fresh init
    assert not model.training
    assert path in zoo.source_files("voice-resnet")


def test_missing_weights_file_is_input_error(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        zoo.build("voice-resnet", weights=tmp_path / "nope.pt")


def test_card_describes_the_model(card, model):
    from optkit.zoo.voice_resnet import macs_per_sample

    assert card["name"] == "voice-resnet"
    assert card["parameters"] == sum(p.numel() for p in model.parameters())
    assert card["macs_per_sample"] == macs_per_sample(model)
    assert card["input"]["shape"] == [None, 1, 40, 241]
    assert "untrained" in card["other_zoo_models"]["voice-resnet-seed"]
    for key in ("seed", "command", "wall_seconds", "epochs_run"):
        assert key in card["training"]


def test_card_targets(card):
    v = card["validation"]
    assert v["n"] >= 512
    assert v["accuracy"] >= 0.93
    assert v["eer"] <= 0.07
    assert v["fraction_probs_in_0.1_0.9"] >= 0.05


def test_model_reproduces_card_metrics_on_val(card, model):
    from optkit.data.source import load_samples
    from optkit.zoo.train import predict, verification_metrics
    from optkit.zoo.voice_resnet import DECISION_THRESHOLD

    val = load_samples(VAL, sample_shape=(1, 40, 241))
    probs = predict(model, val.x)
    assert probs.shape == (len(val),) and np.isfinite(probs).all()
    m = verification_metrics(probs, val.y, DECISION_THRESHOLD)
    v = card["validation"]
    assert m["n"] == v["n"]
    assert abs(m["accuracy"] - v["accuracy"]) <= 2 / v["n"]  # at most two flipped decisions
    assert abs(m["eer"] - v["eer"]) <= 0.01
    assert abs(m["fraction_probs_in_0.1_0.9"] - v["fraction_probs_in_0.1_0.9"]) <= 0.01


def test_eer_metric():
    from optkit.zoo.train import eer, verification_metrics

    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert eer(np.array([0.9, 0.8, 0.7, 0.6, 0.4, 0.3, 0.2, 0.1]), labels) == 0.0
    assert eer(np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9]), labels) == 1.0
    m = verification_metrics(np.array([0.9, 0.8, 0.7, 0.4, 0.6, 0.3, 0.2, 0.1]), labels)
    assert m["accuracy"] == 0.75 and m["far_at_threshold"] == 0.25 and m["frr_at_threshold"] == 0.25
    assert m["eer"] == 0.25
    with pytest.raises(InputError):
        eer(np.array([0.5, 0.6]), np.array([1, 1]))


def test_seed_model_is_untrained_and_separate():
    assert "untrained" in zoo.describe("voice-resnet-seed")
