"""The node's watchdog (pvhpc/node/watchdog.py): what its answers mean (pure logic, a clock of the test's own),
how it asks (real HTTP on loopback), and the launcher and parallel.py stopping their servers when it says so
(real processes on this machine, a stand-in pvhpc; no Slurm)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pvhpc import config
from pvhpc.config import ConfigError
from pvhpc.node import watchdog
from pvhpc.node.jobhelper import pid_alive
from pvhpc.node.watchdog import ENDED, LIVE, NO_VERDICT, UNREACHED, Answer, Watch, Watchdog
from pvhpc.sessions.job import watchdog_setting

from tests.harness.ports import free_port_block
from tests.helpers import MINIMAL_SITE

NODE_DIR = Path(watchdog.__file__).parent
SESSION_PATH = "/api/v1/sessions/s3cr3tsessionidthatnamesthesession/report"


# -- what the answers mean ---------------------------------------------------------------------------------

def test_pvhpc_saying_ended_stops_at_once_and_says_why():
    watch = Watch(grace=300, now=0)
    assert watch.judge(Answer(LIVE), 15) == (False, "")
    stop, said = watch.judge(Answer(ENDED, "pvhpc says this session has ended (node_failure)"), 30)
    assert stop and said == "pvhpc says this session has ended (node_failure): stopping the session's server"


def test_silence_longer_than_the_grace_stops_and_a_shorter_one_never_does():
    watch = Watch(grace=60, now=0)
    stop, said = watch.judge(Answer(UNREACHED, "login1:8480: Connection refused"), 15)
    assert not stop and said.startswith("cannot reach pvhpc (login1:8480: Connection refused); the session's "
                                        "server is stopped if this lasts 60 s")
    assert watch.judge(Answer(UNREACHED, "x"), 30) == (False, "")   # said once per silence
    assert watch.judge(Answer(UNREACHED, "x"), 60) == (False, "")   # not longer than the grace yet
    assert watch.judge(Answer(LIVE), 61) == (False, "pvhpc answers again, after 61 s")
    # The silence counts from the last answer, not from the first failure ever.
    for now in (75, 90, 105, 120):
        assert not watch.judge(Answer(UNREACHED, "x"), now)[0]
    stop, said = watch.judge(Answer(UNREACHED, "login1:8480: timed out"), 122)
    assert stop and said == ("pvhpc has not answered for 61 s (login1:8480: timed out), longer than "
                             "runtime.watchdog_grace (60 s): stopping the session's server")


def test_silence_counts_from_the_watchdogs_start():
    watch = Watch(grace=30, now=100)
    assert not watch.judge(Answer(UNREACHED, "x"), 115)[0]
    assert watch.judge(Answer(UNREACHED, "x"), 131)[0]


def test_a_grace_of_zero_never_stops_for_silence():
    watch = Watch(grace=0, now=0)
    stop, said = watch.judge(Answer(UNREACHED, "x"), 10)
    assert not stop and "kept however long this lasts (runtime.watchdog_grace is 0)" in said
    assert not any(watch.judge(Answer(UNREACHED, "x"), t)[0] for t in range(20, 10**6, 9999))
    assert watch.judge(Answer(ENDED, "pvhpc says this session has ended (cancelled)"), 10**6)[0]


def test_an_answer_without_a_verdict_reaches_pvhpc_and_is_said_once():
    watch = Watch(grace=20, now=0)
    assert watch.judge(Answer(UNREACHED, "x"), 15)[0] is False
    stop, said = watch.judge(Answer(NO_VERDICT, "login1:8480 answered HTTP 503"), 30)
    assert not stop and said == ("pvhpc answers again, after 30 s; login1:8480 answered HTTP 503; the watchdog "
                                 "keeps asking")
    assert watch.judge(Answer(NO_VERDICT, "login1:8480 answered HTTP 503"), 45) == (False, "")
    stop, said = watch.judge(Answer(UNREACHED, "x"), 60)
    assert not stop and said.startswith("cannot reach pvhpc (x)")   # a new silence, counted from 45 s
    assert not watch.judge(Answer(UNREACHED, "x"), 65)[0] and watch.judge(Answer(UNREACHED, "x"), 66)[0]


def test_the_setting_from_the_job_script():
    assert watchdog.settings("15:300") == (15.0, 300.0)
    assert watchdog.settings("15:0") == (15.0, 0.0)
    assert watchdog.settings("") is None and watchdog.settings("0:300") is None
    for bad in ("15", "a:b", "-1:3"):
        with pytest.raises(ValueError, match="PVHPC_WATCHDOG"):
            watchdog.settings(bad)


def test_no_watchdog_without_a_url_a_token_or_a_setting():
    def never(why):
        raise AssertionError("no watchdog was meant to run")

    assert watchdog.start("", "tok", "1:3", never) is None   # doctor's probe: nobody to ask
    assert watchdog.start("http://login1:8480/r", "", "1:3", never) is None
    assert watchdog.start("http://login1:8480/r", "tok", "", never) is None
    assert watchdog.start("http://login1:8480/r", "tok", "0:3", never) is None


# -- the loop, on a clock of the test's own -----------------------------------------------------------------

class Scripted:
    """Answers in turn, each a step of ``step`` seconds on the test's clock; the last one over and over."""

    def __init__(self, answers, step=15.0):
        self.answers, self.step, self.now, self.asked = list(answers), step, 0.0, []

    def clock(self):
        return self.now

    def ask(self, urls, token, timeout):
        self.now += self.step
        self.asked.append((tuple(urls), token, timeout))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def run_dog(script, grace, answers_before_close=None):
    ended, said = [], []
    dog = Watchdog(["http://a:1/r", "http://b:1/r"], "tok", 0.001, grace, ended.append, ask=script.ask,
                   clock=script.clock, say=said.append)
    dog.start()
    if answers_before_close is not None:
        deadline = time.monotonic() + 5
        while len(script.asked) < answers_before_close and time.monotonic() < deadline:
            time.sleep(0.001)
        dog.close()
    dog.join(5)
    assert not dog.is_alive()
    return ended, said


