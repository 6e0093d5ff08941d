"""The node's start (issue 28): Xvfb started beside the server, not before it (pvhpc/node/server_gate.py), the
supervisor waiting on events rather than polling, and the timing line it leaves in the job's log.

The supervisor runs here as the job runs it (a process of the node's python3, by path), with a pipe standing in
for Xvfb's -displayfd and a plain python3 script for the server; no report URL, so its reports are only printed.
The job script's retry when Xvfb fails runs the real script with the real Xvfb (marked paraview).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pvhpc.jobs.template import JobTemplate
from pvhpc.paths import JOB_HELPER, JOBSCRIPTS_DIR

from tests.helpers import wait_until

NODE = JOB_HELPER.parent
SUPERVISOR = NODE / "supervisor.py"
PYTHON = "/usr/bin/python3"


def node_module(name):
    """One of pvhpc's node-side modules as the job runs it: by file name, beside the others."""
    sys.path.insert(0, str(NODE))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(NODE))


server_gate = node_module("server_gate")
supervisor = node_module("supervisor")


def server_script(tmp_path: Path) -> Path:
    """A server that notes that it ran, says it is up and stays (until the supervisor stops it)."""
    script = tmp_path / "server.py"
    script.write_text("import pathlib, sys, time\n"
                      f"pathlib.Path({str(tmp_path / 'ran')!r}).write_text('yes')\n"
                      "print('server: up', flush=True)\ntime.sleep(60)\n")
    return script


class Supervisor:
    """The supervisor started as the job script starts it, its output read line by line as it comes."""

    def __init__(self, tmp_path: Path, command: list[str], display_fd: int | None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PVHPC_")}
        env.update(PVHPC_LAUNCH_COMMAND=json.dumps(command), PVHPC_LAUNCH_READY=json.dumps({"line": "server: up"}),
                   PVHPC_LISTEN="127.0.0.1", PVHPC_SECRET="the-secret")
        argv = [PYTHON, "-S", str(SUPERVISOR), "--start-timeout", "60", "--workdir", str(tmp_path)]
        if display_fd is not None:
            argv += ["--display-fd", str(display_fd)]
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     pass_fds=() if display_fd is None else (display_fd,))
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def said(self, pattern: str) -> re.Match | None:
        return next((m for m in map(re.compile(pattern).search, list(self.lines)) if m), None)

    def children(self) -> list[str]:
        """The command lines of the supervisor's child processes."""
        return [command for _, command in self._children()]

    def child_pids(self, word: str) -> list[str]:
        """The pids of the supervisor's children whose command line holds ``word``."""
        return [pid for pid, command in self._children() if word in command]

    def _children(self) -> list[tuple[str, str]]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    found.append((pid, Path(f"/proc/{pid}/cmdline").read_bytes().decode().replace("\0", " ")))
            except (OSError, ValueError, IndexError):
                continue
        return found

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        code = self.proc.wait(30)
        self.reader.join(10)
        return code


