"""Headless Debian chromium driven by Playwright, for the page and report tests.

The browser is the system's (`apt-get install chromium`, which .ci/run does), never one
`playwright install` would download; without it these tests are skipped and say why.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
)
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]  # fmt: skip


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless chromium (a Playwright ``Browser``), closed afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package drives chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def artifacts_dir(tmp_path: Path) -> Path:
    """Where a test saves its screenshots: ``$CNNKIT_TEST_ARTIFACTS``, else its own temporary folder."""
    folder = Path(os.environ.get("CNNKIT_TEST_ARTIFACTS", tmp_path / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def draw_stroke(page: Any, selector: str = "#pad", steps: int = 8) -> None:
    """Draw a vertical stroke down the middle of the canvas ``selector`` (a "1"), as a mouse would."""
    box = page.locator(selector).bounding_box()
    x = box["x"] + box["width"] * 0.5
    page.mouse.move(x, box["y"] + box["height"] * 0.2)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.8, steps=steps)
    page.mouse.up()
