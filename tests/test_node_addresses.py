"""Addresses, not names (issue 23, shapes 1-3): the node's server listens on, and its job reports, the node's
address on its route to pvhpc; pvhpc checks that address against Slurm's view of the node and dials it.

The node's side runs for real on this machine (its routes, a real launcher reporting to a real HTTP server);
the service's check runs with a scheduler and a resolver standing in for a cluster whose nodes are other hosts.
The same shapes on the multi-host test cluster are in test_multihost_addresses.py.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import socket
import subprocess
import sys
import threading

import pytest

from pvhpc import config, hostaddresses
from pvhpc.db.store import Change, SessionRecord, Store
from pvhpc.paths import JOB_HELPER
from pvhpc.sessions import nodeaddresses
from pvhpc.sessions import service as service_module
from pvhpc.sessions.events import EventBus
from pvhpc.jobs import reports
from pvhpc.sessions.outcomes import NotAllowed
from pvhpc.sessions.service import ServiceError, SessionService, token_hash
from pvhpc.jobs.states import SessionState

from tests.fakes import ScriptedScheduler, running

S = SessionState


# -- the node's side -----------------------------------------------------------------------------------------

def node_module(name):
    """One of pvhpc's node-side modules as the job runs it: by file name, beside the others."""
    sys.path.insert(0, str(JOB_HELPER.parent))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(JOB_HELPER.parent))


supervisor = node_module("supervisor")


def test_the_route_to_a_host_gives_this_hosts_own_address_on_it():
    assert supervisor.route_address("127.0.0.1", 8480) == "127.0.0.1"
    assert supervisor.route_address("no-such-host.invalid", 8480) is None


@pytest.fixture
def node_named_127_0_1_1(monkeypatch):
    """A node whose hosts file maps its own name to 127.0.1.1 (Debian's installer), on a route 10.0.0.2 -> pvhpc."""
    routes = {"login1": "10.0.0.2", "login1.cluster.test": "10.0.0.2"}
    monkeypatch.setattr(supervisor, "route_address", lambda host, port: routes.get(host))
    monkeypatch.setattr(supervisor.socket, "gethostname", lambda: "cpu02.cluster.test")
    monkeypatch.setattr(supervisor.socket, "gethostbyname", lambda name: "127.0.1.1")
    return routes


def test_the_server_listens_and_reports_on_the_route_to_pvhpc_never_on_127_0_1_1(node_named_127_0_1_1):
    where = supervisor.server_address("node", "http://login1:8480/api/v1/sessions/x/report", {})
    assert (where.bind, where.report) == ("10.0.0.2", "10.0.0.2")
    assert "route to pvhpc (login1)" in where.why


def test_every_callback_url_is_tried_in_order_for_a_route(node_named_127_0_1_1):
    where = supervisor.server_address("node", "http://gone:8480/r http://login1.cluster.test:8480/r", {})
    assert where.report == "10.0.0.2"


def test_listening_on_every_interface_still_reports_the_reachable_address(node_named_127_0_1_1):
    where = supervisor.server_address("any", "http://login1:8480/r", {})
    assert (where.bind, where.report) == ("0.0.0.0", "10.0.0.2")


def test_an_address_the_site_names_is_both_bound_and_reported(node_named_127_0_1_1):
    assert supervisor.server_address("10.9.9.9", "http://login1:8480/r", {})[:2] == ("10.9.9.9", "10.9.9.9")


def test_without_a_callback_the_route_to_the_submit_host_counts(node_named_127_0_1_1):
    """doctor's probe reports to nobody: the host the job was submitted from is where pvhpc's side is."""
    where = supervisor.server_address("node", "", {"SLURM_SUBMIT_HOST": "login1"})
    assert where.report == "10.0.0.2" and "came from (login1)" in where.why


def test_with_no_route_at_all_a_loopback_host_name_is_not_used_and_the_log_says_so(node_named_127_0_1_1):
    where = supervisor.server_address("node", "http://gone:8480/r", {"SLURM_SUBMIT_HOST": "gone"})
    assert where.bind == "0.0.0.0" and where.report == "cpu02.cluster.test"
    assert "127.0.1.1" in where.why and "every interface" in where.why


