"""Browser tests: Playwright driving Debian's Chromium (never a downloaded browser) against a real `hub serve`.

They never skip: without Chromium or Playwright they fail and say what to install.
Screenshots of every page go to test-output/screenshots/ (git-ignored).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("EDGEFLEET_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright's bundled driver.

    Per test, not per session: Playwright's sync API keeps an event loop running in the
    thread while it is open, and later tests on the same worker call `asyncio.run()`.
    """
    if not CHROMIUM.exists():
        pytest.fail(f"browser tests need Debian's Chromium at {CHROMIUM}: run scripts/setup (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright  # only the browser tests need it
    except ImportError:
        pytest.fail("browser tests need the playwright package: run scripts/setup (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
