"""The built-in proxy's mechanics against a real websocket server on this machine (no cluster needed).

The upstream here is a small Tornado websocket server (tests/harness/builtin_proxy.py), so the proxy can be
watched doing what a ParaViewWeb server cannot show on demand: binary frames,
close codes, and a session that ends while its server is still up (the real
flow is in test_frontends.py).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.netutil import bind_sockets
from tornado.websocket import websocket_connect

from pvhpc.frontends.builtin import ProxyTraffic
from pvhpc.frontends.relay import FrameBoundary, close_frame
from pvhpc.db.store import SessionRecord

from tests.harness.builtin_proxy import Upstream, record, run


class CountedTraffic(ProxyTraffic):
    def __init__(self):
        self.bytes = {"to_server": 0, "to_client": 0}
        self.joined = 0

    def opened(self):
        self.joined += 1

    def carried(self, direction, nbytes):
        self.bytes[direction] += nbytes


def test_text_and_binary_frames_pass_both_ways_unchanged_and_are_counted():
    async def go(rig):
        rig.frontend.traffic = traffic = CountedTraffic()
        rig.frontend.rebuild([record("s1", rig.upstream_port)])
        conn = await websocket_connect(rig.url("s1"), max_message_size=64 << 20)
        big = bytes(range(256)) * (20 * 1024)   # 5 MiB: a large image frame
        messages = ("hello", b"\x00\x01binary\xff", big, '{"wslink": "1.0"}', "")
        for message in messages:
            await conn.write_message(message, binary=isinstance(message, bytes))
            assert await conn.read_message() == message
        conn.close()
        payload = sum(len(m) for m in messages)
        # Frames as they travel: the payloads plus 2-14 header bytes each (the client's masked).
        assert traffic.joined == 1
        assert payload + 2 * len(messages) <= traffic.bytes["to_client"] <= payload + 10 * len(messages)
        assert payload + 6 * len(messages) <= traffic.bytes["to_server"] <= payload + 14 * len(messages) + 8
    run(go)


class CountedWrites(CountedTraffic):
    """What the proxy wrote to the client, write by write."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def carried(self, direction, nbytes):
        super().carried(direction, nbytes)
        if direction == "to_client":
            self.writes.append(nbytes)


def test_a_frame_whose_header_comes_apart_from_its_payload_reaches_the_client_in_one_write():
    """A 4-byte header passed on alone wakes the client for nothing (and costs the proxy a write): the 1080p
    images of a ParaViewWeb server come that way (issue 28)."""
    async def go(rig):
        rig.frontend.rebuild([record("s1", rig.upstream_port)])
        conn = await websocket_connect(rig.url("s1"))
        relay, = rig.frontend.connections["s1"]
        traffic = CountedWrites()
        relay._carried = traffic.carried
        await conn.write_message("split:31152")
        assert await asyncio.wait_for(conn.read_message(), 2) == "s" * 31152
        assert traffic.writes == [31156]   # header and payload together
        # A frame larger than what is held back streams through as it comes (its header with its first part),
        # and arrives whole.
        await conn.write_message("split:200000")
        assert await asyncio.wait_for(conn.read_message(), 2) == "s" * 200000
        assert len(traffic.writes) > 2 and traffic.writes[1] > 10 and sum(traffic.writes[1:]) == 200010
        conn.close()
    run(go)


def test_what_the_server_sends_with_its_handshake_answer_reaches_the_client():
    async def go(rig):
        rig.frontend.rebuild([record("s1", rig.upstream_port)])
        for _ in range(5):   # the greeting comes in the handshake's own read, or just after: both are carried
            conn = await websocket_connect(rig.url("s1", "greet"))
            assert await asyncio.wait_for(conn.read_message(), 2) == "hello first"
            conn.close()
    run(go)


