"""Issue 22, "also found": one user cannot starve the front end or the service, what runs as a user for the service
is bounded and ended as a whole, what users wrote is shown safely to staff, and the data browser shows a user what
that user may read and nothing more.

Real components throughout: the built-in proxy against a real websocket and HTTP server, with users named by the
trusted front end over its Unix socket; a real ``pvhpc serve`` on the real cluster; real Unix users with the shipped
sudoers rule and ``scheduler.submit_as: user``; the ``pvhpc`` command as a subprocess.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_unix_socket
from tornado.web import Application
from tornado.websocket import websocket_connect

from pvhpc import config as site_config
from pvhpc.cli import session_format
from pvhpc.config import AuthConfig
from pvhpc.db.store import SessionRecord
from pvhpc.frontends.builtin import BuiltinFrontEnd
from pvhpc.web.auth import make_authenticator

from tests.harness import served_app
from tests.harness.frontend import TrustedFrontEnd
from tests.harness.ports import free_port_block
from tests.harness.unix_users import shared_site
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parent.parent
ESCAPES = "\x1b]52;c;cHduZWQ=\x07\x1b[2A\rfake  row\u202e"   # a clipboard write, cursor moves, a fake row, bidi


# -- what users wrote, as the command line shows it ----------------------------------------------------------

def test_control_characters_users_wrote_are_written_out_never_obeyed():
    shown = session_format.shown(f"reason{ESCAPES}\nsecond\tline")
    assert shown == "reason\\x1b]52;c;cHduZWQ=\\x07\\x1b[2A\\rfake  row\\u202e\\nsecond\\tline"
    assert session_format.shown("log\nline\ttab\x1b[31m", lines=True) == "log\nline\ttab\\x1b[31m"
    row = {"id": "s1", "user": "bob", "state": "ended", "end_reason": "failed", "detail": f"x{ESCAPES}\nfake row"}
    table = session_format.table([row], with_user=True)
    assert len(table.splitlines()) == 2 and "\x1b" not in table and "\r" not in table
    for text in (session_format.status_words(row), session_format.details({**row, "history": [row]}),
                 session_format.warning_line({"message": ESCAPES}),
                 session_format.batch_line({"ok": False, "data": f"f{ESCAPES}.vtk", "error": ESCAPES})):
        assert not set(text) & {"\x1b", "\x07", "\r", "\u202e"}, text


# -- the built-in front end: connections per user, idle websockets --------------------------------------------

def limits(**values):
    return site_config.parse({"partitions": {"cpu": {}}, "applications": {"paraview": {"data_roots": ["/tmp"]}},
                              "limits": values}, "test").limits


class UsersRig:
    """The built-in front end on a Unix socket, users named by the trusted front end (tests/harness/frontend.py)
    in X-Remote-User as Apache does after its login; alice's and bob's sessions served by a real small server."""

    def __init__(self, **bounds):
        self.frontend = BuiltinFrontEnd("unused", served_applications=frozenset({"trame"}), limits=limits(**bounds))
        auth = make_authenticator(AuthConfig(kind="header", user="nobody", header="X-Remote-User", staff=(),
                                             users_trust_each_other=True))
        self.dir = Path(tempfile.mkdtemp(prefix="pvhpc-bounds-"))
        self.port = free_port_block(1)
        ctx = SimpleNamespace(auth=auth, config=SimpleNamespace(
            service=SimpleNamespace(allowed_origins=(f"http://127.0.0.1:{self.port}",)),
            frontend=SimpleNamespace(session_origin=None), limits=limits(**bounds)))
        self.server = HTTPServer(Application(self.frontend.handlers(ctx)))
        self.server.add_socket(bind_unix_socket(str(self.dir / "fe.sock")))
        self.front = TrustedFrontEnd(self.dir / "fe.sock", self.port)
        self.app_server, app_port = served_app.listen()
        self.frontend.rebuild([SessionRecord(id=sid, user=user, state="ready", host="127.0.0.1", port=app_port,
                                             application="trame") for sid, user in (("a1", "alice"), ("b1", "bob"))])

    async def websocket(self, user: str, sid: str):
        return await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{self.port}/proxy?sessionId={sid}&path=ws",
                                                   headers={"X-Remote-User": user}))

    async def refused(self, user: str, sid: str) -> tuple[int, dict]:
        try:
            conn = await self.websocket(user, sid)
        except HTTPClientError as e:
            return e.code, json.loads(e.response.body)
        conn.close()
        return 101, {}

    async def get(self, user: str, path: str):
        return await AsyncHTTPClient().fetch(f"http://127.0.0.1:{self.port}{path}", headers={"X-Remote-User": user},
                                             raise_error=False)

    async def stop(self) -> None:
        await self.frontend.stop()
        self.front.stop()
        self.server.stop()
        self.app_server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def with_rig(coro_fn, **bounds):
    async def go():
        rig = UsersRig(**bounds)
        try:
            return await coro_fn(rig)
        finally:
            await rig.stop()
    return asyncio.run(go())


async def echoes(conn, text: str = "hello") -> bool:
    await conn.write_message(text)
    return await asyncio.wait_for(conn.read_message(), 5) == text


def test_a_user_holds_at_most_so_many_proxied_connections_and_another_user_is_not_held_up():
    async def go(rig):
        held = [await rig.websocket("alice", "a1") for _ in range(3)]
        assert all([await echoes(c) for c in held])
        status, answer = await rig.refused("alice", "a1")
        assert status == 429 and answer["limit"] == "limits.proxied_connections_per_user", answer
        assert "3 at once per user" in answer["error"]
        # HTTP requests at /session/<id>/ are connections of the user's too...
        page = await rig.get("alice", "/session/a1/echo/x")
        assert page.code == 429 and json.loads(page.body)["limit"] == "limits.proxied_connections_per_user"
        # ...and another user's go through, websocket and HTTP alike.
        bobs = await rig.websocket("bob", "b1")
        assert await echoes(bobs)
        assert (await rig.get("bob", "/session/b1/echo/x")).code == 200
        # A connection alice closes is hers to use again.
        held.pop().close()
        await asyncio.sleep(0.5)
        again = await rig.websocket("alice", "a1")
        assert await echoes(again)
        assert rig.frontend.held["alice"] == 3
        for c in held + [again, bobs]:
            c.close()
        await asyncio.sleep(0.5)
        assert not rig.frontend.held, rig.frontend.held
    with_rig(go, proxied_connections_per_user=3, proxy_idle_timeout=0)


def test_a_proxied_websocket_that_carries_nothing_is_closed_and_one_in_use_is_not():
    async def go(rig):
        quiet, busy = await rig.websocket("alice", "a1"), await rig.websocket("alice", "a1")
        started = time.monotonic()
        while time.monotonic() - started < 5:
            assert await echoes(busy)
            await asyncio.sleep(0.4)
        assert await asyncio.wait_for(quiet.read_message(), 5) is None
        assert quiet.close_code == 1001 and "limits.proxy_idle_timeout" in quiet.close_reason, quiet.close_reason
        assert await echoes(busy), "a websocket in use was closed"
        assert rig.frontend.held["alice"] == 1
        busy.close()
    with_rig(go, proxied_connections_per_user=8, proxy_idle_timeout=2)


# -- the real service: event streams, and what users wrote, shown to staff --------------------------------------

def waits_app(data: Path) -> dict:
    """Sessions that stay live (starting) without ParaView: a server that never says it is ready."""
    return {"paraview": {"data_roots": [str(data)]},
            "waits": {"command": ["/bin/sh", "-c", "sleep 600", "${port}"], "ready": {"line": "never printed"}, "partitions": ["cpu"],
                      "start_timeout": 600, "data_roots": [str(data)]}}


class Stream:
    """One server-sent event stream, opened as ``user`` through the trusted front end."""

    def __init__(self, svc, user: str, session_id: str):
        self.conn = http.client.HTTPConnection("127.0.0.1", int(svc.frontend_url.rsplit(":", 1)[1]), timeout=60)
        self.conn.request("GET", f"/api/v1/sessions/{session_id}/events", headers={"X-Remote-User": user})
        self.answer = self.conn.getresponse()
        self.status = self.answer.status
        if self.status != 200:
            self.error = json.loads(self.answer.read())
            self.conn.close()
            return
        self.first = self.event()

    def event(self) -> dict:
        data = None
        while True:
            line = self.answer.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            if line.startswith("data:"):
                data = json.loads(line[5:])
            elif line == "\n" and data is not None:
                return data

    def rest(self, within: float) -> str:
        """What the stream sends until the service ends it, which must be within ``within`` seconds."""
        deadline, lines = time.monotonic() + within, []
        while line := self.answer.readline().decode():
            lines.append(line)
            assert time.monotonic() < deadline, f"the stream did not end within {within} s: {lines}"
        return "".join(lines)

    def close(self) -> None:
        self.conn.close()


@pytest.mark.cluster
def test_event_streams_are_bounded_per_user_end_after_their_time_and_free_their_place(service_factory, tmp_path):
    svc = service_factory("streams", auth={"kind": "header"}, applications=waits_app(tmp_path / "streams" / "data"),
                          limits={"event_streams_per_user": 3, "event_stream_seconds": 10}).start()
    alice, bob = svc.user_client("alice"), svc.user_client("bob")
    mine, bobs = alice.create("waits", partition="cpu"), bob.create("waits", partition="cpu")
    try:
        streams = [Stream(svc, "alice", mine["id"]) for _ in range(3)]
        opened = time.monotonic()
        assert [s.status for s in streams] == [200] * 3 and streams[0].first["id"] == mine["id"]
        over = Stream(svc, "alice", mine["id"])
        assert over.status == 429 and over.error["limit"] == "limits.event_streams_per_user", over.error
        assert "3 open at once per user" in over.error["error"]
        # Another user's stream and requests answer, and so do alice's own other requests.
        theirs = Stream(svc, "bob", bobs["id"])
        assert theirs.status == 200 and theirs.first["id"] == bobs["id"]
        assert bob.get(bobs["id"])["state"] != "ended" and alice.get(mine["id"])["id"] == mine["id"]
        # A stream the client closes frees its place at once.
        streams.pop().close()
        replaced = wait_until(lambda: (s := Stream(svc, "alice", mine["id"])).status == 200 and s, 5,
                              message="a new stream in the place of one alice closed")
        # Each stream ends after its time, saying so and when to reconnect; then its place is free again.
        rest = streams[0].rest(within=20)
        assert 9 <= time.monotonic() - opened <= 20, "the stream did not end after limits.event_stream_seconds"
        assert "limits.event_stream_seconds" in rest and "reconnect" in rest
        assert mine["state"] != "ended" and alice.get(mine["id"])["state"] != "ended"
        again = Stream(svc, "alice", mine["id"])
        assert again.status == 200, "the place of a stream that ended was not freed"
        for s in (streams[1], replaced, again, theirs):
            s.close()
    finally:
        alice.cancel(mine["id"])
        bob.cancel(bobs["id"])


OCTAL = "".join(f"\\{b:03o}" if b < 32 or b > 126 else chr(b) for b in ESCAPES.encode())   # as sh's printf reads
FAILS_LOUDLY = f"printf 'starting\\n{OCTAL}\\n'; exit 3"


@pytest.mark.cluster
def test_staff_see_what_users_wrote_with_its_control_characters_written_out(service_factory, tmp_path):
    """A failed report's reason holds what the server printed: the CLI shows its escapes, never obeys them."""
    from tests.helpers import pvhpc

    me = pwd.getpwuid(os.geteuid()).pw_name
    data = tmp_path / "escapes" / "data"
    svc = service_factory("escapes", auth={"kind": "local", "staff": [me]}, applications={
        "paraview": {"data_roots": [str(data)]},
        "fails": {"command": ["/bin/sh", "-c", FAILS_LOUDLY, "${port}"], "partitions": ["cpu"], "data_roots": [str(data)]},
    }).start()
    client = svc.client()
    session = client.create("fails", partition="cpu")
    ended = wait_until(lambda: (s := client.get(session["id"]))["state"] == "ended" and s, 120,
                       message="the failing session ended")
    assert "\x1b]52;c;" in ended["detail"], ended   # what the server printed, as it printed it
    every = ("sessions", "--all", "--state", "any")
    for args in (every, ("list", "--all"), ("status", session["id"]), ("logs", session["id"])):
        run = pvhpc(*args, url=svc.url)
        assert run.returncode == 0, run.stderr
        assert "\\x1b]52;c;cHduZWQ=\\x07\\x1b[2A" in run.stdout, (args, run.stdout)
        assert not set(run.stdout + run.stderr) & {"\x1b", "\x07", "\r", "\u202e"}, args
    table = pvhpc(*every, url=svc.url).stdout.splitlines()
    assert len(table) == 2 and table[1].startswith(session["id"]), table   # no fake row
    as_json = json.loads(pvhpc(*every, "--json", url=svc.url).stdout)
    assert "\x1b]52;c;" in as_json["sessions"][0]["detail"]   # --json keeps the text, JSON-escaped