def test_with_no_route_a_host_name_that_is_not_loopback_is_used(monkeypatch):
    monkeypatch.setattr(supervisor, "route_address", lambda host, port: None)
    monkeypatch.setattr(supervisor.socket, "gethostbyname", lambda name: "10.0.0.7")
    assert supervisor.server_address("node", "", {})[:2] == ("10.0.0.7", "10.0.0.7")


class Reports(http.server.BaseHTTPRequestHandler):
    taken: list = []

    def do_POST(self):
        self.taken.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


def test_the_launcher_reports_the_address_its_server_listens_on(tmp_path):
    """The real launcher, a real server and a real report: the job says an address (the one ${host} gave the
    server), not this host's name, which pvhpc's side may not resolve (shapes 1 and 3)."""
    Reports.taken = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Reports)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    script = tmp_path / "server.py"
    script.write_text("import socket, sys, time\n"
                      "s = socket.socket(); s.bind((sys.argv[1], 0)); s.listen()\n"
                      "print('listening on', sys.argv[1], 'port', s.getsockname()[1], flush=True)\n"
                      "time.sleep(3)\n")
    env = dict(os.environ, PVHPC_LAUNCH_COMMAND=json.dumps([sys.executable, str(script), "${host}"]),
               PVHPC_LAUNCH_READY=json.dumps({"line": r"port (?P<port>\d+)"}), PVHPC_LISTEN="node",
               PVHPC_REPORT_URL=f"http://127.0.0.1:{server.server_port}/report", PVHPC_REPORT_TOKEN="t")
    try:
        out = subprocess.run([sys.executable, str(JOB_HELPER.parent / "supervisor.py"), "--workdir", str(tmp_path),
                              "--start-timeout", "20"], env=env, capture_output=True, text=True, timeout=60).stdout
    finally:
        server.shutdown()
    ready = [r for r in Reports.taken if r["event"] == "ready"]
    assert ready and ready[0]["host"] == "127.0.0.1", (Reports.taken, out)
    assert "listening on 127.0.0.1" in out
    assert "pvhpc: the server listens on 127.0.0.1, this node's address on its route to pvhpc (127.0.0.1)" in out


# -- pvhpc's side: the pure choice ---------------------------------------------------------------------------

ELSEWHERE = {"cpu02": set(), "10.0.0.2": {"10.0.0.2"}}   # NodeName not resolved here, NodeAddr an address


def never_here(addresses):
    return False


def test_an_address_slurm_gives_is_the_nodes():
    assert nodeaddresses.checked_address("10.0.0.2", {"10.0.0.2"}, ELSEWHERE, never_here) == "10.0.0.2"


def test_a_slurm_name_this_side_cannot_resolve_is_dialled_at_slurms_address():
    """Shape 1 with an older job's report: the name is Slurm's, the address comes from Slurm's NodeAddr."""
    assert nodeaddresses.checked_address("cpu02", set(), ELSEWHERE, never_here) == "10.0.0.2"


def test_a_name_only_the_node_knows_counts_only_when_the_report_came_from_the_node():
    """Shape 3 with an older job's report: the node's FQDN, which this side does not resolve."""
    assert nodeaddresses.checked_address("cpu02.cluster.test", set(), ELSEWHERE, never_here, peer="10.0.0.2") \
        == "10.0.0.2"
    assert nodeaddresses.checked_address("cpu02.cluster.test", set(), ELSEWHERE, never_here, peer="10.0.0.9") is None


def test_loopback_and_other_hosts_are_refused_from_a_node_elsewhere():
    for reported in ("127.0.0.1", "127.0.1.1", "10.0.0.3"):
        assert nodeaddresses.checked_address(reported, {reported}, ELSEWHERE, never_here) is None


