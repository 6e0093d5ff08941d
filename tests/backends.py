"""The scheduler backends the cluster tests run against, and the site config section that picks one.

pyslurm builds only against its own Slurm release. Where its source is not beside the
checkout (``../shared/vendor/pyslurm-*.tar.gz``, as on a user's fresh machine) and it is not
installed, its tests skip with that reason; where the source is there, as in CI, install.sh
builds it, and a missing pyslurm fails them loudly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parent.parent.parent / "shared" / "vendor"
BACKENDS = ("slurm", "pyslurm")


def require(backend: str) -> None:
    if backend != "pyslurm":
        return
    try:
        import importlib.util

        found = importlib.util.find_spec("pyslurm") is not None
    except (ImportError, ValueError):
        found = False
    if found:
        return
    tarballs = sorted(VENDOR.glob("pyslurm-*.tar.gz"))
    if tarballs:
        pytest.fail(f"pyslurm is not installed, though {tarballs[-1]} is there: install.sh builds it "
                    f"(see docs/scheduler.md)")
    pytest.skip(f"pyslurm is not installed and there is no pyslurm source in {VENDOR}: a site installs the "
                f"pyslurm release matching its Slurm (docs/scheduler.md)")


def make(backend: str, cluster, timeout: float = 20):
    """A backend talking to the test cluster."""
    from types import SimpleNamespace

    from pvhpc.scheduler import make_scheduler
    from pvhpc.scheduler.runners import LocalRunner

    section = SimpleNamespace(submit_as="service", **scheduler_section(cluster, backend, timeout))
    return make_scheduler(section, LocalRunner(section.environment))


def scheduler_section(cluster, backend: str, timeout: float = 20) -> dict:
    """The site config's ``scheduler:`` section for the test cluster and ``backend``."""
    require(backend)
    return {"backend": backend, "environment": cluster.environment(), "command_timeout": timeout}
