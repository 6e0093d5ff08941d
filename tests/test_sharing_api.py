"""Sharing a session through pvhpc's real routes and store, in-process: grants, what a sharee sees, revokes, what
the session's watchdog is told, and every kind of bad request answered with the field at fault and nothing
changed. (Users and groups: a stand-in directory; the real accounts are in tests/test_sharing_browser.py.)"""

from __future__ import annotations

import asyncio
import json

from pvhpc.jobs.states import EndReason
from pvhpc.node import share_keys
from pvhpc.sessions import lifecycle
from pvhpc.sessions.service import token_hash

from tests.fakes import Directory, ScriptedScheduler
from tests.harness.inprocess import fetch_all, make_app
from tests.helpers import session_record

SID = "sharedsessionxxxxxxxxxxxxxxxxxxx"
REPORT = "the-jobs-report-token-0123456789abcdef"
SECRET = "alices-own-secret-0123456789"


def sharing_app(tmp_path, **sharing):
    app = make_app(tmp_path, ScriptedScheduler(), sharing=sharing) if sharing else make_app(tmp_path, ScriptedScheduler())
    app.ctx.sharing.directory = Directory(groups={"vislab": ["bob", "carol"]})
    app.ctx.store.add(session_record(0, id=SID, user="alice", secret=SECRET, report_token_hash=token_hash(REPORT),
                                     job_id="100"))
    app.ctx.store.change(SID, lifecycle.ready("10.0.0.2", 40000, "cpu01"))
    tokens = {u: app.ctx.tokens.create(u, "t", 1)[1] for u in ("alice", "bob", "carol")}
    return app, tokens


def ask(app, tokens, *requests):
    """Each (user, method, path, body) in turn; [(status, json)]."""
    out = []
    for user, method, path, body in requests:
        headers = {"Authorization": f"token {tokens[user] if user in tokens else user}"}
        [r] = fetch_all(app, [(method, path, json.dumps(body) if body is not None else None)], headers=headers)
        out.append((r.code, json.loads(r.body) if r.body else None))
    return out


SHARES = f"/api/v1/sessions/{SID}/shares"


def test_a_sharee_sees_the_session_with_a_key_of_their_own_and_loses_it_on_revoke(tmp_path):
    app, tokens = sharing_app(tmp_path)
    (made, body), = ask(app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "view"}))
    assert made == 201 and [(s["name"], s["role"]) for s in body["shares"]] == [("bob", "view")], body
    (_, bobs), (_, one), (_, carols), (_, alices) = ask(app, tokens, ("bob", "GET", "/api/v1/sessions", None),
                                                        ("bob", "GET", f"/api/v1/sessions/{SID}", None),
                                                        ("carol", "GET", "/api/v1/sessions", None),
                                                        ("alice", "GET", f"/api/v1/sessions/{SID}", None))
    [shared] = bobs["sessions"]
    assert shared["id"] == SID and shared["shared"] == {"by": "alice", "role": "view"}
    assert one["shared"] == shared["shared"] and one["secret"] == shared["secret"]
    # bob's own key: it names his grant and role, made from alice's secret, which he never gets.
    assert shared["secret"] != SECRET and SECRET not in json.dumps(bobs)
    grant_id, role = share_keys.read(SECRET, shared["secret"])
    assert role == "view" and share_keys.read("another-secret", shared["secret"]) is None
    assert carols["sessions"] == []
    assert any(h["detail"] == "shared with user bob (view)" for h in alices["history"])
    # The session's watchdog is told which grants stand, for the server's gate.
    [live] = fetch_all(app, [("GET", f"/api/v1/sessions/{SID}/report", None)],
                       headers={"Authorization": f"token {REPORT}"})
    assert json.loads(live.body)["grants"] == {grant_id: "view"}

    (gone, after), (_, bobs), (_, alices) = ask(app, tokens, ("alice", "DELETE", f"{SHARES}/bob", None),
                                                ("bob", "GET", "/api/v1/sessions", None),
                                                ("alice", "GET", f"/api/v1/sessions/{SID}", None))
    assert gone == 200 and after["shares"] == [] and bobs["sessions"] == []
    assert any(h["detail"] == "share with user bob revoked" for h in alices["history"])
    [live] = fetch_all(app, [("GET", f"/api/v1/sessions/{SID}/report", None)],
                       headers={"Authorization": f"token {REPORT}"})
    assert "grants" not in json.loads(live.body)   # none stand


