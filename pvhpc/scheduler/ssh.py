"""SSH mode: one shared connection to a login host, for scheduler commands and session tunnels.

A pvhpc that runs off the cluster (a web server that cannot reach the compute
nodes) runs the scheduler's commands on a login host (``runners.SSHRunner``)
and reaches each session's ``node:port`` through direct-tcpip channels of the
same connection (``open_tunnel``; the built-in proxy's way upstream is
pvhpc/frontends/tunnel.py).

The host key is checked against the configured known_hosts file only, and an
unknown or changed key is refused, never learned: trusting whoever answers
would hand job submission and every session's traffic to them.

paramiko is blocking. Everything that waits on the network runs in a thread
(an executor for commands, one thread per forwarded connection), never on
Tornado's loop.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paramiko

from pvhpc.errors import PvhpcError

log = logging.getLogger("pvhpc.scheduler.ssh")

BACKOFF_FIRST = 0.5      # seconds before the first reconnection attempt after a failed one
BACKOFF_MAX = 30.0       # an unreachable host is still tried at least this often
CHUNK = 256 * 1024


class SSHError(PvhpcError):
    """The login host cannot be used now (unreachable, refused our key, host key unknown, connection lost)."""

    status = 503


class HostKeyError(SSHError):
    """The login host's key is not the one in known_hosts, or is not there at all."""


class TunnelRefused(SSHError):
    """The login host answered, but could not open a connection to the node:port asked for."""


