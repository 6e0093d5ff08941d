"""Nothing of a session in another user's reach on a shared compute node.

Every user of a node can read every process's command line (``ps``, /proc/<pid>/cmdline), not its environment
nor the job's private files. So no process of a session (the job script's bash, the launcher, the job helper,
Xvfb, xauth, the MPI launcher and its daemons, the pvserver ranks, the web server) may carry the session's
secret, report token or id, its X cookie or its pvserver connect id there; and the pvserver ranks of a parallel
session take only their own web server. Shown by the real job script run here with each program it starts
recorded (xauth lives for milliseconds), by the pvserver guard (pvhpc/node/pvserver_guard.c) in a program of
its own, and on the real cluster by a second Unix user who watches every command line on the node while a
user's sessions start and run, and tries the ranks of one first.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest

from pvhpc import config
from pvhpc import runtime
from pvhpc.paths import JOB_HELPER, JOBSCRIPTS_DIR
from pvhpc.sessions.job import build_job
from pvhpc.jobs.template import JobTemplate
from pvhpc.sessions.spec import parse_spec

from tests.helpers import (PVSERVER, foreground_fraction, hues, processes_of_cluster_job, render, render_by_process,
                           wait_until)

ROOT = Path(__file__).resolve().parent.parent
NODE_DIR = ROOT / "pvhpc" / "node"
LAUNCHER = NODE_DIR / "supervisor.py"


def job_values(script: str) -> dict[str, str]:
    """The ``export NAME=VALUE`` values of a rendered job script, as the shell reads them."""
    values = {}
    for line in script.splitlines():
        if line.startswith("export ") and "=" in line and "$" not in line.split("=", 1)[0]:
            for word in shlex.split(line[len("export "):]):
                name, _, value = word.partition("=")
                values[name] = value
    return values


@pytest.fixture
def node(monkeypatch):
    """pvhpc's node-side modules as the job runs them: by file name, beside each other."""
    monkeypatch.syspath_prepend(str(NODE_DIR))
    import supervisor

    yield supervisor
    for name in ("supervisor", "jobhelper"):
        sys.modules.pop(name, None)


# -- values are filled in once -------------------------------------------------------------------------------

def test_a_data_file_named_like_a_placeholder_keeps_its_name(tmp_path, node, monkeypatch):
    """``${port}x.vtk`` is a file's name: the launcher fills in the command's own placeholders, never what a
    value holds, and neither does the argv wrapper after it; a ``$`` of the command's own stays too."""
    data = tmp_path / "data"
    data.mkdir()
    names = ["${port}x.vtk", "a$${secret}$.vtk"]
    for name in names:
        (data / name).write_text("")
    site = config.parse({
        "partitions": {"cpu": {}},
        "applications": {
            "paraview": {"data_roots": [str(data)]},
            "viz": {"data_roots": [str(data)], "ready": {"line": "up"},
                    "command": ["${pvpython}", "/opt/app/viz.py", "--port", "${port}", "--load-file", "${load_file}",
                                "--authKey", "${secret}", "--note", "costs $$5, it's $(rm -rf ~) at ${port}$"]}}})
    monkeypatch.setenv("PVHPC_LISTEN", "any")
    for name in names:
        spec = parse_spec(site, {"application": "paraview", "data": name}, strict=True)
        command = json.loads(job_values(build_job(site, spec, "alice", "sid", "j", "s", "t").script)[
            "PVHPC_LAUNCH_COMMAND"])
        argv, port = node.server_argv(command, {"port_file": True}, str(tmp_path))
        assert argv[argv.index("--load") + 1] == name and port == 0
        assert argv[argv.index("--ready-file") + 1] == str(tmp_path / "port")

        spec = parse_spec(site, {"application": "viz", "data": name}, strict=True)
        command = json.loads(job_values(build_job(site, spec, "alice", "sid", "j", "s", "t").script)[
            "PVHPC_LAUNCH_COMMAND"])
        argv, port = node.server_argv(command, {"line": "up"}, str(tmp_path))
        assert argv[1] == node.ARGV_WRAPPER and "S3CRET" not in " ".join(argv)
        # What the server's sys.argv becomes: the wrapper's pass (argv_secret.py), run for real below.
        filled = [node.expand(arg, {"secret": "S3CRET"}) for arg in argv[3:]]
        assert filled[filled.index("--load-file") + 1] == name
        assert filled[filled.index("--authKey") + 1] == "S3CRET"
        assert filled[filled.index("--port") + 1] == str(port) != "0"
        assert filled[-1] == f"costs $$5, it's $(rm -rf ~) at {port}$"


