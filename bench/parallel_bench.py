"""A heavy pipeline in parallel sessions of 1, 2 and 4 MPI ranks: time, speed-up and memory per rank.

    /opt/pvhpc/venv/bin/python bench/parallel_bench.py [--extent 120] [--rounds 3] [--ranks 1,2,4]

Each size is a real session through pvhpc on a private local cluster (partition cpu, two emulated nodes):
``POST /paraview/`` with ``ranks`` (one node for one rank, both nodes for more), then, over the session's
websocket as a ParaViewWeb client does, a Wavelet of (2E+1)^3 points, a Contour of it (five isovalues)
and a Clip of that, and one rendered image, composited over the ranks (the web server renders nothing
itself). The time is from the first request of the pipeline to the image; the memory is each rank's peak
resident size (VmHWM) once the image is there. Not a test: it prints what it measured.

What the ranks can show on a machine of 2 cores: both emulated nodes are that one machine, so 2 ranks can
at best halve the pipeline's time, and 4 ranks share 2 cores (no faster than 2; the compositing and MPI
traffic cost more). Memory per rank is what shrinks with the ranks on any machine: each holds its piece.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.teardown import Teardown, start_cluster  # noqa: E402
from pvhpc import paths  # noqa: E402
from pvhpc import runtime  # noqa: E402
from pvhpc.localcluster.cluster import LocalCluster  # noqa: E402


def site(data_dir: Path) -> dict:
    return {
        "partitions": {"gpu": {"gpu_type": "a100"},
                       "cpu": {"walltime": {"default": 30, "max": 120}, "max_nodes": 2, "max_ranks": 4,
                               "max_ranks_per_node": 2}},
        "applications": {"paraview": {"data_roots": [str(data_dir)], "start_timeout": 180,
                                      "pvserver": ["/usr/bin/pvserver", "--force-offscreen-rendering"]}},
    }


def launch(url: str, ranks: int) -> dict:
    body = {"application": "paraview", "partition": "cpu", "ranks": ranks, "nodes": 1 if ranks == 1 else 2}
    request = urllib.request.Request(url + "/paraview/", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=300) as r:
        return json.loads(r.read())


async def pipeline(session: dict, extent: int) -> tuple[float, int]:
    """Wavelet -> Contour -> Clip, then one image; the seconds it took and the image's size in bytes."""
    from pvhpc.client.wslink import WslinkClient

    client = await WslinkClient.connect(session["sessionURL"], session["secret"], timeout=60)
    try:
        start = time.perf_counter()
        wavelet = await client.call("pv.proxy.manager.create",
                                    ["Wavelet", -1, {"WholeExtent": [-extent, extent] * 3}], timeout=600)
        contour = await client.call("pv.proxy.manager.create",
                                    ["Contour", wavelet["id"], {"ContourBy": ["POINTS", "RTData"],
                                                                "Isosurfaces": [90, 130, 170, 210, 250]}],
                                    timeout=600)
        await client.call("pv.proxy.manager.create", ["Clip", contour["id"]], timeout=600)
        image = await client.render((800, 600))
        return time.perf_counter() - start, len(image)
    finally:
        client.close()


def peak_memory_of_ranks(job_id: str) -> list[float]:
    """Each pvserver rank's peak resident size in MB, found by the job id in its environment."""
    from tests.helpers import processes_of_job

    sizes = []
    for entry in processes_of_job(job_id):
        pid, cmd = entry.split(": ", 1)
        if os.path.basename(cmd.split()[0]) != "pvserver":
            continue
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        sizes.append(kb / 1024)
    return sizes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--extent", type=int, default=120, help="the Wavelet spans -E..E on each axis")
    parser.add_argument("--rounds", type=int, default=3, help="sessions per size (the median is reported)")
    parser.add_argument("--ranks", default="1,2,4", help="the sizes, comma-separated")
    args = parser.parse_args()
    sizes = [int(r) for r in args.ranks.split(",")]

    from tests.harness.ports import free_port_block
    from tests.harness.service import ServiceProcess, site_config

    work = Path(tempfile.mkdtemp(prefix="pvhpc-parallel-bench-"))
    work.chmod(0o755)
    results: dict[int, list[tuple[float, list[float]]]] = {r: [] for r in sizes}
    with Teardown(work) as undo:
        undo.add(lambda: shutil.rmtree(work, ignore_errors=True), "remove the work directory")
        cluster = start_cluster(undo, LocalCluster(work / "cluster", base_port=free_port_block(5)))
        runtime.install(paths.runtime_dir())
        config = site_config(cluster, work / "svc", paths.runtime_dir(), frontend={"kind": "direct"},
                             **site(work / "svc" / "data"))
        svc = ServiceProcess(work / "svc", config)
        undo.add(svc.stop, "stop the service")
        svc.start()
        points = (2 * args.extent + 1) ** 3
        print(f"Wavelet of {points / 1e6:.1f} M points -> Contour (5 values) -> Clip -> one 800x600 image; "
              f"{os.cpu_count()} cores on this machine", flush=True)
        # Sizes alternate round by round, so that a slow spell of the machine hits every size alike.
        for round_ in range(args.rounds):
            for ranks in sizes:
                session = launch(svc.url, ranks)
                try:
                    seconds, _ = asyncio.run(pipeline(session, args.extent))
                    memory = peak_memory_of_ranks(session["job_id"])
                finally:
                    svc.client().request("DELETE", f"/paraview/{session['id']}")
                results[ranks].append((seconds, memory))
                print(f"  round {round_ + 1}: {ranks} rank(s): {seconds:6.2f} s, peak memory per rank "
                      f"{', '.join(f'{m:.0f}' for m in memory)} MB", flush=True)

    base = statistics.median(s for s, _ in results[sizes[0]])
    print(f"\n{'ranks':>5} {'nodes':>5} {'median s':>9} {'speed-up':>9} {'MB/rank (mean)':>15} {'MB/rank (max)':>14}")
    for ranks in sizes:
        seconds = statistics.median(s for s, _ in results[ranks])
        memory = [m for _, ms in results[ranks] for m in ms]
        print(f"{ranks:>5} {1 if ranks == 1 else 2:>5} {seconds:>9.2f} {base / seconds:>8.2f}x "
              f"{statistics.mean(memory) if memory else 0:>15.0f} {max(memory) if memory else 0:>14.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
