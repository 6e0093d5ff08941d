"""pvhpc as a site installs it: a wheel built from this checkout, in a fresh venv, runs the whole demo.

Everything else in the suite runs pvhpc from the checkout, where the job
scripts, Apache templates and web page are always at hand. Here nothing of
the checkout is reachable: the venv is made by Debian's python3 outside it,
PYTHONPATH is unset, the checkout's own venv is off the PATH, and the
commands run in a directory of their own. A wheel that leaves out a file
the service or its jobs read fails here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.harness.ports import free_port_block
from tests.harness.service import site_config
from tests.helpers import foreground_fraction

pytestmark = [pytest.mark.cluster, pytest.mark.paraview]

REPO = Path(__file__).resolve().parent.parent
SYSTEM_PYTHON = "/usr/bin/python3"   # Debian's, the same Python as pvpython's

# What the installed pvhpc reads besides its modules, as the checkout holds it.
SHIPPED = {
    "pvhpc/share/jobscripts": REPO / "jobscripts",
    "pvhpc/share/apache": REPO / "apache",
    "pvhpc/web/static": REPO / "pvhpc" / "web" / "static",
}


def _run(argv, timeout, **kwargs) -> subprocess.CompletedProcess:
    """The command's result; past ``timeout`` a failure that shows where it hung: everything it printed, and
    (Python's faulthandler, on SIGABRT) the stack of each of its threads."""
    env = {**(kwargs.pop("env", None) or os.environ), "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen([str(a) for a in argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            out, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        pytest.fail(f"{' '.join(str(a) for a in argv)} still ran after {timeout} s; it printed:\n{out}\n"
                    f"and on stderr (its threads' stacks last):\n{err[-20000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _outside_environment(venv: Path, **extra) -> dict[str, str]:
    """This process's environment without any way back to the checkout's pvhpc."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    path = [p for p in env.get("PATH", "/usr/bin:/bin").split(os.pathsep) if not p.startswith(sys.prefix)]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of the checkout as it is now, built from a clean copy of it."""
    base = tmp_path_factory.mktemp("wheel")
    # A copy, because setuptools keeps build/ in the source tree between builds: files of an earlier build
    # left there would go into this wheel too and hide a file the packaging no longer ships.
    source = base / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "test-artifacts", "__pycache__", ".pytest_cache", ".venv"))
    out = base / "dist"
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", out, source],
                timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    wheels = list(out.glob("pvhpc-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_the_wheel_carries_the_job_scripts_apache_templates_and_web_page(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "pvhpc/share/jobscripts/paraview-web.sh" in names
        assert any(n.startswith("pvhpc/share/apache/") and n.endswith(".in") for n in names)
        assert any(n.startswith("pvhpc/web/static/") for n in names)
        for prefix, directory in SHIPPED.items():
            for path in sorted(directory.iterdir()):
                name = f"{prefix}/{path.name}"
                assert name in names, f"{wheel.name} lacks {name}"
                assert zf.read(name) == path.read_bytes(), f"{name} in {wheel.name} differs from the checkout's"


def test_pvhpc_demo_runs_from_a_fresh_venv_that_has_only_the_wheel(wheel, cluster, runtime_dir, tmp_path):
    venv, work = tmp_path / "venv", tmp_path / "work"
    work.mkdir()
    proc = _run([SYSTEM_PYTHON, "-m", "venv", venv], timeout=120)
    assert proc.returncode == 0, proc.stderr
    env = _outside_environment(venv, PVHPC_STATE_DIR=str(tmp_path / "state"), PVHPC_RUNTIME_DIR=str(runtime_dir),
                               PVHPC_CLUSTER_DIR=str(cluster.dir))
    # Its dependencies come from the package index, as at a site.
    proc = _run([venv / "bin" / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q", wheel],
                timeout=600, cwd=work, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    where = _run([venv / "bin" / "python", "-c", "import pvhpc; print(pvhpc.__file__)"], timeout=60, cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), f"pvhpc came from {where.stdout.strip()}, not the venv"

    site = work / "site.yaml"
    site.write_text(yaml.safe_dump(site_config(cluster, tmp_path / "site", runtime_dir), sort_keys=False))
    check = _run(["pvhpc", "config", "check", "--config", site], timeout=120, cwd=work, env=env)
    assert check.returncode == 0, check.stdout + check.stderr

    # The test's cluster, already running: demo reuses it rather than starting one of its own.
    image = work / "demo.jpg"
    demo = _run(["pvhpc", "demo", "--cluster-dir", cluster.dir, "--port", free_port_block(1), "--image", image],
                timeout=300, cwd=work, env=env)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    jpeg = image.read_bytes()
    assert jpeg[:3] == b"\xff\xd8\xff", "the demo's image is not a JPEG"
    assert foreground_fraction(jpeg) > 0.02, "the demo's image shows no sphere"
