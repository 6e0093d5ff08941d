"""Image delivery of one ParaViewWeb session by the way it is reached: frames and bytes per second.

    /opt/pvhpc/venv/bin/python bench/tunnel_bench.py [--seconds 1] [--rounds 5] [--before]

Needs root, Debian's slurm/paraview (as ``install.sh`` sets up) and OpenSSH's
sshd. It starts a throwaway local cluster (or uses the one named by
--slurm-conf), a pvhpc service that launches one session on the cpu
partition, and an sshd of its own on a loopback port (keys made here). Then it
asks the session for rendered images, as a ParaViewWeb client does, over one
connection along each path, the paths taking turns of 50 ms (so that each
meets the same load on a shared machine):

  direct            ws://node:port/ws
  Apache            Debian's apache2 with pvhpc's site config: /proxy through its RewriteMap
  builtin proxy     pvhpc's built-in /proxy, dialling the node itself
  ssh -L (OpenSSH)  OpenSSH's client forwarding a loopback port (the baseline for tunnels)
  paramiko tunnel   pvhpc's LoopbackForward over its SSH link, without the proxy
  proxy+tunnel      the built-in /proxy in SSH mode: what a browser gets when pvhpc runs off the cluster
  Apache before     (--before) the same site with Apache's default ReadBufferSize, as rendered before issue 28
  builtin before    (--before) the built-in proxy passing on each chunk as it is read, as before issue 28

It prints, per image size and path, frames/s, the ratio to direct (of the
medians, and each round's own ratio: median and spread), the CPU the path's
own processes spend per frame and the client's.

Each proxy and tunnel runs in a process of its own, as it does in production,
so the client's work here does not slow it down. Bytes are the image payloads
as they travel (base64 JPEG in wslink 1.x text frames).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = ((400, 300, 80), (1920, 1080, 95))
PATHS = ("direct", "Apache", "builtin proxy", "Apache before", "builtin before", "ssh -L (OpenSSH)", "paramiko tunnel",
         "proxy+tunnel")


# -- the child processes that carry a path: a proxy, or a paramiko forward -----------------------------

def serve_child(args) -> None:
    """Runs in its own process: a built-in proxy (direct or through SSH) or a bare paramiko forward."""
    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from pvhpc.web.auth import make_authenticator
    from pvhpc.config import AuthConfig
    from pvhpc.frontends.builtin import BuiltinFrontEnd, DirectConnector
    from pvhpc.frontends.tunnel import LoopbackForward, TunnelConnector
    from pvhpc.scheduler.ssh import SSHLink
    from pvhpc.db.store import SessionRecord

    spec = json.loads(args.child)

    async def main():
        link = None
        if spec.get("ssh"):
            s = spec["ssh"]
            link = SSHLink(s["host"], s["user"], Path(s["key_file"]), Path(s["known_hosts"]), s["port"])
            await link.check()
        if spec["kind"] == "forward":
            forward = LoopbackForward(link, spec["host"], spec["port"])
            print(forward.local_port, flush=True)
        else:
            connector = TunnelConnector(link) if link else DirectConnector()
            if spec.get("pass_chunks"):   # --before: each chunk passed on as it is read, as before issue 28
                from pvhpc.frontends import relay
                relay.HOLD = 0
            frontend = BuiltinFrontEnd("unused", connector)
            frontend.rebuild([SessionRecord(id=spec["sid"], user=spec["user"], state="ready", host=spec["host"],
                                            port=spec["port"])])
            auth = make_authenticator(AuthConfig(kind="local", user=spec["user"], header="X-Remote-User", staff=(),
                                                         users_trust_each_other=False))
            sockets = bind_sockets(0, "127.0.0.1")
            # What the proxy's handlers read of the site: no origin of its own for sessions' content, and the
            # proxy's own address as the pages' origin.
            site = SimpleNamespace(service=SimpleNamespace(
                allowed_origins=(f"http://127.0.0.1:{sockets[0].getsockname()[1]}",)),
                frontend=SimpleNamespace(session_origin=None))
            ctx = SimpleNamespace(auth=auth, config=site)
            HTTPServer(tornado.web.Application(frontend.handlers(ctx))).add_sockets(sockets)
            print(sockets[0].getsockname()[1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_child(spec: dict) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(spec)], stdout=subprocess.PIPE,
                            text=True)
    line = proc.stdout.readline()
    if not line.strip().isdigit():
        proc.kill()
        raise RuntimeError(f"the {spec['kind']} process did not start")
    return proc, int(line)


def openssh_forward(sshd, host: str, port: int) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        local = s.getsockname()[1]
    proc = subprocess.Popen(["ssh", "-N", "-L", f"127.0.0.1:{local}:{host}:{port}", "-p", str(sshd.port),
                             "-i", str(sshd.client_key), "-o", f"UserKnownHostsFile={sshd.known_hosts}",
                             "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes",
                             "root@127.0.0.1"], stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", local), timeout=1).close()
            return proc, local
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("ssh -L did not listen")


# -- measuring ------------------------------------------------------------------------------------------

async def measure(routes: dict[str, str], secret: str, size: tuple[int, int, int], seconds: float,
                  turn: bool, turn_time: float) -> dict[str, tuple[float, float, int, float]]:
    """Per path: (frames per second, bytes per second, frames, the client's CPU seconds), the paths taking turns.

    One connection per path, all open at once; each takes a turn of
    ``turn_time`` seconds of back-to-back frames (at least one), then the next,
    so that the paths meet the same load (on a machine shared with other work
    the load moves from one second to the next: measured a second apart, two
    paths differ by more than any path costs). A turn of tens of milliseconds
    keeps each path as warm as a stream of frames keeps it: one frame at a time
    would wake a sleeping proxy for each frame, a cost direct does not have. A
    path's frames/s is its frames over the time they took; ``seconds`` per path
    in all.

    turn: each frame is a mouse move (the camera turns) and a render, as a
    browser asks while the user drags the view: the rate a user sees, which the
    server's rendering bounds. Otherwise the view stays still and the server
    answers from its image cache: what the path itself can carry.
    """
    from pvhpc.client.wslink import WslinkClient

    width, height, quality = size
    args = [{"size": [width, height], "view": -1, "quality": quality, "mtime": 0}]
    clients = {}
    try:
        for name, url in routes.items():
            clients[name] = await WslinkClient.connect(url, secret)
            await clients[name].call("viewport.image.render", args)   # warm up: the first frame builds the pipeline
        spent = dict.fromkeys(routes, 0.0)
        frames = dict.fromkeys(routes, 0)
        payload = dict.fromkeys(routes, 0)
        client_cpu = dict.fromkeys(routes, 0.0)
        n = 0
        while sum(spent.values()) < seconds * len(routes):
            for name, client in clients.items():
                if turn and not frames[name]:
                    await client.mouse("down", 0.5, 0.5)
                started = now = time.perf_counter()
                busy = time.process_time()   # this process is the client: its CPU per frame is the receiver's
                while now - started < turn_time:
                    if turn:
                        await client.mouse("move", 0.5 + 0.3 * math.sin(n / 15), 0.5)
                    result = await client.call("viewport.image.render", args)
                    now = time.perf_counter()
                    frames[name] += 1
                    payload[name] += len(result["image"])
                    n += 1
                spent[name] += now - started
                client_cpu[name] += time.process_time() - busy
        if turn:
            for client in clients.values():
                await client.mouse("up", 0.5, 0.5)
        return {name: (frames[name] / spent[name], payload[name] / spent[name], frames[name], client_cpu[name])
                for name in routes}
    finally:
        for client in clients.values():
            client.close()


def cpu_seconds(pids: list[int], marker: str | None = None) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``pids`` and by every process whose command line holds ``marker``
    (Apache's parent and workers: its config file's path), all their threads included."""
    if marker:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                        pids = [*pids, int(entry)]
                except OSError:
                    pass
    user = system = 0
    for pid in set(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])   # utime, stime: fields 14, 15 of stat(5)
    return user / os.sysconf("SC_CLK_TCK"), system / os.sysconf("SC_CLK_TCK")


