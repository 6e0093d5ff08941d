"""The ParaViewWeb runtime on compute nodes: ParaView's pvpython, a wslink it can import, an X server;
and the web clients that come from npm. Installed and checked from the ``pvhpc`` command
(``pvhpc runtime install/check``), on the service's side: what runs on the nodes is in ``pvhpc/node/``.

Debian's ParaView 5.11 ships ParaView's web protocols but not wslink. wslink 1.x
is installed into a directory of its own and put on pvpython's PYTHONPATH by
the job script; wslink 2 would speak binary frames that ParaView 5.11's
clients do not expect.

The web clients (the ParaView Visualizer and wslink's browser client) are npm packages used as
they are published: ``npm pack`` fetches each tarball once into a cache beside them, and they are
unpacked from there, so installing again fetches nothing.

A parallel session's pvserver ranks run with a small library of pvhpc's preloaded
(pvhpc/node/pvserver_guard.c): it gives them their connect id without putting it on a command
line and takes only their own user's client (docs/parallel.md). It is compiled here with the node's C
compiler (``cc``) into the same directory as wslink, which the nodes share.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pvhpc.errors import PvhpcError

WSLINK_REQUIREMENT = "wslink==1.12.4"
# pvhpc's trame application (pvhpc/node/trame_app.py): trame brings wslink 2.x, so it lies in a directory of its
# own, ``trame/`` in the runtime dir, which only that application's PYTHONPATH names.
TRAME_REQUIREMENTS = ("trame==4.0.0", "trame-vtk==2.11.17", "trame-vuetify==3.3.0")
TRAME_DIR = "trame"
# trame's own browser client as static files (``python -m trame.tools.www``), in the web clients dir: what
# /apps/trame/ serves, the page through which trame's clients launch their session as in trame's multi-user
# deployment (POST to the launcher, then the websocket through the front end).
TRAME_CLIENT_DIR = "trame-client"
# Where that client finds the launcher: trame's client posts to <its page's base>paraview/ unless its <html>
# names another; relative, so that it is pvhpc's /paraview/ under any prefix the front end mounts pvhpc at.
TRAME_LAUNCHER_URL = "../../paraview/"
# npm package -> version, each unpacked into a directory of the web clients dir named as the package.
# pvw-visualizer: dist/ (the Visualizer's static files) and server/pvw-visualizer.py (its pvpython server);
# wslink: dist/wslink.js (the browser client pvhpc's page loads; 1.x speaks JSON frames, as wslink 1.12.4 above).
WEB_CLIENTS = {"pvw-visualizer": "3.2.0", "wslink": "1.12.4"}
TARBALL_CACHE = ".npm-packs"
INSTALLED_MARK = ".pvhpc-installed"
PVSERVER_GUARD = "pvhpc-pvserver-guard.so"
PVSERVER_GUARD_SOURCE = Path(__file__).resolve().parent / "node" / "pvserver_guard.c"
CC_ENV = "CC"   # the C compiler to build it with, as make's; default cc


class RuntimeProblem(PvhpcError):
    """The ParaViewWeb runtime cannot be installed or used here; the message has the command's own words."""


@dataclass
class RuntimeCheck:
    name: str
    ok: bool
    detail: str


def install(target: Path) -> None:
    """Install wslink for pvpython into ``target`` and build the pvserver guard there (idempotent)."""
    target.mkdir(parents=True, exist_ok=True)
    if not (target / "wslink" / "__init__.py").exists():
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--target", str(target), WSLINK_REQUIREMENT],
            capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise RuntimeProblem(f"pip could not install {WSLINK_REQUIREMENT} into {target}: "
                                 f"{proc.stderr.strip()[-500:]}")
    build_pvserver_guard(target)


def _compiler() -> list[str]:
    cc = os.environ.get(CC_ENV) or "cc"
    return cc.split()


def build_pvserver_guard(target: Path) -> Path:
    """Compile pvserver_guard.c into ``target`` (again each time: it takes a moment, and is then always the
    source's). Written beside its place and renamed in, so that a job starting meanwhile never loads half of it."""
    cc = _compiler()
    if shutil.which(cc[0]) is None:
        raise RuntimeProblem(f"no C compiler ({cc[0]}; set ${CC_ENV} to name another): parallel sessions' pvserver "
                             f"ranks need {PVSERVER_GUARD}, built from {PVSERVER_GUARD_SOURCE.name}; install Debian's "
                             "gcc and libc6-dev packages")
    dest = target / PVSERVER_GUARD
    fd, staging = tempfile.mkstemp(prefix=f".{PVSERVER_GUARD}-", dir=target)
    os.close(fd)
    try:
        proc = subprocess.run([*cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", staging, str(PVSERVER_GUARD_SOURCE),
                               "-ldl"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeProblem(f"{cc[0]} could not build {PVSERVER_GUARD} from {PVSERVER_GUARD_SOURCE}: "
                                 f"{(proc.stderr or proc.stdout).strip()[-800:]}")
        os.chmod(staging, 0o755)   # every user's jobs load it
        os.replace(staging, dest)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return dest


def trame_dir(runtime_dir: Path) -> Path:
    return runtime_dir / TRAME_DIR


def install_trame(runtime_dir: Path) -> Path:
    """Install trame for pvpython (Python 3.11, as Debian's python3) into its own directory (idempotent)."""
    target = trame_dir(runtime_dir)
    if (target / "trame" / "__init__.py").exists() and (target / "trame_vtk").is_dir():
        return target
    target.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         "--target", str(target), *TRAME_REQUIREMENTS],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise RuntimeProblem(f"pip could not install {' '.join(TRAME_REQUIREMENTS)} into {target}: "
                             f"{proc.stderr.strip()[-500:]}")
    return target


def install_trame_client(trame: Path, target: Path) -> Path:
    """Write trame's static client (vue3, with the modules installed in ``trame``) into
    ``target/trame-client`` (idempotent for one set of TRAME_REQUIREMENTS); returns the directory."""
    def write(staging: Path) -> None:
        proc = subprocess.run([sys.executable, "-m", "trame.tools.www", "--client-type", "vue3",
                               "--output", str(staging)],
                              env=dict(os.environ, PYTHONPATH=str(trame)), capture_output=True, text=True)
        index = staging / "index.html"
        if proc.returncode != 0 or not index.is_file():
            raise RuntimeProblem(f"trame.tools.www could not write trame's client: "
                                 f"{(proc.stderr or proc.stdout).strip()[-500:] or 'no index.html written'}")
        html = index.read_text()
        if "<html " not in html or "data-session-manager-url" in html:
            raise RuntimeProblem(f"trame's client index.html is not as expected ({' '.join(TRAME_REQUIREMENTS)}): "
                                 "cannot point it at pvhpc's launcher")
        index.write_text(html.replace("<html ", f'<html data-session-manager-url="{TRAME_LAUNCHER_URL}" ', 1))
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)   # the front end serves it

    return _swapped_in(target / TRAME_CLIENT_DIR, " ".join(TRAME_REQUIREMENTS), write)


