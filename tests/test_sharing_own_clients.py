"""Sharing sessions of an application with its own web client (the Visualizer), through pvhpc's real routes and
store in-process: which roles it offers, and the launcher's attach (``POST /paraview/ {"attach": id}``, how the
Visualizer's own client opens a session) for its sharees: a control sharee gets their own key, never the owner's
secret; a view sharee is sent to the quick view; anyone else learns nothing. (The real thing, in Chromium with
real users: tests/test_sharing_visualizer_browser.py.)"""

from __future__ import annotations

import json

from pvhpc.node import share_keys
from pvhpc.sessions import lifecycle
from pvhpc.sessions.service import token_hash

from tests.fakes import Directory, ScriptedScheduler
from tests.harness.inprocess import fetch_all, make_app
from tests.helpers import session_record

SID = "vizsessionxxxxxxxxxxxxxxxxxxxxxx"
SECRET = "alices-own-secret-0123456789"
SHARES = f"/api/v1/sessions/{SID}/shares"


def applications(tmp_path):
    client = tmp_path / "dist"
    client.mkdir()
    (client / "index.html").write_text("<html></html>")
    visualizer = ["${pvpython}", "/opt/site/pvw-visualizer.py", "--port", "${port}", "--authKey", "${secret}"]
    return {
        "viz": {"command": visualizer, "ready": {"line": "wslink: Starting factory"}, "web_client": str(client),
                "data_roots": [str(tmp_path)]},
        # A web client whose server is not a ParaViewWeb server under pvpython: pvhpc cannot hold its sharees.
        "other": {"command": ["/opt/site/python3", "/opt/site/server.py", "--port", "${port}", "--key", "${secret}"],
                  "ready": {"line": "up"}, "web_client": str(client), "data_roots": [str(tmp_path)]},
    }


def viz_app(tmp_path):
    app = make_app(tmp_path, ScriptedScheduler(), applications=applications(tmp_path))
    app.ctx.sharing.directory = Directory(groups={})
    app.ctx.store.add(session_record(0, id=SID, user="alice", secret=SECRET, application="viz",
                                     report_token_hash=token_hash("report-token-0123456789abcdef"), job_id="100"))
    app.ctx.store.change(SID, lifecycle.ready("10.0.0.2", 40000, "cpu01"))
    tokens = {u: app.ctx.tokens.create(u, "t", 1)[1] for u in ("alice", "bob", "carol")}
    return app, tokens


def ask(app, tokens, user, method, path, body=None):
    [r] = fetch_all(app, [(method, path, json.dumps(body) if body is not None else None)],
                    headers={"Authorization": f"token {tokens[user]}"})
    return r.code, (json.loads(r.body) if r.body else None)


def test_the_visualizer_offers_view_and_control_and_the_page_says_where_each_opens(tmp_path):
    app, tokens = viz_app(tmp_path)
    _, apps = ask(app, tokens, "alice", "GET", "/api/v1/applications")
    offered = {a["name"]: (a["share_roles"], a["share_note"]) for a in apps["applications"]}
    assert offered["viz"][0] == ["view", "control"]
    assert "quick view" in offered["viz"][1] and "control" in offered["viz"][1]
    assert offered["other"][0] == [] and "cannot be shared" in offered["other"][1]


def test_the_launcher_attaches_a_control_sharee_with_their_own_key_only(tmp_path):
    app, tokens = viz_app(tmp_path)
    assert ask(app, tokens, "alice", "POST", SHARES, {"user": "bob", "role": "control"})[0] == 201
    code, bobs = ask(app, tokens, "bob", "POST", "/paraview/", {"attach": SID, "application": "viz"})
    assert code == 200, bobs
    assert bobs["id"] == SID and bobs["shared"] == {"by": "alice", "role": "control"} and bobs["sessionURL"]
    assert SECRET not in json.dumps(bobs) and "host" not in bobs and "port" not in bobs
    assert share_keys.read(SECRET, bobs["secret"])[1] == "control"
    # carol has no share: the same answer as for a session that does not exist.
    code, carols = ask(app, tokens, "carol", "POST", "/paraview/", {"attach": SID})
    assert code == 404 and carols["field"] == "attach" and SECRET not in json.dumps(carols)
    # A sharee attaching is not its owner's hand-out (a retried launch of alice's still attaches to it).
    assert not app.ctx.store.get(SID).handed_out


def test_the_launcher_sends_a_view_sharee_to_the_quick_view(tmp_path):
    app, tokens = viz_app(tmp_path)
    ask(app, tokens, "alice", "POST", SHARES, {"user": "bob", "role": "view"})
    code, bobs = ask(app, tokens, "bob", "POST", "/paraview/", {"attach": SID})
    assert code == 403 and bobs["field"] == "attach" and "quick view" in bobs["error"], bobs
    assert SECRET not in json.dumps(bobs)
    # Revoked: bob is a stranger again.
    ask(app, tokens, "alice", "DELETE", f"{SHARES}/bob")
    ask(app, tokens, "alice", "POST", SHARES, {"user": "bob", "role": "control"})
    ask(app, tokens, "alice", "DELETE", f"{SHARES}/bob")
    assert ask(app, tokens, "bob", "POST", "/paraview/", {"attach": SID})[0] == 404


def test_trame_and_desktop_sessions_say_why_they_cannot_be_shared(tmp_path):
    client = tmp_path / "dist"
    client.mkdir()
    (client / "index.html").write_text("<html></html>")
    app = make_app(tmp_path, ScriptedScheduler(), applications={
        "tr": {"command": ["${pvpython}", "/opt/site/trame_app.py", "--port", "${port}", "--authKey", "${secret}"],
               "ready": {"line": "App running at"}, "serves_own_client": True, "web_client": str(client),
               "data_roots": [str(tmp_path)]},
        "desk": {"desktop": True, "pvserver": ["pvserver"], "data_roots": [str(tmp_path)]}})
    app.ctx.sharing.directory = Directory(groups={})
    token = app.ctx.tokens.create("alice", "t", 1)[1]
    _, apps = ask(app, {"alice": token}, "alice", "GET", "/api/v1/applications")
    offered = {a["name"]: (a["share_roles"], a["share_note"]) for a in apps["applications"]}
    assert offered["tr"][0] == [] and "sharee's browser with the sharee's login" in offered["tr"][1]
    assert offered["desk"][0] == [] and "desktop client" in offered["desk"][1]
