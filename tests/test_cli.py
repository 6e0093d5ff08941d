"""The pvhpc command line: users' and staff commands run as subprocesses against a real service on the real cluster,
and unit tests of the pure parts (exit-code mapping, wording, pacing, config findings)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml

from pvhpc.client import config as clientconfig
from pvhpc.cli import batch_submit, build_parser, exit_codes, session_format
from pvhpc.cli.check_report import FAIL, OK
from pvhpc.cli.config_check import check_partition
from pvhpc.cli.progress import ProgressDisplay
from pvhpc.config import PartitionConfig, Range
from pvhpc.scheduler import EndCause, PartitionInfo

from tests.harness.cluster import block_gpu_partition, cancel, job
from tests.helpers import REPO, as_json, foreground_fraction, pvhpc, render, wait_until

# The documented --json fields of a session (docs/cli.md).
SESSION_FIELDS = {"id", "user", "application", "partition", "gpus", "walltime", "data", "state", "detail",
                  "end_reason", "job_id", "node", "host", "port", "sessionURL", "expected_start", "created_at",
                  "ready_at", "ended_at"}


# -- unit tests of the pure parts -----------------------------------------------------------------------

def test_exit_codes_follow_the_http_status():
    assert [exit_codes.for_status(s) for s in (0, 400, 413, 404, 429, 401, 403, 500, 503)] == [5, 2, 2, 3, 4, 6, 6, 8, 8]
    documented = (REPO / "docs" / "cli.md").read_text()
    for code, meaning in exit_codes.MEANINGS.items():
        assert f"| {code} |" in documented, f"exit code {code} ({meaning}) is not in docs/cli.md"


def test_status_says_what_a_parallel_session_asked_for():
    parallel = session_format.details({"id": "a", "state": "queued", "nodes": 2, "ranks": 4})
    assert "parallel:    4 ranks on 2 nodes" in parallel.splitlines()
    assert session_format.parallel_words({"nodes": 1, "ranks": 1}) == "1 rank on 1 node"
    assert "parallel" not in session_format.details({"id": "b", "state": "queued", "nodes": 1, "ranks": 0})


def test_status_words_say_the_reason_and_the_expected_start():
    now = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
    queued = {"state": "queued", "detail": "waiting for free nodes or GPUs", "job_id": "42",
              "expected_start": (now + timedelta(minutes=5)).isoformat()}
    words = session_format.status_words(queued, now)
    assert words.startswith("queued: waiting for free nodes or GPUs; expected start ")
    assert "(in 5 min)" in words and "job 42" in words
    ended = {"state": "ended", "detail": "the job reached its walltime", "end_reason": "walltime", "job_id": "42"}
    assert "[walltime]" in session_format.status_words(ended) and session_format.ended_badly(ended)
    assert not session_format.ended_badly({"state": "ended", "end_reason": "cancelled"})


def test_forward_command_for_a_laptop():
    """The one ``ssh -L`` line builder: every word checked before it reaches a line a user pastes into a shell."""
    assert session_format.forward_command("gpu01.cluster", 40123, "alice@login.hpc.example.org", 8080) == \
        "ssh -N -L 8080:gpu01.cluster:40123 alice@login.hpc.example.org"
    assert session_format.forward_command("gpu01.cluster", 40123, "login", ssh_port=2222) == \
        "ssh -N -L 40123:gpu01.cluster:40123 -p 2222 login"
    with pytest.raises(ValueError, match="not ready"):
        session_format.forward_command(None, None, "login")
    with pytest.raises(ValueError, match="not a host name"):
        session_format.forward_command("x -oProxyCommand=evil", 1, "login")
    with pytest.raises(ValueError, match="not a login host"):
        session_format.forward_command("gpu01.cluster", 40123, "-oProxyCommand=evil")


def test_tunnel_line_and_session_url_for_a_laptop():
    t = session_format.tunnel({"host": "gpu01.cluster", "port": 40123}, "me@login1", 9000)
    assert t["ssh_command"] == "ssh -N -L 9000:gpu01.cluster:40123 me@login1"
    assert t["tunnel_url"] == "ws://localhost:9000/ws" and not t["tunnel_opens_in_browser"]
    # A server with its own page (trame): the page at the tunnel's end, its client taking the secret from the URL.
    page = session_format.tunnel({"host": "gpu01.cluster", "port": 40123, "secret": "s3"}, "me@login1", 9000, True)
    assert page["tunnel_url"] == "http://localhost:9000/?secret=s3" and page["tunnel_opens_in_browser"]
    assert session_format.connect_url("wss://USE_HOST/proxy?sessionId=a&path=ws", "https://viz.example.org:8443") == \
        "wss://viz.example.org:8443/proxy?sessionId=a&path=ws"


def test_progress_off_a_terminal_prints_a_line_only_per_change():
    out = io.StringIO()
    display = ProgressDisplay(out, live=False)
    queued = {"state": "queued", "detail": "waiting for free nodes or GPUs"}
    for session in (queued, queued, queued, {"state": "ready", "detail": "ParaView is listening on gpu01"}):
        display.show(session)
    display.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "queued: waiting for free nodes or GPUs" in lines[0] and "ready" in lines[1]
    live = io.StringIO()
    display = ProgressDisplay(live, live=True)
    display.show(queued)
    display.show(queued)
    display.close()
    assert live.getvalue().count("\r\033[K") == 2 and live.getvalue().endswith("\n")


def test_client_config_file_environment_and_private_token(tmp_path):
    f = tmp_path / "client.yaml"
    f.write_text("url: http://from-file:1\ntoken: pvhpc_abc\nlogin_host: login1\n")
    f.chmod(0o644)
    s = clientconfig.load(env={"PVHPC_CLIENT_CONFIG": str(f)})
    assert (s.url, s.token, s.login_host) == ("http://from-file:1", "pvhpc_abc", "login1")
    assert s.warnings and "chmod 600" in s.warnings[0]
    f.chmod(0o600)
    s = clientconfig.load(env={"PVHPC_CLIENT_CONFIG": str(f), "PVHPC_URL": "http://from-env:2"})
    assert s.url == "http://from-env:2" and not s.warnings
    f.write_text("url: http://x\ntokn: y\n")
    with pytest.raises(clientconfig.ClientConfigError, match="tokn: unknown key"):
        clientconfig.load(env={"PVHPC_CLIENT_CONFIG": str(f)})


def test_start_pacer_spaces_starts_evenly():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    pacer = batch_submit.StartPacer(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        pacer.wait_turn()
    assert now[0] == pytest.approx(1.0) and slept == pytest.approx([0.25] * 4)


def test_batch_exit_code_is_the_first_failures():
    ok = {"ok": True, "exit_code": 0}
    assert batch_submit.overall_exit_code([ok, ok]) == 0
    assert batch_submit.overall_exit_code([ok, {"ok": False, "exit_code": 4}, {"ok": False, "exit_code": 2}]) == 4


def _partition(**kw) -> PartitionConfig:
    base = dict(name="gpu", slurm_partition="gpu", render="xvfb", gpu_type="a100", gpus=Range(1, 2),
                walltime=Range(60, 480), cpus=1, memory_mb=None, accounts=(), qos=(), description="",
                max_ranks=0, max_nodes=1, max_ranks_per_node=None, ranks_divisible_by_nodes=True)
    return PartitionConfig(**{**base, **kw})


def test_config_findings_name_the_key():
    info = PartitionInfo("gpu", True, 480, 60, ("gpu01", "gpu02"), 2, {"a100": 2}, 4, 0)
    assert [c.status for c in check_partition(_partition(), info, ["gpu"])] == [OK]
    [c] = check_partition(_partition(gpu_type="v100"), info, ["gpu"])
    assert (c.status, c.name) == (FAIL, "partitions.gpu.gpu_type") and "a100" in c.detail
    [c] = check_partition(_partition(gpus=Range(1, 4)), info, ["gpu"])
    assert (c.status, c.name) == (FAIL, "partitions.gpu.gpus.max")
    found = check_partition(_partition(walltime=Range(600, 900)), info, ["gpu"])
    assert {c.name for c in found} == {"partitions.gpu.walltime.max", "partitions.gpu.walltime.default"}
    [c] = check_partition(_partition(name="big", slurm_partition="huge"), None, ["gpu"])
    assert (c.status, c.name) == (FAIL, "partitions.big.slurm_partition")


def test_every_command_has_man_page_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    ours = ("submit", "submit-batch", "status", "list", "wait", "cancel", "logs", "url", "applications", "config",
            "doctor", "map", "db", "partitions", "sessions")
    for name in ours:
        text = sub.choices[name].format_help()
        assert "examples:\n  pvhpc " in text and "exit status:" in text and len(sub.choices[name].description) > 60, name


def test_unreachable_service_bad_usage_and_no_url_exit_codes(tmp_path):
    proc = pvhpc("list", "--json", url="http://127.0.0.1:9")
    assert proc.returncode == exit_codes.UNREACHABLE, proc.stderr
    assert as_json(proc)["exit_code"] == 5 and "cannot reach" in as_json(proc)["error"]
    proc = pvhpc("submit", "paraview", "--gpus", "two", url="http://127.0.0.1:9")
    assert proc.returncode == exit_codes.USAGE and "--gpus" in proc.stderr
    proc = pvhpc("list")
    assert proc.returncode == exit_codes.USAGE and "PVHPC_URL" in proc.stderr


# -- against a real service on the real cluster ---------------------------------------------------------

@pytest.mark.cluster
def test_submit_wait_gives_a_url_that_renders_and_cancel_ends_it(service_factory, cluster, artifacts):
    svc = service_factory().start()
    proc = pvhpc("submit", "paraview", "-p", "gpu", "--wait", "--timeout", "180", "--json", url=svc.url)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    session = as_json(proc)
    assert SESSION_FIELDS <= session.keys() and session["state"] == "ready" and session["secret"]
    # Off a terminal the progress goes one line per change (to stderr with --json, so stdout stays JSON).
    assert "ready: ParaView is listening on" in proc.stderr
    image = render(session["sessionURL"], session["secret"])
    (artifacts / "cli-sphere.jpg").write_bytes(image)
    assert foreground_fraction(image) > 0.01

    sid = session["id"]
    status = as_json(pvhpc("status", "--json", "--", sid[:8], url=svc.url))
    assert status["id"] == sid and [h["state"] for h in status["history"]][-1] == "ready"
    listed = as_json(pvhpc("list", "--state", "live", "--json", url=svc.url))
    assert [s["id"] for s in listed["sessions"]] == [sid]
    url = pvhpc("url", "--login", "me@login1", "--local-port", "9123", "--json", "--", sid, url=svc.url)
    assert url.returncode == 0, url.stderr
    connect = as_json(url)
    assert connect["ssh_command"] == f"ssh -N -L 9123:{session['host']}:{session['port']} me@login1"
    assert connect["secret"] == session["secret"] and connect["sessionURL"] == session["sessionURL"]
    human = pvhpc("url", "--", sid, url=svc.url, env={"PVHPC_LOGIN_HOST": "login.example.org"})
    assert f"ssh -N -L {session['port']}:{session['host']}:{session['port']} login.example.org" in human.stdout
    logs = pvhpc("logs", "--", sid, url=svc.url)
    assert logs.returncode == 0 and "PVHPC_READY" in logs.stdout

    cancelled = pvhpc("cancel", "--json", "--", sid, url=svc.url)
    assert cancelled.returncode == 0, cancelled.stderr
    [ended] = as_json(cancelled)["sessions"]
    assert ended["state"] == "ended" and ended["end_reason"] == "cancelled"
    wait_until(lambda: (lambda j: j is None or j.end in (EndCause.CANCELLED, EndCause.COMPLETED))(
        job(cluster, session["job_id"])), 30, message="the session's job cancelled")
    waited = pvhpc("wait", "--", sid, url=svc.url)
    assert waited.returncode == exit_codes.FAILED and "cancelled" in waited.stderr


@pytest.mark.cluster
def test_waiting_in_the_queue_shows_the_reason_then_times_out_then_waits_to_ready(service_factory, cluster):
    svc = service_factory().start()
    env = dict(os.environ, **cluster.environment())
    blockers = []
    try:
        block_gpu_partition(cluster, blockers)
        proc = pvhpc("submit", "paraview", "-p", "gpu", "--wait", "--timeout", "8", url=svc.url)
        assert proc.returncode == exit_codes.TIMEOUT, proc.stdout + proc.stderr
        lines = proc.stdout.splitlines()
        assert any("queued: waiting for free nodes or GPUs" in line for line in lines), proc.stdout
        assert len(lines) == len(set(line.split(" ", 1)[1] for line in lines)), "a line per change, no repeats"
        sid = proc.stderr.split("session ", 1)[1].split()[0]
        assert "is still queued" in proc.stderr
        waiter = subprocess.Popen([sys.executable, "-m", "pvhpc", "wait", "--json", "--timeout", "180", "--", sid],
                                  env={**env, "PYTHONPATH": str(REPO), "PVHPC_URL": svc.url,
                                       "PVHPC_CLIENT_CONFIG": str(REPO / "no-such-client.yaml")},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(2)
        cancel(cluster, blockers)
        out, err = waiter.communicate(timeout=240)
        assert waiter.returncode == 0, out + err
        assert json.loads(out)["state"] == "ready"
        assert pvhpc("cancel", "--", sid, url=svc.url).returncode == 0
    finally:
        cancel(cluster, blockers, check=False)


@pytest.mark.cluster
def test_exit_codes_for_bad_input_not_found_and_limit_hit(service_factory, tmp_path):
    svc = service_factory(limits={"sessions_per_user": 1}).start()
    bad = pvhpc("submit", "paraview", "-p", "gpu", "--gpus", "9", "--json", url=svc.url)
    assert bad.returncode == exit_codes.USAGE
    assert as_json(bad)["field"] == "gpus" and as_json(bad)["status"] == 400
    missing = pvhpc("status", "nosuchsessionnosuchsessionnosuch1", url=svc.url)
    assert missing.returncode == exit_codes.NOT_FOUND and "no session" in missing.stderr
    assert pvhpc("cancel", "zz", url=svc.url).returncode == exit_codes.NOT_FOUND
    # The URL from a client config file works like PVHPC_URL.
    client_file = tmp_path / "client.yaml"
    client_file.write_text(f"url: {svc.url}\n")
    first = pvhpc("submit", "paraview", "-p", "cpu", "--json", env={"PVHPC_CLIENT_CONFIG": str(client_file)})
    assert first.returncode == 0, first.stderr
    limited = pvhpc("submit", "paraview", "-p", "cpu", url=svc.url)
    assert limited.returncode == exit_codes.LIMIT and "sessions_per_user" in limited.stderr
    assert pvhpc("cancel", "--", as_json(first)["id"], url=svc.url).returncode == 0
    svc.stop()
    gone = pvhpc("list", url=svc.url)
    assert gone.returncode == exit_codes.UNREACHABLE and "cannot reach pvhpc" in gone.stderr


@pytest.mark.cluster
def test_submit_batch_keeps_its_pace_and_reports_each_file(service_factory):
    svc = service_factory().start()
    data = Path(yaml.safe_load(svc.config_path.read_text())["applications"]["paraview"]["data_roots"][0])
    for name in ("a.vtk", "b.vtk", "c.vtk"):
        (data / name).write_text("# vtk DataFile Version 3.0\n")
    started = time.monotonic()
    proc = pvhpc("submit-batch", "paraview", "a.vtk", "b.vtk", "missing.vtk", "c.vtk", "-p", "cpu",
                 "--parallel", "2", "--rate", "2", "--json", url=svc.url)
    took = time.monotonic() - started
    results = as_json(proc)["results"]
    assert [r["data"] for r in results] == ["a.vtk", "b.vtk", "missing.vtk", "c.vtk"]
    assert [r["ok"] for r in results] == [True, True, False, True]
    assert "not an existing file" in results[2]["error"] and results[2]["exit_code"] == exit_codes.USAGE
    assert proc.returncode == exit_codes.USAGE
    assert took >= 1.4, "four submissions at 2 per second take at least 1.5 s"
    created = sorted(datetime.fromisoformat(r["session"]["created_at"]) for r in results if r["ok"])
    assert all((b - a).total_seconds() >= 0.4 for a, b in zip(created, created[1:])), created
    ids = [r["session"]["id"] for r in results if r["ok"]]
    assert pvhpc("cancel", "--", *ids, url=svc.url).returncode == 0


@pytest.mark.cluster
def test_config_check_names_the_key_of_each_problem(service_factory):
    svc = service_factory()
    good = pvhpc("config", "check", "--config", svc.config_path)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "sbatch --test-only" in good.stdout and "matches the cluster" in good.stdout

    config = yaml.safe_load(svc.config_path.read_text())
    config["partitions"]["gpu"]["gpu_type"] = "v100"
    config["partitions"]["cpu"]["walltime"] = {"default": 30, "max": "12:00:00"}   # the partition's MaxTime is 8 h
    config["partitions"]["big"] = {"slurm_partition": "huge"}
    bad_path = svc.dir / "bad.yaml"
    bad_path.write_text(yaml.safe_dump(config))
    bad = pvhpc("config", "check", "--config", bad_path, "--json")
    assert bad.returncode == exit_codes.FAILED, bad.stdout + bad.stderr
    failures = {c["name"]: c for c in as_json(bad)["checks"] if c["status"] == "fail"}
    assert set(failures) == {"partitions.gpu.gpu_type", "partitions.cpu.walltime.max",
                             "partitions.big.slurm_partition"}, failures
    assert "v100" in failures["partitions.gpu.gpu_type"]["detail"]
    assert "08:00:00" in failures["partitions.cpu.walltime.max"]["detail"]
    assert "huge" in failures["partitions.big.slurm_partition"]["detail"]
    human = pvhpc("config", "check", "--config", bad_path)
    for key in failures:
        assert f"FAIL  {key}:" in human.stdout

    config["partitions"]["gpu"]["gpu_tpye"] = "a100"
    bad_path.write_text(yaml.safe_dump(config))
    broken = pvhpc("config", "check", "--config", bad_path)
    assert broken.returncode == exit_codes.USAGE and "partitions.gpu.gpu_tpye" in broken.stderr


@pytest.mark.cluster
def test_doctor_healthy_then_with_slurmctld_stopped(service_factory, cluster):
    svc = service_factory().start()
    healthy = pvhpc("doctor", "--config", svc.config_path, "--probe-partition", "cpu")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "healthy: all" in healthy.stdout
    for part in ("database", "munge", "slurmctld", "ParaView on a cpu node", "service"):
        assert f"ok    {part}:" in healthy.stdout, part
    # It says which Slurm the backend found, here the test cluster's own.
    assert f"ok    slurm release: backend slurm speaks Slurm {cluster.slurm.version} (tools {cluster.slurm.prefix}/bin)" \
        in healthy.stdout

    pid = next(d for d in cluster.status() if d.name == "slurmctld").pid
    try:
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not next(d for d in cluster.status() if d.name == "slurmctld").running, 30,
                   message="slurmctld stopped")
        sick = pvhpc("doctor", "--config", svc.config_path, "--json")
        assert sick.returncode == exit_codes.FAILED, sick.stdout + sick.stderr
        report = as_json(sick)
        assert report["healthy"] is False
        checks = {c["name"]: c for c in report["checks"]}
        assert checks["slurmctld"]["status"] == "fail" and "does not answer" in checks["slurmctld"]["detail"]
        assert "start slurmctld" in checks["slurmctld"]["fix"] and "slurmctld.log" in checks["slurmctld"]["fix"]
        assert checks["munge"]["status"] == "ok"
        human = pvhpc("doctor", "--config", svc.config_path, "--no-probe")
        assert human.returncode == 1 and "NOT healthy" in human.stdout and "fix: start slurmctld" in human.stdout
    finally:
        cluster.start()


class _ScriptedClient:
    """Answers create() from a script of errors, then with a session: for the batch's retry rules only."""

    def __init__(self, errors):
        from pvhpc.client.api import ClientError

        self.errors = [ClientError(message, status=status, retry_after=retry) for status, message, retry in errors]
        self.calls = 0

    def create(self, **fields):
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {"id": "s1", "state": "queued", "detail": "", **fields}


