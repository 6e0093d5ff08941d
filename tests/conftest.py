"""Fixtures: each builds one of the real components in tests/harness/ (or its data) and yields it.

Tests marked ``cluster`` use one Slurm cluster per test session, started in a
temporary directory on free ports (or the one named by PVHPC_TEST_SLURM_CONF,
to reuse a cluster you already run while you work). ``pytest -m "not cluster
and not paraview"`` runs only the fast tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

from pvhpc import paths
from pvhpc import runtime
from pvhpc.scheduler.runners import LocalRunner
from pvhpc.scheduler.slurm_cli import SlurmCLI

from tests.harness import apache, cluster as test_cluster, postgres
from tests.harness import unix_users as unix_users_harness
from tests.harness.service import ServiceProcess, site_config
from tests.harness.sshd import SSHDaemon

pytest_plugins = ["tests.drill_report"]   # the drill_record fixture and the fault-drill table

# Started as a background job of a shell without job control (a CI runner's, `cmd &` in a script), pytest inherits
# SIGINT ignored, and Python then never raises KeyboardInterrupt: tests/run.sh's stop, SIGINT so that the fixtures
# end their cluster, services and jobs, would go unheard and leave them running. Heard again here.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_addoption(parser):
    parser.addoption("--slurm", default=None,
                     help="the Slurm the test cluster runs: a release (25.11, 22.05) or a prefix; default "
                          f"${test_cluster.SLURM_VARIABLE}, else the newest installed")


def pytest_configure(config):
    if config.getoption("--slurm"):
        os.environ[test_cluster.SLURM_VARIABLE] = config.getoption("--slurm")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="session")
def runtime_dir() -> Path:
    target = paths.runtime_dir()
    runtime.install(target)
    return target


@pytest.fixture(scope="session")
def unix_users(cluster):
    """Real Unix users alice, bob and a service account with pvhpc's sudoers rule (tests/harness/unix_users.py)."""
    try:
        users = unix_users_harness.make(str(cluster.slurm.prefix))
    except RuntimeError as e:
        pytest.fail(str(e))
    yield users
    unix_users_harness.remove()


@pytest.fixture(scope="session")
def cluster():
    reused = test_cluster.reused_cluster()
    if reused:
        yield reused
        return
    c = test_cluster.start_cluster()
    yield c
    c.stop()


@pytest.fixture(scope="session")
def slurm(cluster) -> SlurmCLI:
    return SlurmCLI(LocalRunner(cluster.environment()), prefix=cluster.slurm.prefix)


@pytest.fixture
def artifacts(request) -> Path:
    d = ARTIFACTS / request.node.name
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture
def service_factory(cluster, runtime_dir, tmp_path):
    """Start real pvhpc services against the test cluster; all are stopped and their jobs cancelled after."""
    started: list[ServiceProcess] = []

    def make(name: str = "svc", directory: Path | None = None, **overrides) -> ServiceProcess:
        directory = directory or tmp_path / name
        directory.mkdir(parents=True, exist_ok=True)
        svc = ServiceProcess(directory, site_config(cluster, directory, runtime_dir, **overrides))
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()
    test_cluster.cancel_every_job(cluster)


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server of the test's own (Debian's postgresql), trust auth on loopback."""
    try:
        server = postgres.create_server()
    except postgres.PostgresNotInstalled as e:
        pytest.fail(str(e))
    yield server.url
    server.stop()


@pytest.fixture
def fresh_postgres_url(postgres_url):
    """An empty database of its own on the test PostgreSQL server, dropped after the test."""
    with postgres.PostgresServer(postgres_url).scratch_database() as url:
        yield url


@pytest.fixture
def apache_dir():
    """A directory Apache's workers (group www-data) can read: pytest's tmp_path is private to root."""
    directory = apache.readable_directory("pvhpc-test-apache-")
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def apache_factory():
    """Make real Apache servers for pvhpc.frontends.apacheconf.Site descriptions; each is stopped after the test."""
    started: list[apache.ApacheServer] = []
    roots: list[Path] = []

    def make(site) -> apache.ApacheServer:
        root = Path(tempfile.mkdtemp(prefix="pvhpc-test-httpd-"))
        root.chmod(0o755)
        roots.append(root)
        server = apache.ApacheServer(root, site)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def apache_login(apache_dir) -> Path:
    """Apache directives that make users log in (Basic, one user APACHE_USER); Apache's workers can read them."""
    return apache.write_login(apache_dir)


@pytest.fixture
def sshd(tmp_path):
    """A running sshd of the test's own on a loopback port; stopped after the test."""
    root = tmp_path / "sshd"
    root.mkdir()
    daemon = SSHDaemon(root).start()
    yield daemon
    daemon.stop()