def test_the_loop_stops_once_when_pvhpc_says_ended():
    script = Scripted([Answer(LIVE)] * 3 + [Answer(ENDED, "pvhpc says this session has ended (cancelled)")])
    ended, said = run_dog(script, grace=300)
    assert ended == ["pvhpc says this session has ended (cancelled): stopping the session's server"]
    assert said == ended and len(script.asked) == 4
    assert script.asked[0] == (("http://a:1/r", "http://b:1/r"), "tok", 1.0)


def test_the_loop_rides_out_blips_and_stops_after_the_grace():
    blip = [Answer(UNREACHED, "a:1: Connection refused")] * 3   # 45 s without an answer, under the 60 s grace
    script = Scripted([Answer(LIVE)] + blip + [Answer(LIVE)] + blip + [Answer(LIVE)] * 5
                      + [Answer(UNREACHED, "a:1: timed out")])
    ended, said = run_dog(script, grace=60)
    assert len(script.asked) == 1 + 3 + 1 + 3 + 5 + 5, "it stopped during a blip, or too late"
    assert ended == ["pvhpc has not answered for 75 s (a:1: timed out), longer than runtime.watchdog_grace "
                     "(60 s): stopping the session's server"]
    assert said.count("pvhpc answers again, after 60 s") == 2


def test_a_closed_watchdog_asks_no_more_and_ends_nothing():
    script = Scripted([Answer(LIVE)])
    ended, _ = run_dog(script, grace=60, answers_before_close=3)
    asked = len(script.asked)
    time.sleep(0.05)
    assert ended == [] and len(script.asked) == asked


# -- asking, over real HTTP ----------------------------------------------------------------------------------

class StandIn(http.server.BaseHTTPRequestHandler):
    """pvhpc as the node sees it: GET .../report answers ``verdict`` (a status and a body); POST takes reports."""

    def do_GET(self):
        self.server.asked.append((self.path, self.headers.get("Authorization")))
        status, body = self.server.verdict
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps(body).encode())

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.reports.append(body)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args):
        pass


@pytest.fixture
def pvhpc_stand_in():
    servers = []

    def start(status=200, body=None):
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
        server.verdict = (status, {"live": True, "state": "ready"} if body is None else body)
        server.asked, server.reports = [], []
        server.url = f"http://127.0.0.1:{server.server_address[1]}{SESSION_PATH}"
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_asking_reads_pvhpcs_verdict_with_the_jobs_token(pvhpc_stand_in):
    pvhpc = pvhpc_stand_in()
    assert watchdog.ask([pvhpc.url], "tok", 2).kind == LIVE
    assert pvhpc.asked == [(SESSION_PATH, "token tok")]
    pvhpc.verdict = (200, {"live": False, "state": "ended", "end_reason": "node_failure"})
    answer = watchdog.ask([pvhpc.url], "tok", 2)
    assert (answer.kind, answer.words) == (ENDED, "pvhpc says this session has ended (node_failure)")
    pvhpc.verdict = (403, {"error": "unknown session or wrong report token"})
    assert watchdog.ask([pvhpc.url], "tok", 2).kind == ENDED
    pvhpc.verdict = (403, ["a proxy before pvhpc, not pvhpc"])   # ends nothing: not pvhpc's own refusal
    assert watchdog.ask([pvhpc.url], "tok", 2).kind == NO_VERDICT
    pvhpc.verdict = (503, {"error": "the database is down"})
    assert watchdog.ask([pvhpc.url], "tok", 2).kind == NO_VERDICT
    pvhpc.verdict = (200, {"something": "else"})
    assert watchdog.ask([pvhpc.url], "tok", 2).kind == NO_VERDICT


