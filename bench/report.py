"""How the benchmarks report: a median with its range for the printed tables, and figures for docs/
(matplotlib without a screen, written as PNG; ``pip install -e '.[bench]'``)."""

from __future__ import annotations

import statistics
from pathlib import Path


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    """The median, and the range when there is more than one value: "2.185 (2.095-4.281)"."""
    values = sorted(values)
    return fmt.format(statistics.median(values)) + (
        f" ({fmt.format(values[0])}-{fmt.format(values[-1])})" if len(values) > 1 else "")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")   # no display on a login node or in CI
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path, tight: bool = True) -> None:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight" if tight else None)
    print(f"plot: {path}")
