"""Options are declared once in the pass configs: the CLI options, recipe validation and error
messages all come from that declaration."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import invoke
from optkit.passes.config import MISSING, options

COMMAND_PASSES = {"export": ["export"], "simplify": ["simplify"], "fold": ["fold"],
                  "quantize": ["quantize-int8", "quantize-fp16"], "build-engine": ["build-engine"]}


@pytest.mark.parametrize("command", sorted(COMMAND_PASSES))
def test_cli_options_are_the_config_options(command):
    from optkit.cli import cli
    from optkit.passes import get_pass

    cmd = cli.get_command(None, command)
    params = {p.name: p for p in cmd.params if p.param_type_name == "option"}
    for pass_name in COMMAND_PASSES[command]:
        for o in options(get_pass(pass_name).config_cls):
            if not o.cli:
                assert o.name not in params, o.name
                continue
            p = params[o.name]
            assert o.flag_name in p.opts, (o.name, p.opts)
            assert o.help in (p.help or "")
            if o.default is not MISSING and not isinstance(o.default, tuple):
                assert p.default == o.default, o.name
            if o.choices:
                assert list(p.type.choices) == [str(c) for c in o.choices]


def test_every_field_is_declared_with_a_help_text():
    from optkit.passes import REGISTRY, get_pass

    for name in REGISTRY:
        for f in dataclasses.fields(get_pass(name).config_cls):
            assert f.metadata.get("optkit", {}).get("help"), f"{name}.{f.name} has no option() declaration"


def test_library_error_names_the_flag_on_the_cli_and_the_key_in_a_recipe(cli_runner, tiny_onnx, calib_dir, tmp_path):
    out = tmp_path / "q.onnx"
    res = invoke(cli_runner, ["quantize", tiny_onnx, "-o", out, "--int8", "--calibration", calib_dir,
                              "--exclude-nodes", "no/such/node"])
    assert res.exit_code == 1 and "--exclude-nodes: no node named no/such/node" in res.output

    models = Path(__file__).resolve().parents[1] / "helpers" / "tiny_models.py"
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"""\
model: {models}:tiny_voice
steps:
  - pass: export
    params: {{reference_samples: 4}}
  - name: int8
    pass: quantize-int8
    params:
      calibration: {calib_dir}
      exclude_nodes: [no/such/node]
verify: {{enabled: false}}
""")
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out"])
    assert res.exit_code == 1
    assert "params.exclude_nodes: no node named no/such/node" in res.output and "--exclude-nodes" not in res.output


@pytest.mark.parametrize("params, line, message", [
    ("{calibration: calib, method: median}", 7, "method: 'median' is not one of minmax, percentile, entropy, mse"),
    ("\n      calibration: calib\n      chunk_size: 0", 9, "chunk_size must be at least 1"),
    ("\n      calibration: calib\n      percentile: high", 9, "parameter percentile"),
])
def test_recipe_param_errors_name_the_yaml_line_of_the_key(cli_runner, tmp_path, params, line, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: voice-resnet\nsteps:\n  - pass: export\n  - name: int8\n    pass: quantize-int8\n"
                      f"    input: export\n    params: {params}\n")
    res = invoke(cli_runner, ["run", recipe, "-o", tmp_path / "out"])
    assert res.exit_code == 1, res.output
    assert f"r.yaml line {line}:" in res.output and message in res.output


def test_a_comma_list_option_with_a_check_is_split_before_it_is_checked(tiny_onnx, tmp_path):
    """``--validate-on cpu,openvino`` (as its help says) reached the check as one string and was
    refused as an unknown provider 'cpu,openvino': the check replaced the comma-list callback."""
    import click

    from optkit.cli import cli

    cmd = cli.get_command(None, "quantize")
    args = [str(tiny_onnx), "-o", str(tmp_path / "q.onnx"), "--int8"]
    with cmd.make_context("quantize", args + ["--validate-on", "cpu,openvino"]) as ctx:
        assert ctx.params["validate_on"] == ("cpu", "openvino")
    with pytest.raises(click.BadParameter, match="unknown provider 'bogus'"):
        cmd.make_context("quantize", args + ["--validate-on", "cpu,bogus"])
