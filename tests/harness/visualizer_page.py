"""Working in the unmodified ParaView Visualizer's own page, for browser tests (tests/test_visualizer_browser.py,
tests/test_sharing_visualizer_browser.py): a data file to open, and opening it, adding a Contour and colouring it,
each step changing the rendered picture. The Visualizer's class names are CSS-module names of the pinned build;
the selectors match their stable prefix."""

from __future__ import annotations

import io
import time
from pathlib import Path

from PIL import Image

from tests.harness.browser import changed_share
from tests.helpers import foreground_fraction

READY_MS = 180_000     # the launcher's POST: submit, schedule, start Xvfb and the Visualizer server
STEP_S = 45            # one step in the Visualizer: a server round trip and a new image
VIEWPORT = '[class*="MainView-viewport"]'
OPEN_FILE = '[class*="ToggleIcons-openFileButton"]'
ADD_FILTER = '[class*="ToggleIcons-filterButton"]'
APPLY = '[class*="ProxyEditorWidget-validateButton"]'
COLOR_BY = 'select:has(option[value="POINTS:|:pressure"])'
DATA_FILE = "fields.vtk"


def write_fields(directory: Path) -> None:
    """A 12^3 grid with two point fields: temperature (distance from the centre: contours are spheres) and
    pressure (a gradient across it: colouring by it paints the sphere from one side to the other)."""
    n, c = 12, 5.5
    temperature, pressure = [], []
    for k in range(n):
        for j in range(n):
            for i in range(n):
                temperature.append(f"{((i - c) ** 2 + (j - c) ** 2 + (k - c) ** 2) ** 0.5:.3f}")
                pressure.append(f"{i + 2 * j:.1f}")
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DATA_FILE).write_text("\n".join([
        "# vtk DataFile Version 3.0", "two fields on a grid", "ASCII", "DATASET STRUCTURED_POINTS",
        f"DIMENSIONS {n} {n} {n}", "ORIGIN 0 0 0", "SPACING 1 1 1", f"POINT_DATA {n ** 3}",
        "SCALARS temperature float 1", "LOOKUP_TABLE default", " ".join(temperature),
        "SCALARS pressure float 1", "LOOKUP_TABLE default", " ".join(pressure), ""]))


PANEL_WIDTH = 330      # the Visualizer's panel lies over the left of the viewport; the picture is judged beside it


def viewport(page, path: Path) -> Image.Image:
    """The rendered picture (the viewport right of the panel); the whole viewport is saved to ``path``."""
    image = Image.open(io.BytesIO(page.locator(VIEWPORT).screenshot(path=str(path)))).convert("RGB")
    return image.crop((PANEL_WIDTH, 0, image.width, image.height))


def new_picture(page, before: Image.Image, path: Path, least: float = 0.01) -> Image.Image:
    """The picture once at least ``least`` of its pixels differ clearly from ``before``, and it has settled."""
    deadline = time.monotonic() + STEP_S
    while time.monotonic() < deadline:
        page.wait_for_timeout(500)
        now = viewport(page, path)
        if changed_share(before, now) > least:
            page.wait_for_timeout(1500)   # a still, full-quality frame follows the first one
            return viewport(page, path)
    raise AssertionError(f"the Visualizer's picture did not change within {STEP_S} s (last: {path})")


def has_picture(image: Image.Image) -> float:
    png = io.BytesIO()
    image.save(png, "PNG")
    return foreground_fraction(png.getvalue())


def use_the_visualizer(page, artifacts: Path) -> None:
    """Open the data file in the Visualizer's file browser, add a Contour, colour it by a field."""
    page.wait_for_selector(OPEN_FILE, timeout=READY_MS)
    page.wait_for_timeout(2000)   # the first (empty) frame
    empty = viewport(page, artifacts / "01-connected.png")
    page.click(OPEN_FILE)
    page.click(f'li[data-action="file"][data-name="{DATA_FILE}"]')
    # Its outline: thin lines, a few thousand pixels.
    opened = new_picture(page, empty, artifacts / "02-file-opened.png", least=0.002)
    page.click(ADD_FILTER)
    page.click('li[data-name="Contour"]')
    page.click(APPLY)
    contoured = new_picture(page, opened, artifacts / "03-contour.png")    # a sphere inside the outline
    assert has_picture(contoured) > has_picture(opened) * 2, "the contour should fill much of the view"
    page.locator(COLOR_BY).select_option("POINTS:|:pressure")
    coloured = new_picture(page, contoured, artifacts / "04-coloured-by-pressure.png")
    colours = {pixel for pixel in coloured.resize((64, 64)).get_flattened_data() if max(pixel) - min(pixel) > 60}
    assert len(colours) > 20, "colouring by pressure should paint the sphere in many colours"
    page.screenshot(path=str(artifacts / "05-whole-page.png"))