def test_batch_waits_out_the_request_rate_limit_but_not_the_session_limit():
    slept = []
    pacer = batch_submit.StartPacer(0)
    client = _ScriptedClient([(429, "too many requests: this site allows 3 a minute per user "
                                    "(limits.requests_per_minute); try again in 7 s", 7)])
    result = batch_submit.submit_one(client, pacer, {"application": "paraview"}, None, 10, 0, sleep=slept.append)
    assert result["ok"] and client.calls == 2 and slept == [7]
    client = _ScriptedClient([(429, "you already have 1 live sessions, the most this site allows", None)])
    result = batch_submit.submit_one(client, pacer, {"application": "paraview"}, None, 10, 0, sleep=slept.append)
    assert not result["ok"] and result["exit_code"] == exit_codes.LIMIT and client.calls == 1
    client = _ScriptedClient([(0, "cannot reach pvhpc", None)])
    result = batch_submit.submit_one(client, pacer, {"application": "paraview"}, None, 10, 60, sleep=slept.append)
    assert result["exit_code"] == exit_codes.UNREACHABLE and client.calls == 1, "an unanswered submission is not repeated"


def test_submit_takes_saved_state_and_its_deprecated_old_flag_state_with_a_note(capsys):
    """``--saved-state PATH`` says which state a session starts from; ``--state``, its old name (beside ``pvhpc list
    --state``, a session's state), still works, hidden from --help, with a one-line note; both at once are refused."""
    from pvhpc.cli.base import CommandError
    from pvhpc.cli.session_cmds import request_fields

    parser = build_parser()
    args = parser.parse_args(["submit", "paraview", "--saved-state", "/x/s.pvsm"])
    assert request_fields(args) == {"saved_state": "/x/s.pvsm"} and capsys.readouterr().err == ""
    args = parser.parse_args(["submit", "paraview", "--state", "/x/s.pvsm"])
    assert request_fields(args) == {"saved_state": "/x/s.pvsm"}
    assert capsys.readouterr().err == "pvhpc submit: --state is deprecated, use --saved-state\n"
    args = parser.parse_args(["submit", "paraview", "--state", "/x/s.pvsm", "--saved-state", "/x/t.pvsm"])
    with pytest.raises(CommandError, match="--saved-state and --state were both given") as e:
        request_fields(args)
    assert e.value.code == exit_codes.USAGE
    with pytest.raises(SystemExit):
        parser.parse_args(["submit", "--help"])
    shown = capsys.readouterr().out
    assert "--saved-state PATH" in shown and "--state" not in shown
