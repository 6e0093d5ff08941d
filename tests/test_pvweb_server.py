"""The ParaViewWeb server application refuses bad input before it opens a port."""

from __future__ import annotations

import os
import subprocess

import pytest

from pvhpc.paths import SERVER_SCRIPT

pytestmark = pytest.mark.paraview


def start_server(runtime_dir, *args, env_secret=None):
    env = dict(os.environ, PYTHONPATH=str(runtime_dir))
    env.pop("PVHPC_SECRET", None)
    if env_secret is not None:
        env["PVHPC_SECRET"] = env_secret
    return subprocess.run(
        ["xvfb-run", "-a", "/usr/bin/pvpython", "--no-mpi", str(SERVER_SCRIPT), "--port", "0", *args],
        env=env, capture_output=True, text=True, timeout=120,
    )


@pytest.mark.parametrize("args,env_secret,message", [
    ((), None, "no secret"),
    # (pvpython itself crashes on an empty argument word, so the empty secret is given as --authKey=)
    (("--authKey=",), None, "no secret"),
    ((), "", "no secret"),
    (("--authKey", "x", "--data", "/nonexistent/pvhpc-data"), None, "'/nonexistent/pvhpc-data' is not an existing directory"),
])
def test_server_refuses_bad_input_before_listening(runtime_dir, args, env_secret, message):
    proc = start_server(runtime_dir, *args, env_secret=env_secret)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "ready port=" not in proc.stdout
