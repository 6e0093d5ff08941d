"""The Apache map file and the route table behind both map-keeping front ends (pure logic, no Apache)."""

from __future__ import annotations

import asyncio
import copy
import grp
import os
import stat
import threading

import pytest

from pvhpc import config
from pvhpc.frontends.apache import ApacheFrontEnd, FrontEndError
from pvhpc.frontends.proxymap import ProxyMapError, ProxyMapFile
from pvhpc.db.store import SessionRecord

NOBODY = 65534


def record(sid: str, state: str = "ready", host: str | None = "node1", port: int | None = 40001,
           detail: str = "") -> SessionRecord:
    return SessionRecord(id=sid, user="alice", state=state, host=host, port=port, detail=detail)


def test_write_holds_exactly_the_targets_with_mode_0640_and_the_group(tmp_path):
    gid = grp.getgrnam("www-data").gr_gid
    m = ProxyMapFile(tmp_path / "map.txt", "www-data")
    m.write({"b": "node2:2", "a": "node1:1"})
    assert (tmp_path / "map.txt").read_text() == "a node1:1\nb node2:2\n"
    st = os.stat(tmp_path / "map.txt")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == gid
    m.write({})
    assert (tmp_path / "map.txt").read_text() == "" and m.read() == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.txt"], "a temporary file was left behind"


def test_write_replaces_the_file_and_never_changes_it_in_place(tmp_path):
    m = ProxyMapFile(tmp_path / "map.txt")
    m.write({"old": "node1:1"})
    with open(tmp_path / "map.txt") as held:   # like an Apache worker in the middle of reading it
        m.write({"new": "node2:2"})
        assert held.read() == "old node1:1\n"
    assert m.read() == {"new": "node2:2"}


def test_a_reader_never_sees_a_half_written_map(tmp_path):
    path = tmp_path / "map.txt"
    m = ProxyMapFile(path)
    versions = [{f"s{i}-{k}": f"node{k}:{40000 + k}" for k in range(n)} for i, n in enumerate((3000, 1, 2000, 5))]
    texts = {"".join(f"{s} {t}\n" for s, t in sorted(v.items())) for v in versions}
    m.write(versions[0])
    bad: list[str] = []
    done = threading.Event()

    def read_all_the_time():
        while not done.is_set():
            text = path.read_text()
            if text not in texts:
                bad.append(text[-80:])

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        for _ in range(30):
            for v in versions:
                m.write(v)
    finally:
        done.set()
        reader.join()
    assert not bad, f"{len(bad)} reads saw a map that was never written, e.g. ...{bad[0]!r}"


def test_a_failed_write_keeps_the_old_map_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    m = ProxyMapFile(tmp_path / "map.txt")
    m.write({"a": "node1:1"})

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError):
        m.write({"b": "node2:2"})
    monkeypatch.undo()
    assert m.read() == {"a": "node1:1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.txt"]


def test_check_names_a_missing_directory_and_an_unknown_group(tmp_path):
    with pytest.raises(ProxyMapError, match=r"directory .*/nope does not exist \(create it: install -d"):
        ProxyMapFile(tmp_path / "nope" / "map.txt").check()
    with pytest.raises(ProxyMapError, match="group 'no-such-group-pvhpc' does not exist") as e:
        ProxyMapFile(tmp_path / "map.txt", "no-such-group-pvhpc")
    assert e.value.about == "group"


