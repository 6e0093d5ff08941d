"""Saved ParaView states: the service lists a user's states and refuses, before any job, a state to start from
that is not the user's, not a state, or reads data outside the application's data roots."""

from __future__ import annotations

import pytest

from pvhpc import config
from pvhpc.scheduler.runners import LocalRunner
from pvhpc.sessions.savedstates import SavedStates, save_prefix, saved_state_dir
from pvhpc.sessions.outcomes import NotAllowed
from pvhpc.sessions.spec import RequestError, parse_spec
from pvhpc.web.errors import status_of
from tests.helpers import XVFB_RUN, run

STATE = """<GenericParaViewApplication>
  <ServerManagerState version="5.11.0">
    <Proxy group="sources" type="LegacyVTKFileReader" id="298" servers="1">
      <Property name="FileNames" id="298.FileNames" number_of_elements="1">
        <Element index="0" value="{data}"/>
      </Property>
    </Proxy>
  </ServerManagerState>
</GenericParaViewApplication>
"""


@pytest.fixture
def site(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "tri.vtk").write_text("x")
    return config.parse({
        "service": {"job_output_dir": str(tmp_path / "jobs")},
        "partitions": {"cpu": {"walltime": {"default": 30, "max": 60}}},
        "applications": {"paraview": {"data_roots": [str(data)]}},
    }, "site.yaml")


def saved(site, user, name, text):
    """A state as a server saves it: the file, and its line in the index (pvhpc/node/pvstate.py)."""
    where = saved_state_dir(site, user)
    where.mkdir(parents=True, exist_ok=True)
    (where / name).write_text(text)
    with open(where / "index.tsv", "a") as index:
        index.write(f"{name}\t{len(text)}\n")
    return str(where / name)


def check(site, user, path):
    return run(SavedStates(site, LocalRunner()).check(user, site.applications["paraview"], path))


def test_a_saved_state_reading_data_inside_the_roots_is_accepted(site):
    data = site.applications["paraview"].data_roots[0]
    path = saved(site, "alice", "s1-20261201T101500Z.pvsm", STATE.format(data=data / "tri.vtk"))
    assert check(site, "alice", path) == path
    # Listed with the session that saved it and when, newest first; other files are not states.
    saved(site, "alice", "s2-20261201T111500Z.pvsm", STATE.format(data=data / "tri.vtk"))
    saved(site, "alice", "notes.txt", "x")
    listed = run(SavedStates(site, LocalRunner()).list("alice"))
    assert [(s["session"], s["saved_at"]) for s in listed] == [("s2", "2026-12-01T11:15:00Z"),
                                                               ("s1", "2026-12-01T10:15:00Z")]
    assert run(SavedStates(site, LocalRunner()).list("bob")) == []
    assert save_prefix(site, "alice", "s3") == str(saved_state_dir(site, "alice") / "s3")


def test_refused_states_say_why(site, tmp_path):
    data = site.applications["paraview"].data_roots[0]
    good = STATE.format(data=data / "tri.vtk")
    others = saved(site, "bob", "b-20261201T101500Z.pvsm", good)
    with pytest.raises(RequestError, match="neither in your saved states") as e:
        check(site, "alice", others)
    assert e.value.field == "saved_state"
    (tmp_path / "loose.pvsm").write_text(good)
    with pytest.raises(RequestError, match="neither in your saved states"):
        check(site, "alice", str(tmp_path / "loose.pvsm"))
    corrupt = saved(site, "alice", "c-20261201T101500Z.pvsm", good[:120])
    with pytest.raises(RequestError, match="is not a readable ParaView state file"):
        check(site, "alice", corrupt)
    not_state = saved(site, "alice", "n-20261201T101500Z.pvsm", "<html><body/></html>")
    with pytest.raises(RequestError, match="no ServerManagerState element"):
        check(site, "alice", not_state)
    escaping = saved(site, "alice", "e-20261201T101500Z.pvsm", STATE.format(data="/etc/passwd"))
    with pytest.raises(RequestError, match="the state reads /etc/passwd, outside application paraview's data roots"):
        check(site, "alice", escaping)
    # A link inside the roots to a file outside is outside.
    (data / "link.vtk").symlink_to("/etc/hostname")
    linked = saved(site, "alice", "l-20261201T101500Z.pvsm", STATE.format(data=data / "link.vtk"))
    with pytest.raises(RequestError, match="outside application paraview's data roots"):
        check(site, "alice", linked)
    with pytest.raises(RequestError, match="cannot be read"):
        check(site, "alice", str(saved_state_dir(site, "alice") / "gone-20261201T101500Z.pvsm"))


