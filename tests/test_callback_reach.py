"""Whether jobs on the compute nodes can reach service.callback_url (issue 23, shape 4): config check's judgement
without a job (pvhpc/cli/callback_reach.py), the probe job's call from the node (pvhpc/cli/probe.py) and what doctor
makes of it (pvhpc/cli/doctor.py)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pvhpc import config, hostaddresses
from pvhpc.cli import callback_reach, config_check, doctor
from pvhpc.cli.callback_reach import ELSEWHERE, HERE, UNKNOWN, NodePlace
from pvhpc.cli.check_report import FAIL, OK, SKIP, WARN
from pvhpc.cli.probe import CALLBACK_CHECK, callback_outcomes, with_callback_check
from pvhpc.scheduler import PartitionInfo, SchedulerUnavailable

from tests.fakes import ScriptedScheduler


def site(tmp_path, **service) -> config.SiteConfig:
    return config.parse({
        "service": service,
        "partitions": {"cpu": {}},
        "applications": {"paraview": {"data_roots": [str(tmp_path)]}},
    }, "site.yaml")


def never(_):
    raise AssertionError("not to be looked up")


# -- what is loopback, what is this host ------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost", "LOCALHOST.",
                                  "viz.localhost", "::ffff:127.0.0.1"])
def test_loopback_hosts(host):
    assert callback_reach.is_loopback_host(host)


@pytest.mark.parametrize("host", ["10.1.2.3", "login1", "localhost.example.org", "::2", "0.0.0.0"])
def test_hosts_that_are_not_loopback_wherever_resolved(host):
    assert not callback_reach.is_loopback_host(host)


def test_local_addresses_are_this_hosts_own():
    assert hostaddresses.is_local("127.0.0.1") and hostaddresses.is_local("127.0.1.1")
    assert not hostaddresses.is_local("198.51.100.7"), "TEST-NET-2 is nobody's address"
    assert not hostaddresses.is_local("gpu01"), "a name is not an address"


def test_a_node_slurm_gives_an_address_is_placed_by_it_not_by_its_names():
    place = callback_reach.place_of("gpu01", {"gpu01", "198.51.100.7"}, resolve=never)
    assert place == NodePlace("gpu01", ELSEWHERE, ("198.51.100.7",))
    assert callback_reach.place_of("gpu01", {"gpu01", "127.0.0.1"}, resolve=never).where == HERE


def test_a_node_known_by_names_is_placed_by_what_they_resolve_to_here():
    hostname = socket.gethostname()
    # The single-host cluster: NodeName gpu01 (resolves nowhere), NodeAddr and NodeHostname this host's name.
    assert callback_reach.place_of("gpu01", {"gpu01", hostname}).where == HERE
    assert callback_reach.place_of("gpu01", {"gpu01.invalid"}).where == UNKNOWN
    # Every address must be this host's: a name that also resolves elsewhere is elsewhere.
    mixed = callback_reach.place_of("gpu01", {"gpu01"}, resolve=lambda n: {"127.0.0.1", "198.51.100.7"})
    assert mixed.where == ELSEWHERE and mixed.addresses == ("198.51.100.7",)


# -- config check's judgement -------------------------------------------------------------------------------------

def judged(cfg, places, **kwargs):
    kwargs.setdefault("route_source", lambda address: "198.51.100.1")
    return callback_reach.judge(cfg, places, **kwargs)


def test_a_left_out_callback_with_nodes_elsewhere_fails_naming_the_key_and_an_address_to_set(tmp_path):
    cfg = site(tmp_path, listen="0.0.0.0:8480")
    assert cfg.service.callback_urls == ("http://127.0.0.1:8480",)
    places = [NodePlace("cpu01", ELSEWHERE, ("198.51.100.11",)), NodePlace("cpu02", HERE, ("127.0.0.1",))]
    [check] = judged(cfg, places)
    assert check.name == "service.callback_url" and check.status == FAIL
    assert "http://127.0.0.1:8480" in check.detail and "left out" in check.detail and "0.0.0.0:8480" in check.detail
    assert "cpu01 (198.51.100.11)" in check.detail and "cpu02" not in check.detail
    assert "set service.callback_url" in check.fix and "http://198.51.100.1:8480" in check.fix
    assert "service.listen" not in check.fix, "the service already listens on every address"


def test_a_service_on_loopback_only_is_told_to_listen_where_the_nodes_reach_too(tmp_path):
    [check] = judged(site(tmp_path, listen="127.0.0.1:8480"), [NodePlace("cpu01", ELSEWHERE, ("198.51.100.11",))])
    assert check.status == FAIL and "service.listen to that address or 0.0.0.0:8480" in check.fix


def test_a_loopback_callback_is_fine_when_every_node_is_this_host(tmp_path):
    [check] = judged(site(tmp_path), [NodePlace("cpu01", HERE, ("127.0.0.1",)), NodePlace("cpu02", HERE, ())])
    assert check.status == OK and "every node" in check.detail


def test_without_slurm_a_loopback_callback_is_a_warning_that_says_the_nodes_were_not_looked_at(tmp_path):
    [check] = judged(site(tmp_path, listen="0.0.0.0:8480"), None, unknown_why="Slurm does not answer: refused")
    assert check.status == WARN and "could not be asked (Slurm does not answer: refused)" in check.detail
    assert "set service.callback_url" in check.fix


def test_nodes_whose_names_resolve_nowhere_here_cannot_be_placed(tmp_path):
    [check] = judged(site(tmp_path), [NodePlace("cpu01", UNKNOWN, ())])
    assert check.status == WARN and "cpu01" in check.detail and "resolves here" in check.detail


def test_a_name_that_is_loopback_only_here_is_a_warning_since_the_nodes_resolve_it_themselves(tmp_path):
    cfg = site(tmp_path, callback_url="http://login1:8480")
    [check] = judged(cfg, [NodePlace("cpu01", ELSEWHERE, ("198.51.100.11",))], resolve=lambda n: {"127.0.1.1"})
    assert check.status == WARN and "127.0.1.1" in check.detail and "pvhpc doctor" in check.fix


def test_a_callback_on_another_address_passes_and_each_of_several_is_named_by_its_index(tmp_path):
    cfg = site(tmp_path, listen="0.0.0.0:8480", callback_url=["http://198.51.100.1:8480", "http://127.0.0.1:8481"])
    checks = judged(cfg, [NodePlace("cpu01", ELSEWHERE, ("198.51.100.11",))], is_local=lambda a: False)
    assert [(c.name, c.status) for c in checks] == [("service.callback_url[0]", OK), ("service.callback_url[1]", FAIL)]
    assert "left out" not in checks[1].detail


def test_a_callback_to_this_host_while_the_service_listens_on_loopback_is_a_warning(tmp_path):
    cfg = site(tmp_path, listen="127.0.0.1:8480", callback_url="http://login1:8480")
    [check] = judged(cfg, [NodePlace("cpu01", ELSEWHERE, ("198.51.100.11",))],
                     resolve=lambda n: {"198.51.100.1"}, is_local=lambda a: a == "198.51.100.1")
    assert check.status == WARN and "service.listen" in check.detail and "0.0.0.0:8480" in check.fix


def test_config_check_asks_slurm_for_the_partitions_nodes_and_their_addresses(tmp_path):
    scheduler = ScriptedScheduler()
    scheduler.node_addresses = lambda: asyncio.sleep(0, {"cpu01": {"cpu01", "198.51.100.11"},
                                                         "gpu09": {"gpu09", "198.51.100.99"}})
    live = {"cpu": PartitionInfo("cpu", True, None, None, ("cpu01",), 1)}
    [check] = asyncio.run(callback_reach.check_callbacks(site(tmp_path), scheduler, live))
    assert check.status == FAIL and "cpu01 (198.51.100.11)" in check.detail and "gpu09" not in check.detail


def test_config_check_without_slurm_still_judges_the_callback(tmp_path):
    scheduler = ScriptedScheduler()

    async def down():
        raise SchedulerUnavailable("Unable to contact slurm controller")

    scheduler.partitions = down
    checks = asyncio.run(config_check.check_site(site(tmp_path, listen="0.0.0.0:8480"), scheduler, None))
    assert [(c.name, c.status) for c in checks] == [("scheduler", FAIL), ("service.callback_url", WARN)]
    assert "Unable to contact slurm controller" in checks[1].detail


# -- the probe job's call from the node ---------------------------------------------------------------------------

class _Answers(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        status = 200 if self.path == "/api/v1/health" else 404
        self.send_response(status)
        self.end_headers()
        self.wfile.write(self.body if status == 200 else b"")

    def log_message(self, *args):
        pass


def http_server(body: bytes):
    handler = type("Handler", (_Answers,), {"body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # closed again when the block ends: nothing listens there


def test_the_node_side_call_tells_pvhpc_from_a_closed_port_and_from_another_server(tmp_path):
    pvhpc_like = http_server(json.dumps({"ok": True}).encode())
    other = http_server(b"<html>hello</html>")
    try:
        urls = [f"http://127.0.0.1:{pvhpc_like.server_port}", f"http://127.0.0.1:{closed_port()}",
                f"http://127.0.0.1:{other.server_port}"]
        # A job script as a site might write it: #SBATCH lines must stay before the first command.
        script = "#!/bin/sh\n# a site's job\n#SBATCH --comment=x\n\necho job body\n"
        checked = with_callback_check(script, sys.executable, tuple(urls))
        assert checked.index("#SBATCH") < checked.index("-c") < checked.index("echo job body")
        (tmp_path / "job.sh").write_text(checked)
        run = subprocess.run(["sh", str(tmp_path / "job.sh")], capture_output=True, text=True, timeout=60,
                             env={"PATH": "/usr/bin:/bin", "SLURMD_NODENAME": "cpu01"})
    finally:
        pvhpc_like.shutdown()
        other.shutdown()
    assert run.returncode == 0 and run.stdout.rstrip().endswith("job body"), run.stdout + run.stderr
    outcomes = callback_outcomes(run.stdout)
    assert outcomes[urls[0]] == ("cpu01", "")
    assert outcomes[urls[1]][0] == "cpu01" and "Connection refused" in outcomes[urls[1]][1]
    assert "not as pvhpc does" in outcomes[urls[2]][1]


def test_no_callback_urls_leave_the_script_alone():
    assert with_callback_check("#!/bin/bash\necho hi\n", "/usr/bin/python3", ()) == "#!/bin/bash\necho hi\n"
    assert "'" not in CALLBACK_CHECK, "the snippet is quoted as one shell word"


# -- what doctor makes of it -------------------------------------------------------------------------------------

def test_doctor_names_the_unreachable_callback_and_what_to_set(tmp_path):
    scheduler = ScriptedScheduler()
    scheduler.node_addresses = lambda: asyncio.sleep(0, {"cpu01": {"cpu01", "198.51.100.11"}})
    dead = f"http://127.0.0.1:{closed_port()}"
    cfg = site(tmp_path, listen="127.0.0.1:8480", callback_url=["http://login1:8480", dead, "http://login2:8480"])
    outcomes = {"http://login1:8480": ("cpu01", ""), dead: ("cpu01", "<urlopen error [Errno 111] Connection refused>")}
    checks = asyncio.run(doctor.check_callbacks_from_node(cfg, scheduler, outcomes))
    assert [c.status for c in checks] == [OK, FAIL, SKIP]
    assert "a job on cpu01 reached pvhpc at http://login1:8480" in checks[0].detail
    assert checks[1].detail.startswith(f"the nodes cannot reach service.callback_url {dead}: <urlopen error")
    assert "does not answer" in checks[1].fix and "set service.callback_url[1]" in checks[1].fix
    assert "service.listen" in checks[1].fix


# -- on the real cluster ------------------------------------------------------------------------------------------

def with_callbacks(svc, urls: list[str]):
    """``svc`` (not started) with its jobs reporting to ``urls``."""
    import yaml

    data = yaml.safe_load(svc.config_path.read_text())
    data["service"]["callback_url"] = urls
    svc.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return svc.start()


def checks_of(proc) -> dict:
    from tests.helpers import as_json

    return {c["name"]: c for c in as_json(proc)["checks"]}


@pytest.mark.cluster
def test_doctor_probe_job_calls_each_callback_from_its_node(service_factory, cluster):
    from tests.helpers import pvhpc

    svc = service_factory()
    # Where the nodes reach this host (the bridge's address on the cluster of hosts), and a port nobody listens on.
    reachable, dead = f"http://{cluster.login_address}:{svc.port}", f"http://{cluster.login_address}:{closed_port()}"
    with_callbacks(svc, [reachable, dead])
    report = pvhpc("doctor", "--config", svc.config_path, "--probe-partition", "cpu", "--json")
    checks = checks_of(report)
    assert report.returncode == 1, report.stdout + report.stderr
    reached, refused = checks["service.callback_url[0]"], checks["service.callback_url[1]"]
    assert reached["status"] == OK and f"reached pvhpc at {reachable}" in reached["detail"], reached
    assert refused["status"] == FAIL, refused
    assert refused["detail"].startswith(f"the nodes cannot reach service.callback_url {dead}: ")
    assert "Connection refused" in refused["detail"] and "tried by the probe job on cpu0" in refused["detail"]
    assert "does not answer" in refused["fix"] and "set service.callback_url[1]" in refused["fix"]
    assert checks["ParaView on a cpu node"]["status"] == OK, checks["ParaView on a cpu node"]
    human = pvhpc("doctor", "--config", svc.config_path, "--no-probe")
    assert "skip  service.callback_url[1]: " in human.stdout and "--no-probe given" in human.stdout


@pytest.mark.cluster
def test_a_loopback_callback_with_nodes_on_other_hosts(service_factory, cluster):
    if not cluster.multi_host:
        pytest.skip("needs the cluster of hosts: here every node is this host, and loopback reaches pvhpc")
    from tests.helpers import pvhpc

    svc = service_factory()
    login = f"http://{cluster.login_address}:{svc.port}"
    with_callbacks(svc, [login, f"http://127.0.0.1:{svc.port}"])
    judged = pvhpc("config", "check", "--config", svc.config_path, "--json")
    checks = checks_of(judged)
    assert judged.returncode == 1, judged.stdout + judged.stderr
    assert checks["service.callback_url[0]"]["status"] == OK, checks["service.callback_url[0]"]
    loopback = checks["service.callback_url[1]"]
    assert loopback["status"] == FAIL and "other hosts" in loopback["detail"], loopback
    assert login in loopback["fix"], "the address of this host on its route to the nodes"
    probed = pvhpc("doctor", "--config", svc.config_path, "--probe-partition", "cpu", "--json")
    checks = checks_of(probed)
    assert checks["service.callback_url[0]"]["status"] == OK, checks["service.callback_url[0]"]
    node_loopback = checks["service.callback_url[1]"]
    assert node_loopback["status"] == FAIL, node_loopback
    assert f"cannot reach service.callback_url http://127.0.0.1:{svc.port}: " in node_loopback["detail"]
    assert login in node_loopback["fix"] and "does not answer" not in node_loopback["fix"], node_loopback
