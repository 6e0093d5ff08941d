"""``pvhpc cluster start|stop|status|env``: the throwaway local Slurm cluster."""

from __future__ import annotations

import sys

from pvhpc import paths
from pvhpc.localcluster.cluster import DEFAULT_BASE_PORT, ClusterError, LocalCluster


def register(sub) -> None:
    p = sub.add_parser(
        "cluster",
        help="start, stop or inspect a local Slurm cluster for trying pvhpc",
        description=(
            "A local Slurm cluster on this machine: munged, slurmctld and four slurmd (partition gpu: gpu01-02 "
            "with two fake a100 GPUs each; partition cpu: cpu01-02). Run as root, each node is a host of its own "
            "(a network namespace with its own address, host name and hosts file; slurmctld and pvhpc on the "
            "login side, this machine), else a process of this host. All its files live in one directory "
            "(default: $PVHPC_CLUSTER_DIR, else /var/lib/pvhpc/cluster for root, ~/.local/share/pvhpc/cluster "
            "otherwise)."
        ),
    )
    p.add_argument("action", choices=("start", "stop", "status", "env"),
                   help="start (idempotent), stop (only what this cluster started), status, or env (print "
                        "the shell line that points Slurm's commands at it)")
    p.add_argument("--dir", default=None, help="the cluster's directory")
    p.add_argument("--base-port", type=int, default=DEFAULT_BASE_PORT,
                   help=f"slurmctld's port; the four slurmd use the next four (default {DEFAULT_BASE_PORT})")
    p.add_argument("--slurm", default=None, metavar="RELEASE|PREFIX",
                   help="which Slurm runs it (start): a release installed here (25.11, 22.05) or the prefix of one "
                        "(/opt/slurm-25.11, /usr); default: the one it last ran, else the newest installed")
    p.add_argument("--single-host", action="store_true",
                   help="start the nodes as processes of this host even where they could be hosts of their own")
    p.set_defaults(func=run)


def export_line(cluster: LocalCluster) -> str:
    """The shell line that points Slurm's commands (the cluster's own release's, first on the shell's PATH) at
    the cluster."""
    path = f" PATH={':'.join(cluster.slurm.path_dirs)}:$PATH" if cluster.slurm.path_dirs else ""
    return f"export SLURM_CONF={cluster.conf}{path}"


def run(args) -> int:
    try:
        cluster = LocalCluster(args.dir or paths.cluster_dir(), base_port=args.base_port, slurm=args.slurm,
                               hosts=False if args.single_host else None)
    except ClusterError as e:
        print(f"pvhpc cluster {args.action}: {e}", file=sys.stderr)
        return 1
    try:
        if args.action == "start":
            was_running = cluster.is_running()
            cluster.start()
            print(f"cluster {'already running' if was_running else 'started'} in {cluster.dir} on "
                  f"{cluster.slurm.describe()}")
            print(f"{cluster.describe_shape()}")
            print(f"use it with: {export_line(cluster)}")
        elif args.action == "stop":
            stopped = cluster.stop()
            print(f"stopped: {', '.join(stopped)}" if stopped else f"nothing of {cluster.dir} was running")
        elif args.action == "env":
            print(export_line(cluster))
        else:
            statuses = cluster.status()
            print(cluster.describe_shape())
            for d in statuses:
                print(f"{d.name:14} {'running' if d.running else 'stopped'}" + (f" (pid {d.pid})" if d.running else ""))
            return 0 if all(d.running for d in statuses) else 3
    except ClusterError as e:
        print(f"pvhpc cluster {args.action}: {e}", file=sys.stderr)
        return 1
    return 0
