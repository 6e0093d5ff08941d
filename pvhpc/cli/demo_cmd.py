"""``pvhpc demo``: the whole path on embedded defaults, on a local cluster it starts itself."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from .. import paths, runtime
from ..localcluster import ClusterError, LocalCluster
from ..probe import ProbeFailed, probe_partition
from ..runners import LocalRunner
from ..scheduler.slurm_cli import SlurmCLI


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="start a local Slurm cluster and show a ParaViewWeb session on a GPU node answering",
        description=(
            "Starts (or reuses) the local Slurm cluster, installs the ParaViewWeb runtime, starts a ParaViewWeb "
            "server as a Slurm job on a GPU node, authenticates, renders one image and saves it, then cancels "
            "the job. The cluster keeps running; stop it with 'pvhpc cluster stop'."
        ),
    )
    p.add_argument("--cluster-dir", default=None, help="local cluster directory (default: as 'pvhpc cluster')")
    p.add_argument("--image", default="pvhpc-demo.jpg", help="where to save the rendered image")
    p.set_defaults(func=run)


def run(args) -> int:
    cluster = LocalCluster(args.cluster_dir or paths.cluster_dir())
    try:
        print(f"1. local Slurm cluster in {cluster.dir} ...", flush=True)
        cluster.start()
        print(f"2. ParaViewWeb runtime in {paths.runtime_dir()} ...", flush=True)
        runtime.install(paths.runtime_dir())
        print("3. ParaViewWeb server as a Slurm job on partition gpu (1 GPU) ...", flush=True)
        scheduler = SlurmCLI(LocalRunner(cluster.environment()))
        result = asyncio.run(probe_partition(scheduler, paths.runtime_dir(), partition="gpu", gpus=1))
    except (ClusterError, runtime.RuntimeProblem, ProbeFailed) as e:
        print(f"pvhpc demo: {e}", file=sys.stderr)
        return 1
    Path(args.image).write_bytes(result.image)
    t = result.timings
    print(f"   job {result.job_id} on node {result.node}, server at {result.host}:{result.port}")
    print(f"   ready {t['ready']:.1f} s after submission, first image after {t['first_image']:.1f} s")
    print(f"   rendered image ({len(result.image)} bytes) saved to {args.image}; job cancelled")
    print(f"OK. Slurm's commands reach this cluster with: export SLURM_CONF={cluster.conf}")
    return 0
