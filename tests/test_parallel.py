"""Parallel sessions: an MPI ParaView server over two emulated nodes, the web server attached, real images.

The request checks run without a cluster; the rest are real Slurm jobs running `mpiexec pvserver` over
cpu01 and cpu02 of the test cluster, driven through pvhpc's launcher API and the real websocket.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import urllib.request
from pathlib import Path

import pytest

from pvhpc.config import parse
from pvhpc.sessions.parallel_request import ParallelRequestError
from pvhpc.sessions.spec import parse_spec

from tests.harness.cluster import jobs, pvhpc_jobs
from tests.helpers import (PARALLEL_CPU, PVSERVER, hues, job_processes_by_node, processes_of_job, processes_of_this_job,
                           render_by_process, wait_no_server_left, wait_until)


def parallel_site(data_dir: Path, **paraview) -> dict:
    return {
        "partitions": {"gpu": {"gpu_type": "a100"}, "cpu": dict(PARALLEL_CPU)},
        "applications": {
            "paraview": {"data_roots": [str(data_dir)], "start_timeout": 120, "pvserver": PVSERVER, **paraview},
            "serial": {"data_roots": [str(data_dir)]},
        },
    }


# -- requests: checked before anything is submitted ---------------------------------------------------

@pytest.mark.parametrize("body, field, words", [
    ({"nodes": 3, "ranks": 3}, "nodes", "over partition cpu's maximum of 2"),
    ({"nodes": 2, "ranks": 6}, "ranks", "over partition cpu's maximum of 4"),
    ({"nodes": 2, "ranks": 3}, "ranks", "do not divide evenly over 2 nodes"),
    ({"nodes": 1, "ranks": 3}, "ranks", "make 3 a node, over partition cpu's maximum of 2 a node"),
    ({"nodes": 2, "ranks": 1}, "ranks", "cannot fill 2 nodes"),
    ({"ranks": 0}, "ranks", "at least 1"),
    ({"ranks": "two"}, "ranks", "whole number"),
    ({"nodes": True}, "nodes", "whole number"),
    ({"partition": "gpu", "ranks": 2}, "ranks", "partition gpu runs no parallel sessions"),
    ({"application": "serial", "ranks": 2}, "ranks", "application serial runs no parallel sessions"),
    ({"application": "serial", "nodes": 2}, "nodes", "application serial runs no parallel sessions"),
])
def test_parallel_requests_beyond_what_staff_allow_name_the_field(tmp_path, body, field, words):
    site = parse(parallel_site(tmp_path))
    request = {"application": "paraview", "partition": "cpu", **body}
    with pytest.raises(ParallelRequestError) as caught:
        parse_spec(site, request, strict=True)
    assert caught.value.field == field and caught.value.status == 400 and words in str(caught.value)


def test_parallel_request_within_the_limits_and_a_plain_one_stay_apart(tmp_path):
    site = parse(parallel_site(tmp_path))
    spec = parse_spec(site, {"application": "paraview", "partition": "cpu", "nodes": "2", "ranks": 4}, strict=True)
    assert (spec.nodes, spec.ranks) == (2, 4)
    assert parse_spec(site, {"application": "paraview", "partition": "cpu", "nodes": 2}, strict=True).ranks == 2
    plain = parse_spec(site, {"application": "paraview"}, strict=True)
    assert (plain.nodes, plain.ranks) == (1, 0)
    # Different sizes are different requests: a launcher retry of one never attaches to the other.
    assert spec.request_key("alice") != plain.request_key("alice")


def test_the_parallel_job_asks_slurm_for_the_nodes_and_one_task_a_rank(tmp_path):
    from pvhpc.scheduler.slurm_cli import SlurmCLI
    from pvhpc.sessions.job import build_job

    site = parse(parallel_site(tmp_path))
    spec = parse_spec(site, {"application": "paraview", "partition": "cpu", "nodes": 2, "ranks": 4}, strict=True)
    job = build_job(site, spec, "alice", "sid", "pvhpc-0123", "s3cret", "tok")
    argv = SlurmCLI.sbatch_argv(job)
    assert "--nodes=2" in argv and "--ntasks=4" in argv
    line = next(line for line in job.script.splitlines() if line.startswith("export PVHPC_PARALLEL="))
    import shlex
    value = json.loads(shlex.split(line.split("=", 1)[1])[0])
    assert value["mpi"] == ["mpiexec", "-n", "4"] and value["pvserver"] == PVSERVER and value["ranks"] == 4
    assert "--ds-host" in value["connect"] and "s3cret" not in line
    plain = build_job(site, parse_spec(site, {"application": "paraview"}, strict=True), "a", "s", "j", "x", "t")
    assert "export PVHPC_PARALLEL=''" in plain.script
    assert "--nodes=1" in SlurmCLI.sbatch_argv(plain) and "--ntasks=1" in SlurmCLI.sbatch_argv(plain)


def test_staff_mistakes_in_the_parallel_keys_name_the_key(tmp_path):
    from pvhpc.config import ConfigError

    for paraview, key in (({"mpi_launcher": ["mpiexec", "-n", "4"]}, "mpi_launcher"),
                          ({"mpi_launcher": ["mpiexec", "-n", "${rank}"]}, "mpi_launcher[2]"),
                          ({"pvserver_connect": ["--ds-host", "${ds_host}"]}, "pvserver_connect"),
                          ({"pvserver": []}, "pvserver")):
        with pytest.raises(ConfigError) as caught:
            parse(parallel_site(tmp_path, **paraview))
        assert f"applications.paraview.{key}" in str(caught.value)


# -- the real thing --------------------------------------------------------------------------------

def launch(svc, **fields) -> tuple[int, dict]:
    body = json.dumps({"application": "paraview", "partition": "cpu", **fields}).encode()
    request = urllib.request.Request(svc.url + "/paraview/", data=body, method="POST",
                                     headers={"Content-Type": "text/plain"})
    try:
        with urllib.request.urlopen(request, timeout=180) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def cancel_leaves_no_server(svc, cluster, session: dict) -> None:
    ended = svc.client().request("DELETE", f"/paraview/{session['id']}")
    assert ended["end_reason"] == "cancelled"
    wait_no_server_left(cluster, session["job_id"])


@pytest.mark.cluster
@pytest.mark.paraview
def test_two_ranks_on_two_nodes_render_one_colour_each_and_cancel_leaves_no_server(service_factory, cluster,
                                                                                  artifacts, tmp_path):
    svc = service_factory(**parallel_site(tmp_path / "svc" / "data")).start()
    before = pvhpc_jobs(cluster)
    status, refused = launch(svc, nodes=2, ranks=3)
    assert status == 400 and refused["field"] == "ranks" and pvhpc_jobs(cluster) == before

    status, session = launch(svc, nodes=2, ranks=2)
    assert status == 200, session
    # The launcher's answer and the session's record say what it asked for.
    assert (session["nodes"], session["ranks"]) == (2, 2)
    stored = svc.client().request("GET", f"/api/v1/sessions/{session['id']}")
    assert (stored["nodes"], stored["ranks"]) == (2, 2)
    [job] = jobs(cluster, "-j", session["job_id"])
    assert job.is_running and job.nodes == "cpu[01-02]"
    assert job_processes_by_node(cluster, session["job_id"], "pvserver") == {"cpu01": 1, "cpu02": 1}

    image = render_by_process(session["sessionURL"], session["secret"])
    image = asyncio.run(image)
    (artifacts / "two-ranks.jpg").write_bytes(image)
    assert len(hues(image)) == 2, hues(image)

    cancel_leaves_no_server(svc, cluster, session)


@pytest.mark.cluster
@pytest.mark.paraview
def test_four_ranks_show_four_colours_and_a_rank_that_dies_ends_the_session(service_factory, cluster, artifacts,
                                                                           tmp_path):
    svc = service_factory(**parallel_site(tmp_path / "svc" / "data")).start()
    status, session = launch(svc, nodes=2, ranks=4)
    assert status == 200, session
    assert job_processes_by_node(cluster, session["job_id"], "pvserver") == {"cpu01": 2, "cpu02": 2}
    image = asyncio.run(render_by_process(session["sessionURL"], session["secret"]))
    (artifacts / "four-ranks.jpg").write_bytes(image)
    assert len(hues(image)) == 4, hues(image)

    # Kill one rank on the second node, as a crash or the OOM killer would.
    victim = next(pid for pid, cmd, env in processes_of_this_job(cluster, session["job_id"])
                  if os.path.basename(cmd.split()[0]) == "pvserver" and env.get("SLURMD_NODENAME") == "cpu02")
    os.kill(victim, signal.SIGKILL)
    client = svc.client()
    ended = wait_until(lambda: (s := client.request("GET", f"/api/v1/sessions/{session['id']}"))["state"] == "ended"
                       and s, 60, message="session ended")
    assert ended["end_reason"] == "failed", ended
    assert "a ParaView server rank exited" in ended["detail"], ended
    wait_no_server_left(cluster, session["job_id"])


def test_the_command_line_asks_for_nodes_and_ranks():
    from pvhpc.cli.session_cmds import request_fields, request_options

    assert request_fields(request_options().parse_args(["-N", "2", "-n", "4"])) == {"nodes": 2, "ranks": 4}
    assert request_fields(request_options().parse_args([])) == {}


@pytest.mark.cluster
@pytest.mark.paraview
def test_the_unmodified_visualizer_attaches_to_the_ranks_of_a_parallel_session(service_factory, cluster, artifacts,
                                                                               tmp_path):
    """The Visualizer has no option for pvserver's connect id: pvhpc's argv wrapper sets it in its ParaView, so it
    attaches to the two ranks, whose pieces show in two colours; cancelling leaves no server on either node."""
    from pvhpc import config, paths
    from pvhpc import runtime

    runtime.install_web_clients(paths.web_clients_dir())
    data = tmp_path / "svc" / "data"
    site = parallel_site(data)
    visualizer = config.visualizer_application([str(data)])["visualizer"]
    site["applications"]["visualizer"] = {**visualizer, "start_timeout": 120, "pvserver": PVSERVER}
    svc = service_factory(**site).start()
    status, session = launch(svc, application="visualizer", nodes=2, ranks=2)
    assert status == 200, session
    assert job_processes_by_node(cluster, session["job_id"], "pvserver") == {"cpu01": 1, "cpu02": 1}
    procs = processes_of_job(session["job_id"])
    assert not [p for p in procs if session["secret"] in p], procs

    image = asyncio.run(render_by_process(session["sessionURL"], session["secret"], pushed=True))
    (artifacts / "visualizer-two-ranks.jpg").write_bytes(image)
    assert len(hues(image)) == 2, hues(image)

    cancel_leaves_no_server(svc, cluster, session)


@pytest.mark.cluster
@pytest.mark.paraview
def test_the_trame_app_attaches_to_the_ranks_of_a_parallel_session(service_factory, cluster, tmp_path):
    """pvhpc's trame application attaches to the ranks before it serves (ready only once attached): its session
    is ready with a pvserver on each node and its page answers; cancelling leaves no server on either node."""
    from pvhpc import config

    data = tmp_path / "svc" / "data"
    site = parallel_site(data)
    trame = config.trame_application([str(data)])
    if not trame:
        pytest.fail("the trame application is not installed (pvhpc runtime install)")
    site["applications"]["trame"] = {**trame["trame"], "start_timeout": 120}
    svc = service_factory(frontend={"kind": "builtin"}, **site).start()
    status, session = launch(svc, application="trame", nodes=2, ranks=2)
    assert status == 200, session
    assert (session["nodes"], session["ranks"]) == (2, 2)
    assert job_processes_by_node(cluster, session["job_id"], "pvserver") == {"cpu01": 1, "cpu02": 1}
    with urllib.request.urlopen(f"{svc.url}/session/{session['id']}/", timeout=30) as page:
        assert page.status == 200 and b"<html" in page.read().lower()
    # The root rank says so once a client presented its connect id: the trame app, before it served.
    assert "Client connected." in svc.client().log(session["id"])

    cancel_leaves_no_server(svc, cluster, session)
