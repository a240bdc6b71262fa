"""Calibration statistics on Ray: shards collected by workers and merged on the driver equal the
statistics one process collects over the whole set (so every range method gives equal ranges)."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from conftest import TINY_SHAPE, export_tiny
from optkit.quantization import calib_stats
from optkit.pipeline.distributed import RayExecutor
from optkit.quantization.executor import calibration_on, collect_stats

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'optkit[ray]'")


@pytest.fixture(scope="module")
def model_and_samples(tmp_path_factory):
    path = export_tiny(tmp_path_factory.mktemp("calib") / "tiny.onnx", n_ref=4)
    rng = np.random.default_rng(3)
    samples = (rng.standard_normal((24, *TINY_SHAPE)) * np.linspace(0.1, 20, TINY_SHAPE[1])[None, None, :, None])
    return path, samples.astype(np.float32)


@pytest.fixture(scope="module")
def single(model_and_samples):
    path, samples = model_and_samples
    return calib_stats.collect_stats(path, samples, "input_mfcc", progress=False)


def ranges_of(stats):
    return {m: stats.ranges(m) for m in calib_stats.METHODS}


@pytest.mark.parametrize("shards", [1, 2, 8])
def test_ray_statistics_equal_one_process(ray_local, model_and_samples, single, shards):
    path, samples = model_and_samples
    ex = RayExecutor(ray_local, workers=2, shards=shards)
    with calibration_on(ex):
        sharded = collect_stats(path, samples, "input_mfcc")
    assert sharded.same_as(single)
    assert ranges_of(sharded) == ranges_of(single)


def test_without_an_executor_it_is_the_single_process_path(model_and_samples, single):
    path, samples = model_and_samples
    assert collect_stats(path, samples, "input_mfcc", progress=False).same_as(single)


def test_a_killed_calibration_worker_is_retried_without_double_counting(ray_local, model_and_samples, single):
    path, samples = model_and_samples
    killed: list[int] = []

    def kill_one(done: int, total: int) -> None:
        if not killed:
            killed.append(ex.actor_pids[-1])
            os.kill(ex.actor_pids[-1], signal.SIGKILL)

    ex = RayExecutor(ray_local, workers=2, shards=12, on_shard=kill_one)
    with calibration_on(ex):
        sharded = collect_stats(path, samples, "input_mfcc")
    assert killed
    assert sharded.samples == len(samples)
    assert sharded.same_as(single)


def test_quantize_with_ray_makes_the_same_model(ray_local, cli_runner, tiny_onnx, calib_dir, tmp_path):
    from conftest import invoke

    from optkit.quantization.calib_stats import CalibStats

    a, b = tmp_path / "a" / "m.int8.onnx", tmp_path / "b" / "m.int8.onnx"
    a.parent.mkdir(), b.parent.mkdir()
    args = ["quantize", tiny_onnx, "--int8", "--calibration", calib_dir, "--no-search"]
    ra = invoke(cli_runner, [*args, "-o", a])
    rb = invoke(cli_runner, [*args, "-o", b, "--ray"])
    assert ra.exit_code == rb.exit_code, (ra.output, rb.output)
    assert ra.exit_code in (0, 3), ra.output
    assert a.read_bytes() == b.read_bytes()
    sa = CalibStats.load(next(a.parent.glob("*.calib.npz")))
    sb = CalibStats.load(next(b.parent.glob("*.calib.npz")))
    assert sa.same_as(sb)


def test_ray_goes_with_int8_only(cli_runner, tiny_onnx, tmp_path):
    from conftest import invoke

    res = invoke(cli_runner, ["quantize", tiny_onnx, "-o", tmp_path / "m.fp16.onnx", "--fp16", "--ray"])
    assert res.exit_code == 2 and "--ray goes with --int8" in res.output
    assert not (tmp_path / "m.fp16.onnx").exists()


def test_a_recipe_with_ray_calibrates_and_quantises_on_ray_and_makes_the_same_int8_model(ray_local, cli_runner, calib_dir, tmp_path,
                                                                           monkeypatch):
    import json

    calls: list[int] = []
    trials: list[str] = []
    original, original_map = RayExecutor.collect_stats, RayExecutor.trial_map

    def spy(self, *args, **kwargs):
        calls.append(len(args[1]))
        return original(self, *args, **kwargs)

    def spy_map(self, *args, **kwargs):
        map_trials = original_map(self, *args, **kwargs)

        def counted(jobs, note):
            trials.extend(spec.name for _, spec in jobs)
            return map_trials(jobs, note)
        return counted

    monkeypatch.setattr(RayExecutor, "collect_stats", spy)
    monkeypatch.setattr(RayExecutor, "trial_map", spy_map)

    from conftest import invoke
    from test_recipe import MODELS

    text = (f"name: tiny-int8\nmodel: {MODELS}:tiny_voice\nsteps:\n  - pass: export\n    params:\n"
            f"      reference_samples: 8\n  - pass: quantize-int8\n    params:\n      calibration: {calib_dir}\n"
            "      search: false\nverify:\n  gates: {int8: {min_agreement: 0.5, mean_abs: 1.0, max_accuracy_drop: 1.0}}\n")
    (tmp_path / "plain.yaml").write_text(text)
    (tmp_path / "ray.yaml").write_text(text + "ray: {address: local, workers: 2, shards: 4}\n")
    a = invoke(cli_runner, ["run", tmp_path / "plain.yaml", "-o", tmp_path / "a"])
    b = invoke(cli_runner, ["run", tmp_path / "ray.yaml", "-o", tmp_path / "b"])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    sha = [json.loads((tmp_path / d / "manifest.json").read_text())["artifacts"]["quantize-int8"]["artifact"]["sha256"]
           for d in ("a", "b")]
    assert sha[0] == sha[1]
    assert calls, "the recipe with ray: did not collect its calibration statistics on Ray"
    assert trials == ["requested"], "the recipe with ray: did not run its int8 trial on Ray"


def test_mixed_length_statistics_and_search_on_ray_equal_one_process(ray_local, cli_runner, tmp_path):
    """A dynamic time axis and a ragged calibration set: the statistics (samples at their own
    lengths, shipped to the workers as lists) and the int8 search's trials run on Ray and give the
    statistics and the model one process gives."""
    from conftest import invoke
    from optkit.quantization.calib_stats import CalibStats

    models = os.path.join(os.path.dirname(os.path.dirname(__file__)), "helpers", "variable_length_models.py")
    lengths = [int(n) for n in np.random.default_rng(0).integers(20, 301, size=24)]
    rng = np.random.default_rng(1)
    samples = [rng.standard_normal((1, 8, n)).astype(np.float32) for n in lengths]
    cal = tmp_path / "cal.npz"
    np.savez(cal, x=np.concatenate(samples, -1), offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    model = tmp_path / "m.onnx"
    res = invoke(cli_runner, ["export", f"{models}:gap_cnn", "-o", model, "--input-shape", "1,1,8,50",
                              "--input-name", "x", "--output-name", "y", "--reference-samples", "2",
                              "--dynamic-axis", "x:3", "--length-range", "20:300", "--check-lengths", "20,300"])
    assert res.exit_code == 0, res.output
    # statistics alone: the Ray executor over a list of mixed-length samples
    single = calib_stats.collect_stats(model, samples, "x", progress=False)
    with calibration_on(RayExecutor(ray_local, workers=2, shards=4)):
        sharded = collect_stats(model, samples, "x")
    assert sharded.samples == len(samples) and sharded.same_as(single)
    # the whole command: --ray against one process
    a, b = tmp_path / "a" / "m.int8.onnx", tmp_path / "b" / "m.int8.onnx"
    a.parent.mkdir(), b.parent.mkdir()
    args = ["quantize", model, "--int8", "--calibration", cal]
    ra, rb = invoke(cli_runner, [*args, "-o", a]), invoke(cli_runner, [*args, "-o", b, "--ray"])
    assert ra.exit_code == rb.exit_code == 0, (ra.output, rb.output)
    assert "calibration data: 24 samples" in rb.output and "not padded" in rb.output
    assert a.read_bytes() == b.read_bytes()
    assert CalibStats.load(next(a.parent.glob("*.calib.npz"))).same_as(CalibStats.load(next(b.parent.glob("*.calib.npz"))))