def fingerprint(key: paramiko.PKey) -> str:
    """The SHA256 fingerprint as OpenSSH prints it (``ssh-keygen -lf``), so staff can compare the two."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _RefuseUnknown(paramiko.RejectPolicy):
    """RejectPolicy with a message that says what to check and how to add the key."""

    def __init__(self, link: "SSHLink"):
        self.link = link

    def missing_host_key(self, client, hostname, key):
        link = self.link
        port = f"-p {link.port} " if link.port != 22 else ""
        raise HostKeyError(
            f"the SSH host key of {hostname} ({key.get_name()} {fingerprint(key)}) is not in {link.known_hosts}, "
            f"and pvhpc never accepts an unknown host key. Compare the fingerprint with the one the host's "
            f"administrators publish (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub on {link.host}), then add it: "
            f"ssh-keyscan {port}{link.host} >> {link.known_hosts}"
        )


class _QuickAckSocket(socket.socket):
    """A TCP socket that acknowledges at once what it receives.

    sshd does not set TCP_NODELAY on a connection without a terminal, so it
    holds back the last piece of each large frame until the previous one is
    acknowledged; with the usual delayed ACK that costs some 20-40 ms a frame.
    Acknowledging every read at once removes that wait.
    """

    def recv(self, size, flags=0):
        data = super().recv(size, flags)
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)   # the kernel clears it again: set it each time
        return data


def _dial(host: str, port: int, timeout: float) -> socket.socket:
    plain = socket.create_connection((host, port), timeout=timeout)
    sock = _QuickAckSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # tunnels carry interactive frames
    return sock


class SSHLink:
    """One shared SSH connection to a login host, opened on first use and again on the first use after a drop.

    A failed attempt is not repeated at once: attempts are spaced by a back-off
    that doubles up to BACKOFF_MAX, so an unreachable host costs one timeout
    now and then, not one per command.
    """

    def __init__(self, host: str, user: str, key_file: Path, known_hosts: Path, port: int = 22,
                 keepalive: float = 15, connect_timeout: float = 10):
        self.host, self.port, self.user = host, port, user
        self.key_file, self.known_hosts = Path(key_file), Path(known_hosts)
        self.keepalive, self.connect_timeout = keepalive, connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._backoff = 0.0
        self._next_attempt = 0.0
        self._last_error: SSHError | None = None
        # Commands are short; a few at once is all the tracker and the API ever need.
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="pvhpc-ssh")
        #: how many connections were made so far (1 while nothing dropped)
        self.connections = 0

    @classmethod
    def from_config(cls, cfg) -> "SSHLink":
        return cls(cfg.host, cfg.user, cfg.key_file, cfg.known_hosts, cfg.port, cfg.keepalive, cfg.connect_timeout)

    @property
    def name(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"

    # -- the connection -----------------------------------------------------------------------------

    async def check(self) -> None:
        """Connect now (at service start): a host that cannot be used is an error before anything is served."""
        with self._lock:
            self._next_attempt = 0.0   # a start-up check is never deferred by an earlier failure
        await self._in_thread(self.transport)

    def transport(self) -> paramiko.Transport:
        """The live connection, made now if there is none (blocking: call it from a thread)."""
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                log.warning("SSH connection to %s was lost; reconnecting", self.name)
                self._discard()
            wait = self._next_attempt - time.monotonic()
            if wait > 0:
                raise SSHError(f"{self.last_error_text()} (next attempt in {wait:.1f} s)")
            try:
                self._client = self._connect()
            except SSHError as e:
                self._last_error = e
                self._backoff = min(BACKOFF_MAX, self._backoff * 2 if self._backoff else BACKOFF_FIRST)
                self._next_attempt = time.monotonic() + self._backoff
                raise
            self._backoff, self._next_attempt, self._last_error = 0.0, 0.0, None
            self.connections += 1
            log.info("SSH connection to %s open (connection %d)", self.name, self.connections)
            return self._client.get_transport()

    def last_error_text(self) -> str:
        return str(self._last_error) if self._last_error else f"cannot connect to {self.name}"

    def _connect(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        try:
            # Only the configured file: the site's own list of trusted hosts, not whatever ~/.ssh holds.
            client.load_host_keys(str(self.known_hosts))
        except OSError as e:
            raise SSHError(f"cannot read known_hosts {self.known_hosts}: {e.strerror}") from None
        client.set_missing_host_key_policy(_RefuseUnknown(self))
        try:
            sock = _dial(self.host, self.port, self.connect_timeout)
            client.connect(
                self.host, self.port, username=self.user, key_filename=str(self.key_file), sock=sock,
                look_for_keys=False, allow_agent=False, timeout=self.connect_timeout,
                banner_timeout=self.connect_timeout, auth_timeout=self.connect_timeout,
            )
        except HostKeyError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyError(
                f"the SSH host key of {self.host}:{self.port} ({e.key.get_name()} {fingerprint(e.key)}) does not "
                f"match the one in {self.known_hosts} ({fingerprint(e.expected_key)}): the host was reinstalled, "
                f"or something is in between. pvhpc will not connect until known_hosts is corrected."
            ) from None
        except paramiko.AuthenticationException as e:
            client.close()
            raise SSHError(f"{self.name} refused the key {self.key_file}: {e}") from None
        except (paramiko.SSHException, OSError, EOFError) as e:
            client.close()
            if isinstance(e, paramiko.ssh_exception.NoValidConnectionsError):
                e = next(iter(e.errors.values()))   # say why ("Connection refused"), not only that it failed
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e) or type(e).__name__
            raise SSHError(f"cannot connect to SSH host {self.name}: {reason}") from None
        transport = client.get_transport()
        # Keep-alives make a half-open connection (a rebooted host, a dropped NAT entry) show as dead.
        transport.set_keepalive(max(1, int(self.keepalive)))
        return client

    def _discard(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _lost(self, transport: paramiko.Transport) -> None:
        """Forget a connection that failed under us, unless it was replaced meanwhile."""
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._discard()

    def close(self) -> None:
        with self._lock:
            self._discard()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _channel(self, opener) -> paramiko.Channel:
        """Open a channel; a connection that turns out dead is replaced once, since nothing has run yet."""
        for attempt in (1, 2):
            transport = self.transport()
            try:
                return opener(transport)
            except paramiko.ChannelException:
                raise
            except (paramiko.SSHException, EOFError, OSError) as e:
                self._lost(transport)
                if attempt == 2:
                    raise SSHError(f"SSH connection to {self.name} failed: {e or type(e).__name__}") from None
        raise AssertionError("unreachable")

    # -- commands -----------------------------------------------------------------------------------

    async def run(self, command: str, input: str | None = None, timeout: float = 30) -> tuple[int, str, str]:
        """Run one shell command line on the login host; (exit status, stdout, stderr).

        Raises SSHError when the answer is unknown: not connected, the connection
        dropped while it ran, or it did not finish in time.
        """
        return await self._in_thread(self._run, command, input, timeout)

    def _run(self, command: str, input: str | None, timeout: float) -> tuple[int, str, str]:
        deadline = time.monotonic() + timeout
        channel = self._channel(lambda t: t.open_session(timeout=max(1.0, timeout)))
        try:
            channel.exec_command(command)
            if input is not None:
                channel.sendall(input.encode())
            channel.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                _drain(channel, out, err)
                if channel.eof_received or channel.closed:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # Closing the channel hangs up on the command; whether it did its work is unknown.
                    raise SSHError(f"did not finish within {timeout:g} s on {self.name}")
                select.select([channel], [], [], min(remaining, 0.25))
            # The exit status follows the end of output (or the channel closes without one).
            channel.status_event.wait(max(0.0, deadline - time.monotonic()))
            _drain(channel, out, err)
            status = channel.exit_status if channel.exit_status_ready() else -1
            if status == -1:
                raise SSHError(f"the SSH connection to {self.name} was lost while the command ran: "
                               "its outcome is unknown")
            return status, out.decode(errors="replace"), err.decode(errors="replace")
        except (paramiko.SSHException, EOFError, OSError) as e:
            raise SSHError(f"the SSH connection to {self.name} failed while the command ran: {e}") from None
        finally:
            channel.close()

    # -- tunnels ------------------------------------------------------------------------------------

    def open_tunnel(self, host: str, port: int, timeout: float = 15) -> paramiko.Channel:
        """A direct-tcpip channel to host:port as seen from the login host (blocking: call it from a thread)."""
        try:
            return self._channel(lambda t: t.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0),
                                                          timeout=timeout))
        except paramiko.ChannelException as e:
            raise TunnelRefused(f"{self.name} cannot connect to {host}:{port}: {e.text or e.code}") from None


def _drain(channel: paramiko.Channel, out: bytearray, err: bytearray) -> None:
    while channel.recv_ready():
        out += channel.recv(CHUNK)
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(CHUNK)