# -- real Unix users: what the service runs as a user, and the data browser --------------------------------------



def as_user(user: str, *argv: str) -> None:
    subprocess.run(["runuser", "-u", user, "--", *argv], check=True)


def processes_of(user: str) -> str:
    return subprocess.run(["pgrep", "-a", "-u", user], capture_output=True, text=True).stdout.strip()


def timed(call):
    started = time.monotonic()
    try:
        call()
    except Exception as e:   # the client's error, with its status
        return e, time.monotonic() - started
    return None, time.monotonic() - started


@pytest.mark.cluster
def test_a_users_fifos_and_directories_get_a_clear_4xx_quickly_and_leave_nothing_of_theirs_running(
        unix_users, service_factory, cluster, runtime_dir):
    shared, node_side = shared_site(runtime_dir)
    alice = unix_users["alice"]
    home = Path(pwd.getpwnam(alice).pw_dir)
    states = home / ".pvhpc" / "states"
    try:
        node_side["applications"]["waits"] = {**waits_app(shared / "data")["waits"]}
        svc = service_factory("fifos", directory=shared / "service", **node_side, auth={"kind": "header"},
                              scheduler={**cluster.scheduler_config(), "submit_as": "user"},
                              frontend_socket_group=None)
        subprocess.run(["chown", "-R", unix_users["service"], str(svc.dir)], check=True)
        svc.start(as_user=unix_users["service"])
        client = svc.user_client(alice)
        # The users are the test session's: start from none of the states and job logs other tests left.
        as_user(alice, "rm", "-rf", str(home / ".pvhpc"))
        as_user(alice, "mkdir", "-p", "-m", "0700", str(states))

        # The states' index a FIFO: listing answers a 4xx naming it, in seconds, and alice's tail is gone.
        as_user(alice, "mkfifo", str(states / "index.tsv"))
        error, took = timed(client.states)
        assert error is not None and error.status == 409 and str(states / "index.tsv") in error.message, error
        assert took < 10, f"{took:.1f} s"
        assert processes_of(alice) == "", "a process of alice's was left running"

        # A saved state that is a FIFO, a directory, a device: refused before any job, naming it.
        fifo, directory, device = (states / f"s{i}-20260101T000000Z.pvsm" for i in (1, 2, 3))
        as_user(alice, "mkfifo", str(fifo))
        as_user(alice, "mkdir", str(directory))
        as_user(alice, "ln", "-s", "/dev/zero", str(device))
        for path, status in ((fifo, 409), (directory, 409), (device, 400)):
            error, took = timed(lambda: client.create("paraview", partition="cpu", saved_state=str(path)))
            assert error is not None and error.status == status and error.field == "saved_state", (path, error)
            assert str(path) in error.message and took < 10, (path, error.message, took)
            assert processes_of(alice) == "", f"{path}: a process of alice's was left running"
        assert client.list() == [], "a refused state left a session"

        # A job log made a FIFO by its user: the log answers a 4xx naming it, in seconds.
        session = client.create("waits", partition="cpu")
        logs = home / ".pvhpc" / "logs"
        log = wait_until(lambda: next(iter(logs.glob("*.out")), None) if logs.is_dir() else None, 60,
                         message="the job's log")
        as_user(alice, "rm", str(log))
        as_user(alice, "mkfifo", str(log))
        error, took = timed(lambda: client.log(session["id"]))
        assert error is not None and error.status == 409 and str(log) in error.message, error
        assert took < 10, f"{took:.1f} s"
        assert "tail" not in processes_of(alice), processes_of(alice)
        client.cancel(session["id"])
    finally:
        subprocess.run(["rm", "-rf", str(home / ".pvhpc")])
        shutil.rmtree(shared, ignore_errors=True)