def test_the_argv_wrapper_fills_the_secret_and_connect_id_in_the_server_only(tmp_path, node):
    """argv_secret.py, run as the launcher runs it: the script's sys.argv has the values, its command line the
    placeholders, and a value's own ``${...}`` stays as it is."""
    script = tmp_path / "server.py"
    script.write_text("import json, os, sys\n"
                      "cmdline = open('/proc/self/cmdline', 'rb').read().decode()\n"
                      "print(json.dumps({'argv': sys.argv[1:], 'cmdline': cmdline,"
                      " 'env': {k: v for k, v in os.environ.items() if k.startswith('PVHPC_')}}))\n")
    templates = ["--authKey", "${secret}", "--connect-id", "${connect_id}", "--load",
                 node.escape("${connect_id}.vtk"), "--price", "$$1"]
    env = dict(os.environ, PVHPC_SECRET="s3cret-value", PVHPC_CONNECT_ID="987654321")
    proc = subprocess.run([sys.executable, NODE_DIR / "argv_secret.py", script, *templates], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["argv"] == ["--authKey", "s3cret-value", "--connect-id", "987654321", "--load", "${connect_id}.vtk",
                            "--price", "$1"]
    assert "s3cret-value" not in seen["cmdline"] and "987654321" not in seen["cmdline"]
    assert "PVHPC_SECRET" not in seen["env"] and "PVHPC_CONNECT_ID" not in seen["env"]
    # A server that takes its secret from the environment itself (pvhpc's own) and names only the connect id.
    proc = subprocess.run([sys.executable, NODE_DIR / "argv_secret.py", script, "--connect-id", "${connect_id}"],
                          env=env, capture_output=True, text=True, timeout=60)
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["argv"] == ["--connect-id", "987654321"] and seen["env"]["PVHPC_SECRET"] == "s3cret-value"
    # pvhpc's own server installs pvhpc's hooks itself, as the wrapper did: once in a process, not twice (which
    # would hook wslink's exits twice, and save and load the state twice).
    hooks = tmp_path / "hooks.py"
    hooks.write_text("import pvstate, wslink_exits\nbefore = list(wslink_exits.before_idle_stop)\n"
                     "pvstate.install()\nwslink_exits.install()\n"
                     "print(len(before), len(wslink_exits.before_idle_stop))\n")
    proc = subprocess.run([sys.executable, NODE_DIR / "argv_secret.py", hooks, "${connect_id}"],
                          env=dict(env, PVHPC_STATE_SAVE=str(tmp_path / "state")), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    before, after = proc.stdout.split()
    assert before == after == "1", proc.stdout


def test_a_command_that_would_show_the_connect_id_is_refused(tmp_path, node, monkeypatch):
    monkeypatch.setenv("PVHPC_LISTEN", "any")
    with pytest.raises(node.CommandProblem, match="only to a Python script"):
        node.server_argv(["/opt/app/server", "--ds-port", "5", "--connect-id", "${connect_id}"], {"line": "x"},
                         str(tmp_path))


# -- the job script: what each program it starts is given --------------------------------------------------

class Reports(http.server.ThreadingHTTPServer):
    """pvhpc's report endpoint, as a job sees it: each report's path, token and event."""

    def __init__(self):
        self.seen: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.seen.append((self.path, self.headers.get("Authorization", ""), body))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def recorder(path: Path, real: str, log: Path) -> str:
    """A program that writes down the argv it was given, then becomes ``real`` with it (same process)."""
    path.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    f"with open({str(log)!r}, 'a') as f:\n    f.write(json.dumps(sys.argv) + '\\n')\n"
                    f"os.execv({real!r}, [{real!r}] + sys.argv[1:])\n")
    path.chmod(0o755)
    return str(path)


def run_job_script(tmp_path: Path, render_mode: str, reports: Reports, session_id: str, secret: str, token: str,
                   command: list[str], ready: dict) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """The real job script, run here by bash as Slurm would run it, with the helper's python, xauth and Xvfb
    recorded: every argv the job gave them, those that lived for milliseconds too."""
    bin_dir, log = tmp_path / "bin", tmp_path / "argv.jsonl"
    bin_dir.mkdir(exist_ok=True)
    python = recorder(bin_dir / "python3", "/usr/bin/python3", log)
    for program in ("xauth", "Xvfb"):
        found = shutil.which(program)
        if found:
            recorder(bin_dir / program, found, log)
    script = JobTemplate(JOBSCRIPTS_DIR / "paraview-web.sh").render(dict(
        helper_python=python, job_helper=JOB_HELPER, launcher=JOB_HELPER.parent / "supervisor.py",
        command=json.dumps(command), ready=json.dumps(ready), server_listen="any",
        report_url=f"{reports.url}/api/v1/sessions/{session_id}/report", render_mode=render_mode, start_timeout=60,
        secret=secret, report_token=token, pythonpath="", venv="", log_file="", parallel="", state_save="",
        state_load="", continues="", state_roots="", data_roots="", input_idle="", idle_timeout="", watchdog="", modules="", modules_init="",
        module_paths=""))
    (tmp_path / "job.sh").write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
           "SLURM_JOB_ID": "1", "SLURMD_NODENAME": "node01"}
    proc = subprocess.run(["/bin/bash", tmp_path / "job.sh"], env=env, capture_output=True, text=True, timeout=120)
    argvs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, argvs


