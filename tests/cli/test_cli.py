"""The CLI shell: import cost, help texts, error mapping."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import invoke
from optkit.cli import COMMANDS

HEAVY = ("torch", "onnxruntime", "openvino", "tensorrt", "onnxsim", "onnx", "librosa", "onnxconverter_common",
         "fastapi", "starlette", "uvicorn", "httpx", "aiohttp", "prometheus_client")


def test_import_and_help_do_not_import_heavy_modules():
    code = (
        "import sys; import optkit, optkit.cli; from click.testing import CliRunner; "
        "r = CliRunner().invoke(optkit.cli.cli, ['--help']); assert r.exit_code == 0, r.output; "
        "[CliRunner().invoke(optkit.cli.cli, [c, '--help']) for c in optkit.cli.COMMANDS]; "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help_with_an_example(cli_runner, command):
    res = invoke(cli_runner, [command, "--help"])
    assert res.exit_code == 0, res.output
    assert "Example" in res.output
    assert f"optkit {command}" in res.output


def test_top_level_help_lists_all_commands(cli_runner):
    res = invoke(cli_runner, ["--help"])
    for command in COMMANDS:
        assert command in res.output


def test_unknown_command_is_usage_error(cli_runner):
    assert invoke(cli_runner, ["frobnicate"]).exit_code == 2


def test_unexpected_exception_is_one_line(cli_runner, monkeypatch, tiny_onnx, tmp_path):
    import optkit.verification.verify

    def boom(*a, **k):
        raise ZeroDivisionError("surprise")

    monkeypatch.setattr(optkit.verification.verify, "verify_artifacts", boom)
    res = invoke(cli_runner, ["verify", tiny_onnx, "--reference", tiny_onnx.with_name("tiny.reference.npz")])
    assert res.exit_code == 1
    assert "internal error (ZeroDivisionError: surprise)" in res.output
    assert "Traceback" not in res.output


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "optkit", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "optkit" in out.stdout


def test_doctor_reports_runtimes(cli_runner):
    res = invoke(cli_runner, ["doctor"])
    assert res.exit_code == 0, res.output
    assert "onnxruntime" in res.output and "CPUExecutionProvider" in res.output
    res = invoke(cli_runner, ["doctor", "--json"])
    import json

    data = json.loads(res.output)
    assert data["capabilities"]["onnxruntime-cpu"]["usable"] is True
    assert data["versions"]["onnx"]
