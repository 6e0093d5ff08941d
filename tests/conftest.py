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

from pvhpc import paths
from pvhpc.node import runtime
from pvhpc.scheduler.localcluster import LocalCluster
from pvhpc.scheduler.runners import LocalRunner
from pvhpc.scheduler.slurm_cli import SlurmCLI

pytest_plugins = ["tests.drill_report"]   # the drill_record fixture and the fault-drill table
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
    directory.chmod(0o755)   # every user's Slurm commands read its slurm.conf and use its munge socket
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

    def start(self, timeout: float = 30, as_user: str | None = None) -> "ServiceProcess":
        import subprocess
        import sys
        import time
        import urllib.request

        log = open(self.log, "ab")
        argv = [sys.executable, "-m", "pvhpc", "serve", "--config", str(self.config_path), "--log-level", "DEBUG"]
        if as_user:
            # A service account, as a site would run it: it may only read what every user may read.
            argv = ["runuser", "-u", as_user, "--", *argv]
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
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
        from pvhpc.client.api import Client

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
        if key in config["service"] or key in ("public_url", "callback_url"):
            config["service"][key] = value
        else:
            config[key] = value
    return config


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


@pytest.fixture
def fresh_postgres_url(postgres_url):
    """An empty database of its own on the test PostgreSQL server, dropped after the test."""
    from tests.helpers import PostgresServer

    with PostgresServer(postgres_url).scratch_database() as url:
        yield url


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
        from pvhpc.frontends import apacheconf

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
    """Make real Apache servers for pvhpc.frontends.apacheconf.Site descriptions; each is stopped after the test."""
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


# -- a real OpenSSH sshd (Debian's openssh-server) for SSH mode ---------------------------------------

class SSHDaemon:
    """OpenSSH's sshd in the foreground on a free loopback port, with host key, client key and config of its own.

    ``known_hosts`` holds this daemon's host key (as staff would add it);
    ``client_key`` is authorized for root. ``SetEnv PATH`` puts ``bin`` first
    on the PATH of every command it runs, so a test can see what ran there.
    """

    def __init__(self, root: Path, binary: str = "/usr/sbin/sshd"):
        import subprocess

        self.root, self.binary = root, binary
        self.port = free_port_block(1)
        self.host_key = root / "ssh_host_ed25519_key"
        self.client_key = root / "client_ed25519"
        self.known_hosts = root / "known_hosts"
        self.authorized_keys = root / "authorized_keys"
        self.bin = root / "bin"
        self.bin.mkdir(exist_ok=True)
        self.log = root / "sshd.log"
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pvhpc-test", "-f", str(key)],
                           check=True, capture_output=True)
        self.authorized_keys.write_text(Path(f"{self.client_key}.pub").read_text())
        self.authorized_keys.chmod(0o600)
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {Path(f'{self.host_key}.pub').read_text()}")
        self.config = root / "sshd_config"
        self.config.write_text(
            f"ListenAddress 127.0.0.1:{self.port}\n"
            f"HostKey {self.host_key}\n"
            f"PidFile {root / 'sshd.pid'}\n"
            # Root's key lives with the test; another account's in its own ~/.ssh (sshd reads it as that user).
            f"AuthorizedKeysFile {self.authorized_keys} .ssh/authorized_keys\n"
            # The key files live under the test's temporary directory, not in a home directory.
            "StrictModes no\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "AllowTcpForwarding yes\n"
            "MaxStartups 100\n"
            "MaxSessions 100\n"
            # SHLVL=1 keeps bash from reading root's ~/.bashrc for each command (bash does so when sshd starts
            # it at level 1): this machine's own start-up files are not the login host under test.
            f"SetEnv PATH={self.bin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin SHLVL=1\n"
            "LogLevel VERBOSE\n"
        )
        self.proc = None

    def ssh_section(self, **extra) -> dict:
        """The site config's ``ssh:`` section for this daemon."""
        return {"host": "127.0.0.1", "port": self.port, "user": "root", "key_file": str(self.client_key),
                "known_hosts": str(self.known_hosts), **extra}

    def start(self, timeout: float = 10) -> "SSHDaemon":
        import subprocess
        import time

        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation directory
        out = open(self.log, "ab")
        self.proc = subprocess.Popen([self.binary, "-D", "-e", "-f", str(self.config)],
                                     stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not listen within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def connection_processes(self) -> list[int]:
        """The per-connection sshd processes (the listener's descendants), and what they run."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found += [int(c) for c in children]
            todo += [int(c) for c in children]
        return found

    def drop_connections(self) -> int:
        """Kill every open connection's sshd processes, as a network failure would end them; the listener stays.

        Only sshd's own processes: what the connection ran sees its end as it would after a real drop.
        """
        import signal

        pids = []
        for pid in self.connection_processes():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "sshd":
                    pids.append(pid)
            except OSError:
                pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return len(pids)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.drop_connections()
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except Exception:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sshd(tmp_path):
    """A running sshd of the test's own on a loopback port; stopped after the test."""
    root = tmp_path / "sshd"
    root.mkdir()
    daemon = SSHDaemon(root).start()
    yield daemon
    daemon.stop()


APACHE_USER, APACHE_PASSWORD = "alice", "pvhpc-test-password"


@pytest.fixture
def apache_login(apache_dir) -> Path:
    """Apache directives that make users log in (Basic, one user APACHE_USER); Apache's workers can read them."""
    import grp
    import subprocess

    users = apache_dir / "users"
    subprocess.run(["htpasswd", "-bc", str(users), APACHE_USER, APACHE_PASSWORD], check=True, capture_output=True)
    os.chown(users, -1, grp.getgrnam("www-data").gr_gid)
    users.chmod(0o640)
    auth = apache_dir / "auth.conf"
    auth.write_text(f"AuthType Basic\nAuthName pvhpc\nAuthUserFile {users}\nRequire valid-user\n")
    return auth