def test_an_application_that_cannot_load_states_refuses_one(site, tmp_path):
    """Only a pvpython server has a ParaView state loaded into it: a site's own binary is refused a state
    (before its state is even read), and the pvpython ones take states without saying so."""
    data = site.applications["paraview"].data_roots[0]
    path = saved(site, "alice", "s1-20261201T101500Z.pvsm", STATE.format(data=data / "tri.vtk"))
    sites = config.parse({
        "service": {"job_output_dir": str(tmp_path / "jobs")},
        "partitions": {"cpu": {"walltime": {"default": 30, "max": 60}}},
        "applications": {"paraview": {"data_roots": [str(data)]},
                         "binary": {"data_roots": [str(data)], "command": ["/opt/site/server", "--port", "${port}"]},
                         "told": {"data_roots": [str(data)], "command": ["/opt/site/server", "--port", "${port}"],
                                  "saved_states": True}},
    }, "site.yaml")
    apps = sites.applications
    assert (apps["paraview"].saved_states, apps["binary"].saved_states, apps["told"].saved_states) == (
        True, False, True)
    with pytest.raises(RequestError, match="application binary cannot start from a saved state") as e:
        run(SavedStates(sites, LocalRunner()).check("alice", apps["binary"], path))
    assert e.value.field == "saved_state"
    assert run(SavedStates(sites, LocalRunner()).check("alice", apps["told"], path)) == path


@pytest.mark.parametrize("value,message", [
    ("relative.pvsm", "must be an absolute path"),
    ("/x/state.xml", r"is not a ParaView state file \(\.pvsm\)"),
    (5, "must be a path string"),
    ("/x/a\nb.pvsm", "must be an absolute path"),
])
def test_request_field_saved_state_form(site, value, message):
    with pytest.raises(RequestError, match=message) as e:
        parse_spec(site, {"application": "paraview", "saved_state": value}, strict=True)
    assert e.value.field == "saved_state"
    spec = parse_spec(site, {"application": "paraview", "saved_state": "/x/s.pvsm"}, strict=True)
    assert spec.saved_state_file == "/x/s.pvsm"


@pytest.mark.parametrize("strict", [True, False])
def test_the_deprecated_field_state_is_still_a_saved_state(site, strict):
    """``state``, the field's old name (beside a session's state), is still taken, in the native API's body and
    in a ParaViewWeb client's (an app page's ?state=PATH); given beside ``saved_state`` it is refused, naming both."""
    spec = parse_spec(site, {"application": "paraview", "state": "/x/s.pvsm"}, strict=strict)
    assert spec.saved_state_file == "/x/s.pvsm"
    with pytest.raises(RequestError, match="must be an absolute path") as e:
        parse_spec(site, {"application": "paraview", "state": "relative.pvsm"}, strict=strict)
    assert e.value.field == "saved_state"
    with pytest.raises(RequestError, match="given twice, as 'saved_state' and as 'state'") as e:
        parse_spec(site, {"application": "paraview", "saved_state": "/x/s.pvsm", "state": "/x/t.pvsm"},
                   strict=strict)
    assert (e.value.field, status_of(e.value)) == ("saved_state", 400)


# -- for real: a Visualizer session on the local cluster, ended, and a new one started from its state ----------

async def build_pipeline(url: str, secret: str) -> bytes:
    """As a Visualizer user does: open the data file, add a Contour; the picture it shows then."""
    import asyncio

    from pvhpc.client.wslink import WslinkClient
    from tests.helpers import new_image

    client = await WslinkClient.connect(url, secret)
    try:
        first = await new_image(client, None)
        reader = await client.call("pv.proxy.manager.create.reader", ["blob.vtk"])
        opened = await new_image(client, first)
        contour = await client.call("pv.proxy.manager.create", ["Contour", reader["id"]])
        assert contour.get("id"), contour
        await asyncio.sleep(1)
        return await new_image(client, opened)
    finally:
        client.close()


async def pipeline_now(url: str, secret: str) -> tuple[list[str], bytes]:
    """The pipeline a session shows (source names) and its picture."""
    from pvhpc.client.wslink import WslinkClient

    client = await WslinkClient.connect(url, secret)
    try:
        listed = await client.call("pv.proxy.manager.list", [])
        return sorted(s["name"] for s in listed["sources"]), await client.push_image((400, 300))
    finally:
        client.close()


def wait_for_state(client, session_id, timeout=60):
    from tests.helpers import wait_until

    return wait_until(lambda: [s for s in client.saved_states() if s["session"] == session_id], timeout,
                      message=f"a state saved by session {session_id}")[0]


