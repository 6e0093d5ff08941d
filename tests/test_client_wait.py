"""The Python client's wait: it returns at its timeout even when the push channel goes quiet (real HTTP)."""

from __future__ import annotations

import http.server
import json
import threading
import time

from pvhpc.client import Client


class QuietService(http.server.BaseHTTPRequestHandler):
    """Sends one event, then nothing (not even a keep-alive) for longer than the client waits."""

    def do_GET(self):
        session = {"id": "s1", "state": "queued"}
        if self.path.endswith("/events"):
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            self.wfile.write(f"event: session\ndata: {json.dumps(session)}\n\n".encode())
            self.wfile.flush()
            time.sleep(4)
            return
        body = json.dumps(session).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_wait_returns_the_session_as_it_is_at_its_timeout():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietService)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        started = time.monotonic()
        session = Client(f"http://127.0.0.1:{server.server_address[1]}").wait("s1", timeout=1)
        assert session["state"] == "queued"
        assert time.monotonic() - started < 3
    finally:
        server.shutdown()
        server.server_close()