def test_sharing_again_replaces_the_role_and_the_key(tmp_path):
    app, tokens = sharing_app(tmp_path)
    ask(app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "view"}))
    (_, first), = ask(app, tokens, ("bob", "GET", f"/api/v1/sessions/{SID}", None))
    (_, body), (_, second) = ask(app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "control"}),
                                 ("bob", "GET", f"/api/v1/sessions/{SID}", None))
    assert [(s["name"], s["role"]) for s in body["shares"]] == [("bob", "control")]
    assert second["shared"]["role"] == "control" and second["secret"] != first["secret"]


def test_bad_share_requests_name_what_is_wrong_and_change_nothing(tmp_path):
    app, tokens = sharing_app(tmp_path)
    ask(app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "view"}))
    cases = [
        (("alice", "POST", SHARES, {"user": "nobody", "role": "view"}), 400, "user", "no user 'nobody'"),
        (("alice", "POST", SHARES, {"user": "alice", "role": "view"}), 400, "user", "owner"),
        (("alice", "POST", SHARES, {"user": "carol", "role": "admin"}), 400, "role", "is not a role"),
        (("alice", "POST", SHARES, {"user": "carol"}), 400, "role", "is not a role"),
        (("alice", "POST", SHARES, {"user": "bob; rm", "role": "view"}), 400, "user", "is not a user name"),
        (("alice", "POST", SHARES, {"user": "carol", "group": "vislab", "role": "view"}), 400, "user", "one user"),
        (("alice", "POST", SHARES, {"user": "carol", "role": "view", "until": 5}), 400, "until", "unknown field"),
        (("alice", "POST", SHARES, {"group": "vislab", "role": "view"}), 403, "group", "sharing.groups"),
        # Someone it is shared with may not share it on, nor may a stranger, who is not told it exists.
        (("bob", "POST", SHARES, {"user": "carol", "role": "view"}), 403, None, "only the session's owner (alice)"),
        (("carol", "POST", SHARES, {"user": "carol", "role": "view"}), 404, None, "no session"),
        (("carol", "GET", SHARES, None), 404, None, "no session"),
        (("bob", "DELETE", f"{SHARES}/bob", None), 403, None, "only the session's owner"),
        (("alice", "DELETE", f"{SHARES}/carol", None), 404, "user", "not shared with user carol"),
    ]
    for request, status, field, words in cases:
        (code, body), = ask(app, tokens, request)
        assert code == status and body.get("field") == field and words in body["error"], (request, code, body)
    (_, body), = ask(app, tokens, ("alice", "GET", SHARES, None))
    assert [(s["name"], s["role"]) for s in body["shares"]] == [("bob", "view")]


