"""Debian's Chromium driven by Playwright (its own browser download cannot work here), and pixel comparisons."""

from __future__ import annotations

import os
from contextlib import contextmanager

from PIL import Image, ImageChops

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise RuntimeError(f"{CHROMIUM} is missing: install.sh installs Debian's chromium")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def changed_share(a: Image.Image, b: Image.Image) -> float:
    """Share of pixels that differ clearly between two screenshots of the same element."""
    assert a.size == b.size, (a.size, b.size)
    histogram = ImageChops.difference(a, b).convert("L").histogram()
    return sum(histogram[41:]) / (a.width * a.height)