def paired_shares(results: dict, name: str, case) -> list[float]:
    """Each round's frames/s of ``name`` as a share of direct's in the same round: on a shared machine the load
    moves between rounds, and a ratio taken within one round (seconds apart) moves far less than either figure."""
    return [f / d for (f, _), (d, _) in zip(results[(name, case)], results[("direct", case)])]


def plot(results: dict, cases: list, paths: list[str], path: Path) -> None:
    """Frames per second of each path as a share of direct, one group of bars per case."""
    from bench.report import pyplot, save

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(paths)
    for i, name in enumerate(paths):
        shares = [statistics.median(paired_shares(results, name, case)) for case in cases]
        ax.bar([c + i * width for c in range(len(cases))], shares, width, label=name)
    labels = [f"{w}x{h}\n{'view turning' if turn else 'still view'}" for (w, h, _), turn in cases]
    ax.set_xticks([c + width * (len(paths) - 1) / 2 for c in range(len(cases))], labels, fontsize=8)
    ax.axhline(1, color="grey", linewidth=0.8, linestyle=":")
    ax.set_ylabel("frames/s, share of direct")
    ax.set_title("image delivery of one session by path (each round's share of direct: median of rounds)")
    ax.legend(fontsize=7, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.18))
    save(fig, path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1, help="seconds per path, image size and round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds over all paths (the median is printed)")
    parser.add_argument("--slurm-conf", help="use this running cluster instead of starting one")
    parser.add_argument("--plot", type=Path, help="draw the figure into this PNG file")
    parser.add_argument("--single-host", action="store_true",
                        help="the cluster's nodes as processes of this host (default: hosts of their own, as root)")
    parser.add_argument("--paths", help="comma-separated paths to measure besides direct (default: all), e.g. "
                        "'builtin proxy,Apache'")
    parser.add_argument("--turn", type=float, default=0.05,
                        help="seconds each path has in turn before the next (default 0.05; at least one frame)")
    parser.add_argument("--sizes", choices=("all", "400x300", "1920x1080"), default="all",
                        help="the image size to measure (default: both)")
    parser.add_argument("--cases", choices=("all", "still", "turning"), default="all",
                        help="still view (what the path can carry), view turning (what a user sees), or both")
    parser.add_argument("--before", action="store_true",
                        help="also measure the front ends as they were before issue 28: Apache reading 8 KiB at a "
                             "time, the built-in proxy passing each chunk on as it is read")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        serve_child(args)
        return 0
    if args.paths:   # before anything starts
        unknown = {name.strip() for name in args.paths.split(",")} - set(PATHS)
        if unknown:
            parser.error(f"--paths: no path named {', '.join(sorted(unknown))} (there are: {', '.join(PATHS)})")

    from pvhpc import paths
    from pvhpc import runtime
    from pvhpc.localcluster.cluster import LocalCluster
    from pvhpc.client.wslink import WslinkClient
    from tests.harness.ports import free_port_block
    from tests.harness.service import ServiceProcess, site_config
    from tests.harness.sshd import SSHDaemon

    work = Path(tempfile.mkdtemp(prefix="pvhpc-tunnel-bench-"))
    work.chmod(0o755)   # Apache's workers (www-data) read the session map below it
    cleanup: list = []
    try:
        if args.slurm_conf:
            cluster = LocalCluster(Path(args.slurm_conf).parent.parent)
        else:
            cluster = LocalCluster(work / "cluster", base_port=free_port_block(5),
                                   hosts=False if args.single_host else None)
            print("starting a local Slurm cluster ...", flush=True)
            cluster.start()
            cleanup.append(cluster.stop)
        print(f"the cluster's {cluster.describe_shape()}", flush=True)
        runtime_dir = paths.runtime_dir()
        runtime.install(runtime_dir)
        (work / "sshd").mkdir()
        sshd = SSHDaemon(work / "sshd").start()
        cleanup.append(sshd.stop)
        svc = ServiceProcess(work / "svc",
                             site_config(cluster, work / "svc", runtime_dir, frontend={"kind": "builtin"}))
        svc.start()
        cleanup.append(svc.stop)
        session = svc.client().launch("paraview", partition="cpu")
        cleanup.insert(0, lambda: svc.client().request("DELETE", f"/paraview/{session['id']}"))
        host, port, sid, secret = session["host"], session["port"], session["id"], session["secret"]
        print(f"session {sid[:6]}… on {host}:{port} (job {session['job_id']})", flush=True)

        ssh = {"host": "127.0.0.1", "port": sshd.port, "user": "root", "key_file": str(sshd.client_key),
               "known_hosts": str(sshd.known_hosts)}
        record = {"sid": sid, "user": session["user"], "host": host, "port": port}
        proxy, proxy_port = start_child({"kind": "proxy", **record})
        before_proxy, before_port = start_child({"kind": "proxy", "pass_chunks": True, **record})
        cleanup.insert(0, before_proxy.kill)
        forward, forward_port = start_child({"kind": "forward", "ssh": ssh, **record})
        tunnel_proxy, tunnel_proxy_port = start_child({"kind": "proxy", "ssh": ssh, **record})
        openssh, openssh_port = openssh_forward(sshd, host, port)
        for p in (proxy, forward, tunnel_proxy, openssh):
            cleanup.insert(0, p.kill)

        # Apache on the login node, reading the session from its RewriteMap as a site's front end would.
        from pvhpc.frontends import apacheconf
        from tests.harness.apache import ApacheServer

        httpd_root = work / "httpd"
        httpd_root.mkdir(mode=0o755)
        map_file = httpd_root / "session-map.txt"
        map_file.write_text(f"{sid} {host}:{port}|{getpass.getuser()}\n")   # its line names its owner
        map_file.chmod(0o644)
        apache = ApacheServer(httpd_root, apacheconf.Site("localhost", map_file, svc.url,
                                                          port=free_port_block(1))).start()
        cleanup.insert(0, apache.stop)

        # --before: the same site with Apache's default read size (8 KiB), as rendered before issue 28.
        before_root = work / "httpd-before"
        before_root.mkdir(mode=0o755)
        apache_before = ApacheServer(before_root, apacheconf.Site("localhost", map_file, svc.url,
                                                                  port=free_port_block(1)))
        rendered = apache_before.site_file.read_text()
        apache_before.site_file.write_text(rendered.replace("    ReadBufferSize 65536\n", ""))
        apache_before.start()
        cleanup.insert(0, apache_before.stop)

        def proxied(p: int) -> str:
            return f"ws://127.0.0.1:{p}/proxy?sessionId={sid}&path=ws"

        routes = {
            "direct": f"ws://{host}:{port}/ws",
            "Apache": f"ws://127.0.0.1:{apache.site.listen_port}/proxy?sessionId={sid}&path=ws",
            "builtin proxy": proxied(proxy_port),
            "Apache before": f"ws://127.0.0.1:{apache_before.site.listen_port}/proxy?sessionId={sid}&path=ws",
            "builtin before": proxied(before_port),
            "ssh -L (OpenSSH)": f"ws://127.0.0.1:{openssh_port}/ws",
            "paramiko tunnel": f"ws://127.0.0.1:{forward_port}/ws",
            "proxy+tunnel": proxied(tunnel_proxy_port),
        }

        async def prepare():
            client = await WslinkClient.connect(routes["direct"], secret)
            await client.create_source("Sphere")
            client.close()

        assert set(routes) == set(PATHS)
        if not args.before:
            routes = {name: url for name, url in routes.items() if not name.endswith(" before")}
        if args.paths:
            wanted = {name.strip() for name in args.paths.split(",")}
            routes = {name: url for name, url in routes.items() if name == "direct" or name in wanted}

        asyncio.run(prepare())
        results: dict[tuple, list[tuple[float, float]]] = {}
        # The processes that carry each path, whose CPU time per frame is printed: load on the machine moves
        # frames/s from one second to the next, the CPU a front end spends on a frame far less.
        carriers = {"Apache": ([], str(apache.config)), "Apache before": ([], str(apache_before.config)),
                    "builtin proxy": ([proxy.pid],), "builtin before": ([before_proxy.pid],),
                    "paramiko tunnel": ([forward.pid],), "proxy+tunnel": ([tunnel_proxy.pid],)}
        cpu: dict[tuple, list] = {}   # (path, case) -> [user CPU seconds, system CPU seconds, frames]
        clients_cpu: dict[tuple, list] = {}   # (path, case) -> [the client's CPU seconds, frames]
        turns = {"all": (True, False), "still": (False,), "turning": (True,)}[args.cases]
        sizes = [size for size in SIZES if args.sizes in ("all", f"{size[0]}x{size[1]}")]
        cases = [(size, turn) for turn in turns for size in sizes]
        load_at_start = os.getloadavg()
        for r in range(args.rounds):
            for case in cases:
                # Each round starts at another path, so none always follows the same one.
                names = list(routes)
                names = names[r % len(names):] + names[:r % len(names)]
                used = {name: cpu_seconds(*carriers[name]) for name in names if name in carriers}
                measured = asyncio.run(measure({name: routes[name] for name in names}, secret, case[0], args.seconds,
                                               case[1], args.turn))
                for name, (fps, bps, frames, client_cpu) in measured.items():
                    results.setdefault((name, case), []).append((fps, bps))
                    receiver = clients_cpu.setdefault((name, case), [0.0, 0])
                    receiver[0] += client_cpu
                    receiver[1] += frames
                    if name in used:   # idle connections cost nothing: a path's processes worked on its frames only
                        after = cpu_seconds(*carriers[name])
                        total = cpu.setdefault((name, case), [0.0, 0.0, 0])
                        total[0] += after[0] - used[name][0]
                        total[1] += after[1] - used[name][1]
                        total[2] += frames
            print(f"round {r + 1}/{args.rounds} done", flush=True)

        print(f"\nimage delivery of one session, the paths taking turns of {args.turn:g} s, {args.seconds:g} s per path and "
              f"case, median of {args.rounds} rounds;"
              f" load average (1 min) {load_at_start[0]:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
        for case in cases:
            (width, height, quality), turn = case
            what = "view turning (mouse move + render)" if turn else "still view (server's cached image)"
            print(f"\n{width}x{height} JPEG quality {quality}, {what}")
            print(f"  {'path':<18} {'frames/s':>9} {'MB/s':>8} {'vs direct':>10} {'in-round ratio':>20} "
                  f"{'CPU us/frame (kernel)':>22} {'client us':>9}")
            base = statistics.median(f for f, _ in results[("direct", case)])
            for name in routes:
                fps = statistics.median(f for f, _ in results[(name, case)])
                bps = statistics.median(b for _, b in results[(name, case)])
                shares = paired_shares(results, name, case)
                paired = f"{statistics.median(shares):.2f} ({min(shares):.2f}-{max(shares):.2f})"
                user, system, frames = cpu.get((name, case), (0.0, 0.0, 0))
                per_frame = (f"{(user + system) / frames * 1e6:6.0f} ({system / frames * 1e6:3.0f})" if frames
                             else f"{'-':>12}")
                used, frames = clients_cpu[(name, case)]
                print(f"  {name:<18} {fps:9.1f} {bps / 1e6:8.2f} {fps / base:9.2f}x {paired:>20} {per_frame:>22} "
                      f"{used / frames * 1e6:9.0f}")
        print("\nin-round ratio: each round's frames/s over direct's in that round, median (min-max) of the rounds; "
              "CPU: what the path's own processes (proxy, Apache, tunnel) used per frame, both ways (of it in the kernel); "
              "client: the client's own CPU per frame (this process)")
        if args.plot:
            plot(results, cases, list(routes), args.plot)
        return 0
    finally:
        for step in cleanup:
            try:
                step()
            except Exception as e:   # keep cleaning up: a cluster left running blocks the next run
                print(f"cleanup: {e}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
