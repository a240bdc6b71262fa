"""Headless Chromium for tests that check the HTML report as a browser renders it."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(page: Path) -> str:
    """The DOM after headless Chromium loaded and rendered ``page`` (no network needed)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.resolve().as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout


def assert_rendered_report(dom: str, results: int, groups: int) -> None:
    """What a reviewer must see: verdict, summary, the task view's plots, per-result plots."""
    assert 'id="verdict"' in dom and 'id="summary"' in dom
    summary = dom[dom.index('id="summary"'):]
    summary = summary[:summary.index("</table>")]
    assert summary.count("<tr>") == 1 + groups
    assert dom.count('data-plot="det"') == 1
    assert dom.count('data-plot="score-distribution"') == 1 + groups
    assert dom.count('data-plot="scatter"') == groups and dom.count('data-plot="error-histogram"') == groups
    for kind in ("det", "score-distribution", "scatter"):  # every plot labels its axes
        svg = dom[dom.index(f'data-plot="{kind}"'):]
        svg = svg[:svg.index("</svg>")]
        assert svg.count("<text") >= 4 and ("score" in svg or "rate" in svg)
    assert f"Results per artifact and runtime ({groups})" in dom and results >= groups