def install_web_clients(target: Path, npm: str = "npm") -> list[Path]:
    """Unpack each of WEB_CLIENTS into ``target/<package>`` (idempotent); returns the directories."""
    cache = target / TARBALL_CACHE
    return [_swapped_in(target / package, version,
                        lambda staging, package=package, version=version: _unpack_npm_tarball(
                            _npm_tarball(package, version, cache, npm), staging))
            for package, version in WEB_CLIENTS.items()]


def _swapped_in(dest: Path, version: str, fill) -> Path:
    """``dest`` as ``fill(staging)`` writes it, beside its place first and then swapped in, so that a half-written
    client is never served; nothing is done when ``dest`` already holds ``version``."""
    mark = dest / INSTALLED_MARK
    if mark.is_file() and mark.read_text().strip() == version:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        staging.chmod(0o755)    # mkdtemp makes it private; the front end must read it
        fill(staging)
        (staging / INSTALLED_MARK).write_text(version + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return dest


def _npm_tarball(package: str, version: str, cache: Path, npm: str) -> Path:
    # npm names a scoped package's tarball scope-name-version.tgz; none of WEB_CLIENTS is scoped.
    tarball = cache / f"{package}-{version}.tgz"
    if tarball.is_file():
        return tarball
    if shutil.which(npm) is None:
        raise RuntimeProblem(f"{npm} not found: install Debian's npm package (install.sh does) to fetch "
                             f"{package}@{version}")
    cache.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([npm, "pack", "--silent", f"{package}@{version}", "--pack-destination", str(cache)],
                          capture_output=True, text=True, cwd=cache)
    if proc.returncode != 0 or not tarball.is_file():
        raise RuntimeProblem(f"npm pack {package}@{version} failed: "
                             f"{(proc.stderr or proc.stdout).strip()[-500:] or 'no tarball written'}")
    return tarball


def _unpack_npm_tarball(tarball: Path, dest: Path) -> None:
    """npm tarballs hold one top directory (``package/``); only its regular files and directories are taken,
    and none may lead outside ``dest``."""
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) < 2 or ".." in parts or Path(member.name).is_absolute():
                continue
            out = dest.joinpath(*parts[1:])
            if member.isdir():
                out.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                # Readable by everyone (the front end serves it, every user's job runs the server).
                out.chmod(0o755 if member.mode & 0o111 else 0o644)


def check(pythonpath: Path, pvpython: str = "pvpython") -> list[RuntimeCheck]:
    """What a session job needs on a node, each with what to do when it is missing."""
    results = []
    pv = shutil.which(pvpython)
    results.append(RuntimeCheck("pvpython", pv is not None,
                                pv or "not found: install Debian's paraview and python3-paraview packages"))
    for tool, package in (("Xvfb", "xvfb"), ("xauth", "xauth")):
        found = shutil.which(tool)
        results.append(RuntimeCheck(tool, found is not None, found or f"not found: install Debian's {package} package"))
    results.append(check_pvserver_guard(pythonpath))
    if pv:
        env = dict(os.environ, PYTHONPATH=str(pythonpath))
        proc = subprocess.run(
            [pv, "--no-mpi", "-c", "import wslink, paraview.web.pv_wslink; print(wslink.__file__)"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        ok = proc.returncode == 0
        detail = proc.stdout.strip().splitlines()[-1] if ok and proc.stdout.strip() else (
            f"pvpython cannot import wslink from {pythonpath}: run 'pvhpc runtime install'"
        )
        results.append(RuntimeCheck("wslink", ok, detail))
    return results


def check_pvserver_guard(pythonpath: Path) -> RuntimeCheck:
    """The library parallel sessions' ranks run with: built, and loadable (a missing compiler is said here too)."""
    guard = pythonpath / PVSERVER_GUARD
    if not guard.is_file():
        cc = _compiler()[0]
        why = "" if shutil.which(cc) else f" (and there is no C compiler, {cc}: install Debian's gcc and libc6-dev)"
        return RuntimeCheck("pvserver-guard", False, f"{guard} is missing: run 'pvhpc runtime install'{why}; "
                                                     "parallel sessions cannot start without it")
    try:
        ctypes.CDLL(str(guard))
    except OSError as e:
        return RuntimeCheck("pvserver-guard", False, f"{guard} does not load ({e}): run 'pvhpc runtime install'")
    return RuntimeCheck("pvserver-guard", True, str(guard))