@pytest.mark.cluster
@pytest.mark.parametrize("how", ["cancel", pytest.param("walltime", marks=pytest.mark.waits)])
def test_a_visualizer_session_ended_saves_its_state_and_a_new_one_starts_from_it(
        service_factory, cluster, tmp_path, artifacts, how):
    import asyncio
    import os

    from pvhpc import paths
    from pvhpc.client import ClientError
    from pvhpc import runtime
    from tests.helpers import foreground_fraction
    from tests.helpers import write_blob

    runtime.install_web_clients(paths.web_clients_dir())
    data = tmp_path / "data"
    data.mkdir()
    write_blob(data / "blob.vtk")
    apps = config.visualizer_application([str(data)])
    apps["visualizer"]["start_timeout"] = 120
    svc = service_factory(applications=apps).start()
    client = svc.client()
    walltime = {"walltime": "1"} if how == "walltime" else {}   # minutes: the shortest Slurm counts in
    first = client.launch("visualizer", partition="gpu", gpus="1", **walltime)
    assert first["state"] == "ready", first
    before = asyncio.run(build_pipeline(first["sessionURL"], first["secret"]))
    (artifacts / f"{how}-before.jpg").write_bytes(before)
    if how == "cancel":
        client.cancel(first["id"])
    ended = client.wait(first["id"], until=("ended",), timeout=240)
    assert ended["end_reason"] == ("cancelled" if how == "cancel" else "walltime"), ended
    saved = wait_for_state(client, first["id"])
    assert os.stat(saved["path"]).st_mode & 0o077 == 0, "a saved state is its user's alone"

    if how == "cancel":
        # As a user at a shell: pvhpc states lists it, pvhpc submit --saved-state starts from it.
        from tests.helpers import as_json, pvhpc

        listed = pvhpc("states", url=svc.url)
        assert listed.returncode == 0 and f"session {first['id']}" in listed.stdout and saved["path"] in listed.stdout
        submitted = as_json(pvhpc("submit", "visualizer", "-p", "gpu", "-g", "1", "--saved-state", saved["path"],
                                  "--wait", "--json", url=svc.url))
        second = client.get(submitted["id"])
    else:
        second = client.launch("visualizer", partition="gpu", gpus="1", saved_state=saved["path"])
    assert second["state"] == "ready", second
    names, after = asyncio.run(pipeline_now(second["sessionURL"], second["secret"]))
    (artifacts / f"{how}-after.jpg").write_bytes(after)
    assert names == ["Contour1", "blob.vtk"], names
    # The same picture: the contour's sphere where it was (JPEG: compared by what it covers).
    assert foreground_fraction(before) > 0.05
    assert abs(foreground_fraction(after) - foreground_fraction(before)) < 0.01, (
        foreground_fraction(before), foreground_fraction(after))
    client.cancel(second["id"])

    # Refused before any job: a state outside the user's states and data roots, a corrupt one, one whose data
    # is outside the roots.
    jobs_before = len(client.list())
    outside = tmp_path / "elsewhere.pvsm"
    outside.write_bytes(open(saved["path"], "rb").read())
    corrupt = data / "corrupt.pvsm"
    corrupt.write_text(open(saved["path"]).read()[:500])
    escaping = data / "escaping.pvsm"
    escaping.write_text(open(saved["path"]).read().replace(str(data / "blob.vtk"), "/etc/hostname"))
    for path, words in ((outside, "neither in your saved states"), (corrupt, "not a readable ParaView state"),
                        (escaping, "the state reads /etc/hostname, outside application visualizer's data roots")):
        with pytest.raises(ClientError, match=words) as e:
            client.launch("visualizer", partition="gpu", gpus="1", saved_state=str(path))
        assert e.value.status == 400 and e.value.field == "saved_state"
    assert len(client.list()) == jobs_before, "a refused request made a session"
    if how == "cancel":
        from_the_page(svc, client, saved, escaping, artifacts)


