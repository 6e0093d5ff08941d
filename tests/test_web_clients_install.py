"""`pvhpc runtime install` unpacks the web clients from npm tarballs it keeps, so a second install fetches nothing."""

from __future__ import annotations

import shutil

import pytest

from pvhpc import paths
from pvhpc import runtime


@pytest.fixture
def cached_tarballs(tmp_path):
    """The tarballs `npm pack` fetched for this machine's install, copied where a fresh install keeps them."""
    source = paths.web_clients_dir() / runtime.TARBALL_CACHE
    if not all((source / f"{p}-{v}.tgz").is_file() for p, v in runtime.WEB_CLIENTS.items()):
        runtime.install_web_clients(paths.web_clients_dir())   # the one fetch, through Debian's npm
    target = tmp_path / "clients"
    shutil.copytree(source, target / runtime.TARBALL_CACHE)
    return target


def test_install_unpacks_the_packages_from_its_cache_without_npm(cached_tarballs):
    # No npm at all: everything comes from the cache.
    dirs = runtime.install_web_clients(cached_tarballs, npm="/nonexistent/npm")
    assert [d.name for d in dirs] == ["pvw-visualizer", "wslink"]
    visualizer = cached_tarballs / "pvw-visualizer"
    assert (visualizer / "dist" / "index.html").is_file() and (visualizer / "dist" / "Visualizer.js").is_file()
    assert (visualizer / "server" / "pvw-visualizer.py").is_file()
    assert (cached_tarballs / "wslink" / "dist" / "wslink.js").is_file()
    assert (visualizer / "dist" / "index.html").stat().st_mode & 0o004, "the front end must be able to read it"
    # Installed again: nothing is unpacked anew; a client removed is put back from the cache.
    before = (visualizer / "dist" / "index.html").stat().st_mtime_ns
    shutil.rmtree(cached_tarballs / "wslink")
    runtime.install_web_clients(cached_tarballs, npm="/nonexistent/npm")
    assert (visualizer / "dist" / "index.html").stat().st_mtime_ns == before
    assert (cached_tarballs / "wslink" / "dist" / "wslink.js").is_file()


def test_without_a_cached_tarball_or_npm_the_error_says_what_to_install(tmp_path):
    with pytest.raises(runtime.RuntimeProblem) as e:
        runtime.install_web_clients(tmp_path, npm="/nonexistent/npm")
    assert str(e.value) == ("/nonexistent/npm not found: install Debian's npm package (install.sh does) to fetch "
                            "pvw-visualizer@3.2.0")


def test_trames_client_is_written_pointing_at_pvhpcs_launcher_once(tmp_path):
    """trame's static client for /apps/trame/, from the trame that pvhpc runtime install put in place: its page
    names pvhpc's launcher relative to itself, so it finds /paraview/ under any prefix."""
    trame = runtime.install_trame(paths.runtime_dir())
    client = runtime.install_trame_client(trame, tmp_path)
    html = (client / "index.html").read_text()
    assert '<html data-session-manager-url="../../paraview/" ' in html and 'data-app-name="trame"' in html
    assert any(p.name.startswith("__trame_vtk") for p in client.iterdir())   # the modules the app's page loads
    before = (client / "index.html").stat().st_mtime_ns
    assert runtime.install_trame_client(trame, tmp_path) == client
    assert (client / "index.html").stat().st_mtime_ns == before   # once per trame version
    assert [p.name for p in tmp_path.iterdir()] == ["trame-client"]   # nothing half-written left beside it
    with pytest.raises(runtime.RuntimeProblem, match="trame.tools.www could not write trame's client"):
        runtime.install_trame_client(tmp_path / "no-trame", tmp_path / "elsewhere")