def test_staff_rules_view_only_groups_and_off(tmp_path):
    app, tokens = sharing_app(tmp_path / "a", view_only=True, groups=True)
    (code, body), (made, _), (_, carols) = ask(
        app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "control"}),
        ("alice", "POST", SHARES, {"group": "vislab", "role": "view"}),
        ("carol", "GET", "/api/v1/sessions", None))
    assert code == 403 and body["field"] == "role" and "sharing.view_only" in body["error"]
    assert made == 201 and [s["shared"] for s in carols["sessions"]] == [{"by": "alice", "role": "view"}]
    (_, apps), = ask(app, tokens, ("alice", "GET", "/api/v1/applications", None))
    [paraview] = apps["applications"]
    assert paraview["share_roles"] == ["view"] and paraview["share_groups"] is True

    off, tokens = sharing_app(tmp_path / "b", enabled=False)
    (code, body), (_, apps) = ask(off, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "view"}),
                                  ("alice", "GET", "/api/v1/applications", None))
    assert code == 403 and "sharing.enabled" in body["error"]
    assert apps["applications"][0]["share_roles"] == [] and "turned off" in apps["applications"][0]["share_note"]

    # The grants reach a session's server with its watchdog's asks: without a watchdog, nothing can be shared.
    no_watchdog = make_app(tmp_path / "d", ScriptedScheduler(), runtime={"watchdog_interval": 0, "watchdog_grace": 0})
    token = no_watchdog.ctx.tokens.create("alice", "t", 1)[1]
    (_, apps), = ask(no_watchdog, {"alice": token}, ("alice", "GET", "/api/v1/applications", None))
    assert apps["applications"][0]["share_roles"] == []
    assert "runtime.watchdog_interval" in apps["applications"][0]["share_note"]


def test_grants_made_before_stop_when_staff_turn_sharing_off(tmp_path):
    app, tokens = sharing_app(tmp_path / "on")
    ask(app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "control"}))
    # The same database under a config that allows view only: bob's control grant no longer stands anywhere.
    narrowed = make_app(tmp_path / "on", ScriptedScheduler(), sharing={"view_only": True})
    narrowed.ctx.sharing.directory = app.ctx.sharing.directory
    bob = narrowed.ctx.tokens.create("bob", "t", 1)[1]
    (_, bobs), = ask(narrowed, {"bob": bob}, ("bob", "GET", "/api/v1/sessions", None))
    assert bobs["sessions"] == []
    [live] = fetch_all(narrowed, [("GET", f"/api/v1/sessions/{SID}/report", None)],
                       headers={"Authorization": f"token {REPORT}"})
    assert "grants" not in json.loads(live.body)   # none stand


def test_applications_say_which_roles_their_sessions_offer(tmp_path):
    app = make_app(tmp_path, ScriptedScheduler(), applications={
        "desk": {"desktop": True, "pvserver": ["pvserver"], "data_roots": [str(tmp_path)]},
        "own": {"command": ["/opt/site/server", "--port", "${port}"], "ready": {"line": "up"},
                "data_roots": [str(tmp_path)]}})
    token = app.ctx.tokens.create("alice", "t", 1)[1]
    (_, apps), = ask(app, {"alice": token}, ("alice", "GET", "/api/v1/applications", None))
    roles = {a["name"]: (a["share_roles"], a["share_note"]) for a in apps["applications"]}
    assert roles["paraview"] == (["view", "control"], None)
    assert roles["desk"][0] == [] and "cannot be shared" in roles["desk"][1]
    assert roles["own"][0] == []


def bobs_stream(app, tokens, steps) -> str:
    """The text of bob's event stream of the session, from its start until it ends. ``steps(there, seen)`` runs
    once the stream has said the session is shared with him; ``seen(text)`` waits (at most 30 s) until it says
    ``text``, so a stream that never does fails rather than hangs."""

    from tests.harness.inprocess import served

    async def follow():
        chunks = []

        async def seen(text):
            async def said():
                while not any(text in c for c in chunks):
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(said(), 30)

        async with served(app) as there:
            streaming = asyncio.ensure_future(there.client.fetch(
                there.url + f"/api/v1/sessions/{SID}/events", headers={"Authorization": f"token {tokens['bob']}"},
                streaming_callback=lambda c: chunks.append(c.decode()), request_timeout=30))
            await seen('"shared":')
            await steps(there, seen)
            await asyncio.wait_for(streaming, 10)
        return "".join(chunks)

    return asyncio.run(follow())


def revoke_bob(there, tokens):
    return there.fetch("DELETE", f"{SHARES}/bob", headers={"Authorization": f"token {tokens['alice']}"})