def from_the_page(svc, client, saved, escaping, artifacts):
    """In Chromium, on pvhpc's page: the saved state is listed, 'Start from this' puts it in the form, a state
    reading data outside the roots is refused next to its field, the listed one launches a ready session."""
    from tests.harness.browser import chromium

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(svc.url + "/")
        page.wait_for_selector("body[data-loaded=true]", timeout=15_000)
        row = page.locator("#states-table tbody tr", has_text=saved["session"])
        row.wait_for(timeout=15_000)
        page.select_option("#application", "visualizer")
        page.fill("#saved_state", str(escaping))
        page.click("#launch-button")
        page.wait_for_function("document.querySelector('#saved_state-error').textContent.includes('outside')",
                               timeout=15_000)
        assert page.locator("#saved_state-error").text_content().startswith(
            "The state reads /etc/hostname, outside application visualizer's data roots")
        row.get_by_role("button", name="Start a new session from the state").click()
        assert page.input_value("#saved_state") == saved["path"]
        before = {s["id"] for s in client.list()}
        page.select_option("#partition", "gpu")
        page.click("#launch-button")
        page.wait_for_selector('#session-state[data-state="ready"]', timeout=180_000)
        page.screenshot(path=str(artifacts / "page-started-from-state.png"), full_page=True)
        assert errors == []
    started = [s for s in client.list(state="live") if s["id"] not in before]
    assert len(started) == 1 and started[0]["state"] == "ready", started
    client.cancel(started[0]["id"])


