"""A throwaway Slurm cluster on one machine, for trying pvhpc and for its tests.

munged, slurmctld and one slurmd per emulated node run as plain processes (no
systemd); every file they use (config, key, state, spool, logs, sockets, pid
files) lives in one directory, so several clusters can coexist and stopping one
touches nothing else. Debian's slurm-wlm runs many slurmd on one host when each
node gets its own port and spool directory.

Multi-node MPI jobs work as on a real cluster: ``mpiexec`` inside a job starts its
daemons on the other nodes through ``srun``. What the emulated nodes share and real
ones do not is ``/tmp`` and ``/dev/shm``: OpenMPI names the shared-memory segments of
a node's ranks (in /dev/shm) by host name and local rank, the same on every emulated
node, so the ranks of two of them trample each other's (pvserver crashed in MPI_Init
with two ranks on each of two nodes). A task prolog gives every task of a node that
node's own TMPDIR and keeps OpenMPI off shared memory between ranks (its ``vader``
transport; they talk over loopback TCP instead). The setting has to be the same on
every node: mpiexec hands its own OMPI_* variables to every rank.

Its compute nodes are hosts of their own where this machine allows (``nodehosts.py``: each node a network
namespace with its own address, host name and hosts file; slurmctld and pvhpc on the login side, the machine
itself), else, or when asked, slurmd processes of this one host. ``login_address`` is where the nodes reach the
login side (where pvhpc's callback URL must point), ``node_address`` where the login side reaches a node.

Any Slurm installed here runs it (pvhpc/scheduler/slurm_install.py): by default the newest, e.g. 25.11 built by
install.sh, else Debian's 22.05. The directory records which one it was started with, so later
commands (status, stop, a reused test cluster) use the same programs.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pvhpc.errors import PvhpcError
from pvhpc.node.jobhelper import pid_alive
from pvhpc.scheduler import slurm_install
from pvhpc.localcluster.nodehosts import NodeNetwork, NodeNetworkError
from pvhpc.scheduler.slurm_install import SlurmInstall, SlurmNotFound

GPU_NODES = ("gpu01", "gpu02")
CPU_NODES = ("cpu01", "cpu02")
GPUS_PER_NODE = 2
GPU_TYPE = "a100"
DEFAULT_BASE_PORT = 17000
SLURM_RECORD = "slurm-prefix"    # beside slurm.conf: which Slurm the cluster runs
SHAPE_RECORD = "node-shape"      # beside slurm.conf: "hosts" (nodes in namespaces of their own) or "single"


class ClusterError(PvhpcError):
    """The local cluster could not be set up, started or stopped."""


@dataclass
class DaemonStatus:
    name: str
    pid: int | None
    running: bool


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _process_command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def recorded_prefix(conf: str | os.PathLike) -> str | None:
    """The prefix of the Slurm the cluster whose slurm.conf is ``conf`` was last started with, if it was."""
    try:
        return (Path(conf).parent / SLURM_RECORD).read_text().strip() or None
    except OSError:
        return None


def recorded_shape(conf: str | os.PathLike) -> dict[str, str] | None:
    """How the cluster whose slurm.conf is ``conf`` was last started (``shape``, ``base_port``), if it was."""
    try:
        return dict(word.split("=", 1) for word in (Path(conf).parent / SHAPE_RECORD).read_text().split())
    except (OSError, ValueError):
        return None


def recorded_login_address(conf: str | os.PathLike) -> str | None:
    """Where the nodes of the cluster whose slurm.conf is ``conf`` reach the login side, if they are hosts of
    their own; None when they are processes of this host (or it never started)."""
    shape = recorded_shape(conf) or {}
    if shape.get("shape") != "hosts":
        return None
    try:
        return NodeNetwork(int(shape["base_port"]), (), "").login_address
    except (ValueError, KeyError, NodeNetworkError):
        return None


class LocalCluster:
    """One emulated cluster: partitions ``gpu`` (gpu01-02, two fake GPUs each) and ``cpu`` (cpu01-02)."""

    def __init__(self, directory: str | os.PathLike, base_port: int = DEFAULT_BASE_PORT,
                 slurm: SlurmInstall | str | None = None, hosts: bool | None = None):
        """``slurm``: the installation to run (or a release or prefix naming one); by default the one this
        directory was last started with, else the newest installed. ``hosts``: nodes as hosts of their own
        (True), on this one host (False), or as the directory was last started, else hosts where this machine
        allows (None)."""
        self.dir = Path(directory).resolve()
        self.hostname = socket.gethostname()
        self._slurm = slurm
        recorded = recorded_shape(self.conf)
        if recorded is not None:
            # A directory started before goes on as it was: its ports and its nodes' network are named there.
            base_port = int(recorded.get("base_port", base_port))
        self.base_port = base_port
        self.network = NodeNetwork(base_port, self.nodes, self.hostname)
        self.shape_note = ""
        if hosts is None and recorded is not None:
            hosts = recorded.get("shape") == "hosts"
        elif hosts is None and self.conf.exists() and any(d.running for d in self.status()):
            hosts = False   # started before nodes could be hosts: its running daemons are of this host
        self._hosts_asked = hosts
        if hosts is None or hosts:
            # Without making a namespace: start() tries one before it writes anything (status must change nothing).
            self._hosts_if_possible(NodeNetwork.usable(try_one=False))
        else:
            self.multi_host = False

    def _hosts_if_possible(self, why_not: str | None) -> None:
        if why_not and self._hosts_asked:
            raise ClusterError(f"the nodes cannot be hosts of their own here: {why_not}")
        if why_not:
            self.shape_note = f"nodes are processes of this one host ({why_not})"
        self.multi_host = why_not is None

    @property
    def slurm(self) -> SlurmInstall:
        if not isinstance(self._slurm, SlurmInstall):
            try:
                self._slurm = slurm_install.choose(self._slurm or self._recorded_prefix())
            except SlurmNotFound as e:
                raise ClusterError(str(e)) from None
        return self._slurm

    def _recorded_prefix(self) -> str | None:
        return recorded_prefix(self.conf)

    # -- where things are ------------------------------------------------
    @property
    def login_address(self) -> str:
        """Where the nodes reach the login side (this machine): pvhpc's callback URL names it."""
        return self.network.login_address if self.multi_host else "127.0.0.1"

    def node_address(self, node: str) -> str:
        """Where the login side reaches ``node`` (Slurm's NodeAddr for it)."""
        return self.network.host(node).address if self.multi_host else "127.0.0.1"

    def on_node(self, node: str, argv: list[str]) -> list[str]:
        """``argv`` as run on ``node``: inside its namespaces when it is a host of its own."""
        return self.network.on_node(node, argv) if self.multi_host else argv

    def describe_shape(self) -> str:
        if self.multi_host:
            nodes = ", ".join(f"{h.name} {h.address}" for h in self.network.hosts)
            return f"nodes are hosts of their own ({nodes}; the login side is {self.login_address})"
        return self.shape_note or "nodes are processes of this one host"

    # -- paths ---------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.dir / "etc" / "slurm.conf"

    @property
    def slurm_record(self) -> Path:
        return self.dir / "etc" / SLURM_RECORD

    @property
    def task_prolog(self) -> Path:
        return self.dir / "etc" / "task-prolog.sh"

    @property
    def munge_socket(self) -> Path:
        return self.dir / "run" / "munge.socket"

    @property
    def nodes(self) -> tuple[str, ...]:
        return GPU_NODES + CPU_NODES

    def environment(self) -> dict[str, str]:
        """Variables a shell needs to talk to this cluster with its own Slurm's tools."""
        return {"SLURM_CONF": str(self.conf), **self.slurm.environment()}

    def scheduler_config(self) -> dict:
        """The site config's ``scheduler:`` keys that point pvhpc at this cluster."""
        return {"environment": {"SLURM_CONF": str(self.conf)}, "slurm_prefix": str(self.slurm.prefix)}

    def _pidfile(self, daemon: str) -> Path:
        return self.dir / "run" / f"{daemon}.pid"

    def _daemon_names(self) -> list[str]:
        return ["munged", "slurmctld"] + [f"slurmd-{n}" for n in self.nodes]

    # -- set-up --------------------------------------------------------
    def _check_directory(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ClusterError(f"cannot create cluster directory {self.dir}: {e.strerror}") from None
        if not os.access(self.dir, os.W_OK | os.X_OK):
            raise ClusterError(f"cluster directory {self.dir} is not writable by this user")
        probe = self.dir / ".write-test"
        try:
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise ClusterError(f"cluster directory {self.dir} is not writable: {e.strerror}") from None
        if shutil.which("munged") is None and not Path("/usr/sbin/munged").exists():
            raise ClusterError("munged is not installed: install Debian's munge package (see install.sh)")
        for tool in ("slurmctld", "slurmd", "sbatch"):
            try:
                self.slurm.program(tool)
            except SlurmNotFound as e:
                raise ClusterError(f"{e}: install Debian's slurm-wlm package (see install.sh)") from None

    def write_config(self) -> None:
        d = self.dir
        for sub in ("etc", "run", "log", "state", "spool", "gpus", "munge", "tmp"):
            (d / sub).mkdir(exist_ok=True)
        # munged insists on private directories for its key and socket.
        for sub in ("run", "munge", "etc"):
            os.chmod(d / sub, 0o755 if sub != "munge" else 0o700)
        for node in self.nodes:
            (d / "spool" / node).mkdir(exist_ok=True)
            # Every user's jobs write there, as in /tmp.
            (d / "tmp" / node).mkdir(exist_ok=True)
            os.chmod(d / "tmp" / node, 0o1777)
        self.task_prolog.write_text(
            "#!/bin/sh\n# Written by pvhpc's local cluster: each emulated node's own temporary directory\n"
            "# (slurmd runs this before every task, the batch script's too, and reads its export lines).\n"
            f'echo "export TMPDIR={d}/tmp/$SLURMD_NODENAME"\n'
            'echo "export OMPI_MCA_btl=^vader"\n'
            # The emulated nodes oversubscribe one host's cores: a rank waiting for a message gives up its
            # core instead of spinning on it (OpenMPI spins by default, made for a core per rank).
            'echo "export OMPI_MCA_mpi_yield_when_idle=1"\n'
            # A job's own Slurm commands (mpiexec starts its daemons with srun) must be this cluster's release:
            # its programs first on the job's own PATH ($PATH is the task's, expanded by this script).
            + (f'echo "export PATH={":".join(self.slurm.path_dirs)}:$PATH"\n' if self.slurm.path_dirs else "")
        )
        os.chmod(self.task_prolog, 0o755)
        for i in range(GPUS_PER_NODE):
            (d / "gpus" / f"fakegpu{i}").touch()
        key = d / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(os.urandom(1024))
            os.chmod(key, 0o400)

        (d / "etc" / SHAPE_RECORD).write_text(
            f"shape={'hosts' if self.multi_host else 'single'} base_port={self.base_port}\n")
        ctld_port = self.base_port
        gpu_first = self.base_port + 1
        cpu_first = gpu_first + len(GPU_NODES)
        gpu_range = f"{gpu_first}-{gpu_first + len(GPU_NODES) - 1}"
        cpu_range = f"{cpu_first}-{cpu_first + len(CPU_NODES) - 1}"
        # No accounting, job accounting gatherer or switch: Slurm's defaults (22.05 named them "none" plug-ins,
        # which later releases dropped and refuse to load).
        conf = f"""# Written by pvhpc's local cluster (pvhpc cluster start); regenerated on every start.
ClusterName=pvhpc-local
SlurmctldHost={self.hostname}{f"({self.login_address})" if self.multi_host else ""}
SlurmctldPort={ctld_port}
SlurmdPort={gpu_first}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool/%n
SlurmctldPidFile={self._pidfile('slurmctld')}
SlurmdPidFile={d}/run/slurmd-%n.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
TaskProlog={self.task_prolog}
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
JobCompType=jobcomp/filetxt
JobCompLoc={d}/log/jobcomp.log
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
KillWait=5
MinJobAge=300
DefMemPerCPU=500
SlurmdTimeout=30
InactiveLimit=0
GresTypes=gpu
{self._node_lines(gpu_first)}
PartitionName=gpu Nodes={','.join(GPU_NODES)} DefaultTime=01:00:00 MaxTime=08:00:00 State=UP
PartitionName=cpu Nodes={','.join(CPU_NODES)} DefaultTime=01:00:00 MaxTime=08:00:00 State=UP Default=YES
"""
        self.conf.write_text(conf)
        self.slurm_record.write_text(f"{self.slurm.prefix}\n")
        gres = (
            f"NodeName={','.join(GPU_NODES)} Name=gpu Type={GPU_TYPE} "
            f"File={d}/gpus/fakegpu[0-{GPUS_PER_NODE - 1}]\n"
        )
        (d / "etc" / "gres.conf").write_text(gres)

    def _node_lines(self, first_port: int) -> str:
        """One NodeName line per node: by its own address and host name when it is a host of its own, else this
        host's name for all."""
        lines = []
        for i, node in enumerate(self.nodes):
            where = (f"NodeAddr={self.node_address(node)} NodeHostname={node}" if self.multi_host
                     else f"NodeHostname={self.hostname}")
            gres = f" Gres=gpu:{GPU_TYPE}:{GPUS_PER_NODE}" if node in GPU_NODES else ""
            lines.append(f"NodeName={node} {where} Port={first_port + i} CPUs=2 RealMemory=4000{gres} State=UNKNOWN")
        return "\n".join(lines)

    # -- life cycle ----------------------------------------------------
    def status(self) -> list[DaemonStatus]:
        out = []
        for name in self._daemon_names():
            pid = _read_pid(self._pidfile(name)) if name in ("munged", "slurmctld") else _read_pid(
                self.dir / "run" / f"{name}.pid"
            )
            running = pid is not None and pid_alive(pid) and str(self.dir) in _process_command(pid)
            out.append(DaemonStatus(name, pid, running))
        return out

    def is_running(self) -> bool:
        return all(d.running for d in self.status())

    def _run_daemon(self, argv: list[str], name: str) -> None:
        env = dict(os.environ, **self.environment())
        log = self.dir / "log" / f"{name}.stderr"
        with open(log, "ab") as err:
            proc = subprocess.run(argv, env=env, stdout=err, stderr=err, stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise ClusterError(f"{name} failed to start (exit {proc.returncode}): " + " | ".join(tail))

    def _wait_pidfile(self, path: Path, name: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = _read_pid(path)
            if pid and pid_alive(pid):
                return
            time.sleep(0.1)
        raise ClusterError(f"{name} did not start within {timeout:.0f} s; see {self.dir}/log")

    def start(self, timeout: float = 60) -> None:
        """Start whatever of the cluster is not running yet, then wait until every node is usable."""
        self._check_directory()
        running = {d.name for d in self.status() if d.running}
        if running and str(self.slurm.prefix) != self._recorded_prefix():
            # One cluster's daemons must all be of one release.
            raise ClusterError(f"the cluster in {self.dir} runs the Slurm in {self._recorded_prefix()}; stop it "
                               f"first to start it on {self.slurm.describe()}")
        if len(running) == len(self._daemon_names()):
            return
        if not running:
            if self.multi_host and self._hosts_asked is not False:
                self._hosts_if_possible(NodeNetwork.usable())
            self.write_config()
            if self.multi_host:
                try:
                    self.network.create()
                except NodeNetworkError as e:
                    raise ClusterError(f"could not make the nodes' network: {e}") from None
        if "munged" not in running:
            self._run_daemon(
                [
                    "munged", "--force",
                    f"--socket={self.munge_socket}",
                    f"--key-file={self.dir}/munge/munge.key",
                    f"--pid-file={self._pidfile('munged')}",
                    f"--log-file={self.dir}/log/munged.log",
                    f"--seed-file={self.dir}/munge/munged.seed",
                ],
                "munged",
            )
            self._wait_pidfile(self._pidfile("munged"), "munged")
        if "slurmctld" not in running:
            self._run_daemon([self.slurm.program("slurmctld"), "-f", str(self.conf)], "slurmctld")
            self._wait_pidfile(self._pidfile("slurmctld"), "slurmctld")
        for node in self.nodes:
            if f"slurmd-{node}" not in running:
                argv = [self.slurm.program("slurmd"), "-f", str(self.conf), "-N", node]
                self._run_daemon(self.on_node(node, argv), f"slurmd-{node}")
        self.wait_nodes_idle(timeout)

    def _sinfo_states(self) -> dict[str, str]:
        env = dict(os.environ, **self.environment())
        proc = subprocess.run(
            [self.slurm.program("sinfo"), "-h", "-N", "-o", "%N %t"], env=env, capture_output=True, text=True, timeout=20
        )
        if proc.returncode != 0:
            return {}
        return dict(line.split() for line in proc.stdout.splitlines() if line.strip())

    def wait_nodes_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            states = self._sinfo_states()
            usable = {"idle", "mix", "alloc", "comp"}
            if states and all(states.get(n, "").rstrip("*~#") in usable for n in self.nodes):
                return
            time.sleep(0.5)
        raise ClusterError(
            f"nodes not up within {timeout:.0f} s (states: {states or 'slurmctld not answering'}); "
            f"see {self.dir}/log"
        )

    def _cancel_all_jobs(self, timeout: float) -> None:
        """Cancel every job first: slurmstepd outlives slurmd, so a job left running would outlive the cluster."""
        env = dict(os.environ, **self.environment())

        def live_jobs() -> list[str]:
            try:
                proc = subprocess.run([self.slurm.program("squeue"), "-h", "-o", "%i"], env=env, capture_output=True, text=True, timeout=10)
            except subprocess.TimeoutExpired:
                return []
            return proc.stdout.split() if proc.returncode == 0 else []

        jobs = live_jobs()
        if not jobs:
            return
        subprocess.run([self.slurm.program("scancel"), *jobs], env=env, capture_output=True, timeout=20)
        deadline = time.monotonic() + timeout
        while live_jobs() and time.monotonic() < deadline:
            time.sleep(0.3)

    def stop(self, timeout: float = 20) -> list[str]:
        """Stop the daemons this cluster started (found by their pid files); return their names."""
        if any(d.running and d.name == "slurmctld" for d in self.status()):
            self._cancel_all_jobs(timeout)
        stopped = []
        # Nodes first, so running jobs are killed by their slurmd, then the controller, then munge.
        for d in reversed(self.status()):
            if d.running and d.pid:
                os.kill(d.pid, signal.SIGTERM)
                stopped.append((d.name, d.pid))
        deadline = time.monotonic() + timeout
        for name, pid in stopped:
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if self.multi_host and self.network.exists():
            # Whatever a job left on a node (a step Slurm could not reach) ends with the node's namespace.
            self.network.destroy()
            stopped.append(("nodes' network", 0))
        return [name for name, _ in stopped]
