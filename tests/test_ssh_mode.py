"""SSH mode: scheduler commands on a login host and session tunnels, over one paramiko connection.

The login host is a real OpenSSH sshd started by the test on a loopback port,
with keys the test makes (conftest.SSHDaemon). Its commands run with the
test's ``bin`` first on PATH, where shims record each Slurm command before
running the real one: that is how a test sees that a command ran *there*.
The first tests are pure logic (quoting, config) and need none of this.
"""

from __future__ import annotations

import asyncio
import copy
import os
import re
import shlex
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from pvhpc import config
from pvhpc.scheduler.runners import CommandUnavailable, SSHRunner
from pvhpc.scheduler import SchedulerUnavailable
from pvhpc.scheduler.slurm_cli import SlurmCLI
from pvhpc.client.wslink import WslinkClient

from tests.harness.cluster import job, live
from tests.helpers import MINIMAL_SITE as BASE
from tests.helpers import foreground_fraction, render, render_async, wait_until

SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "sacct", "scontrol", "sinfo")


# -- pure logic: what the login host's shell is given, and the config section ----------------------

class FakeLink:
    """Records command lines; answers like a link would (or fails like a dropped one)."""

    name = "tester@login:22"

    def __init__(self, fail: Exception | None = None, status: int = 0):
        self.lines: list[str] = []
        self.fail, self.status = fail, status

    async def run(self, command, input=None, timeout=30):
        self.lines.append(command)
        if self.fail:
            raise self.fail
        return self.status, "", "bash: line 1: sbatch: command not found" if self.status == 127 else ""


def test_every_word_is_quoted_for_the_remote_shell_and_the_environment_goes_in_front():
    link = FakeLink()
    runner = SSHRunner(link, {"SLURM_CONF": "/etc/my slurm/slurm.conf", "EMPTY": ""})
    argv = ["sbatch", "--comment=x; rm -rf / #", "--job-name=$(id)", "it's", "*", "a\nb"]
    asyncio.run(runner.run(argv))
    line = link.lines[0]
    assert shlex.split(line) == ["env", "LC_ALL=C", "SLURM_CONF=/etc/my slurm/slurm.conf", "EMPTY=", *argv]
    assert "'--comment=x; rm -rf / #'" in line and "'--job-name=$(id)'" in line


def test_environment_names_env_would_read_as_options_are_refused():
    with pytest.raises(ValueError, match="'-u' is not an environment variable name"):
        SSHRunner(FakeLink(), {"-u": "x"})


def test_a_lost_connection_is_an_unknown_answer_never_job_gone():
    from pvhpc.scheduler.ssh import SSHError

    slurm = SlurmCLI(SSHRunner(FakeLink(fail=SSHError("the SSH connection to login was lost"))))
    with pytest.raises(SchedulerUnavailable, match="squeue via SSH: the SSH connection to login was lost"):
        asyncio.run(slurm.query(["17"]))
    # A Slurm tool missing on the login host means the scheduler was never asked, not that it said no.
    with pytest.raises(CommandUnavailable, match="cannot run sbatch on tester@login:22: .*command not found"):
        asyncio.run(SSHRunner(FakeLink(status=127)).run(["sbatch"]))


def test_ssh_section_is_validated_like_the_rest(tmp_path):
    key, known = tmp_path / "key", tmp_path / "known_hosts"
    key.write_text("k")
    known.write_text("")

    def parse(section, **top):
        data = copy.deepcopy(BASE)
        data.update(top, ssh=section)
        return config.parse(data, "site.yaml")

    good = {"host": "login.example.org", "key_file": str(key), "known_hosts": str(known)}
    cfg = parse(good).ssh
    assert (cfg.host, cfg.port, cfg.key_file, cfg.known_hosts, cfg.keepalive) == \
        ("login.example.org", 22, key, known, 15.0)
    assert config.parse(copy.deepcopy(BASE), "site.yaml").ssh is None
    for section, top, message in [
        ({}, {}, "ssh.host: is required"),
        ({**good, "host": "a b"}, {}, "ssh.host: 'a b' is not a host name"),
        ({**good, "port": 0}, {}, "ssh.port: must be between 1 and 65535"),
        ({k: v for k, v in good.items() if k != "key_file"}, {}, "ssh.key_file: is required"),
        ({**good, "key_file": "id_rsa"}, {}, "ssh.key_file: id_rsa is not an absolute path"),
        ({**good, "known_hosts": str(tmp_path / "nope")}, {},
         f"ssh.known_hosts: {tmp_path / 'nope'} is not a readable file (add the host's key with: ssh-keyscan "
         f"login.example.org >> {tmp_path / 'nope'})"),
        ({**good, "keepalive": 0}, {}, "ssh.keepalive: must be a number of seconds above 0"),
        ({**good, "hostname": "x"}, {}, "ssh.hostname: unknown key"),
        (good, {"scheduler": {"backend": "pyslurm"}}, "ssh.host: SSH mode runs Slurm's command-line tools"),
    ]:
        with pytest.raises(config.ConfigError) as e:
            parse(section, **top)
        assert str(e.value).startswith("site.yaml: " + message), (str(e.value), message)