def test_unknown_unready_and_other_users_sessions_are_refused_before_the_upgrade():
    async def go(rig):
        rig.frontend.rebuild([record("mine", rig.upstream_port), record("queued", None, state="queued"),
                              record("bobs", rig.upstream_port, user="bob")])
        assert await rig.refused("nope") == (404, "no such session")
        assert await rig.refused("queued") == (404, "no such session")
        assert await rig.refused("bobs") == (404, "no such session")   # looks exactly like an unknown id
        assert (await rig.refused("mine", "../admin"))[0] == 400
        assert (await rig.refused("mine"))[0] == 101
    run(go)


def test_staff_do_not_reach_another_users_session():
    """A session's server is its user's code: joined to staff's client it could feed it anything (issue 22)."""
    async def go(rig):
        rig.frontend.rebuild([record("bobs", rig.upstream_port, user="bob")])
        assert await rig.refused("bobs") == (404, "no such session")
    run(go, staff=("alice",))


def test_a_session_that_ends_has_its_connections_closed_while_its_server_still_runs():
    async def go(rig):
        rig.frontend.rebuild([record("s1", rig.upstream_port)])
        conn = await websocket_connect(rig.url("s1"))
        await conn.write_message("ping")
        assert await conn.read_message() == "ping"
        rig.frontend.update(record("s1", rig.upstream_port, state="ended"))
        assert await asyncio.wait_for(conn.read_message(), 2) is None
        assert conn.close_code == 1001 and conn.close_reason == "the session ended"
        await asyncio.sleep(0.2)
        assert Upstream.closed, "the connection to the server was left open"
        assert rig.frontend.connections == {}
        assert (await rig.refused("s1"))[0] == 404
    run(go)


def test_a_session_that_ends_while_a_frame_is_under_way_closes_after_that_frame():
    async def go(rig):
        rig.frontend.rebuild([record("s1", rig.upstream_port)])
        conn = await websocket_connect(rig.url("s1"), max_message_size=64 << 20)
        await conn.write_message("big:48")
        relay, = rig.frontend.connections["s1"]
        while relay.server.boundary.between_frames:   # until the big frame's header has passed
            await asyncio.sleep(0)
        rig.frontend.update(record("s1", rig.upstream_port, state="ended"))
        # The frame under way arrives whole (a close frame in its middle would corrupt it), then the close.
        assert await asyncio.wait_for(conn.read_message(), 5) == b"\x07" * (48 << 20)
        assert await asyncio.wait_for(conn.read_message(), 2) is None
        assert conn.close_code == 1001 and conn.close_reason == "the session ended"
        assert rig.frontend.connections == {}
    run(go)


def test_a_server_that_drops_the_connection_closes_the_clients_with_1011_and_a_client_that_drops_closes_the_servers():
    async def go(rig):
        rig.frontend.rebuild([record("s1", rig.upstream_port)])
        conn = await websocket_connect(rig.url("s1"))
        await conn.write_message("drop")
        assert await asyncio.wait_for(conn.read_message(), 2) is None
        assert conn.close_code == 1011 and conn.close_reason == "the session's server went away"
        # Dying with a frame begun: the proxy held that frame's start back, so the client is between frames and
        # is told the same (not a dropped connection, 1006).
        conn = await websocket_connect(rig.url("s1"))
        await conn.write_message("halfdrop")
        assert await asyncio.wait_for(conn.read_message(), 2) is None
        assert conn.close_code == 1011 and conn.close_reason == "the session's server went away"
        # Dying in the middle of a frame that went on in part: no close frame may go into that frame's bytes, so
        # the connection is just dropped, at once (not after waiting for an answer to a close).
        conn = await websocket_connect(rig.url("s1"), max_message_size=64 << 20)
        await conn.write_message("bigdrop")
        started = asyncio.get_running_loop().time()
        assert await asyncio.wait_for(conn.read_message(), 10) is None
        assert conn.close_code is None and asyncio.get_running_loop().time() - started < 2
        Upstream.closed = []
        conn = await websocket_connect(rig.url("s1"))
        conn.stream.close()   # no close frame: the client's machine went away
        for _ in range(40):
            if Upstream.closed:
                break
            await asyncio.sleep(0.05)
        assert Upstream.closed == [1001]   # told by the proxy, in the client's place
        await asyncio.sleep(0.1)
        assert rig.frontend.connections == {}
    run(go)


