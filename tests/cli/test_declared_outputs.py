"""Issue 22, cases 1-6 and 17: every file a command writes is declared (optkit.cli.declared) and
checked in one place (optkit.common.fileio.check_io) against the command's inputs and its other
outputs; files that belong together appear together or not at all, also on a full disk."""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import invoke

LUT = ["lut", "--activation", "sigmoid", "--x-min", "-8", "--x-max", "8", "--delta", "1/16"]


def snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}


def refused(res, *words: str) -> None:
    """Exit 1 with exactly one `Error:` line that contains ``words``, no traceback."""
    assert res.exit_code == 1, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1, res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    for w in words:
        assert w in errors[0], errors[0]


@pytest.fixture
def work(tiny_onnx: Path, tmp_path: Path, monkeypatch) -> Path:
    """tiny.onnx, tiny.reference.npz and a previous release rel1/report.json."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel1").mkdir()
    (tmp_path / "rel1" / "report.json").write_text('{"artifacts": []}\n')
    (tmp_path / "data.npz").write_bytes(b"not really data")
    return tmp_path


CASES = {
    # case 1: lut
    "lut table and page one file": (LUT + ["-o", "t.json", "--html", "t.json"], ["--html", ".html"]),
    "lut page over the verified model": (LUT + ["--apply", "tiny.onnx", "-o", "l.onnx", "--html", "l.onnx"], ["--html"]),
    "lut page over its --apply input": (LUT + ["--apply", "tiny.onnx", "-o", "l.onnx", "--html", "tiny.onnx"], ["--html"]),
    "lut -o over its --apply input": (LUT + ["--apply", "tiny.onnx", "-o", "tiny.onnx"], ["tiny.onnx", "--apply"]),
    "lut report over its --reference": (LUT + ["--apply", "tiny.onnx", "-o", "l.onnx", "--reference",
                                               "rel1/report.json", "--report-dir", "rel1"], ["--reference"]),
    "lut report dir holds -o": (LUT + ["--apply", "tiny.onnx", "-o", "rd/report.html.onnx", "--report-dir", "rd",
                                       "--html", "rd/report.html"], ["report.html"]),
    # case 2: verify
    "verify --junit over the artifact": (["verify", "tiny.onnx", "--reference", "tiny.reference.npz", "--junit",
                                          "tiny.onnx"], ["--junit", ".xml"]),
    "verify --junit over the reference": (["verify", "tiny.onnx", "--reference", "tiny.reference.npz", "--junit",
                                           "tiny.reference.npz"], ["--junit"]),
    "verify --summary over the artifact": (["verify", "tiny.onnx", "--reference", "tiny.reference.npz",
                                            "--summary", "tiny.onnx"], ["--summary"]),
    "verify junit and summary one file": (["verify", "tiny.onnx", "--reference", "tiny.reference.npz", "--junit",
                                           "s.xml", "--summary", "s.xml"], ["--summary"]),
    "verify --junit into the report dir": (["verify", "tiny.onnx", "--reference", "tiny.reference.npz", "--junit",
                                            "rel2/report.json", "--report-dir", "rel2"], ["--junit"]),
    "verify report dir over the baseline": (["verify", "tiny.onnx", "--reference", "tiny.reference.npz",
                                             "--baseline", "rel1", "--report-dir", "rel1"], ["--baseline", "report.json"]),
    "verify report dir over the baseline via ..": (["verify", "tiny.onnx", "--reference", "tiny.reference.npz",
                                                    "--baseline", "rel1/report.json", "--report-dir",
                                                    "nowhere/../rel1"], ["--baseline"]),
    "verify --junit through a symlink to the artifact": (["verify", "tiny.onnx", "--reference",
                                                          "tiny.reference.npz", "--junit", "link.xml"], ["--junit"]),
    # case 3: bench, loadtest
    "bench --json over the artifact": (["bench", "tiny.onnx", "--json", "tiny.onnx"], ["--json"]),
    "bench --json over a symlinked artifact": (["bench", "tiny.onnx", "--json", "link.xml"], ["--json"]),
    "loadtest --json over the payload": (["loadtest", "http://127.0.0.1:9", "--payload", "p.json", "--json", "p.json"],
                                         ["--json", "--payload"]),
    "loadtest --json and --html one file": (["loadtest", "http://127.0.0.1:9", "--json", "r.json", "--html", "r.json"],
                                            ["--html"]),
    # case 4: export's reference beside -o
    "export reference over the reference data": (["export", "xor", "-o", "d.onnx", "--input-shape", "1,2",
                                                  "--input-name", "x", "--output-name", "y", "--reference-data",
                                                  "d.reference.npz"], ["--reference-data"]),
    "export -o inside the reference data directory": (["export", "xor", "-o", "rel1/m.onnx", "--reference-data",
                                                       "rel1"], ["inside", "--reference-data"]),
    "simplify -o of the wrong kind": (["simplify", "tiny.onnx", "-o", "tiny.npz"], [".onnx"]),
    "weights -o over --load": (["weights", "--load", "w.json", "-o", "w.json"], ["--load"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_an_output_that_is_an_input_or_another_output_is_refused_and_nothing_changes(work, cli_runner, name):
    args, words = CASES[name]
    (work / "link.xml").symlink_to(work / "tiny.onnx")
    (work / "p.json").write_text("[[0.0]]")
    (work / "w.json").write_text("{}")
    (work / "d.reference.npz").write_bytes(b"the user's data")
    before = snapshot(work)
    res = invoke(cli_runner, args)
    refused(res, *words)
    assert snapshot(work) == before


def test_the_declared_outputs_of_every_command_are_checked(cli_runner):
    """Every command that writes a file declares it: no click option named like an output is a plain
    click.Option (a new --json would otherwise bypass the check)."""
    from optkit.cli import COMMANDS, cli
    from optkit.cli.declared import CheckedCommand, OutputOption

    import click

    ctx = click.Context(cli)
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        for p in cmd.params:
            writes = any(o in ("-o", "--output", "--html", "--json", "--junit", "--summary", "--report-dir",
                               "--output-dir", "--timing-cache") for o in p.opts) and isinstance(p.type, click.Path)
            if writes:
                assert isinstance(p, OutputOption), (name, p.opts)
                assert isinstance(cmd, CheckedCommand), name


def test_recipe_output_of_the_wrong_kind_is_refused_at_load_time(tmp_path):
    from optkit.common.errors import RecipeError
    from optkit.pipeline.recipe import load_recipe

    for out in ("xor.npz", "r2.yaml", "model.engine"):
        r = tmp_path / "r.yaml"
        r.write_text("model: xor\nsteps:\n  - pass: export\n    params: {input_shape: [1, 2]}\n"
                     f"  - pass: simplify\n    output: {out}\n")
        with pytest.raises(RecipeError, match=r"line 5: step simplify: output .* must end with \.onnx"):
            load_recipe(r)


def test_recipe_outputs_are_checked_against_every_file_the_recipe_reads_before_any_step(tmp_path, cli_runner, monkeypatch):
    """`output:` naming the recipe's reference data (here an .onnx file name, so the kind check
    passes) into `-o .` is refused before export runs: the data is intact, nothing is written."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(Path(__file__).resolve().parents[2] / "calibration_data" / "xor.npz", tmp_path / "xor.npz")
    (tmp_path / "w.onnx").write_bytes(b"weights the recipe reads")
    (tmp_path / "r.yaml").write_text(
        "model: xor\nreference_data: xor.npz\nweights: w.onnx\nsteps:\n"
        "  - pass: export\n    output: w.onnx\n    params: {input_shape: [1, 2], input_name: x, output_name: y}\n")
    before = snapshot(tmp_path)
    res = invoke(cli_runner, ["run", "r.yaml", "-o", "."])
    refused(res, "w.onnx", "weights")
    assert snapshot(tmp_path) == before


