"""Default locations of pvhpc's files, so every command agrees on them.

Root gets system-wide places; any other user gets places under their home.
Each can be overridden by an environment variable or a command-line option.
"""

from __future__ import annotations

import os
from pathlib import Path


def _base(system: str, user: str) -> Path:
    return Path(system) if os.geteuid() == 0 else Path.home() / user


def cluster_dir() -> Path:
    return Path(os.environ.get("PVHPC_CLUSTER_DIR") or _base("/var/lib/pvhpc/cluster", ".local/share/pvhpc/cluster"))


def runtime_dir() -> Path:
    return Path(os.environ.get("PVHPC_RUNTIME_DIR") or _base("/opt/pvhpc/pvweb-site", ".local/share/pvhpc/pvweb-site"))


def web_clients_dir() -> Path:
    """Web clients installed from npm (`pvhpc runtime install`), each npm package's contents in a directory named
    as the package: ``pvw-visualizer/`` (the Visualizer's ``dist/`` and ``server/pvw-visualizer.py``),
    ``wslink/`` (``dist/wslink.js``, the wslink 1.x browser client the users' page loads)."""
    return Path(os.environ.get("PVHPC_WEB_CLIENTS_DIR") or _base("/opt/pvhpc/web-clients", ".local/share/pvhpc/web-clients"))


def state_dir() -> Path:
    return Path(os.environ.get("PVHPC_STATE_DIR") or _base("/var/lib/pvhpc", ".local/share/pvhpc"))


# What pvhpc ships beside its code. The job scripts and Apache templates live at the top of the
# repository (where staff look for them); pvhpc/share/ links to them, and a wheel carries copies,
# so a checkout and an installed pvhpc find them at the same place.
PACKAGE_DIR = Path(__file__).resolve().parent
JOBSCRIPTS_DIR = PACKAGE_DIR / "share" / "jobscripts"
APACHE_TEMPLATES_DIR = PACKAGE_DIR / "share" / "apache"
# Run on compute nodes, outside pvhpc's environment: by pvpython, and by the node's python3.
SERVER_SCRIPT = PACKAGE_DIR / "node" / "pvweb_server.py"
JOB_HELPER = PACKAGE_DIR / "node" / "jobhelper.py"