def test_asking_tries_each_url_in_turn_and_names_only_hosts(pvhpc_stand_in):
    down = f"http://127.0.0.1:{free_port_block(1)}{SESSION_PATH}"
    gateway = pvhpc_stand_in(502, {"error": "bad gateway"})
    up = pvhpc_stand_in(200, {"live": False, "state": "ended", "end_reason": "cancelled"})
    assert watchdog.ask([down, gateway.url, up.url], "tok", 2).kind == ENDED
    assert len(gateway.asked) == 1 and len(up.asked) == 1
    answer = watchdog.ask([down, gateway.url], "tok", 2)
    assert answer.kind == UNREACHED and "HTTP 502" in answer.words and "refused" in answer.words
    assert "s3cr3t" not in answer.words and "/api" not in answer.words, "the job log must not name the session"


def test_an_answer_that_is_not_http_is_no_answer_from_pvhpc_and_never_ends_the_watch():
    """Something else on the port, or a connection cut mid-answer: http.client's errors are not OSErrors."""
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_garbage():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"SSH-2.0-OpenSSH\r\n")

    threading.Thread(target=answer_garbage, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        answer = watchdog.ask([f"http://127.0.0.1:{port}{SESSION_PATH}"], "tok", 2)
        assert answer.kind == UNREACHED and answer.words.startswith(f"127.0.0.1:{port}: ")
    finally:
        listener.close()


def test_the_log_names_a_callback_url_by_its_host_and_port_only():
    assert watchdog.where(f"http://user:pw@login1:8480{SESSION_PATH}") == "login1:8480"


# -- the launcher and parallel.py, as the job runs them ------------------------------------------------------

# A session's server as far as the launcher can tell: it says it listens, writes its pid, and runs until stopped.
FAKE_SERVER = textwrap.dedent("""\
    import os, sys, time
    with open(sys.argv[1], "w") as f:
        f.write(f"{os.getpid()} {os.environ.get('PVHPC_WATCHDOG', '')}")
    print("server listening on", sys.argv[2], flush=True)
    while True:
        time.sleep(1)
""")
# An MPI launcher as parallel.py sees one: it runs "pvserver" and says, as the root rank does, that it listens.
FAKE_MPI = textwrap.dedent("""\
    import subprocess, sys, time
    rank = subprocess.Popen(sys.argv[1:])
    print("Accepting connection(s): node01:11111", flush=True)
    sys.exit(rank.wait())
""")
FAKE_PVSERVER = textwrap.dedent("""\
    #!{python}
    import os, time
    open({pid_file!r}, "w").write(str(os.getpid()))
    while True:
        time.sleep(1)
""")


def node_job(tmp_path, pvhpc, setting, parallel=False):
    """The launcher (or parallel.py before it) run as the job script runs it, reporting to ``pvhpc``."""
    (tmp_path / "server.py").write_text(FAKE_SERVER)
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1", "SLURM_JOB_ID": "7", "SLURMD_NODENAME": "node01",
           "PVHPC_LAUNCH_COMMAND": json.dumps([sys.executable, str(tmp_path / "server.py"),
                                               str(tmp_path / "server.pid"), "${port}"]),
           "PVHPC_LAUNCH_READY": json.dumps({"line": "server listening"}), "PVHPC_LISTEN": "127.0.0.1",
           "PVHPC_REPORT_URL": pvhpc.url, "PVHPC_REPORT_TOKEN": "tok", "PVHPC_WATCHDOG": setting}
    argv = [sys.executable, str(NODE_DIR / "supervisor.py"), "--start-timeout", "30", "--workdir", str(workdir)]
    if parallel:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        (bin_dir / "pvserver").write_text(FAKE_PVSERVER.format(python=sys.executable,
                                                               pid_file=str(tmp_path / "rank.pid")))
        (bin_dir / "pvserver").chmod(0o755)
        (tmp_path / "mpi.py").write_text(FAKE_MPI)
        (tmp_path / "guard.so").write_bytes(b"")
        env["PATH"] = f"{bin_dir}:{env['PATH']}"
        env["PVHPC_PARALLEL"] = json.dumps({"ranks": 2, "mpi": [sys.executable, str(tmp_path / "mpi.py")],
                                            "pvserver": ["pvserver"], "connect": ["--ds-port", "${ds_port}"],
                                            "guard": str(tmp_path / "guard.so")})
        argv = [sys.executable, str(NODE_DIR / "parallel.py"), *argv[1:]]
    log = open(tmp_path / "job.log", "w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
    return proc, tmp_path / "job.log"


def wait_until(what, timeout, explain=lambda: ""):
    deadline = time.monotonic() + timeout
    while not what():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {explain()}")
        time.sleep(0.05)


def pid_in(path: Path) -> int:
    return int(path.read_text().split()[0])


@pytest.mark.parametrize("parallel", [False, True], ids=["launcher", "parallel"])
def test_the_job_stops_its_server_when_pvhpc_says_the_session_has_ended(tmp_path, pvhpc_stand_in, parallel):
    pvhpc = pvhpc_stand_in()
    job, log = node_job(tmp_path, pvhpc, "0.3:30", parallel)
    try:
        wait_until(lambda: any(r["event"] == "ready" for r in pvhpc.reports), 20, lambda: log.read_text())
        server = pid_in(tmp_path / "server.pid")
        if parallel:
            wait_until((tmp_path / "rank.pid").exists, 10, lambda: log.read_text())
        rank = pid_in(tmp_path / "rank.pid") if parallel else None
        wait_until(lambda: len(pvhpc.asked) >= 2, 10, lambda: log.read_text())
        assert job.poll() is None and pid_alive(server), "a live session's server was stopped"
        pvhpc.verdict = (200, {"live": False, "state": "ended", "end_reason": "node_failure"})
        assert job.wait(10) == 143, log.read_text()
        assert not pid_alive(server) and (rank is None or not pid_alive(rank)), "a process outlived the job"
    finally:
        if job.poll() is None:
            job.kill()
    text = log.read_text()
    assert ("pvhpc: pvhpc says this session has ended (node_failure): stopping the session's server") in text
    assert SESSION_PATH not in text and "s3cr3t" not in text
    if parallel:
        # One watchdog per job: parallel.py's, not the launcher's under it too (its server has what it had).
        assert (tmp_path / "server.pid").read_text().split()[1:] == []
    assert [r["event"] for r in pvhpc.reports] == ["ready"], "nothing to report: pvhpc ended the session"


def test_the_job_stops_its_server_when_pvhpc_stays_away_past_the_grace(tmp_path, pvhpc_stand_in):
    """(Blips that end nothing: the loop's tests above; the real cluster's in tests/test_node_watchdog.py.)"""
    pvhpc = pvhpc_stand_in()
    job, log = node_job(tmp_path, pvhpc, "0.5:1.5")
    try:
        wait_until(lambda: any(r["event"] == "ready" for r in pvhpc.reports), 20, lambda: log.read_text())
        server = pid_in(tmp_path / "server.pid")
        pvhpc.shutdown()
        pvhpc.server_close()
        gone = time.monotonic()
        assert job.wait(15) == 143, log.read_text()
        assert time.monotonic() - gone < 1.5 + 0.5 + 1.5 + 2, "stopped long after the grace"
        assert not pid_alive(server)
    finally:
        if job.poll() is None:
            job.kill()
    text = log.read_text()
    assert "pvhpc: cannot reach pvhpc (127.0.0.1:" in text and "Connection refused" in text, text
    assert "longer than runtime.watchdog_grace (1.5 s): stopping the session's server" in text, text


# -- the site's keys, as the job script gets them -----------------------------------------------------------

def site(**runtime):
    return config.parse({**MINIMAL_SITE, "service": {"callback_url": "http://login1:8480"}, "runtime": runtime},
                        "site.yaml")


def test_the_keys_reach_the_job_as_interval_and_grace():
    assert watchdog_setting(site()) == "15:3600"
    assert watchdog_setting(site(watchdog_interval=5, watchdog_grace=0)) == "5:0"
    assert watchdog_setting(site(watchdog_interval=0)) == ""
    cfg = site()
    probe = replace(cfg, service=replace(cfg.service, callback_urls=()))   # as doctor's probe job is built
    assert watchdog_setting(probe) == ""


def test_a_grace_a_blip_could_outlast_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as e:
        site(watchdog_interval=15, watchdog_grace=30)
    assert e.value.key == "runtime.watchdog_grace" and "at least 3 times watchdog_interval (45 s)" in str(e.value)
    assert site(watchdog_interval=15, watchdog_grace=45).runtime.watchdog_grace == 45