def _as_nobody(function) -> str:
    """Run ``function`` in a forked child as an unprivileged user (root may write anywhere); return what it returns."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: drop to nobody, answer through the pipe, never return into pytest
        try:
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            answer = str(function())
        except BaseException as e:  # noqa: BLE001 - everything goes back to the parent
            answer = f"{type(e).__name__} {e}"
        os.write(write, answer.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        answer = f.read()
    os.waitpid(pid, 0)
    return answer


@pytest.fixture
def readonly_dir(tmp_path_factory):
    import tempfile

    parent = tempfile.mkdtemp(prefix="pvhpc-test-ro-")
    os.chmod(parent, 0o755)
    ro = os.path.join(parent, "ro")
    os.mkdir(ro, 0o555)
    os.chmod(ro, 0o555)
    yield ro
    os.chmod(ro, 0o755)
    import shutil

    shutil.rmtree(parent)


def test_an_unwritable_directory_is_a_clear_error_at_start_and_in_the_config(readonly_dir):
    fe = ApacheFrontEnd("x", ProxyMapFile(f"{readonly_dir}/map.txt"))
    answer = _as_nobody(lambda: asyncio.run(fe.start()))
    assert answer.startswith(f"FrontEndError frontend.map_file {readonly_dir}/map.txt: directory {readonly_dir} "
                             "is not writable by this process (uid "), answer
    assert answer.endswith("Permission denied"), answer

    data = {"partitions": {"cpu": {}}, "applications": {"paraview": {"data_roots": ["/tmp"]}},
            "frontend": {"kind": "apache", "map_file": f"{readonly_dir}/map.txt"}}
    answer = _as_nobody(lambda: config.parse(data, "site.yaml"))
    assert answer.startswith(f"ConfigError site.yaml: frontend.map_file: directory {readonly_dir} is not writable"), \
        answer


BASE = {"partitions": {"cpu": {}}, "applications": {"paraview": {"data_roots": ["/tmp"]}}}


def parse_frontend(frontend: dict, **service):
    data = copy.deepcopy(BASE)
    data["frontend"] = frontend
    if service:
        data["service"] = service
    return config.parse(data, "site.yaml")


def test_frontend_config_keys(tmp_path):
    cfg = parse_frontend({"kind": "apache", "map_file": str(tmp_path / "m.txt"), "map_group": "www-data"})
    assert cfg.frontend.map_file == tmp_path / "m.txt" and cfg.frontend.map_group == "www-data"
    assert cfg.frontend.session_url == "ws://USE_HOST/proxy?sessionId={id}&path=ws"
    cfg = parse_frontend({"kind": "builtin"}, listen="127.0.0.1:9000", public_url="https://viz.example.org/pv")
    assert cfg.frontend.session_url == "wss://viz.example.org/pv/proxy?sessionId={id}&path=ws"
    assert cfg.frontend.map_file is None


@pytest.mark.parametrize("frontend,message", [
    ({"kind": "apache", "map_file": "relative/map.txt"}, "site.yaml: frontend.map_file: relative/map.txt is not an absolute path"),
    ({"kind": "apache", "map_file": "/nonexistent-pvhpc/map.txt"}, "site.yaml: frontend.map_file: directory /nonexistent-pvhpc does not exist"),
    ({"kind": "apache", "map_file": "/tmp/m.txt", "map_group": "no-such-group-pvhpc"}, "site.yaml: frontend.map_group: group 'no-such-group-pvhpc' does not exist"),
    ({"kind": "builtin", "map_file": "/tmp/m.txt"}, "site.yaml: frontend.map_file: is used only with kind: apache (this front end is 'builtin')"),
    ({"kind": "apache", "map_file": "/tmp/m.txt", "map_grup": "x"}, "site.yaml: frontend.map_grup: unknown key (did you mean 'map_group'?)"),
])
def test_frontend_config_errors_name_the_key(frontend, message):
    with pytest.raises(config.ConfigError) as e:
        parse_frontend(frontend)
    assert str(e.value).startswith(message), str(e.value)


def test_apache_front_end_keeps_the_file_equal_to_the_routable_sessions(tmp_path):
    path = tmp_path / "map.txt"
    fe = ApacheFrontEnd("ws://USE_HOSTNAME/proxy?sessionId={id}&path=ws", ProxyMapFile(path))
    asyncio.run(fe.start())
    fe.rebuild([record("a"), record("q", state="queued", host=None, port=None), record("u", state="unknown")])
    # Each line names the session's owner too: /proxy joins a user to their own sessions only.
    assert path.read_text() == "a node1:40001|alice\nu node1:40001|alice\n"
    inode = path.stat().st_ino
    fe.update(record("a", detail="a client connected"))          # same route: the file is not rewritten
    assert path.stat().st_ino == inode
    fe.update(record("q", host="node2", port=40002))             # became ready
    fe.update(record("a", state="ended"))                         # ended
    fe.update(record("x y\nevil 1.2.3.4", host="node3"))         # an id that would forge a line: never written
    fe.update(record("h", host="node3 evil:1"))                  # so is a host with a space
    assert path.read_text() == "q node2:40002|alice\nu node1:40001|alice\n"
    asyncio.run(fe.stop())


def test_apache_front_end_survives_a_failed_write_and_catches_up(tmp_path, monkeypatch):
    path = tmp_path / "map.txt"
    fe = ApacheFrontEnd("x", ProxyMapFile(path))
    fe.rebuild([record("a")])
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    fe.update(record("b"))                                       # must not raise into the state change
    assert path.read_text() == "a node1:40001|alice\n"
    monkeypatch.undo()
    fe._write_if_stale()                                         # what the retry timer calls
    assert path.read_text() == "a node1:40001|alice\nb node1:40001|alice\n"


def test_start_fails_clearly_for_a_missing_directory(tmp_path):
    fe = ApacheFrontEnd("x", ProxyMapFile(tmp_path / "gone" / "map.txt"))
    with pytest.raises(FrontEndError, match=r"frontend.map_file .*/gone/map.txt: directory .*/gone does not exist"):
        asyncio.run(fe.start())