def test_a_websocket_from_another_sites_page_is_refused_and_one_from_this_site_passes():
    async def go(rig):
        rig.frontend.rebuild([record("s1", rig.upstream_port)])
        here = f"http://127.0.0.1:{rig.port}"
        for headers, code in (({"Origin": "http://evil.example"}, 403),
                              ({"Origin": here, "Sec-Fetch-Site": "cross-site"}, 403),
                              ({"Origin": "http://evil.example", "Sec-Fetch-Site": "same-site"}, 403),
                              ({"Origin": here}, 101),
                              ({"Origin": "https://viz.example.org", "Sec-Fetch-Site": "same-origin"}, 101)):
            try:
                conn = await websocket_connect(HTTPRequest(rig.url("s1"), headers=headers))
            except HTTPClientError as e:
                assert e.code == code, headers
            else:
                assert code == 101, headers
                conn.close()
    run(go)


def frames(*specs) -> bytes:
    """Websocket frames: (opcode, payload, masked) each."""
    out = b""
    for opcode, payload, masked in specs:
        n = len(payload)
        length = bytes([n]) if n < 126 else bytes([126]) + n.to_bytes(2, "big") if n < 65536 else \
            bytes([127]) + n.to_bytes(8, "big")
        length = bytes([length[0] | (0x80 if masked else 0)]) + length[1:]
        out += bytes([0x80 | opcode]) + length + (b"\x01\x02\x03\x04" if masked else b"") + payload
    return out


def test_frame_boundaries_are_found_however_the_bytes_are_cut():
    stream = frames((1, b"hi", False), (2, b"x" * 300, True), (2, b"y" * 70000, False), (9, b"", True),
                    (8, close_frame(1000, "bye", masked=False)[2:], False))
    ends = set()
    at = 0
    for spec in ((1, b"hi", False), (2, b"x" * 300, True), (2, b"y" * 70000, False), (9, b"", True)):
        at += len(frames(spec))
        ends.add(at)
    for cut in (1, 2, 3, 7, 13, 4096):
        boundary, seen = FrameBoundary(), 0
        for i in range(0, len(stream), cut):
            chunk = stream[i:i + cut]
            assert boundary.feed(chunk) == len(chunk)
            seen += len(chunk)
            assert boundary.between_frames == (seen in ends or seen == len(stream)), (cut, seen)
            assert boundary.close_seen == (seen > max(ends) + 1), (cut, seen)
    # What of a chunk ends at the end of a frame: the proxy passes that on and holds the rest back.
    boundary = FrameBoundary()
    first, second = len(frames((1, b"hi", False))), len(frames((2, b"x" * 300, True)))
    boundary.feed(stream[:first + 10])
    assert boundary.completed == first
    boundary.feed(stream[first + 10:first + 20])
    assert boundary.completed == 0
    third = len(frames((2, b"y" * 70000, False)))
    boundary.feed(stream[first + 20:first + second + third + 2])   # and 2 bytes of the next frame's header
    assert boundary.completed == first + second + third - (first + 20)
    boundary = FrameBoundary()
    assert boundary.feed(stream[:5]) == 5   # the first frame (4 bytes) and the second's first byte
    assert boundary.feed(stream[5:], stop=True) == len(frames((2, b"x" * 300, True))) - 1   # up to its end


def test_close_codes_travel_and_a_client_close_reaches_the_server():
    async def go(rig):
        rig.frontend.rebuild([record("s1", rig.upstream_port)])
        conn = await websocket_connect(rig.url("s1"))
        await conn.write_message("close:4001")
        assert await asyncio.wait_for(conn.read_message(), 2) is None
        assert conn.close_code == 4001
        conn = await websocket_connect(rig.url("s1"))
        conn.close(4002, "bye")
        for _ in range(40):
            if 4002 in Upstream.closed:
                break
            await asyncio.sleep(0.05)
        assert 4002 in Upstream.closed
    run(go)