def test_a_sharees_event_stream_ends_with_their_share(tmp_path):
    app, tokens = sharing_app(tmp_path)
    ask(app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "view"}))

    async def revoke_then_change(there, seen):
        await revoke_bob(there, tokens)
        # a change of the session (any) is what the stream next sends: then it ends for bob
        app.ctx.bus.publish(app.ctx.store.get(SID))

    text = bobs_stream(app, tokens, revoke_then_change)
    first, *rest = [c for c in text.split("\n\n") if c.startswith("event: session")]
    assert '"shared":' in first and '"secret": "pvhpc-share.' in first
    # still marked shared (the page offers no Cancel, no job log of alice's session), but with no key
    assert rest and all('"secret"' not in c and '"revoked": true' in c for c in rest), rest


def test_a_revoked_sharees_event_stream_gets_no_more_of_the_owners_notices(tmp_path):
    """Nothing is published at a revoke: the next Notice (walltime, idle) must not reach bob, and ends his stream."""
    from pvhpc.sessions.events import Notice

    app, tokens = sharing_app(tmp_path)
    ask(app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "view"}))

    async def notices_around_the_revoke(there, seen):
        app.ctx.bus.notify(Notice(SID, "walltime", "before the revoke"))
        await seen("before the revoke")
        await revoke_bob(there, tokens)
        app.ctx.bus.notify(Notice(SID, "walltime", "after the revoke"))

    text = bobs_stream(app, tokens, notices_around_the_revoke)
    assert "before the revoke" in text and "after the revoke" not in text, text
    last = [c for c in text.split("\n\n") if c.startswith("event: session")][-1]
    assert '"revoked": true' in last and '"secret"' not in last, last


def test_the_share_commands_as_a_user_runs_them(tmp_path):
    """pvhpc share / shares / unshare (a real process, pvhpc's real routes in-process), with alice's token."""
    import os
    import sys
    from pathlib import Path

    from tests.harness.inprocess import served

    repo = Path(__file__).resolve().parent.parent
    app, tokens = sharing_app(tmp_path)

    async def pvhpc(url, *args):
        env = dict(os.environ, PYTHONPATH=str(repo), PVHPC_CLIENT_CONFIG=str(repo / "no-such-client.yaml"),
                   PVHPC_URL=url, PVHPC_TOKEN=tokens["alice"])
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pvhpc", *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        return proc.returncode, out.decode(), err.decode()

    async def run():
        async with served(app) as there:
            return [await pvhpc(there.url, *args) for args in (
                ("share", SID[:6], "bob", "--view"),        # a unique start of the id, as elsewhere
                ("shares", SID[:6], "--json"),
                ("share", SID, "nosuchuser", "--control"),
                ("share", SID, "bob"),
                ("unshare", SID[:6], "bob"),
                ("unshare", SID, "bob"))]

    shared, listed, unknown, no_role, unshared, again = asyncio.run(run())
    assert shared[0] == 0 and "user  bob" in shared[1] and "view" in shared[1], shared
    assert [(s["name"], s["role"]) for s in json.loads(listed[1])["shares"]] == [("bob", "view")], listed
    assert json.loads(listed[1])["id"] == SID
    assert unknown[0] == 2 and "no user 'nosuchuser'" in unknown[2], unknown
    assert no_role[0] == 2 and "--view" in no_role[2], no_role
    assert unshared[0] == 0 and "not shared with anyone" in unshared[1], unshared
    assert again[0] == 3 and "not shared with user bob" in again[2], again


def calls_of(owner, name: str) -> list:
    """The session ids ``owner.name`` (an async method of one) is called with from now on, in order."""
    calls, method = [], getattr(owner, name)

    async def counted(session_id):
        calls.append(session_id)
        return await method(session_id)

    setattr(owner, name, counted)
    return calls


