"""A PostgreSQL server of the test's own (Debian's postgresql), trust auth on loopback.

PostgreSQL brings its own start, wait and stop tool (``pg_ctl -w``), so this
drives that rather than ``daemon.Daemon``: the fault drills stop the server and
start it again, which pg_ctl does whoever started it first.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tests.harness.ports import free_port_block


class PostgresNotInstalled(RuntimeError):
    pass


def _as_owner(owner: str, argv: list) -> list[str]:
    """The server refuses to run as root: as root, run its tools as the owner of its files."""
    argv = [str(a) for a in argv]
    return ["runuser", "-u", owner, "--", *argv] if os.geteuid() == 0 else argv


def _run(owner: str, *argv) -> str:
    command = _as_owner(owner, list(argv))
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited with {proc.returncode}: {proc.stdout}{proc.stderr}")
    return proc.stdout


@dataclass
class CreatedServer:
    """A server create_server made: its URL, and how to stop it for good."""

    url: str
    data: Path
    bindir: Path

    def stop(self) -> None:
        # Not checked: a drill that failed half-way may have left it stopped already.
        subprocess.run(_as_owner(self.data.owner(), [self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "stop"]),
                       capture_output=True, timeout=120)


def create_server() -> CreatedServer:
    """A new cluster in a temporary directory, started on a free port, with an empty database pvhpc."""
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        raise PostgresNotInstalled("PostgreSQL is not installed (install.sh installs Debian's postgresql)")
    bindir = Path(bins[-1]).parent
    base = Path(tempfile.mkdtemp(prefix="pvhpc-test-pg-"))
    owner = "postgres" if os.geteuid() == 0 else base.owner()
    shutil.chown(base, owner)
    data, port = base / "data", free_port_block(1)
    _run(owner, bindir / "initdb", "-D", data, "--auth=trust", "-U", "postgres")
    try:
        _run(owner, bindir / "pg_ctl", "-D", data, "-l", base / "log", "-w", "-o",
             f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "start")
    except RuntimeError as e:
        log = base / "log"
        raise RuntimeError(f"{e}\n{log.read_text() if log.exists() else ''}") from None
    _run(owner, bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", "postgres", "pvhpc")
    return CreatedServer(f"postgresql+psycopg://postgres@127.0.0.1:{port}/pvhpc", data, bindir)


class PostgresServer:
    """The test's PostgreSQL server, found from a URL to it: scratch databases, stop, start again as it was.

    Everything needed to start it again (data directory, port, socket directory,
    listen address, binaries) is asked of the server itself while it runs. No
    connection is kept open between calls: none would survive a restart.
    """

    def __init__(self, url: str):
        from sqlalchemy import create_engine, text

        self.url = url
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                def show(name):
                    return conn.execute(text(f"SHOW {name}")).scalar()

                self.data = Path(show("data_directory"))
                self.port = show("port")
                self.sockets = show("unix_socket_directories")
                self.listen = show("listen_addresses")
                self.bindir = Path(conn.execute(text("SELECT setting FROM pg_config WHERE name = 'BINDIR'")).scalar())
        finally:
            engine.dispose()

    def _admin(self, statement: str) -> None:
        from sqlalchemy import create_engine, text

        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(statement))
        finally:
            engine.dispose()

    @contextmanager
    def scratch_database(self) -> Iterator[str]:
        """A new empty database on this server (its URL), dropped afterwards."""
        name = f"pvhpc_{secrets.token_hex(4)}"
        self._admin(f"CREATE DATABASE {name}")
        try:
            yield self.url.rsplit("/", 1)[0] + "/" + name
        finally:
            self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _pg_ctl(self, *argv) -> None:
        _run(self.data.owner(), self.bindir / "pg_ctl", "-D", self.data, "-w", *argv)

    def stop(self) -> None:
        """A fast shutdown: every connection is cut, new ones are refused."""
        self._pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        self._pg_ctl("-l", self.data.parent / "log", "-o",
                     f"-p {self.port} -k {self.sockets} -c listen_addresses={self.listen}", "start")
