"""The benchmarks' figures for docs/: matplotlib without a screen, written as PNG (``pip install -e '.[bench]'``)."""

from __future__ import annotations

from pathlib import Path


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
