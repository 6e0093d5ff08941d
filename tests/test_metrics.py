"""GET /metrics: what each metric counts, who may read it, and, on the real cluster, each one moving with a session."""

from __future__ import annotations

import json
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pvhpc.db.store import Change, Store, utcnow
from pvhpc.errors import PvhpcError
from pvhpc.metrics import Metrics
from pvhpc.scheduler import Scheduler, SchedulerUnavailable, SubmitRefused
from pvhpc.jobs.states import EndReason, SessionState
from pvhpc.web.prometheus import read_token_file, route_label

from tests.harness import inprocess
from tests.helpers import run, session_record

S = SessionState


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (name, sorted labels) -> value, parsed with prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(metrics: Metrics) -> dict:
    from prometheus_client import generate_latest

    return samples(generate_latest(metrics.registry).decode())


def moved(record, state: SessionState, at, **fields):
    """``record`` as the store returns it after a change to ``state`` at ``at``."""
    record.state = state.value
    record.updated_at = at
    for key, v in fields.items():
        setattr(record, key, v)
    return record


# -- sessions, from the event bus ---------------------------------------------------------------------

def test_a_session_moves_the_counts_by_state_and_its_waits_and_end_are_measured():
    m = Metrics(["gpu", "cpu"])
    t0 = utcnow()
    r = session_record(1, partition="gpu", created_at=t0, updated_at=t0)
    m.session_changed(r, False)
    found = scrape(m)
    assert value(found, "pvhpc_sessions", state="submitting", partition="gpu") == 1
    assert value(found, "pvhpc_sessions", state="queued", partition="cpu") == 0   # idle series exist
    assert ("pvhpc_sessions", (("partition", "cpu"), ("state", "queued"))) in found
    assert value(found, "pvhpc_sessions_created_total", partition="gpu") == 1
    m.session_changed(moved(r, S.QUEUED, t0 + timedelta(seconds=1)), False)
    m.session_changed(moved(r, S.STARTING, t0 + timedelta(seconds=40), running_since=t0 + timedelta(seconds=40)),
                      False)
    m.session_changed(moved(r, S.READY, t0 + timedelta(seconds=55), ready_at=t0 + timedelta(seconds=55)), False)
    found = scrape(m)
    assert value(found, "pvhpc_sessions", state="ready", partition="gpu") == 1
    assert value(found, "pvhpc_sessions", state="submitting", partition="gpu") == 0
    assert value(found, "pvhpc_session_queue_wait_seconds_count", partition="gpu") == 1
    assert value(found, "pvhpc_session_queue_wait_seconds_sum", partition="gpu") == pytest.approx(40)
    assert value(found, "pvhpc_session_request_to_ready_seconds_sum", partition="gpu") == pytest.approx(55)
    # Requeued, started again: a second queue wait, from the requeue; request-to-ready is measured once.
    m.session_changed(moved(r, S.QUEUED, t0 + timedelta(seconds=100), host=None, port=None), False)
    m.session_changed(moved(r, S.READY, t0 + timedelta(seconds=130), ready_at=t0 + timedelta(seconds=130),
                            running_since=None), False)
    found = scrape(m)
    assert value(found, "pvhpc_session_queue_wait_seconds_sum", partition="gpu") == pytest.approx(70)
    assert value(found, "pvhpc_session_request_to_ready_seconds_count", partition="gpu") == 1
    m.session_changed(moved(r, S.ENDED, t0 + timedelta(seconds=200), end_reason="walltime"), False)
    found = scrape(m)
    assert value(found, "pvhpc_sessions", state="ready", partition="gpu") == 0
    assert value(found, "pvhpc_sessions_ended_total", reason="walltime", partition="gpu") == 1
    assert not any(r.id in str(key) for key in found)   # never a session id in a label


def test_a_peers_changes_move_the_counts_by_state_but_no_counter():
    m = Metrics(["gpu"])
    t0 = utcnow()
    r = session_record(2, partition="gpu", created_at=t0, updated_at=t0)
    for record in (r, moved(r, S.READY, t0 + timedelta(seconds=9), ready_at=t0 + timedelta(seconds=9))):
        m.session_changed(record, True)
    found = scrape(m)
    assert value(found, "pvhpc_sessions", state="ready", partition="gpu") == 1
    assert value(found, "pvhpc_sessions_created_total", partition="gpu") == 0
    assert value(found, "pvhpc_session_request_to_ready_seconds_count", partition="gpu") == 0
    m.session_changed(moved(r, S.ENDED, t0 + timedelta(seconds=20), end_reason="cancelled"), True)
    found = scrape(m)
    assert value(found, "pvhpc_sessions", state="ready", partition="gpu") == 0
    assert value(found, "pvhpc_sessions_ended_total", reason="cancelled", partition="gpu") == 0