def test_a_server_that_does_not_answer_gives_502():
    async def go(rig):
        dead = bind_sockets(0, "127.0.0.1")
        port = dead[0].getsockname()[1]
        dead[0].close()
        rig.frontend.rebuild([record("s1", port)])
        assert (await rig.refused("s1"))[0] == 502
    run(go)


# -- /session/<id>/: a session whose server serves its own client (trame apps), against a real small one --

def served_rig(coro_fn, staff=(), session_origin=None):
    """A Rig whose "trame" sessions serve their own client, with tests/harness/served_app.py as that server."""
    from tests.harness import served_app

    async def go(rig):
        rig.frontend.served_applications = frozenset({"trame"})
        app_server, app_port = served_app.listen()
        try:
            return await coro_fn(rig, app_port)
        finally:
            app_server.stop()
    return run(go, staff=staff, session_origin=session_origin)


def served(sid, port, user="alice", application="trame", state="ready") -> SessionRecord:
    return SessionRecord(id=sid, user=user, state=state, host="127.0.0.1", port=port, application=application)


async def http(rig, path, method="GET", body=None, headers=None):
    from tornado.httpclient import AsyncHTTPClient

    return await AsyncHTTPClient().fetch(f"http://127.0.0.1:{rig.port}{path}", method=method, body=body,
                                         headers=headers, raise_error=False, follow_redirects=False)


def test_a_served_session_answers_http_and_websocket_at_its_own_path_without_the_users_credentials():
    async def go(rig, app_port):
        rig.frontend.rebuild([served("s1", app_port)])
        page = await http(rig, "/session/s1/")
        assert page.code == 200 and b"the session's own client" in page.body
        bare = await http(rig, "/session/s1?x=1")
        assert bare.code == 302 and bare.headers["Location"] == "s1/?x=1"
        echo = await http(rig, "/session/s1/echo/a%20b?x=1&y=2", method="POST", body="payload", headers={
            "Authorization": "Basic YWxpY2U6c2VjcmV0", "Cookie": "sso=login-cookie", "X-Remote-User": "alice",
            "X-App-Header": "kept"})
        assert echo.code == 200, echo.body
        seen = json.loads(echo.body)
        assert seen["method"] == "POST" and seen["path"] == "/echo/a%20b" and seen["query"] == "x=1&y=2"
        assert seen["body"] == "payload" and seen["headers"]["x-app-header"] == "kept"
        for private in ("authorization", "cookie", "x-remote-user"):
            assert private not in seen["headers"], private
        assert "Set-Cookie" not in echo.headers   # the app may not set cookies on pvhpc's origin
        conn = await websocket_connect(f"ws://127.0.0.1:{rig.port}/session/s1/ws")
        for message in ("hello", b"\x00binary\xff"):
            await conn.write_message(message, binary=isinstance(message, bytes))
            assert await conn.read_message() == message
        # The session ends: its websocket is closed and its pages are gone, though its server still runs.
        rig.frontend.update(served("s1", app_port, state="ended"))
        assert await asyncio.wait_for(conn.read_message(), 2) is None and conn.close_code == 1001
        assert (await http(rig, "/session/s1/")).code == 404
    served_rig(go)


def test_a_served_session_is_its_owners_only_and_only_for_applications_that_serve_their_client():
    async def go(rig, app_port):
        rig.frontend.rebuild([served("bobs", app_port, user="bob"), served("pv", app_port, application="paraview"),
                              served("queued", None, state="queued")])
        for sid in ("bobs", "pv", "queued", "nope", "bobs?x"):
            for path in (f"/session/{sid}/", f"/session/{sid}/echo/x", f"/session/{sid}"):
                answer = await http(rig, path)
                assert answer.code == 404 and json.loads(answer.body) == {"error": "no such session"}, (path, answer)
        assert (await http(rig, "/session/bobs/echo/x", method="POST", body="x")).code == 404
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(f"ws://127.0.0.1:{rig.port}/session/bobs/ws")
        assert refused.value.code == 404
    served_rig(go, staff=("alice",))   # staff too: the client is the owner's own code on pvhpc's origin