def test_a_session_is_read_once_for_its_owner_and_once_for_a_sharee(tmp_path):
    app, tokens = sharing_app(tmp_path)
    ask(app, tokens, ("alice", "POST", SHARES, {"user": "bob", "role": "view"}))
    reads = calls_of(app.ctx.service, "get")
    answers = ask(app, tokens, ("alice", "GET", f"/api/v1/sessions/{SID}", None),
                  ("bob", "GET", f"/api/v1/sessions/{SID}", None),
                  ("carol", "GET", f"/api/v1/sessions/{SID}", None))
    assert [code for code, _ in answers] == [200, 200, 404], answers
    assert "shared" not in answers[0][1] and answers[1][1]["shared"] == {"by": "alice", "role": "view"}
    assert reads == [SID] * 3, reads
    # The launcher's attach too: once, for a sharee and for anyone else alike.
    attached = ask(app, tokens, ("bob", "POST", "/paraview/", {"attach": SID}),
                   ("carol", "POST", "/paraview/", {"attach": SID}))
    assert [code for code, _ in attached] == [403, 404] and "view only" in attached[0][1]["error"], attached
    assert reads == [SID] * 5, reads


def test_with_sharing_off_the_watchdogs_ask_reads_no_grants(tmp_path):
    """Every live job asks every watchdog interval: with sharing off there is nothing to read for it."""
    for enabled in (True, False):
        app, _ = sharing_app(tmp_path / str(enabled), enabled=enabled)
        read = calls_of(app.ctx.sharing, "grants_for_session")
        [live] = fetch_all(app, [("GET", f"/api/v1/sessions/{SID}/report", None)],
                           headers={"Authorization": f"token {REPORT}"})
        assert live.code == 200 and json.loads(live.body)["live"] is True
        assert read == ([SID] if enabled else []), enabled


def test_of_two_publishes_at_once_the_later_ones_sharees_are_told_last(tmp_path):
    """A share, then its revoke, both on their way to the front end's map: the revoke's list is the one that stays,
    even when the share's group lookup (NSS, perhaps a directory server) is slow to answer."""
    import threading

    app, tokens = sharing_app(tmp_path, groups=True)
    told = []
    app.ctx.sharing.on_sharees = lambda session_id, users: told.append(sorted(users))
    (made, _), = ask(app, tokens, ("alice", "POST", SHARES, {"group": "vislab", "role": "view"}))
    assert made == 201 and told == [["bob", "carol"]]

    slow = threading.Event()

    class SlowDirectory(Directory):
        def members_of(self, group):
            slow.wait(5)   # the directory answers only once the revoke's publish has been asked for
            return super().members_of(group)

    app.ctx.sharing.directory = SlowDirectory(groups={"vislab": ["bob", "carol"]})
    told.clear()

    async def share_then_revoke():
        first = asyncio.ensure_future(app.ctx.sharing._publish(SID))   # reads the grant, then waits on the directory
        await asyncio.sleep(0.2)
        app.ctx.sharing.shares.revoke(SID, "group", "vislab", "share with group vislab revoked")
        second = asyncio.ensure_future(app.ctx.sharing._publish(SID))
        await asyncio.sleep(0.2)
        slow.set()
        await asyncio.wait_for(asyncio.gather(first, second), 10)

    asyncio.run(share_then_revoke())
    assert told == [["bob", "carol"], []]