def _no_space_for(suffix: str, monkeypatch) -> None:
    real = Path.write_text

    def write_text(self, *a, **k):
        if self.name.endswith(f"{suffix}") or f"{suffix}." in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", write_text)


def test_disk_full_leaves_neither_the_lut_table_nor_its_page(tmp_path, cli_runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_space_for(".html", monkeypatch)
    res = invoke(cli_runner, LUT + ["-o", "t.json"])
    refused(res, "t.html", "No space left")
    assert os.listdir(tmp_path) == []


def test_disk_full_leaves_no_report_half_written(tiny_onnx, tmp_path, cli_runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _no_space_for(".md", monkeypatch)
    before = snapshot(tmp_path)
    res = invoke(cli_runner, ["verify", "tiny.onnx", "--reference", "tiny.reference.npz", "--report-dir", "rep",
                              "--junit", "j.xml", "--summary", "s.md"])
    refused(res, "s.md", "No space left")
    assert snapshot(tmp_path) == before  # no report.json/html, no j.xml, no rep/, no partial file


def test_reports_junit_and_summary_are_written_together(tiny_onnx, tmp_path, cli_runner, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = invoke(cli_runner, ["verify", "tiny.onnx", "--reference", "tiny.reference.npz", "--report-dir", "rep",
                              "--junit", "j.xml", "--summary", "s.md"])
    assert res.exit_code == 0, res.output
    assert {"rep/report.json", "rep/report.html", "j.xml", "s.md"} <= set(snapshot(tmp_path))


def test_a_file_name_that_is_not_utf8_is_one_line(tiny_onnx, tmp_path):
    """Case 17: a non-UTF-8 artifact name (bytes on the command line) -> one line, exit 1."""
    bad = os.fsencode(tmp_path) + b"/bad\xff.onnx"
    shutil.copy(tiny_onnx, os.fsdecode(bad))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    res = subprocess.run([sys.executable, "-m", "optkit", "verify", bad, "--reference",
                          str(tiny_onnx.with_suffix("").with_suffix(".reference.npz")), "--junit",
                          str(tmp_path / "j.xml")], capture_output=True, env=env, timeout=120)
    err = res.stderr.decode()
    assert res.returncode == 1, err
    assert err.count("Error:") == 1 and "not valid UTF-8" in err and "\\xff" in err, err
    assert not (tmp_path / "j.xml").exists()
