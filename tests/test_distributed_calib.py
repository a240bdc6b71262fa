"""Calibration statistics on Ray: shards collected by workers and merged on the driver equal the
statistics one process collects over the whole set (so every range method gives equal ranges)."""
from __future__ import annotations

import os
import signal

import numpy as np
import pytest

from conftest import TINY_SHAPE, export_tiny
from optkit import calib_stats
from optkit.distributed import RayExecutor, calibration_on, collect_stats, ray_session

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'optkit[ray]'")


@pytest.fixture(scope="module")
def ray_local():
    with ray_session("local", num_cpus=2) as r:
        yield r


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