# -- the link on a real sshd ------------------------------------------------------------------------

def link_to(sshd, **kwargs):
    from pvhpc.scheduler.ssh import SSHLink

    return SSHLink("127.0.0.1", "root", sshd.client_key, kwargs.pop("known_hosts", sshd.known_hosts),
                   sshd.port, **kwargs)


@pytest.mark.sshd
def test_commands_on_the_login_host_get_every_word_stdin_status_and_environment(sshd):
    link = link_to(sshd)
    runner = SSHRunner(link, {"PVHPC_TEST": "a b $HOME `id`"})

    async def go():
        words = ["it's", "$(id)", "*", "a;b", "two  spaces", "new\nline", "", "--x=\"q\""]
        echoed = await runner.run(["printf", "%s|", *words])
        env = await runner.run(["printenv", "PVHPC_TEST"])
        piped = await runner.run(["cat"], input="#!/bin/bash\n#SBATCH --x\necho 'hi'\n")
        failed = await runner.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        return words, echoed, env, piped, failed

    try:
        words, echoed, env, piped, failed = asyncio.run(go())
        assert echoed.ok and echoed.stdout == "|".join(words) + "|"
        assert env.stdout == "a b $HOME `id`\n"
        assert piped.stdout == "#!/bin/bash\n#SBATCH --x\necho 'hi'\n"
        assert (failed.returncode, failed.stdout, failed.stderr) == (3, "out\n", "err\n")
        with pytest.raises(CommandUnavailable, match=r"cannot run no-such-command on root@127\.0\.0\.1"):
            asyncio.run(runner.run(["no-such-command"]))
        with pytest.raises(CommandUnavailable,
                           match=r"sleep via SSH: did not finish within 0.5 s on root@127\.0\.0\.1"):
            asyncio.run(runner.run(["sleep", "5"], timeout=0.5))
        assert link.connections == 1, "the connection was not reused"
    finally:
        link.close()


