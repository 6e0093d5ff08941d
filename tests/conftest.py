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


class ServiceProcess:
    """A real ``pvhpc serve`` in a child process, with a site config written for the test cluster."""

    def __init__(self, directory: Path, config: dict):
        import yaml

        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.dir / "site.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = int(config["service"]["listen"].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None
        self.log = self.dir / "service.log"

    def start(self, timeout: float = 30) -> "ServiceProcess":
        import subprocess
        import sys
        import time
        import urllib.request

        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pvhpc", "serve", "--config", str(self.config_path), "--log-level", "DEBUG"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pvhpc serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(self.url + "/api/v1/health", timeout=2).read()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"pvhpc serve did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.kill()

    def client(self, **kwargs):
        from pvhpc.client import Client

        return Client(self.url, **kwargs)


def site_config(cluster: LocalCluster, directory: Path, runtime_path: Path, **overrides) -> dict:
    """A site config for the test cluster; ``overrides`` replace whole top-level sections or service keys."""
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port_block(1)
    config = {
        "service": {
            "listen": f"127.0.0.1:{port}",
            "database": f"sqlite:///{directory / 'pvhpc.sqlite'}",
            "job_output_dir": str(directory / "jobs"),
            "poll_interval": 1,
            "launcher_wait": 60,
            "submit_grace": 20,
        },
        "scheduler": {"environment": cluster.environment(), "command_timeout": 20},
        "runtime": {"pythonpath": str(runtime_path)},
        "partitions": {
            "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 30, "max": 120}},
            "cpu": {"walltime": {"default": 30, "max": 120}},
        },
        "applications": {"paraview": {"data_roots": [str(data_dir)], "start_timeout": 120}},
    }
    for key, value in overrides.items():
        if key in config["service"]:
            config["service"][key] = value
        else:
            config[key] = value
    return config


@pytest.fixture
def service_factory(cluster, runtime_dir, tmp_path):
    """Start real pvhpc services against the test cluster; all are stopped and their jobs cancelled after."""
    started: list[ServiceProcess] = []

    def make(name: str = "svc", **overrides) -> ServiceProcess:
        directory = tmp_path / name
        directory.mkdir(parents=True, exist_ok=True)
        svc = ServiceProcess(directory, site_config(cluster, directory, runtime_dir, **overrides))
        started.append(svc)
        return svc

    yield make
    for svc in started:
        svc.stop()
    # No test may leave a job behind for the next one.
    import subprocess

    env = dict(os.environ, **cluster.environment())
    jobs = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout.split()
    if jobs:
        subprocess.run(["scancel", *jobs], env=env)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A real PostgreSQL server of the test's own (Debian's postgresql), trust auth on loopback."""
    import glob
    import shutil
    import subprocess

    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail("PostgreSQL is not installed (install.sh installs Debian's postgresql)")
    bindir = Path(bins[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="pvhpc-test-pg-"))
    shutil.chown(base, "postgres")
    data, port = base / "data", free_port_block(1)

    def as_postgres(*argv):
        return subprocess.run(["runuser", "-u", "postgres", "--", *map(str, argv)], capture_output=True, text=True,
                              timeout=120)

    if os.geteuid() == 0:
        run_pg = as_postgres
    else:
        def run_pg(*argv):
            return subprocess.run(list(map(str, argv)), capture_output=True, text=True, timeout=120)
    proc = run_pg(bindir / "initdb", "-D", data, "--auth=trust", "-U", "postgres")
    assert proc.returncode == 0, proc.stderr
    proc = run_pg(bindir / "pg_ctl", "-D", data, "-l", base / "log", "-w", "-o",
                  f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
    assert proc.returncode == 0, proc.stderr + (base / "log").read_text()
    proc = run_pg(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "pvhpc")
    assert proc.returncode == 0, proc.stderr
    yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/pvhpc"
    run_pg(bindir / "pg_ctl", "-D", data, "-m", "fast", "stop")


# -- a real Apache (Debian's apache2) for the front-end tests ----------------------------------------

APACHE_GROUP = "www-data"   # the group Debian's Apache workers run as; the map file must be readable by it


@pytest.fixture
def apache_dir():
    """A directory Apache's workers (group www-data) can read: pytest's tmp_path is private to root."""
    import grp
    import shutil

    directory = Path(tempfile.mkdtemp(prefix="pvhpc-test-apache-"))
    os.chown(directory, -1, grp.getgrnam(APACHE_GROUP).gr_gid)
    directory.chmod(0o750)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


class ApacheServer:
    """Debian's apache2 in the foreground, with a standalone config rendered by pvhpc around one site file."""

    def __init__(self, root: Path, site, binary: str = "/usr/sbin/apache2"):
        from pvhpc import apacheconf

        self.root, self.site, self.binary = root, site, binary
        self.site_file = root / "pvhpc-site.conf"
        self.site_file.write_text(apacheconf.render_site(site))
        self.config = root / "httpd.conf"
        self.config.write_text(apacheconf.render_standalone(
            self.site_file, root, f"127.0.0.1:{site.listen_port}", tls=site.tls, group=APACHE_GROUP))
        self.proc = None
        scheme = "https" if site.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{site.listen_port}{site.prefix}"

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no error.log)"

    def start(self, timeout: float = 20) -> "ApacheServer":
        import subprocess
        import time

        out = open(self.root / "stdout.log", "ab")
        self.proc = subprocess.Popen([self.binary, "-f", str(self.config), "-DFOREGROUND"],
                                     stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"apache2 exited with {self.proc.returncode}:\n"
                                   f"{(self.root / 'stdout.log').read_text()}\n{self.error_log()}")
            try:
                socket.create_connection(("127.0.0.1", self.site.listen_port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"apache2 did not listen within {timeout} s:\n{self.error_log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()   # SIGTERM: the parent stops its workers and exits
            try:
                self.proc.wait(15)
            except Exception:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def apache_factory():
    """Make real Apache servers for pvhpc.apacheconf.Site descriptions; each is stopped after the test."""
    import shutil

    started: list[ApacheServer] = []
    roots: list[Path] = []

    def make(site) -> ApacheServer:
        root = Path(tempfile.mkdtemp(prefix="pvhpc-test-httpd-"))
        root.chmod(0o755)
        roots.append(root)
        server = ApacheServer(root, site)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
    for root in roots:
        shutil.rmtree(root, ignore_errors=True)
