"""OpenSSH's sshd (Debian's openssh-server) in the foreground: the login host of SSH mode."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.harness.daemon import Daemon
from tests.harness.ports import accepts_connections, free_port_block


class SSHDaemon(Daemon):
    """sshd on a free loopback port, with host key, client key and config of its own under ``root``.

    ``known_hosts`` holds this daemon's host key (as staff would add it);
    ``client_key`` is authorized for root. ``SetEnv PATH`` puts ``bin`` first
    on the PATH of every command it runs, so a test can see what ran there.
    Ready when it accepts connections.
    """

    name = "sshd"
    poll_interval = 0.05

    def __init__(self, root: Path, binary: str = "/usr/sbin/sshd"):
        super().__init__(root / "sshd.log")
        self.root, self.binary = root, binary
        self.port = free_port_block(1)
        self.host_key = root / "ssh_host_ed25519_key"
        self.client_key = root / "client_ed25519"
        self.known_hosts = root / "known_hosts"
        self.authorized_keys = root / "authorized_keys"
        self.bin = root / "bin"
        self.bin.mkdir(exist_ok=True)
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

    def ssh_section(self, **extra) -> dict:
        """The site config's ``ssh:`` section for this daemon."""
        return {"host": "127.0.0.1", "port": self.port, "user": "root", "key_file": str(self.client_key),
                "known_hosts": str(self.known_hosts), **extra}

    def command(self) -> list[str]:
        return [self.binary, "-D", "-e", "-f", str(self.config)]

    def ready(self) -> bool:
        return accepts_connections(self.port)

    def start(self, timeout: float = 10) -> "SSHDaemon":
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)   # sshd's privilege separation directory
        return super().start(timeout)

    def connection_processes(self) -> list[int]:
        """The per-connection sshd processes (the listener's descendants), and what they run."""
        if not self.running:
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
        if self.running:
            self.drop_connections()   # the listener's SIGTERM leaves open connections running
        super().stop()
