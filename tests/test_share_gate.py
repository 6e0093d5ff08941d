"""The share gate's rules, as pure logic: sharees' keys, the view-only allow-list, whom pvhpc's word lets in and
whom it cuts off, and the watchdog carrying that word from pvhpc to the server (pvhpc/node/share_gate.py,
share_keys.py, watchdog.py). The same code in a real server, on the real cluster: tests/test_sharing_browser.py."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import pytest

NODE = Path(__file__).resolve().parent.parent / "pvhpc" / "node"
sys.path.insert(0, str(NODE))   # the node's modules import each other by their bare names, as on a node

import share_gate  # noqa: E402
import share_keys  # noqa: E402
from watchdog import LIVE, Answer, Watchdog  # noqa: E402

SECRET = "the-owners-secret"


def test_a_key_names_its_grant_and_role_and_cannot_be_turned_into_another():
    key = share_keys.key_for(SECRET, "grant-0123456789", "view")
    assert share_keys.read(SECRET, key) == ("grant-0123456789", "view")
    assert SECRET not in key
    forged = key.replace(".view.", ".control.")
    assert share_keys.read(SECRET, forged) is None
    assert share_keys.read("another-session", key) is None
    for junk in ("", SECRET, "pvhpc-share.", "pvhpc-share.a.view.b", key + ".x", None, 5):
        assert share_keys.read(SECRET, junk) is None
    with pytest.raises(ValueError):
        share_keys.key_for(SECRET, "has.dots.in.it", "view")
    with pytest.raises(ValueError):
        share_keys.key_for(SECRET, "grant-0123456789", "admin")


RENDER = {"size": [400, 300], "view": -1, "quality": 85, "mtime": 0, "localTime": 1}


@pytest.mark.parametrize("method, args, allowed", [
    ("viewport.image.render", [RENDER], True),
    ("viewport.image.render", [], True),
    ("pvhpc.viewport.interact", [[], RENDER], True),                  # the quick view's first picture
    ("pvhpc.viewport.interact", [[{"action": "down", "x": 0.5, "y": 0.5}], RENDER], False),
    ("viewport.image.render", [{**RENDER, "clearCache": True, "resetCamera": True}], False),
    ("viewport.image.render", [RENDER, "more"], False),
    ("viewport.image.render", "not a list", False),
    ("viewport.mouse.interaction", [{"action": "down"}], False),
    ("viewport.camera.reset", [-1], False),
    ("pv.proxy.manager.create", ["Cone", -1], False),
    ("pv.proxy.manager.update", [[]], False),
    ("pv.proxy.manager.list", [], False),                              # not needed to see: not allowed
    ("file.server.directory.list", ["."], False),
    ("application.exit", [], False),
    ("application.exit.later", [1], False),
    ("viewport.image.push.observer.add", [-1], False),
    ("pvhpc.something.new", [], False),                                # whatever comes next: refused
    (None, [], False),
])
def test_a_view_only_connection_may_make_only_the_calls_that_read_the_picture(method, args, allowed):
    assert share_gate.view_may_call(method, args) is allowed


@pytest.mark.parametrize("kwargs", [{"resetCamera": True}, {"clearCache": True}, ["x"], "x", 1])
def test_a_view_only_call_with_keyword_arguments_is_refused(kwargs):
    """wslink passes an RPC's kwargs on to the call: an allowed method must not carry options past the check."""
    assert share_gate.view_may_call("viewport.image.render", [RENDER], kwargs) is False
    assert share_gate.view_may_call("pvhpc.viewport.interact", [[], RENDER], kwargs) is False
    assert share_gate.view_may_call("viewport.image.render", [RENDER], {}) is True


def gate_in(tmp_path, clock=time.time):
    return share_gate.Gate(str(tmp_path / "shares.json"), str(tmp_path / "ask.json"), clock=clock)


def word(tmp_path, grants, asked_at=None):
    (tmp_path / "shares.json").write_text(json.dumps({"asked_at": asked_at or time.time(), "grants": grants}))


def test_a_hello_waits_for_a_word_from_pvhpc_newer_than_itself(tmp_path):
    gate = gate_in(tmp_path)
    word(tmp_path, {"g1": "view"}, asked_at=time.time() - 60)   # an old word: not enough on its own

    async def hello_then_answer(grants):
        asking = asyncio.ensure_future(gate.admits("g1", "view"))
        await asyncio.sleep(0.3)
        assert not asking.done(), "it let the key in on an old word"
        assert json.loads((tmp_path / "ask.json").read_text())["ask"] > 0   # the watchdog was asked to ask
        word(tmp_path, grants)
        return await asyncio.wait_for(asking, 2)

    assert asyncio.run(hello_then_answer({"g1": "view"})) is True
    assert asyncio.run(hello_then_answer({})) is False                   # revoked meanwhile: never in
    assert asyncio.run(hello_then_answer({"g1": "control"})) is False    # not the role the key names


