"""A non-editable install (a wheel) carries the default recipe and a demo subset of the real data,
so `optkit run` works from any directory; the demo stays in step with the source tree."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "optkit" / "demo"


def _make_demo_module():
    spec = importlib.util.spec_from_file_location("make_demo", ROOT / "calibration_data" / "make_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_demo_recipe_is_the_default_recipe_on_the_demo_data():
    make_demo = _make_demo_module()
    expected = make_demo.demo_recipe_text((ROOT / "recipes" / "voice_verification.yaml").read_text())
    assert (DEMO / "voice_verification.yaml").read_text() == expected, (
        "optkit/demo/voice_verification.yaml is out of date: run "
        "`python calibration_data/make_demo.py --recipe-only`")


def test_demo_data_is_an_index_subset_of_the_real_data():
    make_demo = _make_demo_module()
    with np.load(ROOT / "calibration_data" / "val.npz") as full, np.load(DEMO / "val.npz") as demo:
        assert set(demo.files) == set(full.files)
        for k in full.files:
            np.testing.assert_array_equal(demo[k], full[k][:: make_demo.VAL_EVERY])
    full_calib = sorted((ROOT / "calibration_data" / "calib").glob("*.npy"))[:: make_demo.CALIB_EVERY]
    demo_calib = sorted((DEMO / "calib").glob("*.npy"))
    assert [p.name for p in demo_calib] == [p.name for p in full_calib]
    for a, b in zip(full_calib, demo_calib):
        assert a.read_bytes() == b.read_bytes()


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """Build the wheel (no deps, no network) and unpack it as pip would into site-packages."""
    work = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), str(ROOT)],
        check=True, cwd=work, capture_output=True,
    )
    wheel = next(work.glob("optkit-*.whl"))
    site = work / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    return site


def test_wheel_carries_the_demo_and_stays_small(installed_wheel):
    site = installed_wheel
    assert (site / "optkit" / "demo" / "voice_verification.yaml").is_file()
    assert (site / "optkit" / "demo" / "val.npz").is_file()
    assert len(list((site / "optkit" / "demo" / "calib").glob("*.npy"))) == 64
    assert list((site / "optkit" / "zoo" / "weights").glob("*.pt"))
    # `optkit weights` validates files against these schemas
    assert len(list((site / "optkit" / "lesson" / "schemas").glob("dense-weights.*.schema.json"))) == 3
    wheel = next(site.parent.glob("optkit-*.whl"))
    assert wheel.stat().st_size < 20 * 2**20  # the full data set stays in the repository


def test_installed_package_finds_its_default_recipe_from_any_directory(installed_wheel, tmp_path):
    """From a directory with no recipes/, the installed package resolves and loads the demo recipe."""
    code = (
        "from optkit.pipeline.recipe import default_recipe_path, load_recipe\n"
        "p = default_recipe_path()\n"
        "r = load_recipe(p)\n"
        "print(p)\n"
        "print(len(r.steps))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(installed_wheel)}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    path_line, steps_line = res.stdout.strip().splitlines()[-2:]
    assert Path(path_line) == installed_wheel / "optkit" / "demo" / "voice_verification.yaml"
    assert int(steps_line) >= 5
