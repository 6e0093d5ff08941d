"""The ParaViewWeb runtime on compute nodes: ParaView's pvpython, a wslink it can import, an X server.

Debian's ParaView 5.11 ships ParaView's web protocols but not wslink. wslink 1.x
is installed into a directory of its own and put on pvpython's PYTHONPATH by
the job script; wslink 2 would speak binary frames that ParaView 5.11's
clients do not expect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pvhpc.errors import PvhpcError

WSLINK_REQUIREMENT = "wslink==1.12.4"


class RuntimeProblem(PvhpcError):
    """The ParaViewWeb runtime cannot be installed or used here; the message has the command's own words."""


@dataclass
class RuntimeCheck:
    name: str
    ok: bool
    detail: str


def install(target: Path) -> None:
    """Install wslink for pvpython into ``target`` (idempotent)."""
    if (target / "wslink" / "__init__.py").exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(target), WSLINK_REQUIREMENT],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeProblem(f"pip could not install {WSLINK_REQUIREMENT} into {target}: {proc.stderr.strip()[-500:]}")


def check(pythonpath: Path, pvpython: str = "pvpython") -> list[RuntimeCheck]:
    """What a session job needs on a node, each with what to do when it is missing."""
    results = []
    pv = shutil.which(pvpython)
    results.append(RuntimeCheck("pvpython", pv is not None,
                                pv or "not found: install Debian's paraview and python3-paraview packages"))
    for tool, package in (("Xvfb", "xvfb"), ("xauth", "xauth")):
        found = shutil.which(tool)
        results.append(RuntimeCheck(tool, found is not None, found or f"not found: install Debian's {package} package"))
    if pv:
        env = dict(os.environ, PYTHONPATH=str(pythonpath))
        proc = subprocess.run(
            [pv, "--no-mpi", "-c", "import wslink, paraview.web.pv_wslink; print(wslink.__file__)"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        ok = proc.returncode == 0
        detail = proc.stdout.strip().splitlines()[-1] if ok and proc.stdout.strip() else (
            f"pvpython cannot import wslink from {pythonpath}: run 'pvhpc runtime install'"
        )
        results.append(RuntimeCheck("wslink", ok, detail))
    return results
