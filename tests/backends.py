"""The scheduler backends the cluster tests run against, and the site config section that picks one.

pyslurm builds only against its own Slurm release, and one environment holds one pyslurm, so install.sh
puts each Slurm's pyslurm in an environment of its own beside pvhpc's (``/opt/pvhpc/pyslurm-25.11``,
``/opt/pvhpc/pyslurm-22.05``); the pyslurm backend runs its workers with that environment's python
(``scheduler.pyslurm_python``). Where no source for the test cluster's pyslurm is beside the checkout
(``../shared/vendor``: Slurm's own source, whose release PyPI serves pyslurm for, or pyslurm's), as on a
user's fresh machine, the pyslurm tests skip with that reason; where it is there, as in CI, install.sh
installs it, and a missing one fails them loudly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VENDOR = Path(__file__).resolve().parent.parent.parent / "shared" / "vendor"
BACKENDS = ("slurm", "pyslurm")
PYSLURM_ENVIRONMENTS = Path(sys.prefix).parent   # install.sh's $PREFIX: pvhpc's venv and the pyslurm-* beside it


def cluster_slurm():
    """The Slurm the test cluster runs (``--slurm``/$PVHPC_TEST_SLURM, else the newest installed), without
    starting it."""
    from pvhpc.scheduler import slurm_install

    from tests.harness.cluster import SLURM_VARIABLE

    return slurm_install.choose(os.environ.get(SLURM_VARIABLE) or None)


def pyslurm_python(release: str) -> Path:
    """The python with the pyslurm for Slurm ``release``."""
    return PYSLURM_ENVIRONMENTS / f"pyslurm-{release}" / "bin" / "python"


def pyslurm_sources(release: str) -> list[Path]:
    """What install.sh builds pyslurm for ``release`` from: pyslurm's source (22.5 for 22.05), or Slurm's own
    source of that release (pyslurm then comes from PyPI)."""
    major, minor = release.split(".")
    return sorted(VENDOR.glob(f"pyslurm-{major}.{int(minor)}.*.tar.gz")) + sorted(VENDOR.glob(f"slurm-{release}.*.tar.gz"))


def require(backend: str, slurm=None) -> None:
    """Fail or skip (see above) a test of ``backend`` that cannot run on ``slurm`` (default: the test Slurm)."""
    if backend != "pyslurm":
        return
    release = (slurm or cluster_slurm()).version.release
    python = pyslurm_python(release)
    if python.exists() and subprocess.run([str(python), "-I", "-c", "import importlib.util, sys; "
                                           "sys.exit(importlib.util.find_spec('pyslurm') is None)"]).returncode == 0:
        return
    sources = pyslurm_sources(release)
    if sources:
        pytest.fail(f"no pyslurm for Slurm {release} in {python}, though {sources[-1]} is there: install.sh "
                    f"installs it (see docs/scheduler.md)")
    pytest.skip(f"no pyslurm for Slurm {release} in {python} and no source for it in {VENDOR}: a site installs "
                f"the pyslurm release matching its Slurm (docs/scheduler.md)")


def make(backend: str, cluster, timeout: float = 20):
    """A backend talking to the test cluster."""
    from types import SimpleNamespace

    from pvhpc.scheduler import make_scheduler
    from pvhpc.scheduler.runners import LocalRunner

    section = SimpleNamespace(submit_as="service", **scheduler_section(cluster, backend, timeout))
    return make_scheduler(section, LocalRunner(section.environment))


def scheduler_section(cluster, backend: str, timeout: float = 20) -> dict:
    """The site config's ``scheduler:`` section for the test cluster and ``backend``."""
    require(backend, cluster.slurm)
    section = {"backend": backend, **cluster.scheduler_config(), "command_timeout": timeout}
    if backend == "pyslurm":
        section["pyslurm_python"] = str(pyslurm_python(cluster.slurm.version.release))
    return section


def offline_section(backend: str, environment: dict, timeout: float = 20):
    """A ``scheduler:`` section for the test Slurm's tools (and pyslurm) with ``environment``, for tests that
    point them at a slurm.conf of their own rather than at the test cluster."""
    from types import SimpleNamespace

    slurm = cluster_slurm()
    require(backend, slurm)
    return SimpleNamespace(backend=backend, environment=environment, command_timeout=timeout, submit_as="service",
                           slurm_prefix=slurm.prefix, pyslurm_python=pyslurm_python(slurm.version.release))