@pytest.mark.paraview
def test_the_server_refuses_on_the_node_a_state_reading_data_outside_its_roots(runtime_dir, tmp_path):
    """Checked again where it is loaded: a state changed after the service checked it does not load, and the
    server exits before it is ready (the session ends start_failed with this line)."""
    import os
    import subprocess

    from pvhpc.paths import SERVER_SCRIPT

    data = tmp_path / "data"
    data.mkdir()
    escaping = tmp_path / "escaping.pvsm"
    escaping.write_text(STATE.format(data="/etc/hostname"))
    env = dict(os.environ, PYTHONPATH=str(runtime_dir), PVHPC_SECRET="s", PVHPC_STATE_LOAD=str(escaping),
               PVHPC_STATE_ROOTS=str(data), PVHPC_STATE_SAVE=str(tmp_path / "states" / "s1"))
    proc = subprocess.run([*XVFB_RUN, "/usr/bin/pvpython", "--no-mpi", str(SERVER_SCRIPT), "--port", "0",
                           "--data", str(data)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    assert f"the state {escaping} reads /etc/hostname, outside the session's data roots ({data})" in proc.stderr
    assert "ready port=" not in proc.stdout


@pytest.mark.cluster
def test_pvhpc_own_server_saves_its_state_when_cancelled_and_starts_from_it(service_factory, cluster, tmp_path):
    import asyncio

    from pvhpc.client.wslink import WslinkClient

    data = tmp_path / "data"
    data.mkdir()
    svc = service_factory(applications={"paraview": {"data_roots": [str(data)]}}).start()
    client = svc.client()

    async def make_sphere(url, secret):
        ws = await WslinkClient.connect(url, secret)
        try:
            await ws.create_source("Sphere")
            return await ws.render((200, 150))
        finally:
            ws.close()

    first = client.launch("paraview", partition="cpu")
    before = asyncio.run(make_sphere(first["sessionURL"], first["secret"]))
    client.cancel(first["id"])
    saved = wait_for_state(client, first["id"])
    second = client.launch("paraview", partition="cpu", saved_state=saved["path"])
    assert second["state"] == "ready", second
    names, _ = asyncio.run(pipeline_now(second["sessionURL"], second["secret"]))
    assert names == ["Sphere1"], names
    assert before[:2] == b"\xff\xd8", "the first session rendered no JPEG"
    client.cancel(second["id"])


# -- Issue 22: a state runs only its owner's code, knowingly ------------------------------------------------

PROGRAMMABLE = """<GenericParaViewApplication>
  <ServerManagerState version="5.11.0">
    <Proxy group="sources" type="ProgrammableSource" id="300" servers="1">
      <Property name="Script" id="300.Script" number_of_elements="1">
        <Element index="0" value="open({marker!r}, 'w').write('ran')"/>
      </Property>
    </Proxy>
  </ServerManagerState>
</GenericParaViewApplication>
"""
SOMEONE_ELSE = 4242   # a uid no test user has


def test_a_state_someone_else_could_have_written_is_refused_before_submit(site, tmp_path):
    """A state holds Python that runs as whoever loads it: only one the loader owns, in a place nobody else
    could have written, is taken (pvstate.untrusted; jobs here run as the service, root)."""
    import os

    data = site.applications["paraview"].data_roots[0]
    good = STATE.format(data=data / "tri.vtk")
    mine = data / "mine.pvsm"
    mine.write_text(good)
    assert check(site, "alice", str(mine)) == str(mine)

    theirs = data / "theirs.pvsm"
    theirs.write_text(good)
    os.chown(theirs, SOMEONE_ELSE, -1)
    with pytest.raises(NotAllowed, match=r"theirs.pvsm belongs to uid 4242, not to you: a state runs the Python"):
        check(site, "alice", str(theirs))
    open_to_all = data / "open.pvsm"
    open_to_all.write_text(good)
    open_to_all.chmod(0o666)
    with pytest.raises(NotAllowed, match=r"open.pvsm can be written by other users \(mode -rw-rw-rw-\)") as e:
        check(site, "alice", str(open_to_all))
    assert (e.value.field, status_of(e.value)) == ("saved_state", 403)
    # The file is one's own, but another user could have put it there (their directory, or one open to all).
    for name, mode, owner in (("given", 0o755, SOMEONE_ELSE), ("shared", 0o777, 0)):
        directory = data / name
        directory.mkdir()
        directory.chmod(mode)
        os.chown(directory, owner, -1)
        (directory / "s.pvsm").write_text(good)
        with pytest.raises(NotAllowed, match=rf"s.pvsm lies in {directory}, which "):
            check(site, "alice", str(directory / "s.pvsm"))
    # A sticky directory open to all (as /tmp) lets nobody replace another's file: one's own there is fine.
    sticky = data / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "s.pvsm").write_text(good)
    assert check(site, "alice", str(sticky / "s.pvsm")) == str(sticky / "s.pvsm")


@pytest.mark.paraview
def test_the_server_loads_its_users_own_state_with_its_code_and_refuses_anothers(runtime_dir, tmp_path):
    """On the node, where it is loaded: a state with a ProgrammableSource owned by someone else is not loaded
    (its script never runs) and the server says why; the same state of the user's own loads as before (its
    script then runs once a view shows it)."""
    import os
    import signal
    import subprocess

    from pvhpc.paths import SERVER_SCRIPT

    data = tmp_path / "data"
    data.mkdir()
    marker = tmp_path / "the-script-ran"
    state = tmp_path / "programmable.pvsm"
    state.write_text(PROGRAMMABLE.format(marker=str(marker)))

    def start_from_it():
        env = dict(os.environ, PYTHONPATH=str(runtime_dir), PVHPC_SECRET="s", PVHPC_STATE_LOAD=str(state),
                   PVHPC_STATE_ROOTS=str(data), PVHPC_STATE_SAVE=str(tmp_path / "states" / "s1"))
        return subprocess.Popen([*XVFB_RUN, "/usr/bin/pvpython", "--no-mpi", str(SERVER_SCRIPT), "--port",
                                 "0", "--data", str(data)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)

    os.chown(state, SOMEONE_ELSE, -1)
    proc = start_from_it()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, (out, err)
    assert f"the state is refused: {state} belongs to uid 4242, not to you" in err
    assert not marker.exists(), "another user's state ran its code"

    os.chown(state, os.getuid(), -1)
    proc = start_from_it()
    try:
        said = ""
        for line in proc.stdout:   # until the server says it loaded the state (it serves on after)
            said += line
            if "pvhpc: loaded the state" in line:
                break
        assert f"pvhpc: loaded the state {state}" in said, said
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def test_a_login_without_an_account_here_is_told_so_not_answered_500(tmp_path):
    """Jobs run as their users: a user the front end names but this host has no account for has no states."""
    data = tmp_path / "data"
    data.mkdir()
    site = config.parse({
        "service": {"job_output_dir": str(tmp_path / "jobs")},
        "scheduler": {"submit_as": "user"},
        "partitions": {"cpu": {"walltime": {"default": 30, "max": 60}}},
        "applications": {"paraview": {"data_roots": [str(data)]}},
    }, "site.yaml")
    with pytest.raises(NotAllowed, match="'no-such-user-here' has no account on this host") as e:
        run(SavedStates(site, LocalRunner()).list("no-such-user-here"))
    assert status_of(e.value) == 403


def test_the_list_at_its_new_url_and_at_its_deprecated_old_one(tmp_path):
    """GET /api/v1/saved-states lists them; /api/v1/states, its old URL, answers the same, saying it is deprecated
    and where the list moved."""
    import json

    from tests.harness.inprocess import fetch_all, make_app

    app = make_app(tmp_path, service={"job_output_dir": str(tmp_path / "jobs")})
    new, old = fetch_all(app, [("GET", "/api/v1/saved-states", None), ("GET", "/api/v1/states", None)])
    assert (new.code, old.code) == (200, 200) and json.loads(old.body) == json.loads(new.body) == {"states": []}
    assert "Deprecation" not in new.headers and old.headers["Deprecation"] == "true"
    assert old.headers["Link"] == '<saved-states>; rel="successor-version"'
