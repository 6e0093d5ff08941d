"""The node-side helper's report: tried at each instance in turn, a refusal final (real HTTP on loopback)."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from pvhpc.node import jobhelper

from tests.harness.ports import free_port_block


class Recorder(http.server.BaseHTTPRequestHandler):
    status = 200
    received: list

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Authorization"], json.loads(body)))
        self.send_response(self.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def instance():
    servers = []

    def start(status: int = 200):
        handler = type("H", (Recorder,), {"status": status, "received": []})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/r", handler.received

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_report_goes_to_the_next_instance_when_the_first_is_down(instance):
    down = f"http://127.0.0.1:{free_port_block(1)}/r"     # nothing listens there
    up, received = instance()
    assert jobhelper.report([down, up], {"event": "ready", "port": 5000}, "tok", give_up_after=5) == 0
    assert received == [("/r", "token tok", {"event": "ready", "port": 5000})]


def test_a_refusal_is_final_and_not_tried_elsewhere(instance, capsys):
    refusing, refused = instance(403)
    other, received = instance()
    assert jobhelper.report([refusing, other], {"event": "ready"}, "tok", give_up_after=5) == 1
    assert len(refused) == 1 and received == []
    assert "HTTP 403" in capsys.readouterr().err


def test_gives_up_after_its_time_when_no_instance_answers():
    urls = [f"http://127.0.0.1:{free_port_block(1)}/r" for _ in range(2)]
    assert jobhelper.report(urls, {"event": "exited"}, "tok", give_up_after=0.5) == 1


def test_a_successors_handover_waits_then_prints_the_state(monkeypatch, capsys):
    """A successor job's helper asks beside its report URL, with its token, until pvhpc names the state."""
    answers = [{"wait": True}, {"wait": True}, {"state": "/home/u/.pvhpc/states/s-1.pvsm"}]
    asked = []

    class Handover(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            asked.append((self.path, self.headers["Authorization"]))
            body = json.dumps(answers.pop(0) if answers else {"wait": True}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    port = free_port_block(1)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handover)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PVHPC_REPORT_TOKEN", "successor-token")
    try:
        code = jobhelper.handover(f"http://127.0.0.1:{port}/api/v1/sessions/abc/report", timeout=20, interval=0.05)
    finally:
        server.shutdown()
    assert code == 0 and capsys.readouterr().out == "/home/u/.pvhpc/states/s-1.pvsm\n"
    assert asked == [("/api/v1/sessions/abc/handover", "token successor-token")] * 3