def test_loopback_is_taken_when_the_node_is_this_very_host():
    here = {"gpu01": set(), "vm": {"127.0.0.1"}}
    def all_here(addresses):
        return all(hostaddresses.is_local(a) for a in addresses)

    assert nodeaddresses.checked_address("127.0.0.1", {"127.0.0.1"}, here, all_here) == "127.0.0.1"
    assert nodeaddresses.checked_address("127.0.0.1", {"127.0.0.1"}, ELSEWHERE, all_here) is None


def test_the_peer_is_preferred_among_several_addresses_of_a_name():
    view = {"cpu02": {"10.0.0.2", "10.1.0.2"}}
    assert nodeaddresses.checked_address("cpu02", {"10.0.0.2", "10.1.0.2"}, view, never_here) == "10.0.0.2"
    assert nodeaddresses.checked_address("cpu02", {"10.0.0.2", "10.1.0.2"}, view, never_here,
                                         peer="10.1.0.2") == "10.1.0.2"


def test_this_hosts_own_addresses_are_local_and_others_are_not():
    assert hostaddresses.is_local("127.0.0.1") and hostaddresses.is_local("127.0.1.1")
    own = supervisor.route_address("192.0.2.1", 9) or supervisor.route_address("127.0.0.1", 9)
    assert hostaddresses.is_local(own)
    assert not hostaddresses.is_local("203.0.113.9")   # TEST-NET-3: nobody's


def test_getent_answers_are_read_per_name():
    out = ("== cpu02\n10.0.0.2       STREAM cpu02\n10.0.0.2       DGRAM  \n10.0.0.2       RAW    \n"
           "== gone\n== cpu03\n10.0.0.3       STREAM cpu03.cluster.test\n")
    assert nodeaddresses.parse_getent(out, ["cpu02", "gone", "cpu03"]) == {
        "cpu02": {"10.0.0.2"}, "gone": set(), "cpu03": {"10.0.0.3"}}


def test_over_ssh_asks_the_login_host_only_for_names():
    asked = []

    class Link:
        async def run(self, command):
            asked.append(command)
            return 0, "== cpu02\n10.0.0.2 STREAM cpu02\n", ""

    found = asyncio.run(nodeaddresses.over_ssh(Link())(["cpu02", "10.0.0.2"]))
    assert found == {"cpu02": {"10.0.0.2"}, "10.0.0.2": {"10.0.0.2"}}
    assert asked == ["echo '== cpu02'; getent ahostsv4 cpu02"]


# -- pvhpc's side: the report, through the service ------------------------------------------------------------

class Cluster:
    """What Slurm says about its nodes, and what names give on the login side (nothing for the nodes' names)."""

    def __init__(self, nodes, login_side):
        self.nodes, self.login_side = nodes, login_side
        self.node_calls = 0

    async def node_addresses(self):
        self.node_calls += 1
        return {name: set(view) for name, view in self.nodes.items()}

    async def resolve(self, names):
        found = {}
        for name in names:
            found[name] = {name} if nodeaddresses.is_ipv4(name) else set(self.login_side.get(name, ()))
        return found


@pytest.fixture
def world(tmp_path):
    cfg = config.parse({"partitions": {"cpu": {}}, "applications": {"paraview": {"data_roots": [str(tmp_path)]}}},
                       "site.yaml")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    sched = ScriptedScheduler()
    # Slurm knows cpu02 by NodeAddr 10.0.0.2 (NodeHostname cpu02); the node calls itself cpu02.cluster.test; the
    # login side resolves neither name.
    cluster = Cluster({"cpu02": {"cpu02", "10.0.0.2"}}, {})
    sched.node_addresses = cluster.node_addresses
    sched.jobs["1001"] = running("1001", nodes="cpu02", name="pvhpc-1")
    service = SessionService(cfg, store, sched, EventBus(), resolve=cluster.resolve)
    store.add(SessionRecord(id="s1", user="u", application="paraview", partition="cpu", gpus=0, walltime_minutes=60,
                            request_key="k", state=S.SUBMITTING.value, detail="", job_name="pvhpc-1", secret="x",
                            report_token_hash=token_hash("tok")))
    store.change("s1", Change.to(S.STARTING, "", job_id="1001"))
    return store, service, cluster


