"""Docs match behaviour: every command is documented, the README set-up is what CI runs, links resolve."""
from __future__ import annotations

import glob
import re
from pathlib import Path

import pytest

from optkit.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
LINKED_DOCS = [ROOT / "README.md", *DOC_PAGES]  # the pages whose relative links are checked
RESULT_CITERS = [ROOT / "README.md", *DOC_PAGES, ROOT / "benchmarks" / "README.md"]


def _without_code(text: str) -> str:
    """The text outside fenced code blocks and inline code spans (where brackets are not links)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())  # a link's text only
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    body = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    for heading in re.findall(r"^#{1,6} (.+)$", body, re.M):
        slug = _slug(heading)
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _command_pages(command: str) -> list[Path]:
    heading = re.compile(rf"^### .*`optkit {re.escape(command)}`", re.M)
    return [p for p in DOC_PAGES if heading.search(p.read_text())]


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_a_docs_section_with_an_example_and_a_readme_row(command):
    pages = _command_pages(command)
    assert len(pages) == 1, f"docs/*.md: {len(pages)} pages have a '### `optkit {command}`' section (want 1)"
    page = pages[0]
    text = page.read_text()
    assert re.search(rf"^optkit {re.escape(command)}\b", text, re.M), f"{page.name} lacks an example of {command}"
    heading = re.search(rf"^### (.*`optkit {re.escape(command)}`.*)$", text, re.M).group(1)
    target = f"docs/{page.name}#{_slug(heading)}"
    row = rf"^\| \[`optkit {re.escape(command)}`\]\({re.escape(target)}\) \|"
    assert re.search(row, README, re.M), f"README's command table lacks a row for {command} linking to {target}"


def test_readme_is_a_front_door_under_200_lines():
    assert len(README.splitlines()) < 200, "README.md: keep it under 200 lines; move detail into docs/"


@pytest.mark.parametrize("page", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_existing_files_and_anchors(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_code(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def _cited_results() -> dict[str, list[str]]:
    """Each benchmarks/results/... path the docs name (a brace pair or a glob expanded) -> the files it names."""
    cited: dict[str, list[str]] = {}
    for page in RESULT_CITERS:
        for ref in re.findall(r"results/[\w./{},*-]*[\w*}]", page.read_text()):
            braces = re.search(r"\{([^}]*)\}", ref)
            forms = [ref[:braces.start()] + alt + ref[braces.end():] for alt in braces.group(1).split(",")] \
                if braces else [ref]
            cited[f"{page.relative_to(ROOT)}: {ref}"] = [
                f for form in forms for f in glob.glob(str(ROOT / "benchmarks" / form)) if Path(f).is_file()]
    return cited


def test_every_cited_result_file_exists_and_every_kept_one_is_cited():
    cited = _cited_results()
    assert not [ref for ref, files in cited.items() if not files], \
        f"cited results that do not exist: {[ref for ref, files in cited.items() if not files]}"
    kept = {str(p) for p in (ROOT / "benchmarks" / "results").rglob("*") if p.is_file()}
    uncited = sorted(kept - {f for files in cited.values() for f in files})
    assert not uncited, f"result files no doc cites (git rm them; history keeps them): {uncited}"
    assert all(Path(f).parent.parent.name == "results" for f in kept), \
        "results/ holds one folder per benchmark: benchmarks/results/<benchmark>/<file>"


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
    for path in list(ROOT.glob("*.md")) + DOC_PAGES + list(ROOT.glob("optkit/**/*.py")) \
            + list(ROOT.glob("recipes/*.yaml")) + list(ROOT.glob("benchmarks/*.py")) + list(ROOT.glob("benchmarks/*.md")) + list(ROOT.glob("calibration_data/*.md")):
        text = path.read_text(errors="ignore")
        m = bad.search(text)
        assert m is None, f"{path.relative_to(ROOT)} contains {m.group(0)!r}"


def test_options_reference_is_generated_from_the_pass_configs():
    from optkit.cli.options import reference_markdown

    assert (ROOT / "docs" / "options.md").read_text() == reference_markdown(), \
        "docs/options.md is stale: python -m optkit.cli.options > docs/options.md"
    assert "docs/options.md" in README
