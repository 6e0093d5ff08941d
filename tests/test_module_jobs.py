"""Versions of an application as environment modules, on the test cluster with Debian's Lmod: two "versions" of
Debian's ParaView, modulefiles written here that differ in a variable they set and the PATH entry whose pvpython the
session runs (runtime.pvpython is a bare name), each loaded by its session's job before the server starts; a module
gone after the service started ends its session start_failed with Lmod's words; a module that does not exist is
found by config check and refused before submit; a version the application does not offer is exit 2 and no job."""

from __future__ import annotations

import pytest

from tests.helpers import as_json, processes_of_this_job, pvhpc

pytestmark = [pytest.mark.cluster, pytest.mark.paraview]

BUILDS = {"5.11": "bin-osmesa", "5.11-egl": "bin-egl"}


def write_paraview_modules(root, tree):
    """paraview/<version>.lua for each build: PVHPC_TEST_PARAVIEW_BUILD and a bin/ of its own holding pvpython."""
    for version, bin_name in BUILDS.items():
        bin_dir = root / bin_name
        bin_dir.mkdir(parents=True)
        (bin_dir / "pvpython").symlink_to("/usr/bin/pvpython")
        (tree / "paraview").mkdir(parents=True, exist_ok=True)
        (tree / "paraview" / f"{version}.lua").write_text(
            f'setenv("PVHPC_TEST_PARAVIEW_BUILD", "{version}")\nprepend_path("PATH", "{bin_dir}")\n')
    # Present when the service starts, removed before its job runs.
    (tree / "paraview" / "gone.lua").write_text('setenv("PVHPC_TEST_PARAVIEW_BUILD", "gone")\n')


def test_each_version_loads_its_module_in_its_job_and_a_missing_one_is_refused(service_factory, cluster,
                                                                                runtime_dir, tmp_path):
    tree = tmp_path / "modulefiles"
    write_paraview_modules(tmp_path, tree)
    svc = service_factory(
        runtime={"pythonpath": str(runtime_dir), "pvpython": "pvpython", "module_paths": [str(tree)]},
        applications={"paraview": {"data_roots": [str(tmp_path)], "start_timeout": 120, "partitions": ["cpu"],
                                   "versions": {"5.11": ["paraview/5.11"], "5.11-egl": ["paraview/5.11-egl"],
                                                "gone": ["paraview/gone"], "broken": ["paraview/9.9"]}}},
    ).start()

    checked = pvhpc("config", "check", "--config", svc.config_path, "--json")
    found = {c["name"]: c for c in as_json(checked)["checks"]}
    assert checked.returncode == 1, checked.stdout
    assert found["applications.paraview.versions.broken[0]"]["status"] == "fail", found
    assert "paraview/9.9" in found["applications.paraview.versions.broken[0]"]["detail"]
    assert found["applications.paraview.versions.5.11-egl[0]"]["status"] == "ok", found

    client = svc.client()
    (tree / "paraview" / "gone.lua").unlink()
    sessions = {v: client.create("paraview", version=v) for v in ("5.11", "5.11-egl", "gone")}

    offered = pvhpc("submit", "paraview", "--app-version", "7.0", url=svc.url)
    assert offered.returncode == 2 and "5.11, 5.11-egl, gone, broken" in offered.stderr, offered
    broken = pvhpc("submit", "paraview", "--app-version", "broken", url=svc.url)
    assert broken.returncode == 2 and "paraview/9.9" in broken.stderr, broken
    assert len(client.list()) == 3, "a refused request made a session"

    for version, bin_name in BUILDS.items():
        session = client.wait(sessions[version]["id"], until=("ready",), timeout=150)
        assert (session["state"], session["version"]) == ("ready", version), session
        [server] = [env for _, cmd, env in processes_of_this_job(cluster, session["job_id"])
                    if "pvweb_server.py" in cmd]
        assert server["PVHPC_TEST_PARAVIEW_BUILD"] == version, server
        assert server["PATH"].split(":")[0] == str(tmp_path / bin_name), server["PATH"]
        log = client.log(session["id"])
        assert f"pvhpc: loaded module paraview/{version} (Lmod)" in log, log
        status = pvhpc("status", session["id"], url=svc.url)
        assert f"version:     {version}" in status.stdout, status.stdout
        client.cancel(session["id"])

    gone = client.wait(sessions["gone"]["id"], until=("ended",), timeout=150)
    assert gone["end_reason"] == "start_failed", gone
    assert "module paraview/gone could not be loaded (Lmod" in gone["detail"], gone
    assert "unknown" in gone["detail"] and "paraview/gone" in gone["detail"], gone
    assert "Lmod has detected the following error" in client.log(gone["id"])