def ready(service, host, peer=None, node="cpu02"):
    return asyncio.run(service.report("s1", "tok", reports.parse({"event": "ready", "host": host, "port": 40000,
                                                                  "job_id": "1001", "node": node}), peer=peer))


def test_shape_1_the_session_is_dialled_at_slurms_address_not_at_the_name_the_job_said(world):
    store, service, _ = world
    record = ready(service, "cpu02")   # what an older job script reports: its host name
    assert (record.state, record.host, record.node) == ("ready", "10.0.0.2", "cpu02")


def test_shape_1_a_job_that_reports_its_address_is_taken(world):
    store, service, _ = world
    record = ready(service, "10.0.0.2", peer="10.0.0.2")
    assert (record.state, record.host, record.node) == ("ready", "10.0.0.2", "cpu02")


def test_an_address_slurm_gives_for_the_node_is_taken_without_resolving_its_names(world):
    """Shape 1's usual report: the node's NodeAddr. The node's names, which the login side does not resolve (a
    site's DNS may take seconds to say so), are not looked up on the way to the session's first frame."""
    store, service, cluster = world
    asked = []

    async def resolve(names):
        asked.extend(names)
        return await cluster.resolve(names)

    service.resolve = resolve
    record = ready(service, "10.0.0.2", peer="10.0.0.2")
    assert (record.state, record.host) == ("ready", "10.0.0.2") and asked == []


def test_shape_3_an_fqdn_the_login_side_does_not_resolve_is_matched_by_where_the_report_came_from(world):
    store, service, _ = world
    with pytest.raises(ServiceError, match="not node cpu02"):
        ready(service, "cpu02.cluster.test", peer="192.0.2.80")   # through a reverse proxy: nothing to go by
    record = ready(service, "cpu02.cluster.test", peer="10.0.0.2")
    assert (record.state, record.host) == ("ready", "10.0.0.2")


def test_shape_2_a_loopback_report_from_a_node_elsewhere_is_refused_naming_both_sides(world):
    store, service, _ = world
    with pytest.raises(ServiceError) as refused:
        ready(service, "127.0.1.1", peer="10.0.0.2")
    message = refused.value.message
    assert isinstance(refused.value, NotAllowed)
    assert "the report says 127.0.1.1, which is not node cpu02 where job 1001 runs" in message
    assert "10.0.0.2" in message and "cpu02 (does not resolve here)" in message
    assert "loopback" in message
    assert store.get("s1").host is None


def test_another_hosts_address_is_refused(world):
    store, service, _ = world
    for host, peer in (("10.0.0.3", "10.0.0.2"), ("login-node", None), ("login-node", "192.0.2.80")):
        with pytest.raises(ServiceError) as refused:
            ready(service, host, peer=peer)
        assert isinstance(refused.value, NotAllowed) and "not node cpu02" in refused.value.message


def test_slurms_view_is_read_once_more_before_a_refusal(world):
    """A node's NodeAddr changed since pvhpc last read it: the report is taken, after one more look."""
    store, service, cluster = world
    asyncio.run(service.scheduler.node_addresses())   # as read earlier...
    service._nodes = {"cpu02": {"cpu02", "10.0.0.1"}}   # ...when the node had another address
    record = ready(service, "10.0.0.2")
    assert record.host == "10.0.0.2" and cluster.node_calls == 2


def test_forged_reports_in_a_row_read_slurms_node_view_once(world):
    """A job's user holds its report token and may post refused reports as fast as they like: Slurm's node view is
    read again for the first refusal only, not for each (every read is a whole sinfo), until NODES_REREAD_S."""
    store, service, cluster = world
    for _ in range(5):
        with pytest.raises(ServiceError, match="not node cpu02"):
            ready(service, "10.0.0.3", peer="10.0.0.2")
    assert cluster.node_calls == 1, cluster.node_calls
    service._nodes_read_at -= service_module.NODES_REREAD_S
    with pytest.raises(ServiceError, match="not node cpu02"):
        ready(service, "10.0.0.3", peer="10.0.0.2")
    assert cluster.node_calls == 2, cluster.node_calls