def test_a_served_session_whose_server_does_not_answer_gives_502():
    async def go(rig, app_port):
        dead = bind_sockets(0, "127.0.0.1")
        port = dead[0].getsockname()[1]
        dead[0].close()
        rig.frontend.rebuild([served("s1", port)])
        answer = await http(rig, "/session/s1/")
        error = json.loads(answer.body)["error"]
        assert answer.code == 502 and error.startswith("the session's server does not answer: connection refused"), error
    served_rig(go)


def test_a_served_session_refuses_requests_from_another_sites_pages():
    async def go(rig, app_port):
        rig.frontend.rebuild([served("s1", app_port)])
        here = f"http://127.0.0.1:{rig.port}"
        assert (await http(rig, "/session/s1/echo/x", "POST", "x", {"Origin": here})).code == 200
        foreign = await http(rig, "/session/s1/echo/x", "POST", "x", {"Origin": "http://evil.example"})
        assert foreign.code == 403 and "another site" in json.loads(foreign.body)["error"]
        # Without an Origin, the Referer names the page: the same rule as pvhpc's own API (web/origins.py).
        referred = await http(rig, "/session/s1/echo/x", "POST", "x", {"Referer": "http://evil.example/page"})
        assert referred.code == 403 and "another site" in json.loads(referred.body)["error"]
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{rig.port}/session/s1/ws",
                                                headers={"Origin": "http://evil.example"}))
        assert refused.value.code == 403
    served_rig(go)


def test_a_served_sessions_pages_run_in_a_sandbox_off_pvhpcs_origin():
    """Issue 22: the content a session serves is its user's code; on pvhpc's origin it runs sandboxed (an opaque
    origin of its own), and what it sends as that origin ("null") changes nothing but its own websocket works."""
    async def go(rig, app_port):
        rig.frontend.rebuild([served("s1", app_port)])
        for path in ("/session/s1/", "/session/s1/echo/x"):
            answer = await http(rig, path)
            policies = answer.headers.get_list("Content-Security-Policy")
            assert any(p.startswith("sandbox ") and "allow-same-origin" not in p for p in policies), policies
            assert answer.headers["X-Content-Type-Options"] == "nosniff", path
            assert answer.headers["X-Frame-Options"] == "SAMEORIGIN" and answer.headers["Referrer-Policy"] == "no-referrer"
        # What the sandboxed page sends says Origin: null: no request that changes anything...
        assert (await http(rig, "/session/s1/echo/x", "POST", "x", {"Origin": "null"})).code == 403
        # ...but its own websocket, under its own path, gets through (the server still wants its secret).
        conn = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{rig.port}/session/s1/ws", headers={
            "Origin": "null", "Sec-Fetch-Site": "cross-site"}))
        await conn.write_message("from the sandbox")
        assert await conn.read_message() == "from the sandbox"
        conn.close()
        # Not at /proxy, which no page of a session's has any business opening.
        rig.frontend.rebuild([served("s1", app_port), record("s2", rig.upstream_port)])
        with pytest.raises(HTTPClientError) as refused:
            await websocket_connect(HTTPRequest(rig.url("s2"), headers={"Origin": "null"}))
        assert refused.value.code == 403
    served_rig(go)


