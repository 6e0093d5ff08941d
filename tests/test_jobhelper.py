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
