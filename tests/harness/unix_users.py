"""Real Unix users for multi-user tests: alice and bob ask for sessions, a service account submits as each
through the sudoers rule pvhpc ships (docs/sudoers.pvhpc); and a shared directory with pvhpc's node-side files
and a data root, as a real cluster's shared file system has them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from pvhpc.paths import JOB_HELPER, SERVER_SCRIPT

REPO = Path(__file__).resolve().parents[2]
USERS = {"alice": "pvhpc-t-alice", "bob": "pvhpc-t-bob", "service": "pvhpc-t-svc"}
SUDOERS = Path("/etc/sudoers.d/pvhpc-test")


def make(slurm_prefix: str = "/usr") -> dict[str, str]:
    """The accounts (made if missing) and the shipped sudoers rule for the service account, naming Slurm's tools
    where the test cluster's Slurm has them (as the rule's comment tells a site to do); returns USERS."""
    if os.geteuid() != 0:
        raise RuntimeError("multi-user tests make Unix users and a sudoers rule: run them as root (CI does)")
    for name in USERS.values():
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", "-s", "/bin/bash", name], check=True)
        # No password, but not a locked account either: sshd lets a locked account in by no key.
        subprocess.run(["usermod", "-p", "*", name], check=True)
    rule = []
    for line in (REPO / "docs" / "sudoers.pvhpc").read_text().splitlines():
        if line.startswith("Defaults:pvhpc "):
            line = line.replace("Defaults:pvhpc ", f"Defaults:{USERS['service']} ", 1)
        elif line.startswith("pvhpc ALL"):
            line = line.replace("pvhpc ALL", f"{USERS['service']} ALL", 1)
            for tool in ("sbatch", "scancel"):
                line = line.replace(f"/usr/bin/{tool}", f"{slurm_prefix}/bin/{tool}")
        rule.append(line)
    SUDOERS.write_text("\n".join(rule) + "\n")
    SUDOERS.chmod(0o440)
    check = subprocess.run(["visudo", "-cf", str(SUDOERS)], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"the shipped sudoers rule does not pass visudo: {check.stdout}{check.stderr}")
    return dict(USERS)


def remove() -> None:
    SUDOERS.unlink(missing_ok=True)
    for name in USERS.values():
        subprocess.run(["pkill", "-u", name], capture_output=True)
        subprocess.run(["userdel", "-r", name], capture_output=True)


def shared_dir() -> Path:
    """World-readable, as the node-side files and data must be on a real cluster's shared file system."""
    d = Path(tempfile.mkdtemp(prefix="pvhpc-test-shared-"))
    d.chmod(0o755)
    return d


def shared_site(runtime_dir: Path) -> tuple[Path, dict]:
    """A shared directory with pvhpc's node-side files and a data root, and the config sections naming them."""
    shared = shared_dir()
    # Every node-side file: the server and job helper import and run the others beside them.
    for f in SERVER_SCRIPT.parent.glob("*.py"):
        shutil.copy(f, shared / f.name)
    (shared / "data").mkdir(mode=0o755)
    return shared, {
        "runtime": {"pythonpath": str(runtime_dir), "job_helper": str(shared / JOB_HELPER.name)},
        "applications": {"paraview": {"data_roots": [str(shared / "data")],
                                      "server_script": str(shared / SERVER_SCRIPT.name)}},
    }