@pytest.fixture
def display():
    """A pipe standing in for Xvfb's -displayfd: (read end for the supervisor, write end for the test)."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        try:
            os.close(fd)
        except OSError:
            pass


def test_a_server_that_waits_at_the_gate_starts_before_the_display_and_runs_once_it_is_up(tmp_path, display):
    """A command run through the argv wrapper starts at once, waits for the display before its script runs, and
    is reported ready once it is up; the timing line then holds every step, in order."""
    read_end, write_end = display
    sup = Supervisor(tmp_path, [PYTHON, str(server_script(tmp_path)), "--key", "${secret}"], read_end)
    os.close(read_end)
    try:
        wait_until(lambda: any("argv_secret.py" in c for c in sup.children()), 30, message="the server started")
        assert not (tmp_path / "ran").exists(), "the server's script ran before the display was up"
        assert not sup.said("PVHPC_READY")
        os.write(write_end, b"42\n")
        os.close(write_end)
        wait_until(lambda: sup.said(r"^pvhpc-timing: supervisor "), 30, message="the ready report and its timing")
        assert (tmp_path / "ran").exists()
        assert sup.said(r"^PVHPC_READY host=127\.0\.0\.1 port=\d+ ")
        moments = dict(field.split("=") for field in sup.said(r"^pvhpc-timing: supervisor (.*)").group(1).split())
        assert list(moments) == ["started", "imported", "spawned", "ready", "display", "report", "answered"]
        at = {name: float(value) for name, value in moments.items()}
        assert at["started"] <= at["imported"] <= at["spawned"] <= at["display"] <= at["ready"] <= at["report"] \
            <= at["answered"], moments
    finally:
        code = sup.stop()
    assert code == 143, sup.lines   # SIGTERM: the scheduler says how the job ended, the supervisor reports nothing


def test_when_xvfb_exits_before_it_accepts_clients_the_server_is_stopped_and_nothing_reported(tmp_path, display):
    read_end, write_end = display
    sup = Supervisor(tmp_path, [PYTHON, str(server_script(tmp_path)), "--key", "${secret}"], read_end)
    os.close(read_end)
    servers = wait_until(lambda: sup.child_pids("argv_secret.py"), 30, message="the server started")
    os.close(write_end)   # Xvfb's end of the pipe closed without a display number: it exited
    assert sup.proc.wait(30) == supervisor.DISPLAY_FAILED, sup.lines
    sup.reader.join(10)
    assert not (tmp_path / "ran").exists()
    assert not sup.said("PVHPC_(READY|FAILED|EXITED)"), sup.lines
    assert sup.said("Xvfb exited before it accepted clients"), sup.lines
    assert not [pid for pid in servers if Path(f"/proc/{pid}").exists()], "the server outlived its supervisor"


def test_a_server_that_cannot_wait_at_the_gate_is_started_once_the_display_is_up(tmp_path, display):
    """A command not run through the wrapper would use the display from its first line: it starts after."""
    read_end, write_end = display
    sup = Supervisor(tmp_path, [PYTHON, str(server_script(tmp_path))], read_end)
    os.close(read_end)
    try:
        wait_until(lambda: sup.said("the server listens on 127.0.0.1"), 30, message="the supervisor's start")
        assert not sup.children() and not (tmp_path / "ran").exists()
        os.write(write_end, b"42\n")
        os.close(write_end)
        wait_until(lambda: sup.said("^PVHPC_READY "), 30, message="the ready report")
        assert (tmp_path / "ran").exists()
    finally:
        sup.stop()


def test_without_a_display_a_gated_server_runs_at_once_and_ready_is_seen_from_its_output(tmp_path):
    sup = Supervisor(tmp_path, [PYTHON, str(server_script(tmp_path)), "--key", "${secret}"], None)
    try:
        wait_until(lambda: sup.said("^PVHPC_READY "), 30, message="the ready report")
        assert "display=" not in sup.said(r"^pvhpc-timing: supervisor .*").group(0)
    finally:
        assert sup.stop() == 143


def run_gate(env: dict) -> int:
    """server_gate.wait() in a process of its own (it sets the process's parent-death signal): 0 when it says go."""
    code = "import sys, server_gate; sys.exit(0 if server_gate.wait() else 1)"
    return subprocess.run([PYTHON, "-S", "-c", code], env={**env, "PYTHONPATH": str(NODE)}, timeout=30,
                          pass_fds=tuple(int(v) for k, v in env.items() if k == server_gate.GATE_ENV)).returncode


def test_the_gate_says_go_once_opened_and_not_once_shut_or_when_its_supervisor_is_not_the_parent():
    assert run_gate({}) == 0   # not started by the supervisor: nothing to wait for
    for how, supervisor_pid, expected in (("open", None, 0), ("shut", None, 1), ("open", "1", 1)):
        gate = server_gate.Gate()
        env = gate.environment()
        if supervisor_pid:
            env[server_gate.SUPERVISOR_ENV] = supervisor_pid   # a parent that is not the one this process has
        getattr(gate, how)()
        assert run_gate(env) == expected, (how, supervisor_pid)
        gate.started()


def test_xvfbs_word_is_its_display_number_or_nothing():
    for written, shown in ((b"42\n", "42"), (b"4", "4"), (b"", ""), (b"garbage\n", "")):
        read_end, write_end = os.pipe()
        os.write(write_end, written)
        os.close(write_end)
        assert server_gate.read_display(read_end) == shown
        os.close(read_end)


def test_the_display_watch_calls_back_once_xvfb_has_spoken():
    read_end, write_end = os.pipe()
    called = threading.Event()
    watch = server_gate.DisplayWatch(read_end, on_done=called.set)
    watch.start()
    assert not watch.done.is_set() and watch.up is None
    os.write(write_end, b"7\n")
    assert called.wait(10) and watch.up is True and watch.number == "7" and watch.at is not None
    os.close(write_end)


def test_only_pvhpcs_own_server_and_the_wrapper_are_taken_to_wait_at_the_gate():
    assert supervisor.waits_at_the_gate([PYTHON, supervisor.ARGV_WRAPPER, "app.py"])
    assert supervisor.waits_at_the_gate(["/usr/bin/pvpython", str(NODE / "pvweb_server.py"), "--port", "0"])
    assert not supervisor.waits_at_the_gate(["/usr/bin/pvpython", "/opt/site/pvweb_server.py"])
    assert not supervisor.waits_at_the_gate(["/usr/bin/pvpython"])


# -- the job script ----------------------------------------------------------------------------------------------

@pytest.mark.paraview
def test_the_job_starts_xvfb_again_when_the_first_exits_before_it_accepts_clients(tmp_path):
    """An Xvfb that fails at once (its display taken, say): the supervisor stops the server unreported, the job
    script starts Xvfb again, waited for, then the server, which is reported ready once."""
    bin_dir, starts = counting_xvfb(tmp_path, first_fails=True)
    server = server_script(tmp_path)
    (tmp_path / "server.py").write_text(server.read_text().replace("time.sleep(60)", "time.sleep(1)"))
    proc = run_job(tmp_path, bin_dir, server)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert len(starts.read_text().splitlines()) == 2, out
    assert "exited before it accepted clients" in out and "display taken" in out
    assert out.count("PVHPC_READY ") == 1 and "PVHPC_FAILED" not in out, out
    assert re.search(r"^pvhpc-timing: script job_start=[\d.]+ xvfb_spawned=[\d.]+ supervisor=[\d.]+$", out, re.M), out


def counting_xvfb(tmp_path: Path, first_fails: bool) -> tuple[Path, Path]:
    """A directory whose Xvfb is the real one, each start noted in a file (both returned); with ``first_fails`` its
    first start fails at once, as when its display is taken."""
    real = shutil.which("Xvfb")
    if real is None:
        pytest.skip("no Xvfb here")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    starts = tmp_path / "xvfb-starts"
    fail = (f"[ \"$(wc -l <{starts})\" -gt 1 ] && exec {real} \"$@\"\n"
            "echo 'Fatal server error: (stand-in) display taken' >&2\nexit 1\n") if first_fails else ""
    (bin_dir / "Xvfb").write_text(f"#!/bin/bash\necho \"$*\" >>{starts}\n{fail}exec {real} \"$@\"\n")
    (bin_dir / "Xvfb").chmod(0o755)
    return bin_dir, starts


def run_job(tmp_path: Path, bin_dir: Path, server: Path) -> subprocess.CompletedProcess:
    """pvhpc's job script, rendering through Xvfb, running ``server`` with ``bin_dir`` first on PATH; no pvhpc to
    report to."""
    script = JobTemplate(JOBSCRIPTS_DIR / "paraview-web.sh").render(dict(
        helper_python=PYTHON, job_helper=JOB_HELPER, launcher=SUPERVISOR,
        command=json.dumps([PYTHON, str(server), "--key", "${secret}"]), ready=json.dumps({"line": "server: up"}),
        server_listen="127.0.0.1", report_url="", render_mode="xvfb", start_timeout=60, secret="the-secret",
        report_token="unused", pythonpath="", venv="", log_file="", parallel="", state_save="", state_load="", continues="",
        state_roots="", data_roots="", input_idle="", idle_timeout="", watchdog="", modules="", modules_init="", module_paths=""))
    (tmp_path / "job.sh").write_text(script)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    return subprocess.run(["/bin/bash", str(tmp_path / "job.sh")], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.paraview
def test_a_server_that_exits_75_itself_is_not_taken_for_a_failed_xvfb(tmp_path):
    """75 is also what the supervisor returns when Xvfb failed; a server's own 75, with Xvfb well, must end the job
    with it, not start Xvfb and the session over (leaving the first Xvfb behind)."""
    bin_dir, starts = counting_xvfb(tmp_path, first_fails=False)
    server = tmp_path / "server.py"
    server.write_text("import sys, time\nprint('server: up', flush=True)\ntime.sleep(1)\nsys.exit(75)\n")
    proc = run_job(tmp_path, bin_dir, server)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 75, out
    assert len(starts.read_text().splitlines()) == 1, out
    assert out.count("PVHPC_READY ") == 1 and "exited before it accepted clients" not in out, out
