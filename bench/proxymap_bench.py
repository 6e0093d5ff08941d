"""What keeping Apache's session map costs, with 10, 1,000 and 10,000 live sessions.

    /opt/pvhpc/venv/bin/python bench/proxymap_bench.py            # pvhpc's side: one update = one full rewrite
    /opt/pvhpc/venv/bin/python bench/proxymap_bench.py --apache   # also Apache's side, txt: map against dbm:

pvhpc's side: the time ApacheFrontEnd.update takes when a session becomes
ready or ends (the whole file written, fsynced and renamed into place), on the
event loop. Apache's side (needs root and Debian's apache2): the time of a
request to /proxy for an id that is not in the map, so every request makes
Apache look through the whole map (a txt: map is scanned line by line; a dbm:
map is a hash lookup), measured against the same request with 10 sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pvhpc.frontends import apacheconf  # noqa: E402
from pvhpc.frontends.apache import ApacheFrontEnd  # noqa: E402
from pvhpc.frontends.proxymap import ProxyMapFile  # noqa: E402
from pvhpc.db.store import SessionRecord  # noqa: E402

SIZES = (10, 1_000, 10_000)


def records(n: int) -> list[SessionRecord]:
    return [SessionRecord(id=secrets.token_urlsafe(24), user="u", state="ready",
                          host=f"node{i % 500:03d}.cluster.example.org", port=20000 + i % 40000) for i in range(n)]


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return f"median {statistics.median(values) * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms"


def bench_updates(directory: Path, n: int, rounds: int) -> tuple[list[float], int]:
    path = directory / f"map-{n}.txt"
    fe = ApacheFrontEnd("x", ProxyMapFile(path))
    asyncio.run(fe.start())
    live = records(n)
    fe.rebuild(live)
    times = []
    for i in range(rounds):
        r = live[i % n]
        ended = SessionRecord(id=r.id, user=r.user, state="ended", host=r.host, port=r.port)
        for change in (ended, r):     # a session ends, another becomes ready: two rewrites
            start = time.perf_counter()
            fe.update(change)
            times.append(time.perf_counter() - start)
    asyncio.run(fe.stop())
    return times, path.stat().st_size


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_apache(directory: Path, n: int, kind: str, requests: int) -> list[float]:
    """Latency of /proxy requests for ids not in a map of n sessions (each one a full look-up)."""
    txt = directory / f"apache-{n}.txt"
    ProxyMapFile(txt, "www-data").write({r.id: f"{r.host}:{r.port}|{r.user}" for r in records(n)})
    map_path = txt
    if kind == "dbm":
        map_path = directory / f"apache-{n}.dbm"
        subprocess.run(["httxt2dbm", "-i", str(txt), "-o", str(map_path)], check=True, capture_output=True)
        for f in directory.glob(f"apache-{n}.dbm*"):
            os.chown(f, -1, 33)
            f.chmod(0o640)
    root = Path(tempfile.mkdtemp(prefix="pvhpc-bench-httpd-"))
    root.chmod(0o755)
    port = free_port()
    site = apacheconf.Site("localhost", map_path, "http://127.0.0.1:9", port=port)
    text = apacheconf.render_site(site)
    if kind == "dbm":
        text = text.replace(f'"txt:{map_path}"', f'"dbm:{map_path}"')
    (root / "site.conf").write_text(text)
    (root / "httpd.conf").write_text(apacheconf.render_standalone(root / "site.conf", root, f"127.0.0.1:{port}"))
    proc = subprocess.Popen(["apache2", "-f", str(root / "httpd.conf"), "-DFOREGROUND"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        times = []
        for i in range(requests + 20):
            start = time.perf_counter()
            # A websocket's upgrade, as a client's: anything else is refused before the map is looked at.
            conn.request("GET", f"/proxy?sessionId={secrets.token_urlsafe(24)}&path=ws",
                         headers={"Upgrade": "websocket", "Connection": "Upgrade"})
            response = conn.getresponse()
            response.read()
            elapsed = time.perf_counter() - start
            assert response.status == 404, response.status
            if i >= 20:   # the first requests warm up the workers
                times.append(elapsed)
        conn.close()
        return times
    finally:
        proc.terminate()
        proc.wait(15)
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apache", action="store_true", help="also measure Apache's look-ups (root, apache2)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to write the maps (default: a new temporary directory; the disk matters)")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="pvhpc-bench-map-"))
    directory.mkdir(parents=True, exist_ok=True)
    if args.apache:
        os.chown(directory, -1, 33)
        directory.chmod(0o750)
    print(f"map files in a directory on {_filesystem(directory)}")
    print("pvhpc: one session change = the whole map rewritten (write, fsync, rename, fsync directory)")
    for n in SIZES:
        times, size = bench_updates(directory, n, rounds=100 if n < 10_000 else 30)
        print(f"  {n:>6} sessions ({size / 1024:7.1f} KiB): {ms(times)}   ({len(times)} updates)")
    if args.apache:
        print("Apache: a /proxy request for an id not in the map (a full look-up; HTTP round trip included)")
        for kind in ("txt", "dbm"):
            for n in SIZES:
                print(f"  {kind} {n:>6} sessions: {ms(bench_apache(directory, n, kind, requests=300))}")
    if args.dir is None:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


def _filesystem(path: Path) -> str:
    try:
        out = subprocess.run(["df", "--output=fstype", str(path)], capture_output=True, text=True).stdout.split()
        return out[-1]
    except (OSError, IndexError):
        return "an unknown file system"


if __name__ == "__main__":
    sys.exit(main())