def test_without_a_fresh_word_the_last_one_decides(tmp_path, monkeypatch):
    monkeypatch.setattr(share_gate, "ADMIT_WAIT", 0.3)
    gate = gate_in(tmp_path)
    assert asyncio.run(gate.admits("g1", "view")) is False               # no word at all: nobody
    word(tmp_path, {"g1": "view"}, asked_at=time.time() - 60)
    assert asyncio.run(gate.admits("g1", "view")) is True
    assert asyncio.run(gate.admits("g2", "view")) is False


class Connection:
    def __init__(self):
        self.closed_with = None

    async def close(self, code, message):
        self.closed_with = (code, message)


class Handler:
    def __init__(self, ids):
        self.authentified_client_ids = set(ids)
        self.connections = {i: Connection() for i in ids}


def test_a_revoke_cuts_the_sharee_off_and_no_one_else(tmp_path, monkeypatch):
    monkeypatch.setattr(share_gate, "WATCH_EVERY", 0.05)
    gate = gate_in(tmp_path)
    handler = Handler(["owner", "bob", "carol"])

    async def run():
        word(tmp_path, {"gb": "view", "gc": "control"})
        gate.let_in(handler, "bob", "gb", "view")
        gate.let_in(handler, "carol", "gc", "control")
        assert json.loads((tmp_path / "ask.json").read_text())["connected"] == 2
        await asyncio.sleep(0.2)
        assert handler.connections["bob"].closed_with is None
        word(tmp_path, {"gc": "control"})
        started = time.monotonic()
        while handler.connections["bob"].closed_with is None and time.monotonic() - started < 2:
            await asyncio.sleep(0.02)
        gate.task.cancel()
        return time.monotonic() - started

    took = asyncio.run(run())
    assert handler.connections["bob"].closed_with[0] == 4403 and took < 1
    assert handler.authentified_client_ids == {"owner", "carol"}
    assert handler.connections["carol"].closed_with is None and handler.connections["owner"].closed_with is None
    assert json.loads((tmp_path / "ask.json").read_text())["connected"] == 1


def test_the_watchdog_asks_when_the_gate_asks_and_often_while_a_sharee_is_connected(tmp_path):
    asked = []

    def ask(urls, token, timeout):
        asked.append(time.monotonic())
        return Answer(LIVE, grants={"g1": "view"})

    shares, ask_file = tmp_path / "shares.json", tmp_path / "ask.json"
    dog = Watchdog(["http://a:1/r"], "tok", 30, 0, lambda why: None, ask=ask, shares=(str(shares), str(ask_file)))
    dog.start()
    try:
        time.sleep(0.6)
        assert asked == [], "it asked before its interval with nobody asking"
        since = time.time()
        ask_file.write_text(json.dumps({"ask": since, "connected": 1}))
        deadline = time.monotonic() + 2
        while not shares.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        said = json.loads(shares.read_text())
        assert said["grants"] == {"g1": "view"} and said["asked_at"] >= since
        assert shares.stat().st_mode & 0o777 == 0o600
        time.sleep(4.5)   # a sharee connected: about every FAST_ASK (2 s)
        assert 2 <= len(asked) <= 4, asked
        ask_file.write_text(json.dumps({"ask": since, "connected": 0}))
        count = len(asked)
        time.sleep(2.5)
        assert len(asked) == count, "it kept asking often with no sharee connected"
    finally:
        dog.close()
        dog.join(2)


def test_the_watchdog_stamps_its_ask_after_reading_the_gates(tmp_path):
    """A hello's ask written just as the watchdog asks: the word it writes must be no older than every ask it
    counts as answered, or that hello would wait for a word that never comes."""
    shares, ask_file = tmp_path / "shares.json", tmp_path / "ask.json"
    ask_file.write_text(json.dumps({"ask": 50.0, "connected": 0}))

    clock = iter(range(100, 10000))

    def wall():
        # The gate writes a new hello's ask right after the watchdog read its clock.
        now = float(next(clock))
        ask_file.write_text(json.dumps({"ask": now + 0.001, "connected": 1}))
        return now

    dog = Watchdog(["http://a:1/r"], "tok", 0.05, 0, lambda why: None, ask=lambda urls, token, timeout: Answer(
        LIVE, grants={"g1": "view"}), shares=(str(shares), str(ask_file)), wall=wall)
    dog.start()
    try:
        deadline = time.monotonic() + 5
        while not shares.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        dog.close()
        dog.join(2)
    assert json.loads(shares.read_text())["asked_at"] >= dog.answered_ask > 0
