"""Pages loaded in a real headless browser (Debian's chromium): what a user opening them sees."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def browser() -> str:
    """The browser's path; without one the test skips, or fails where SEL_REQUIRE_BROWSER is set
    (CI installs chromium and sets it, so the check cannot silently vanish there)."""
    found = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if found is None:
        if os.environ.get("SEL_REQUIRE_BROWSER"):
            pytest.fail("no chromium on PATH and SEL_REQUIRE_BROWSER is set (apt-get install chromium)")
        pytest.skip("needs chromium (apt-get install chromium)")
    return found


def rendered_dom(page: Path) -> str:
    """The page's DOM after its scripts ran, with the network off: nothing may load from it."""
    out = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--proxy-server=127.0.0.1:9", "--virtual-time-budget=30000", "--dump-dom",
                          page.resolve().as_uri()], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def drawn_charts(dom: str) -> list[str]:
    """Every chart Vega drew, as vega-embed marks it (class="marks"): the whole SVG, or the
    canvas element of a canvas-rendered chart (DVC's pages), which must have a size."""
    svgs = re.findall(r'<svg[^>]*class="marks".*?</svg>', dom, flags=re.S)
    canvases = [c for c in re.findall(r'<canvas[^>]*class="marks"[^>]*>', dom)
                if re.search(r'width="[1-9]', c) and re.search(r'height="[1-9]', c)]
    return svgs + canvases
