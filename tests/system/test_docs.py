"""Docs match behaviour: every command is documented, the README set-up is what CI runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from optkit.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_readme_section_with_an_example(command):
    assert re.search(rf"^### .*`optkit {re.escape(command)}`", README, re.M), f"README lacks a section for {command}"
    assert re.search(rf"^optkit {re.escape(command)}\b", README, re.M), f"README lacks an example of {command}"


def _code_lines():
    blocks = re.findall(r"```\n(.*?)```", README, re.S)
    return [line for b in blocks for line in b.splitlines()]


def test_readme_has_exactly_two_setup_commands_and_ci_runs_the_test_one():
    setup = README.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    commands = [c.strip() for c in re.findall(r"```\n(.*?)```", setup, re.S)]
    assert len(commands) == 2
    main_job, tests = commands
    assert "constraints.txt" in main_job and "optkit run" in main_job
    assert "tox" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()


def test_constraints_pin_cpu_torch_and_tox_uses_them():
    assert re.search(r"^torch==2\.13\.0$", (ROOT / "constraints.txt").read_text(), re.M)
    assert "constraints.txt" in (ROOT / "tox.ini").read_text()


def test_no_machine_specific_paths_in_repo_text():
    # where this checkout lives, the home directory, pytest's temp dirs: none belongs in the repo
    places = [p for p in (str(ROOT.parent) + "/", str(Path.home()) + "/") if len(p) > 2] + ["/tmp/pytest"]
    bad = re.compile("(?<![\\w.-])(" + "|".join(re.escape(p) for p in places) + ")")
    for path in list(ROOT.glob("*.md")) + list(ROOT.glob("optkit/**/*.py")) + list(ROOT.glob("recipes/*.yaml")) \
            + list(ROOT.glob("benchmarks/*.py")) + list(ROOT.glob("benchmarks/*.md")) + list(ROOT.glob("calibration_data/*.md")):
        text = path.read_text(errors="ignore")
        m = bad.search(text)
        assert m is None, f"{path.relative_to(ROOT)} contains {m.group(0)!r}"


def test_options_reference_is_generated_from_the_pass_configs():
    from optkit.cli.options import reference_markdown

    assert (ROOT / "docs" / "options.md").read_text() == reference_markdown(), \
        "docs/options.md is stale: python -m optkit.cli.options > docs/options.md"
    assert "docs/options.md" in README