def test_counts_by_state_start_from_the_store_after_a_restart(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    store.open()
    for i, partition in enumerate(("gpu", "gpu", "cpu")):
        store.add(session_record(i, partition=partition, job_name=f"pvhpc-{i}"))
    store.change("s1", Change.to(S.QUEUED, "waiting", job_id="7"))
    store.change("s2", Change.to(S.ENDED, "gone", end_reason=EndReason.CANCELLED))
    m = Metrics(["gpu", "cpu"])
    m.load(store.live())
    found = scrape(m)
    assert value(found, "pvhpc_sessions", state="submitting", partition="gpu") == 1
    assert value(found, "pvhpc_sessions", state="queued", partition="gpu") == 1
    assert value(found, "pvhpc_sessions", state="submitting", partition="cpu") == 0   # ended: not counted
    # A session loaded as queued that starts now: its wait is counted from its request.
    queued = store.get("s1")
    m.session_changed(moved(queued, S.STARTING, utcnow(), running_since=utcnow()), False)
    assert value(scrape(m), "pvhpc_session_queue_wait_seconds_count", partition="gpu") == 1


# -- scheduler calls, poll cycles -------------------------------------------------------------------

class Flaky(Scheduler):
    def __init__(self):
        self.down = False

    async def query(self, job_ids):
        if self.down:
            raise SchedulerUnavailable("squeue timed out")
        return {}

    async def submit(self, request):
        raise SubmitRefused("invalid account")


def test_scheduler_calls_and_failures_are_counted_by_call_and_a_refusal_is_no_failure():
    m = Metrics()
    inner = Flaky()
    scheduler = m.metered(inner)
    run(scheduler.query(["1"]))
    inner.down = True
    with pytest.raises(SchedulerUnavailable):
        run(scheduler.query(["1"]))
    with pytest.raises(SubmitRefused):
        run(scheduler.submit(None))
    assert scheduler.down is True   # everything else is the inner scheduler's
    found = scrape(m)
    assert value(found, "pvhpc_scheduler_calls_total", call="query") == 2
    assert value(found, "pvhpc_scheduler_call_failures_total", call="query") == 1
    assert value(found, "pvhpc_scheduler_calls_total", call="submit") == 1
    assert value(found, "pvhpc_scheduler_call_failures_total", call="submit") == 0


# -- who may read /metrics ----------------------------------------------------------------------------

def make_app(tmp_path: Path, token_file: Path | None = None, staff=("alice",), user="alice"):
    return inprocess.make_app(tmp_path, auth={"user": user, "staff": list(staff)},
                              metrics={"token_file": str(token_file)} if token_file else {})


def fetch(app, requests: list[tuple[str, dict]]) -> list:
    """GET each path with its own headers."""
    return [inprocess.fetch_all(app, [("GET", path, None)], headers=headers)[0] for path, headers in requests]


def write_token(path: Path, token: str, mode: int = 0o600) -> Path:
    path.write_text(token + "\n")
    path.chmod(mode)
    return path


def test_staff_and_the_bearer_token_may_read_metrics_nobody_else(tmp_path):
    token = "t0k3n-" + "x" * 40
    app = make_app(tmp_path, write_token(tmp_path / "metrics.token", token), staff=())
    wrong, bare, url_token, right, not_staff = fetch(app, [
        ("/metrics", {"Authorization": "Bearer " + "y" * 46}),
        ("/metrics", {"Authorization": "Bearer "}),
        (f"/metrics?token={token}", {}),                       # never from a URL
        ("/metrics", {"Authorization": f"Bearer {token}"}),
        ("/metrics", {}),                                      # alice, logged in (auth.kind local), not staff
    ])
    assert wrong.code == bare.code == 401 and "metrics.token_file" in json.loads(wrong.body)["error"]
    assert url_token.code == 403 and not_staff.code == 403
    assert "only staff" in json.loads(not_staff.body)["error"]
    assert right.code == 200 and right.headers["Content-Type"].startswith("text/plain")
    assert b"pvhpc_sessions" in right.body
    staff_app = make_app(tmp_path / "staff", staff=("alice",))
    [as_staff, bearer_without_token] = fetch(staff_app, [("/metrics", {}),
                                                         ("/metrics", {"Authorization": f"Bearer {token}"})])
    assert as_staff.code == 200 and bearer_without_token.code == 401


def test_the_token_file_must_be_the_owners_alone_and_hold_a_long_word(tmp_path):
    assert read_token_file(write_token(tmp_path / "ok", "a" * 32)) == "a" * 32
    for name, token, mode, says in (("open", "a" * 32, 0o640, "chmod 600"), ("short", "abc", 0o600, "openssl rand"),
                                    ("spaces", "a" * 20 + " " + "b" * 20, 0o600, "one word")):
        with pytest.raises(PvhpcError, match=says) as e:
            read_token_file(write_token(tmp_path / name, token, mode))
        assert "metrics.token_file" in str(e.value) and token not in str(e.value)
    with pytest.raises(PvhpcError, match="cannot read .*missing"):
        read_token_file(tmp_path / "missing")


# -- HTTP requests by route -------------------------------------------------------------------------

def test_route_labels_are_patterns_never_paths():
    assert route_label(r"/api/v1/sessions/([A-Za-z0-9_-]{1,128})/log$") == "/api/v1/sessions/{id}/log"
    assert route_label(r"/paraview/?$") == "/paraview/"
    assert route_label(r"/session/([A-Za-z0-9_-]{1,128})(/.*)?$") == "/session/{id}{path}"
    assert route_label(r"/static/([A-Za-z0-9_-]+\.(?:css|js|svg))$") == "/static/{path}"
    assert route_label(r"/apps/my\-app/(.*)$") == "/apps/my-app/{path}"


def test_requests_are_counted_by_route_and_status_without_ids_or_raw_paths(tmp_path):
    app = make_app(tmp_path)
    secret_id = "Zq" * 16
    fetch(app, [(f"/api/v1/sessions/{secret_id}", {}), ("/api/v1/health", {}), ("/no/such/thing/" + secret_id, {}),
                ("/api/v1/nothing", {})])
    found = scrape(app.ctx.metrics)
    requests = {dict(labels)["route"]: v for (name, labels), v in found.items() if name == "pvhpc_http_requests_total"}
    assert value(found, "pvhpc_http_requests_total", method="GET", route="/api/v1/sessions/{id}", status="404") == 1
    assert value(found, "pvhpc_http_requests_total", method="GET", route="/api/v1/health", status="200") == 1
    assert value(found, "pvhpc_http_requests_total", method="GET", route="(no route)", status="404") == 1
    assert value(found, "pvhpc_http_requests_total", method="GET", route="/api/.*", status="404") == 1
    assert not any(secret_id in route or "/no/such" in route for route in requests)
    assert value(found, "pvhpc_poller_leading") == 0   # not started: it has not asked for the lead yet


# -- the Grafana dashboard ----------------------------------------------------------------------------

def test_the_dashboard_reads_every_metric_and_only_metrics_pvhpc_exposes():
    import re

    dashboard = json.loads((Path(__file__).resolve().parent.parent / "docs" / "grafana-pvhpc.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    read = {re.sub(r"_(bucket|sum|count)$", "", name) for e in exprs for name in re.findall(r"pvhpc_[a-z_]+", e)}
    m = Metrics(["gpu"])
    exposed = {}
    for family in text_string_to_metric_families(__import__("prometheus_client").generate_latest(m.registry).decode()):
        exposed[family.name + ("_total" if family.type == "counter" else "")] = family.type
    assert read == set(exposed)
    for e in exprs:   # counters are read as rates or increases, histograms through their buckets
        for name in re.findall(r"pvhpc_[a-z_]+", e):
            if exposed.get(name) == "counter":
                assert re.search(rf"(rate|increase)\({name}\[", e), e
            if exposed.get(re.sub(r"_bucket$", "", name)) == "histogram":
                assert name.endswith("_bucket") and "histogram_quantile" in e, e
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"${datasource}"}


# -- on the real cluster: every metric moves with a real session ----------------------------------------

@pytest.mark.cluster
@pytest.mark.paraview
def test_each_metric_moves_as_a_real_session_moves(service_factory, cluster, tmp_path):
    from tests.harness.cluster import block_gpu_partition, cancel
    from tests.helpers import render, wait_until

    token = "scrape-" + "k" * 40
    token_file = write_token(tmp_path / "metrics.token", token)
    svc = service_factory(frontend={"kind": "builtin"}, metrics={"token_file": str(token_file)}).start()

    def scraped() -> dict:
        request = urllib.request.Request(svc.url + "/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as r:
            return samples(r.read().decode())

    client = svc.client()
    before = scraped()
    assert value(before, "pvhpc_poller_leading") == 1
    assert value(before, "pvhpc_sessions", state="queued", partition="gpu") == 0
    blockers = block_gpu_partition(cluster)
    try:
        created = client.create("paraview", partition="gpu", gpus=1, walltime="00:20:00")
        wait_until(lambda: value(scraped(), "pvhpc_sessions", state="queued", partition="gpu") == 1, 60,
                   message="the queued session counted")
        queued = scraped()
        assert value(queued, "pvhpc_sessions_created_total", partition="gpu") == 1
        assert value(queued, "pvhpc_scheduler_calls_total", call="submit") == 1
    finally:
        cancel(cluster, blockers)
    session = client.wait(created["id"], ("ready",), timeout=180)
    assert session["state"] == "ready", session
    image = render(session["sessionURL"], session["secret"])
    assert image
    ready = scraped()
    assert value(ready, "pvhpc_sessions", state="ready", partition="gpu") == 1
    assert value(ready, "pvhpc_sessions", state="queued", partition="gpu") == 0
    assert value(ready, "pvhpc_session_queue_wait_seconds_count", partition="gpu") == 1
    assert value(ready, "pvhpc_session_request_to_ready_seconds_count", partition="gpu") == 1
    # It waited behind the blockers, so its wait and its time to ready are more than a moment.
    assert value(ready, "pvhpc_session_request_to_ready_seconds_sum", partition="gpu") > \
        value(ready, "pvhpc_session_queue_wait_seconds_sum", partition="gpu") > 0
    assert value(ready, "pvhpc_reports_total", event="ready", outcome="taken") == 1
    assert value(ready, "pvhpc_proxy_connections_opened_total") >= 1
    assert value(ready, "pvhpc_proxy_bytes_total", direction="to_client") > len(image)
    assert value(ready, "pvhpc_proxy_bytes_total", direction="to_server") > 0
    assert value(ready, "pvhpc_poll_cycle_seconds_count") > value(before, "pvhpc_poll_cycle_seconds_count")
    assert value(ready, "pvhpc_scheduler_calls_total", call="query") > value(before, "pvhpc_scheduler_calls_total",
                                                                             call="query")
    routes = {dict(k[1]).get("route") for k in ready if k[0] == "pvhpc_http_requests_total"}
    assert {"/api/v1/sessions", "/api/v1/sessions/{id}/report", "/proxy", "/metrics"} <= routes
    assert value(ready, "pvhpc_http_requests_total", method="POST", route="/api/v1/sessions", status="201") == 1

    client.cancel(created["id"])
    wait_until(lambda: value(scraped(), "pvhpc_sessions", state="ready", partition="gpu") == 0, 30,
               message="the ended session no longer counted as ready")
    after = scraped()
    assert value(after, "pvhpc_sessions_ended_total", reason="cancelled", partition="gpu") == 1
    assert value(after, "pvhpc_scheduler_calls_total", call="cancel") >= 1
    assert value(after, "pvhpc_proxy_connections") == 0
    # Scraping did not count as sessions moving, and no scrape showed an id.
    assert not any(created["id"] in str(key) for key in after)

    # After a restart the counts by state come from the store (a live session is counted again).
    second = client.create("paraview", partition="cpu")
    wait_until(lambda: client.get(second["id"])["state"] in ("queued", "starting", "ready"), 60, message="live")
    svc.stop()
    svc.start()
    restarted = scraped()
    assert sum(value(restarted, "pvhpc_sessions", state=s.value, partition="cpu") for s in S if s.live) == 1
    client.cancel(second["id"])
