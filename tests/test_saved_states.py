"""Saved ParaView states: the service lists a user's states and refuses, before any job, a state to start from
that is not the user's, not a state, or reads data outside the application's data roots."""

from __future__ import annotations

import pytest

from pvhpc import config
from pvhpc.scheduler.runners import LocalRunner
from pvhpc.sessions.savedstates import SavedStates, save_prefix, state_dir
from pvhpc.sessions.spec import RequestError, parse_spec
from tests.helpers import run

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
    where = state_dir(site, user)
    where.mkdir(parents=True, exist_ok=True)
    (where / name).write_text(text)
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
    assert save_prefix(site, "alice", "s3") == str(state_dir(site, "alice") / "s3")


def test_refused_states_say_why(site, tmp_path):
    data = site.applications["paraview"].data_roots[0]
    good = STATE.format(data=data / "tri.vtk")
    others = saved(site, "bob", "b-20261201T101500Z.pvsm", good)
    with pytest.raises(RequestError, match="neither in your saved states") as e:
        check(site, "alice", others)
    assert e.value.field == "state"
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
        check(site, "alice", str(state_dir(site, "alice") / "gone-20261201T101500Z.pvsm"))


@pytest.mark.parametrize("value,message", [
    ("relative.pvsm", "must be an absolute path"),
    ("/x/state.xml", r"is not a ParaView state file \(\.pvsm\)"),
    (5, "must be a path string"),
    ("/x/a\nb.pvsm", "must be an absolute path"),
])
def test_request_field_state_form(site, value, message):
    with pytest.raises(RequestError, match=message) as e:
        parse_spec(site, {"application": "paraview", "state": value}, strict=True)
    assert e.value.field == "state"
    assert parse_spec(site, {"application": "paraview", "state": "/x/s.pvsm"}, strict=True).state_file == "/x/s.pvsm"
