"""Shared fixtures: a real local Slurm cluster and the real ParaViewWeb runtime.

Tests marked ``cluster`` use one cluster per test session, started in a
temporary directory on free ports (or the one named by PVHPC_TEST_SLURM_CONF,
to reuse a cluster you already run while you work). ``pytest -m "not cluster
and not paraview"`` runs only the fast tests.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
from pathlib import Path

import pytest

from pvhpc import paths, runtime
from pvhpc.localcluster import LocalCluster
from pvhpc.runners import LocalRunner
from pvhpc.scheduler.slurm_cli import SlurmCLI

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def free_port_block(count: int) -> int:
    """A first port such that it and the next count-1 ports are free now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65000:
            continue
        ok = True
        for p in range(base, base + count):
            with socket.socket() as t:
                try:
                    t.bind(("0.0.0.0", p))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no block of free ports")


@pytest.fixture(scope="session")
def runtime_dir() -> Path:
    target = paths.runtime_dir()
    runtime.install(target)
    return target


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    conf = os.environ.get("PVHPC_TEST_SLURM_CONF")
    if conf:
        c = LocalCluster(Path(conf).parent.parent)
        assert c.is_running(), f"PVHPC_TEST_SLURM_CONF={conf} names a cluster that is not running"
        yield c
        return
    # A short path: munge and slurm sockets have length limits.
    directory = Path(tempfile.mkdtemp(prefix="pvhpc-test-cluster-"))
    c = LocalCluster(directory, base_port=free_port_block(5))
    c.start()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def slurm(cluster) -> SlurmCLI:
    return SlurmCLI(LocalRunner(cluster.environment()))


@pytest.fixture
def artifacts(request) -> Path:
    d = ARTIFACTS / request.node.name
    d.mkdir(parents=True, exist_ok=True)
    return d


def run(coro):
    return asyncio.run(coro)