def test_a_job_that_fails_reports_through_its_environment(tmp_path):
    """The job script's own failure (here an unknown render mode) is reported by the job helper, whose command
    line says nothing of the session: the report URL (it names the session) comes in its environment."""
    reports = Reports()
    session_id, token = "0123456789abcdef" * 3, "report-token-value"
    proc, argvs = run_job_script(tmp_path, "nonesuch", reports, session_id, "s3cret", token, ["true"], {"line": "x"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert [(path, auth, body["event"]) for path, auth, body in reports.seen] == [
        (f"/api/v1/sessions/{session_id}/report", f"token {token}", "failed")]
    helper = [argv for argv in argvs if str(JOB_HELPER) in argv]
    assert helper and "unknown render mode" in " ".join(helper[0]), argvs
    assert not [argv for argv in argvs if session_id in " ".join(argv) or token in " ".join(argv)], argvs


@pytest.mark.paraview
def test_no_program_of_a_job_is_given_its_secret_token_id_or_x_cookie(tmp_path):
    """A whole session's job, its server a stand-in that says it is ready: Xvfb and xauth (the cookie goes to
    xauth on its stdin), the launcher (its report URL in its environment) and the server (its secret inside its
    own process, through the argv wrapper) are started with none of the session's values in their argv."""
    reports = Reports()
    session_id, secret, token = "fedcba9876543210" * 3, "the-session-secret-value", "the-report-token-value"
    server = tmp_path / "server.py"
    server.write_text("import os, sys, time\n"
                      f"assert sys.argv[sys.argv.index('--authKey') + 1] == {secret!r}, sys.argv\n"
                      "open(os.path.join(os.path.dirname(__file__), 'server-cmdline'), 'wb').write("
                      "open('/proc/self/cmdline', 'rb').read())\n"
                      "print('server: up', flush=True)\ntime.sleep(1)\n")
    proc, argvs = run_job_script(tmp_path, "xvfb", reports, session_id, secret, token,
                                 ["/usr/bin/python3", str(server), "--port", "${port}", "--authKey", "${secret}"],
                                 {"line": "server: up"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [body["event"] for _, _, body in reports.seen] == ["ready", "exited"], proc.stdout
    assert all(path == f"/api/v1/sessions/{session_id}/report" for path, _, _ in reports.seen)
    programs = {Path(argv[0]).name for argv in argvs}
    assert {"xauth", "Xvfb", "python3"} <= programs, argvs
    assert any(str(LAUNCHER) in argv for argv in argvs), argvs
    server_cmdline = (tmp_path / "server-cmdline").read_bytes().decode()
    assert "${secret}" in server_cmdline and "argv_secret.py" in server_cmdline
    cookie = re.compile(r"\b[0-9a-f]{32}\b")   # Xvfb's MIT-MAGIC-COOKIE-1, as the job script draws it
    for argv in [*argvs, server_cmdline.split("\0")]:
        line = " ".join(argv)
        assert not cookie.search(line), f"an X cookie on a command line: {argv}"
        for value in (session_id, secret, token):
            assert value not in line, f"{value} on a command line: {argv}"


# -- the pvserver guard -----------------------------------------------------------------------------------------

def test_runtime_install_builds_the_guard_and_says_when_it_cannot(tmp_path, monkeypatch):
    built = runtime.build_pvserver_guard(tmp_path)
    assert built == tmp_path / runtime.PVSERVER_GUARD and built.stat().st_mode & 0o777 == 0o755
    assert runtime.check_pvserver_guard(tmp_path).ok
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(runtime.RuntimeProblem, match=r"no C compiler \(/nonexistent/cc.*gcc and libc6-dev"):
        runtime.build_pvserver_guard(tmp_path / "elsewhere")
    missing = runtime.check_pvserver_guard(tmp_path / "elsewhere")
    assert not missing.ok and "pvhpc runtime install" in missing.detail and "no C compiler" in missing.detail
    (tmp_path / "elsewhere" / "wslink").mkdir(parents=True)
    (tmp_path / "elsewhere" / "wslink" / "__init__.py").write_text("")   # installed: only the guard is left to do
    with pytest.raises(runtime.RuntimeProblem, match="no C compiler"):
        runtime.install(tmp_path / "elsewhere")


def test_the_wheel_ships_the_guards_source():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["pvhpc"]
    source = runtime.PVSERVER_GUARD_SOURCE.relative_to(ROOT / "pvhpc").as_posix()
    assert any(fnmatch(source, pattern) for pattern in data), data


GUARDED_PROGRAM = """
import json, socket, sys
listener = socket.socket()
listener.bind(("0.0.0.0", int(sys.argv[1])))
listener.listen(8)
other = socket.socket()
other.bind(("0.0.0.0", 0))
other.listen(8)
print(json.dumps({"argv": sys.argv[2:], "cmdline": open("/proc/self/cmdline", "rb").read().decode(),
                  "other": other.getsockname()[1]}), flush=True)
for sock in (listener, listener, other):
    try:
        conn, _ = sock.accept()
    except ConnectionAbortedError:
        print("refused", flush=True)
        conn, _ = sock.accept()
    conn.sendall(b"welcome")
    print("took one", flush=True)
"""


def test_the_guard_gives_the_program_its_id_unseen_and_takes_only_its_own_users_clients(tmp_path):
    """The guard in a program of its own (Python as pvserver): its argv has the id, its command line the
    placeholder; on the guarded port another user's connection is closed before the program sees it, and the
    program then takes its own user's; another port is left alone."""
    if os.geteuid() != 0:
        pytest.fail("this test connects as another Unix user (nobody): run it as root (CI does)")
    guard = runtime.build_pvserver_guard(tmp_path)
    port = free_port()
    exe = os.path.realpath(sys.executable)
    env = dict(os.environ, LD_PRELOAD=str(guard), PVHPC_CONNECT_ID="1234567", PVHPC_GUARD_EXE=exe,
               PVHPC_GUARD_PORT=str(port))
    program = tmp_path / "program.py"
    program.write_text(GUARDED_PROGRAM)
    proc = subprocess.Popen([exe, program, str(port), "--connect-id=@PVHPC_CONNECT_ID@", "x@PVHPC_CONNECT_ID@y"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        said = json.loads(proc.stdout.readline())
        assert said["argv"] == ["--connect-id=1234567", "x1234567y"]
        assert "1234567" not in said["cmdline"] and "--connect-id=@PVHPC_CONNECT_ID@" in said["cmdline"]
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
        assert b"PVHPC_CONNECT_ID=1234567" in environ   # the original block: its owner's (and root's) to read

        def hello(port: int, user: str | None = None) -> str:
            client = f"import socket; s = socket.create_connection(('127.0.0.1', {port})); s.settimeout(10); " \
                     "print(repr(s.recv(16)))"
            argv = [sys.executable, "-c", client]
            if user:
                argv = ["runuser", "-u", user, "--", *argv]
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd="/").stdout.strip()

        assert hello(port, "nobody") == "b''"          # closed at once: it never reached the program
        assert proc.stdout.readline().strip() == "refused"
        assert hello(port) == "b'welcome'"              # this user's
        assert proc.stdout.readline().strip() == "took one"
        assert hello(port) == "b'welcome'"
        assert proc.stdout.readline().strip() == "took one"
        assert hello(said["other"], "nobody") == "b'welcome'"   # not the guarded port: not the guard's business
        assert proc.stdout.readline().strip() == "took one"
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()
    # In any other program (the MPI launcher, srun, an MPI daemon) it changes nothing: they pass argv on.
    other = subprocess.run(["/bin/echo", "--connect-id=@PVHPC_CONNECT_ID@"], env=env, capture_output=True,
                           text=True, timeout=10)
    assert other.stdout.strip() == "--connect-id=@PVHPC_CONNECT_ID@"
    # In its program, without an id it refuses to run at all.
    del env["PVHPC_CONNECT_ID"]
    bare = subprocess.run([exe, "-c", "print('ran')", "--connect-id=@PVHPC_CONNECT_ID@"], env=env,
                          capture_output=True, text=True, timeout=10)
    assert bare.returncode != 0 and "ran" not in bare.stdout and "PVHPC_CONNECT_ID" in bare.stderr


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


# -- a second user on the same node, on the real cluster ------------------------------------------------------

@pytest.fixture
def shared(unix_users):
    """World-readable, as a cluster's shared file system: pvhpc's node-side files, the data, a pvpython, and a
    directory of bob's own where his watcher writes what it saw."""
    d = Path(tempfile.mkdtemp(prefix="pvhpc-test-privacy-"))
    d.chmod(0o755)
    for f in NODE_DIR.glob("*.py"):
        shutil.copy(f, d / f.name)
    (d / "data").mkdir(mode=0o755)
    (d / "bob").mkdir()
    shutil.chown(d / "bob", unix_users["bob"])
    yield d
    shutil.rmtree(d, ignore_errors=True)


def private_site(shared: Path, runtime_dir: Path, cluster, **runtime_keys) -> dict:
    return dict(
        scheduler={**cluster.scheduler_config(), "submit_as": "user"},
        runtime={"pythonpath": str(runtime_dir), "job_helper": str(shared / JOB_HELPER.name), **runtime_keys},
        partitions={"cpu": {"walltime": {"default": 30, "max": 120}, "max_nodes": 2, "max_ranks": 2,
                            "max_ranks_per_node": 1}},
        applications={"paraview": {"data_roots": [str(shared / "data")], "server_script": str(shared / "pvweb_server.py"),
                                   "start_timeout": 120, "pvserver": PVSERVER}},
        auth={"kind": "header"}, frontend={"kind": "builtin"}, frontend_socket_group=None,
    )


def start_service(service_factory, unix_users, shared: Path, site: dict):
    svc = service_factory("privacy", directory=shared / "service", **site)
    subprocess.run(["chown", "-R", unix_users["service"], str(svc.dir)], check=True)
    return svc.start(as_user=unix_users["service"])


WATCHER = """
import os, sys, time
out, stop = sys.argv[1], sys.argv[2]
seen = set()
while True:
    last = os.path.exists(stop)
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    line = f.read().replace(b"\\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            if line:
                seen.add(line)
    if last:
        break
    time.sleep(0.02)
with open(out + ".tmp", "w") as f:
    f.write("\\n".join(sorted(seen)))
os.rename(out + ".tmp", out)
"""


class Watcher:
    """Bob reading every process's command line on the node, as often as he can, until told to stop."""

    def __init__(self, shared: Path, bob: str):
        self.out, self.stop_file, self.bob = shared / "bob" / "seen.txt", shared / "stop-watching", bob
        script = shared / "bob" / "watch.py"
        script.write_text(WATCHER)
        self.proc = subprocess.Popen(["runuser", "-u", bob, "--", "/usr/bin/python3", script, self.out,
                                      self.stop_file])

    def stop(self) -> list[str]:
        self.stop_file.touch()
        self.proc.wait(60)
        return self.out.read_text().splitlines()


def as_bob(bob: str, *argv, timeout=120, on=None, **env) -> subprocess.CompletedProcess:
    """``argv`` run as bob (on ``on``: a (cluster, node) whose network he is on, where the nodes are hosts of their
    own); ``env``: more of his environment (what must not show on his own command line)."""
    home = pwd.getpwnam(bob).pw_dir
    command = ["runuser", "-u", bob, "--", *argv]
    if on is not None:
        command = on[0].on_node(on[1], command)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd="/",
                          env=dict(os.environ, HOME=home, **env))


def environment_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(e.decode(errors="replace").split("=", 1) for e in raw if b"=" in e)


def session_values(cluster, session: dict) -> dict[str, str]:
    """What must stay the session's: read as root from its job's processes and files."""
    procs = [line.split(": ", 1) for line in processes_of_cluster_job(cluster, session["job_id"])]
    launcher = next(int(pid) for pid, cmd in procs if "supervisor.py" in cmd and "parallel.py" not in cmd)
    env = environment_of(launcher)
    xvfb = next(cmd for _, cmd in procs if cmd.split()[0].endswith("Xvfb"))
    auth_file = xvfb.split()[xvfb.split().index("-auth") + 1]
    cookie = subprocess.run(["xauth", "-f", auth_file, "list"], capture_output=True, text=True,
                            check=True).stdout.split()[-1]
    values = {"secret": session["secret"], "session id": session["id"], "report token": env["PVHPC_REPORT_TOKEN"],
              "X cookie": cookie}
    if "PVHPC_CONNECT_ID" in env:
        values["connect id"] = env["PVHPC_CONNECT_ID"]
    assert all(values.values()) and re.fullmatch(r"[0-9a-f]{32}", cookie), values
    return values


def found_in(values: dict[str, str], lines: list[str]) -> list[str]:
    found = []
    for what, value in values.items():
        pattern = rf"(?<!\d){value}(?!\d)" if value.isdigit() else re.escape(value)
        found += [f"{what} in: {line}" for line in lines if re.search(pattern, line)]
    return found


@pytest.mark.cluster
@pytest.mark.paraview
def test_another_user_of_the_node_sees_nothing_of_a_session(unix_users, shared, service_factory, cluster,
                                                           runtime_dir):
    """alice's session (its data file named like a placeholder) starts and runs while bob reads every command
    line on the node, again and again: he sees her job's processes, and none of her session's values."""
    alice_user, bob_user = unix_users["alice"], unix_users["bob"]
    (shared / "data" / "${port}x.vtk").write_text(
        "# vtk DataFile Version 3.0\ntriangle\nASCII\nDATASET POLYDATA\nPOINTS 3 float\n0 0 0 1 0 0 0 1 0\n"
        "POLYGONS 1 4\n3 0 1 2\n")
    svc = start_service(service_factory, unix_users, shared, private_site(shared, runtime_dir, cluster))
    alice = svc.user_client(alice_user)
    watcher = Watcher(shared, bob_user)
    try:
        session = alice.launch("paraview", partition="cpu", data="${port}x.vtk")
    finally:
        seen = watcher.stop()
    assert session["state"] == "ready", session
    values = session_values(cluster, session)
    now = as_bob(bob_user, "ps", "-eo", "user:20,args").stdout.splitlines()
    # bob does see alice's job: its bash, its launcher, Xvfb, her pvpython server.
    hers = [line for line in now if line.startswith(alice_user)]
    for what in ("slurm_script", "supervisor.py", "Xvfb", "pvweb_server.py"):
        assert any(what in line for line in hers), (what, hers)
    assert any("supervisor.py" in line for line in seen), seen
    assert not found_in(values, seen + now)
    # ... but not her processes' environment.
    launcher = next(int(line.split(": ")[0]) for line in processes_of_cluster_job(cluster, session["job_id"])
                    if "supervisor.py" in line)
    assert "Permission denied" in as_bob(bob_user, "cat", f"/proc/{launcher}/environ").stderr
    # The file named like a placeholder was opened by its name, and the session renders.
    proxy = f"ws://127.0.0.1:{svc.port + 1}/proxy?sessionId={session['id']}&path=ws"
    headers = {"X-Remote-User": alice_user}
    assert "${port}x.vtk" in asyncio.run(source_names(proxy, session["secret"], headers))
    assert foreground_fraction(render(proxy, session["secret"], headers=headers, source="Cone")) > 0.01
    assert alice.cancel(session["id"])["end_reason"] == "cancelled"


async def source_names(url: str, secret: str, headers: dict) -> list[str]:
    from pvhpc.client.wslink import WslinkClient

    client = await WslinkClient.connect(url, secret, headers=headers)
    try:
        listed = await client.call("pv.proxy.manager.list", [-1])
        return [source["name"] for source in listed["sources"]]
    finally:
        client.close()


CONNECT_AS_BOB = """
import os, sys
from paraview.modules.vtkRemotingCore import vtkRemotingCoreConfiguration
if os.environ["TRY_CONNECT_ID"].isdigit():
    vtkRemotingCoreConfiguration.GetInstance().SetConnectID(int(os.environ["TRY_CONNECT_ID"]))
from paraview import simple
connection = simple.Connect("localhost", int(sys.argv[1]))
print("CONNECTED" if connection is not None else "REFUSED", flush=True)
"""

HOLD_AS_BOB = """
import socket, sys, time
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(float(sys.argv[2]))
start = time.monotonic()
try:
    got = s.recv(1)
    print(f"CLOSED after {time.monotonic() - start:.1f} s" if got == b"" else f"SENT {got!r}", flush=True)
except socket.timeout:
    print("HELD", flush=True)
"""


def listening(cluster, node: str, port: int) -> bool:
    """Whether ``port`` listens on ``node`` (its own network's sockets, where it is a host of its own)."""
    tables = subprocess.run(cluster.on_node(node, ["cat", "/proc/net/tcp", "/proc/net/tcp6"]), capture_output=True,
                            text=True).stdout
    for line in tables.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return True
    return False


@pytest.mark.cluster
@pytest.mark.paraview
def test_another_user_cannot_take_or_hold_a_parallel_sessions_ranks(unix_users, shared, service_factory, cluster,
                                                                   runtime_dir, artifacts):
    """alice's 2 ranks over 2 nodes listen; her web server is held back until bob has tried them. bob reads the
    ranks' port and connect id from their command line and connects first with what he read (refused), with
    her real id (refused: not her process), and with a connection that sends nothing (closed at once, so it
    holds nothing up). Her session then attaches, is ready and renders its two ranks' colours; no command line
    on the node showed her secret, token, id, cookie or connect id."""

    alice_user, bob_user = unix_users["alice"], unix_users["bob"]
    go = shared / "web-server-may-start"
    pvpython = shared / "pvpython-after-bob"
    pvpython.write_text(f"#!/bin/sh\ni=0\nwhile [ ! -e {go} ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done\n"
                        'exec /usr/bin/pvpython "$@"\n')
    pvpython.chmod(0o755)
    (shared / "bob" / "connect.py").write_text(CONNECT_AS_BOB)
    (shared / "bob" / "hold.py").write_text(HOLD_AS_BOB)
    svc = start_service(service_factory, unix_users, shared,
                        private_site(shared, runtime_dir, cluster, pvpython=str(pvpython)))
    alice = svc.user_client(alice_user)
    watcher = Watcher(shared, bob_user)
    try:
        session = alice.create("paraview", partition="cpu", nodes=2, ranks=2)

        def ranks_port():
            for line in as_bob(bob_user, "ps", "-u", alice_user, "-o", "pid=,args=").stdout.splitlines():
                pid, _, args = line.strip().partition(" ")
                found = re.search(r"pvserver .*--server-port=(\d+).*--connect-id=(\S+)", args)
                if not found or args.startswith(("mpiexec", "srun")):
                    continue
                try:   # which node it runs on (root reads that; bob would try every node)
                    node = environment_of(int(pid)).get("SLURMD_NODENAME", "")
                except OSError:
                    continue
                if node and listening(cluster, node, int(found.group(1))):
                    return int(found.group(1)), found.group(2), node
            return None

        port, shown_id, rank_node = wait_until(ranks_port, 90, message="alice's root rank listening, as bob sees it")
        on_rank_node = (cluster, rank_node)

        def real_connect_id():   # root reads it where it is: in the environment of alice's processes
            for line in processes_of_cluster_job(cluster, session["job_id"]):
                pid, cmd = line.split(": ", 1)
                if "supervisor.py" in cmd and "parallel.py" not in cmd:
                    return environment_of(int(pid)).get("PVHPC_CONNECT_ID")
            return None

        real_id = wait_until(real_connect_id, 30, message="alice's launcher started")
        assert shown_id != real_id
        hold = ["/usr/bin/python3", str(shared / "bob" / "hold.py"), str(port), "20"]
        held = as_bob(bob_user, *hold, on=on_rank_node).stdout.strip()
        assert held.startswith("CLOSED after"), held
        for connect_id in (shown_id, real_id):
            tried = as_bob(bob_user, "/usr/bin/pvpython", "--no-mpi", str(shared / "bob" / "connect.py"), str(port),
                           on=on_rank_node, TRY_CONNECT_ID=connect_id)
            assert tried.stdout.strip().splitlines()[-1:] == ["REFUSED"], tried.stdout + tried.stderr
        # A connection bob holds open as alice's web server starts: it is closed too, and holds nothing up.
        holder = subprocess.Popen(cluster.on_node(rank_node, ["runuser", "-u", bob_user, "--", *hold]),
                                  stdout=subprocess.PIPE, text=True, cwd="/")
        time.sleep(1)
        go.touch()
        ready = alice.wait(session["id"], until=("ready", "ended"), timeout=150)
        held = holder.communicate(timeout=60)[0].strip()
        assert held.startswith("CLOSED after"), held
    finally:
        seen = watcher.stop()
    assert ready["state"] == "ready", ready
    values = session_values(cluster, ready)
    now = as_bob(bob_user, "ps", "-eo", "args").stdout.splitlines()
    assert any("pvserver" in line and "@PVHPC_CONNECT_ID@" in line for line in seen), seen
    assert not found_in(values, seen + now)
    log = alice.log(session["id"])
    assert log.count("pvhpc pvserver guard: refused a connection") >= 4, log
    assert "Client connected." in log

    proxy = f"ws://127.0.0.1:{svc.port + 1}/proxy?sessionId={session['id']}&path=ws"
    image = asyncio.run(render_by_process(proxy, ready["secret"], headers={"X-Remote-User": alice_user}))
    (artifacts / "two-ranks-after-bob.jpg").write_bytes(image)
    assert len(hues(image)) == 2, hues(image)
    assert alice.cancel(session["id"])["end_reason"] == "cancelled"