def test_a_share_request_waits_on_the_directory_off_the_event_loop(tmp_path):
    """Whether a named user exists is NSS's to say, perhaps a directory server's over the network: while it is
    slow to answer one owner's share, the service answers everyone else."""
    import threading

    from tests.harness.inprocess import served

    app, tokens = sharing_app(tmp_path)
    answered = threading.Event()
    waits = []

    class SlowDirectory(Directory):
        def user_exists(self, name):
            # Answers once another request has been answered meanwhile; on the loop, it would wait 3 s in vain.
            waits.append(answered.wait(3))
            return super().user_exists(name)

    app.ctx.sharing.directory = SlowDirectory()

    async def share_while_carol_lists():
        async with served(app) as there:
            share = asyncio.ensure_future(there.fetch("POST", SHARES, {"user": "bob", "role": "view"},
                                                      {"Authorization": f"token {tokens['alice']}"}))
            await asyncio.sleep(0.2)
            listed = await asyncio.wait_for(there.fetch("GET", "/api/v1/sessions", None,
                                                        {"Authorization": f"token {tokens['carol']}"}), 5)
            answered.set()
            return listed, await share

    listed, shared = asyncio.run(share_while_carol_lists())
    assert listed.code == 200 and shared.code == 201, (listed.code, shared.code)
    assert waits == [True]


def test_a_group_member_the_group_does_not_list_is_named_to_the_front_end_before_their_key_is_handed_out(tmp_path):
    """dave's login gets group vislab (his primary group) but its member list leaves him out, as a directory
    leaves out those whose primary group it is: the front end's list names him once he is handed his key, before
    the answer leaves, and no longer once the group's grant is revoked or the session has ended."""
    app, tokens = sharing_app(tmp_path, groups=True)

    class PrimaryGroups(Directory):
        def groups_of(self, user):
            return super().groups_of(user) + (["vislab"] if user == "dave" else [])

    app.ctx.sharing.directory = PrimaryGroups(users=("alice", "bob", "carol", "dave"),
                                              groups={"vislab": ["bob", "carol"]})
    tokens["dave"] = app.ctx.tokens.create("dave", "t", 1)[1]
    told = []
    app.ctx.sharing.on_sharees = lambda session_id, users: told.append(sorted(users))

    def sharees_when_dave_got(path):
        [r] = fetch_all(app, [("GET", path, None)], headers={"Authorization": f"token {tokens['dave']}"})
        return json.loads(r.body), list(told[-1])

    ask(app, tokens, ("alice", "POST", SHARES, {"group": "vislab", "role": "view"}))
    assert told == [["bob", "carol"]]
    listed, named = sharees_when_dave_got("/api/v1/sessions")
    assert [s["id"] for s in listed["sessions"]] == [SID] and listed["sessions"][0]["secret"]
    assert named == ["bob", "carol", "dave"]
    one, named = sharees_when_dave_got(f"/api/v1/sessions/{SID}")
    assert one["secret"] and named == ["bob", "carol", "dave"] and len(told) == 2   # told once, not per request
    (_, bobs), = ask(app, tokens, ("bob", "GET", "/api/v1/sessions", None))   # a listed member: nothing to tell
    assert bobs["sessions"] and len(told) == 2

    (gone, _), = ask(app, tokens, ("alice", "DELETE", f"{SHARES}/vislab?kind=group", None))
    assert gone == 200 and told[-1] == []
    ask(app, tokens, ("alice", "POST", SHARES, {"group": "vislab", "role": "view"}))
    assert told[-1] == ["bob", "carol", "dave"]   # he was handed a key through the group, and is in it still
    app.ctx.sharing.directory.groups_of = lambda user: []   # dave leaves the group; so do bob and carol (unlisted)
    app.ctx.sharing.directory.groups = {"vislab": []}
    ask(app, tokens, ("alice", "POST", SHARES, {"user": "carol", "role": "view"}))   # any change publishes
    assert told[-1] == ["carol"]
    listed, _ = sharees_when_dave_got("/api/v1/sessions")
    assert listed["sessions"] == [] and told[-1] == ["carol"]
    # The session's end, through the service and its event bus, lets go of what sharing kept of it.
    asyncio.run(app.ctx.service.apply(SID, lifecycle.ended(EndReason.CANCELLED)))
    assert all(SID not in kept for kept in (app.ctx.sharing._through_groups, app.ctx.sharing._named,
                                            app.ctx.sharing._publishing))