def test_with_a_session_origin_sessions_content_is_served_there_only_and_nothing_of_pvhpc_is():
    """frontend.session_origin: a host of its own (here "localhost", pvhpc being 127.0.0.1)."""
    async def go(rig, app_port):
        rig.frontend.rebuild([served("s1", app_port)])
        there = f"http://localhost:{rig.port}"
        moved = await http(rig, "/session/s1/echo/x?y=1")
        assert moved.code == 302 and moved.headers["Location"] == f"{there}/session/s1/echo/x?y=1"
        page = await AsyncHTTPClient().fetch(f"{there}/session/s1/", raise_error=False)
        assert page.code == 200 and b"the session's own client" in page.body
        assert not any(p.startswith("sandbox") for p in page.headers.get_list("Content-Security-Policy"))
        assert page.headers["X-Content-Type-Options"] == "nosniff"
        own = await AsyncHTTPClient().fetch(f"{there}/session/s1/echo/x", method="POST", body="x",
                                            headers={"Origin": there}, raise_error=False)
        assert own.code == 200, own.body
        pvhpcs = await AsyncHTTPClient().fetch(f"{there}/session/s1/echo/x", method="POST", body="x",
                                               headers={"Origin": f"http://127.0.0.1:{rig.port}"}, raise_error=False)
        assert pvhpcs.code == 403
        conn = await websocket_connect(HTTPRequest(f"ws://localhost:{rig.port}/session/s1/ws",
                                                   headers={"Origin": there}))
        await conn.write_message("hi")
        assert await conn.read_message() == "hi"
        conn.close()
        for path in ("/proxy?sessionId=s1&path=ws", "/api/v1/sessions", "/"):
            answer = await AsyncHTTPClient().fetch(f"{there}{path}", raise_error=False)
            assert answer.code == 404 and "only sessions' own content" in json.loads(answer.body)["error"], path
    from tornado.httpclient import AsyncHTTPClient
    served_rig(go, session_origin="http://localhost")


def test_a_lowercased_session_url_still_reaches_its_session():
    """trame's browser client lowercases the whole sessionURL it gets from the launcher: ?sessionid=<id>."""
    async def go(rig):
        rig.frontend.rebuild([record("0abc9lower", rig.upstream_port)])
        lowered = rig.url("0abc9lower").lower()
        assert "sessionid=" in lowered
        conn = await websocket_connect(lowered)
        await conn.write_message("hello")
        assert await conn.read_message() == "hello"
        conn.close()
        assert (await rig.refused("0ABC9LOWER"))[0] == 404   # ids themselves are not case-folded
    run(go)


def test_a_sharees_connection_is_in_the_history_once_joined_and_once_in_ten_minutes():
    """A view reconnects by itself after each drop: each attempt was a "connected" line, written before the server
    answered. Now only a joined connection is, and one per grant per 10 minutes (sessions/sharing.py)."""
    import time
    from types import SimpleNamespace

    from pvhpc.sessions.sharing import Sharing

    class Notes:
        def __init__(self):
            self.lines = []

        async def write(self, fn, session_id, detail):
            self.lines.append((session_id, detail))

    notes = Notes()
    sharing = Sharing(SimpleNamespace(), SimpleNamespace(off_loop=notes), directory=object())
    grant = SimpleNamespace(id="g1", role="view")

    async def grant_of(session_id, user):
        return grant if user == "alice" else None
    sharing.grant_of = grant_of
    dead_port = bind_sockets(0, "127.0.0.1")
    closed = dead_port[0].getsockname()[1]
    dead_port[0].close()

    async def go(rig):
        rig.frontend.rebuild([record("bobs", rig.upstream_port, user="bob"), record("dead", closed, user="bob")])
        assert (await rig.refused("dead"))[0] == 502
        assert notes.lines == []   # refused by the server: no connection to speak of
        for _ in range(3):
            assert (await rig.refused("bobs"))[0] == 101
        assert notes.lines == [("bobs", "alice connected (view, shared)")]
    run(go, sharing=sharing)
    # ten minutes on, a connection is a line again
    asyncio.run(sharing.connected("bobs", "alice", grant, now=time.monotonic() + 601))
    assert len(notes.lines) == 2