@pytest.mark.sshd
def test_unknown_changed_and_unreachable_hosts_are_clear_errors_and_keys_are_never_learned(sshd, tmp_path):
    from pvhpc.scheduler.ssh import HostKeyError, SSHError, SSHLink

    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    link = link_to(sshd, known_hosts=empty)
    with pytest.raises(HostKeyError) as e:
        asyncio.run(link.check())
    message = str(e.value)
    assert f"the SSH host key of [127.0.0.1]:{sshd.port} (ssh-ed25519 SHA256:" in message
    assert f"is not in {empty}" in message and "never accepts an unknown host key" in message
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in message
    fp = subprocess.run(["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], capture_output=True, text=True).stdout.split()[1]
    assert fp in message, "the fingerprint differs from OpenSSH's"
    assert empty.read_text() == "", "the unknown key was written to known_hosts"

    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {Path(f'{other}.pub').read_text()}")
    with pytest.raises(HostKeyError, match=rf"host key of 127\.0\.0\.1:{sshd.port} .* does not match the one in "
                                           rf"{re.escape(str(changed))}"):
        asyncio.run(link_to(sshd, known_hosts=changed).check())

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    down = SSHLink("127.0.0.1", "root", sshd.client_key, sshd.known_hosts, port, connect_timeout=3)
    with pytest.raises(SSHError, match=rf"cannot connect to SSH host root@127\.0\.0\.1:{port}: .*refused"):
        asyncio.run(down.check())
    # The next command comes too soon for another attempt: it fails at once, saying why.
    with pytest.raises(CommandUnavailable, match="refused.*next attempt in"):
        asyncio.run(SSHRunner(down).run(["true"]))


@pytest.mark.sshd
def test_a_dropped_connection_is_made_again_on_next_use(sshd):
    link = link_to(sshd)
    runner = SSHRunner(link)
    try:
        assert asyncio.run(runner.run(["echo", "one"])).stdout == "one\n"
        assert sshd.drop_connections() > 0
        wait_until(lambda: not sshd.connection_processes(), 5, message="the connection's sshd processes exited")
        assert asyncio.run(runner.run(["echo", "two"])).stdout == "two\n"
        assert link.connections == 2
        # A command cut off mid-run has an unknown outcome: never an exit status made up for it.
        async def cut():
            task = asyncio.ensure_future(runner.run(["sleep", "8"]))
            await asyncio.sleep(1)
            sshd.drop_connections()
            return await task
        with pytest.raises(CommandUnavailable,
                           match="sleep via SSH: the SSH connection to .* (was lost|failed) while the command ran"):
            asyncio.run(cut())
    finally:
        link.close()


def server_peers(port: int) -> set[str]:
    """Names of the processes that hold connections to a local server's port (their side of them)."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return set(re.findall(r'\(\("([^"]+)"', out))


@pytest.mark.sshd
def test_a_loopback_forward_carries_large_data_through_sshd_and_follows_a_new_connection(sshd):
    from pvhpc.frontends.tunnel import LoopbackForward

    server = socket.create_server(("127.0.0.1", 0))
    target = server.getsockname()[1]

    def echo():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(65536), b"")],
                             daemon=True).start()

    threading.Thread(target=echo, daemon=True).start()
    link = link_to(sshd)
    forward = LoopbackForward(link, "127.0.0.1", target)
    try:
        def round_trip(size: int) -> bytes:
            payload = os.urandom(size)
            with socket.create_connection(("127.0.0.1", forward.local_port), timeout=20) as c:
                sender = threading.Thread(target=c.sendall, args=(payload,))
                sender.start()   # both ways at once: a full window one way must not stall the other
                got = bytearray()
                while len(got) < size:
                    chunk = c.recv(1 << 20)
                    assert chunk, "the forward closed early"
                    got += chunk
                    if len(got) > 1000:
                        peers = server_peers(target)
                sender.join()
            assert bytes(got) == payload
            return peers

        assert round_trip(8 << 20) == {"sshd"}, "the echo server was reached by something other than sshd"
        sshd.drop_connections()
        wait_until(lambda: not sshd.connection_processes(), 5, message="the connection's sshd processes exited")
        round_trip(100_000)
        assert link.connections == 2
    finally:
        forward.close()
        link.close()
        server.shutdown(socket.SHUT_RDWR)   # wakes echo's accept(), which a close alone leaves waiting
        server.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", forward.local_port), timeout=2).close()


# -- pvhpc serve in SSH mode on the real cluster ---------------------------------------------------

def install_shims(sshd, cluster) -> Path:
    """Slurm commands run through the login host's PATH (the test cluster's own release's) write one line each to
    the returned log."""
    log = sshd.root / "commands.log"
    log.touch()
    for name in SLURM_COMMANDS:
        shim = sshd.bin / name
        shim.write_text(f'#!/bin/sh\nprintf "%s SLURM_CONF=%s\\n" "{name} $*" "$SLURM_CONF" >> {log}\n'
                        f'exec {cluster.slurm.program(name)} "$@"\n')
        shim.chmod(0o755)
    return log


def ssh_service(service_factory, sshd, cluster, name="ssh", **ssh_extra):
    # No scheduler.slurm_prefix: the login host's PATH finds Slurm's tools (the shims above).
    scheduler = {"environment": {"SLURM_CONF": cluster.environment()["SLURM_CONF"]}, "command_timeout": 20}
    return service_factory(name, ssh=sshd.ssh_section(**ssh_extra), frontend={"kind": "builtin"}, scheduler=scheduler)


def proxy_url(svc, sid: str) -> str:
    return f"ws://127.0.0.1:{svc.port}/proxy?sessionId={sid}&path=ws"


@pytest.mark.sshd
@pytest.mark.cluster
def test_ssh_mode_submits_tracks_and_proxies_a_session_that_renders(service_factory, sshd, cluster, artifacts):
    commands = install_shims(sshd, cluster)
    svc = ssh_service(service_factory, sshd, cluster).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    sid = session["id"]
    assert session["state"] == "ready"
    log = commands.read_text()
    conf = cluster.environment()["SLURM_CONF"]
    assert re.search(rf"^sbatch --parsable --job-name=\S+ --partition=cpu .* SLURM_CONF={re.escape(conf)}$", log,
                     re.M), log
    assert re.search(rf"^squeue -h -t all -j (\S+,)?{session['job_id']}\b", log, re.M), log

    # The proxy dials a loopback forward, whose connections sshd makes to the node: the server sees sshd only.
    async def render_and_look() -> tuple[bytes, set[str]]:
        held = await WslinkClient.connect(proxy_url(svc, sid), session["secret"])
        peers = server_peers(session["port"])
        held.close()
        return await render_async(proxy_url(svc, sid), session["secret"]), peers

    image, peers = asyncio.run(render_and_look())
    (artifacts / "through-ssh-tunnel.jpg").write_bytes(image)
    assert foreground_fraction(image) > 0.01
    assert peers == {"sshd"}, f"the session's server was reached by {peers}, not through the SSH tunnel"

    # Tracking goes on over SSH: new squeue lines keep coming while the session is ready.
    lines = len(commands.read_text().splitlines())
    wait_until(lambda: len(commands.read_text().splitlines()) > lines + 1, 10, message="tracking over SSH")
    assert client.get(sid)["state"] == "ready"

    # The session's loopback forward is made for it and closed with it.
    forward_port = int(re.search(rf"session {re.escape(sid[:6])}…: tunnel 127\.0\.0\.1:(\d+)",
                                 svc.log.read_text()).group(1))
    socket.create_connection(("127.0.0.1", forward_port), timeout=2).close()

    ended = client.request("DELETE", f"/paraview/{sid}")
    assert ended["state"] == "ended"
    assert re.search(rf"^scancel {session['job_id']} ", commands.read_text(), re.M)
    wait_until(lambda: not live(job(cluster, session["job_id"])), 20, message="the job left the queue")
    wait_until(lambda: not _accepts(forward_port), 5, message="the session's forward closed")


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.mark.sshd
@pytest.mark.cluster
def test_the_service_refuses_to_start_with_an_unknown_host_key_or_an_unreachable_host(service_factory, sshd,
                                                                                     cluster, tmp_path):
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    svc = ssh_service(service_factory, sshd, cluster, "unknown-key", known_hosts=str(empty))
    with pytest.raises(RuntimeError, match="pvhpc serve exited with 2"):
        svc.start()
    log = svc.log.read_text()
    assert f"the SSH host key of [127.0.0.1]:{sshd.port}" in log and f"is not in {empty}" in log
    assert f"ssh-keyscan -p {sshd.port} 127.0.0.1 >> {empty}" in log
    assert empty.read_text() == ""
    assert "pvhpc listening" not in log

    sshd.stop()
    svc = ssh_service(service_factory, sshd, cluster, "unreachable")
    with pytest.raises(RuntimeError, match="pvhpc serve exited with 2"):
        svc.start()
    assert f"cannot connect to SSH host root@127.0.0.1:{sshd.port}" in svc.log.read_text()


@pytest.mark.sshd
@pytest.mark.cluster
def test_a_dropped_ssh_connection_is_made_again_and_the_live_session_keeps_working(service_factory, sshd, cluster):
    commands = install_shims(sshd, cluster)
    svc = ssh_service(service_factory, sshd, cluster, keepalive=1).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    sid, url = session["id"], proxy_url(svc, session["id"])
    assert foreground_fraction(render(url, session["secret"])) > 0.01

    def tracked_since(mark: int) -> bool:
        return sum(1 for line in commands.read_text().splitlines()[mark:] if line.startswith("squeue")) >= 2

    # 1. Every connection's sshd processes are killed; the listener stays up.
    before = set(sshd.connection_processes())
    assert sshd.drop_connections() > 0
    wait_until(lambda: not (before & set(sshd.connection_processes())), 5, message="the old connection is gone")
    mark = len(commands.read_text().splitlines())
    assert foreground_fraction(render(url, session["secret"])) > 0.01
    wait_until(lambda: tracked_since(mark), 15, message="tracking after the drop")
    assert client.get(sid)["state"] == "ready"
    assert "open (connection 2)" in svc.log.read_text(), "the service did not reconnect"

    # 2. sshd itself goes away for a while: the session is not given up, and comes back when sshd does.
    sshd.stop()
    time.sleep(4)
    assert client.get(sid)["state"] in ("ready", "unknown"), "a lost SSH connection was read as the job ending"
    sshd.start()
    mark = len(commands.read_text().splitlines())
    wait_until(lambda: tracked_since(mark), 45, message="tracking after sshd came back")
    wait_until(lambda: client.get(sid)["state"] == "ready", 15, message="the session is ready again")
    assert foreground_fraction(render(url, session["secret"])) > 0.01
    assert "open (connection 3)" in svc.log.read_text()
    assert client.request("DELETE", f"/paraview/{sid}")["state"] == "ended"


def test_a_site_may_name_its_own_locale_for_the_local_runner():
    """Local commands speak the C locale unless the site's environment says otherwise (it once raised)."""
    from pvhpc.scheduler.runners import LocalRunner

    assert LocalRunner().env["LC_ALL"] == "C"
    assert LocalRunner({"LC_ALL": "C.UTF-8"}).env["LC_ALL"] == "C.UTF-8"
