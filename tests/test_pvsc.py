"""The desktop ParaView's server configuration (pvhpc/client/pvsc.py, ``pvhpc pvsc``): what the file holds, and the
command ParaView makes of it, parsed by pvhpc's own command line. ParaView itself reading it and running that
command against a real session is in tests/test_desktop_pvsc.py."""

from __future__ import annotations

import re
import shlex
import xml.etree.ElementTree as ET

import pytest

from pvhpc.cli import build_parser
from pvhpc.client import pvsc

URL = "https://viz.example.org"
APPLICATIONS = [
    {"name": "paraview", "partitions": ["cpu", "gpu"], "parallel": True},       # a web application: not listed
    {"name": "pvserver", "desktop": True, "partitions": ["cpu", "gpu", "gone"], "parallel": True},
]
PARTITIONS = [
    {"name": "cpu", "parallel": {"max_nodes": 2, "max_ranks": 4}, "accounts": [],
     "walltime": {"default": "1:00:00", "max": "8:00:00"}},
    {"name": "gpu", "parallel": None, "accounts": ["physics", "chem"],
     "walltime": {"default": "0:30:00", "max": "2:00:00"}},
]


def servers(text: str) -> dict[str, ET.Element]:
    return {s.get("name"): s for s in ET.fromstring(text.encode()).findall("Server")}


def command_paraview_runs(server: ET.Element, chosen: dict[str, str]) -> list[str]:
    """What ParaView 5.11 (pqServerLauncher) runs: each option's default unless the user chose otherwise, every
    $NAME$ replaced, the words joined by spaces and split again."""
    values = {o.get("name"): o[0].get("default") for o in server.iter("Option")}
    values.update(chosen)
    command = server.find("CommandStartup/Command")
    line = " ".join([command.get("exec")] + [a.get("value") for a in command.iter("Argument")])
    line = re.sub(r"\$([^$ ]*)\$", lambda m: values.get(m.group(1), m.group(1)), line)
    return shlex.split(line)


def test_one_entry_per_desktop_application_and_partition_it_runs_on():
    found = servers(pvsc.server_configuration(APPLICATIONS, PARTITIONS, URL))
    assert sorted(found) == ["pvhpc pvserver on cpu", "pvhpc pvserver on gpu"]
    cpu = found["pvhpc pvserver on cpu"]
    assert cpu.get("resource") == "cs://localhost:11111" and cpu.get("timeout") == "-1"
    options = {o.get("name"): o for o in cpu.iter("Option")}
    assert options["SESSION_NODES"].find("Range").get("max") == "2"
    assert options["SESSION_RANKS"].find("Range").get("max") == "4"
    assert options["SESSION_WALLTIME"].find("String").get("default") == "1:00:00"
    assert "SESSION_ACCOUNT" not in options
    gpu_options = {o.get("name"): o for o in found["pvhpc pvserver on gpu"].iter("Option")}
    assert "SESSION_NODES" not in gpu_options and "SESSION_RANKS" not in gpu_options   # no parallel sessions there
    assert [e.get("value") for e in gpu_options["SESSION_ACCOUNT"].iter("Entry")] == ["physics", "chem"]


def test_the_command_is_pvhpc_connect_new_with_what_the_user_chose():
    found = servers(pvsc.server_configuration(APPLICATIONS, PARTITIONS, URL, executable="/opt/pvhpc/bin/pvhpc",
                                              local_port=22222))
    argv = command_paraview_runs(found["pvhpc pvserver on cpu"],
                                 {"SESSION_NODES": "2", "SESSION_RANKS": "4", "PV_SERVER_PORT": "22223"})
    assert argv[0] == "/opt/pvhpc/bin/pvhpc"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "connect" and args.new == "pvserver" and args.session is None
    assert (args.url, args.partition, args.nodes, args.ranks, args.walltime, args.port) == (
        URL, "cpu", 2, 4, "1:00:00", 22223)

    gpu = command_paraview_runs(found["pvhpc pvserver on gpu"], {"SESSION_ACCOUNT": "chem"})
    args = build_parser().parse_args(gpu[1:])
    assert (args.partition, args.account, args.port, args.nodes, args.ranks) == ("gpu", "chem", 22222, None, None)


def test_names_and_values_are_escaped_and_nothing_secret_is_written():
    odd = [dict(PARTITIONS[0], name='cpu"<&>', accounts=['a"b'])]
    text = pvsc.server_configuration([dict(APPLICATIONS[1], partitions=['cpu"<&>'])], odd, URL)
    assert servers(text)['pvhpc pvserver on cpu"<&>'] is not None      # well-formed XML, the name intact
    assert "token" not in text.lower() and "secret" not in text.lower()


def test_a_service_without_desktop_applications_says_so():
    with pytest.raises(ValueError, match="no application for the desktop ParaView"):
        pvsc.server_configuration(APPLICATIONS[:1], PARTITIONS, URL)


def test_the_service_serves_its_own_pvsc_from_the_same_answers(tmp_path):
    """GET /api/v1/pvsc (the page links it): the entries of ``pvhpc pvsc`` for this site, naming its public URL; to
    a logged-in user only (tests/test_api_auth.py); a 404 that says why where the site runs no desktop application."""
    from tests.harness.inprocess import fetch_all, make_app

    desktop = {"pvserver": {"desktop": True, "pvserver": ["/usr/bin/pvserver"], "data_roots": [str(tmp_path)]}}
    app = make_app(tmp_path / "a", service={"public_url": "https://viz.example.org"}, applications=desktop,
                   partitions={"cpu": {"max_ranks": 4, "max_nodes": 2}})
    [answer] = fetch_all(app, [("GET", "/api/v1/pvsc", None)])
    assert answer.code == 200 and answer.headers["Content-Type"].startswith("application/xml")
    assert answer.headers["Content-Disposition"] == 'attachment; filename="viz.example.org.pvsc"'
    found = servers(answer.body.decode())
    assert sorted(found) == ["pvhpc pvserver on cpu"]
    argv = command_paraview_runs(found["pvhpc pvserver on cpu"], {})
    assert "--url=https://viz.example.org" in argv and "--ranks=1" in argv

    [none_here] = fetch_all(make_app(tmp_path / "c"), [("GET", "/api/v1/pvsc", None)])
    assert none_here.code == 404 and b"no application for the desktop ParaView" in none_here.body