@pytest.mark.cluster
def test_the_data_browser_shows_a_user_what_that_user_may_read_and_nothing_more(
        unix_users, service_factory, cluster, runtime_dir):
    shared, node_side = shared_site(runtime_dir)
    data = shared / "data"
    owner = {name: pwd.getpwnam(account).pw_uid for name, account in unix_users.items()}

    def made(path: Path, who: str, mode: int, text: str | None = None) -> Path:
        path.mkdir() if text is None else path.write_text(text)
        os.chown(path, owner[who], -1)
        path.chmod(mode)
        return path

    made(data / "open.vtk", "bob", 0o644, "x")
    made(data / "bobs", "bob", 0o700)
    made(data / "bobs" / "mine.vtk", "bob", 0o644, "x")
    made(data / "pvhpc-only", "service", 0o700)            # the service may read it; alice may not
    made(data / "pvhpc-only" / "inside.vtk", "service", 0o644, "x")
    made(data / "pvhpc-only.vtk", "service", 0o600, "x")
    made(data / "shared", "bob", 0o755)
    made(data / "shared" / "readable.vtk", "bob", 0o644, "x")
    made(data / "shared" / "bob-only.vtk", "bob", 0o600, "x")
    (data / "to-pvhpc-only").symlink_to(data / "pvhpc-only")
    try:
        svc = service_factory("browser", directory=shared / "service", **node_side, auth={"kind": "header"},
                              scheduler={**cluster.scheduler_config(), "submit_as": "user"},
                              frontend_socket_group=None)
        subprocess.run(["chown", "-R", unix_users["service"], str(svc.dir)], check=True)
        svc.start(as_user=unix_users["service"])
        alice = svc.user_client(unix_users["alice"])
        files = "/api/v1/applications/paraview/files"

        top = alice.request("GET", files)
        assert {e["name"] for e in top["entries"]} == {"open.vtk", "shared"}, top
        inside = alice.request("GET", files + "?path=shared")
        assert [e["name"] for e in inside["entries"]] == ["readable.vtk"], inside
        for hidden, named in (("bobs", data / "bobs"), ("pvhpc-only", data / "pvhpc-only"),
                              ("to-pvhpc-only", data / "pvhpc-only")):
            error, _ = timed(lambda: alice.request("GET", f"{files}?path={hidden}"))
            assert error is not None and error.status == 403 and str(named) in error.message, (hidden, error)
        # Each user sees what that user may read: bob sees his own file beside the readable one.
        bobs_view = svc.user_client(unix_users["bob"]).request("GET", files + "?path=shared")
        assert [e["name"] for e in bobs_view["entries"]] == ["bob-only.vtk", "readable.vtk"], bobs_view
        # A data file the user may not read is refused before any job, naming where; none answers 500.
        for path, named in (("bobs/mine.vtk", data / "bobs"), ("pvhpc-only/inside.vtk", data / "pvhpc-only"),
                            ("pvhpc-only.vtk", data / "pvhpc-only.vtk"), ("shared/bob-only.vtk",
                                                                           data / "shared" / "bob-only.vtk")):
            error, _ = timed(lambda: alice.create("paraview", partition="cpu", data=path))
            assert error is not None and error.status == 403 and error.field == "data", (path, error)
            assert str(named) in error.message, (path, error.message)
        # The same through the ParaViewWeb launcher's door (POST /paraview/, as the Visualizer launches).
        error, _ = timed(lambda: alice.request("POST", "/paraview/", {"application": "paraview", "partition": "cpu",
                                                                     "data": "bobs/mine.vtk"}))
        assert error is not None and error.status == 403 and str(data / "bobs") in error.message, error
        assert alice.list() == []
    finally:
        shutil.rmtree(shared, ignore_errors=True)
