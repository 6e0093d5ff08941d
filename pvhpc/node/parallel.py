"""A parallel session on the node: an MPI ParaView server over the job's allocation, the web server attached.

    PVHPC_PARALLEL=JSON python3 parallel.py LAUNCHER.py LAUNCHER-ARGS...

The job script runs this in place of pvhpc's supervisor when the session asked for ranks (standard library
only, beside jobhelper.py and supervisor.py; it imports nothing from pvhpc). PVHPC_PARALLEL holds what the
session's job was built with: ``mpi`` (the MPI launcher's argv, ranks filled in), ``pvserver`` (ParaView's
server binary and its options), ``connect`` (the arguments that attach the application's web server to a
pvserver, with ``${ds_host}``, ``${ds_port}``, ``${connect_id}``, ``${ranks}``), ``ranks`` and ``guard`` (the
library the ranks run with, pvserver_guard.c as ``pvhpc runtime install`` built it). It

- starts ``MPI-LAUNCHER pvserver --server-port=P --connect-id=@PVHPC_CONNECT_ID@`` on a port free on this node,
  in its own process group (its own, so that it can be stopped whole), with the guard preloaded: the MPI
  launcher spreads the ranks over the job's nodes through Slurm, rank 0 (the one that listens) here, beside
  the web server, which connects to it on localhost;
- waits until the root rank accepts connections, which it does only once every rank has started (a
  failed or slow start is reported with the server's last lines);
- runs pvhpc's supervisor with the connect arguments added to the application's command: the web server
  connects before it listens, so the session is ready only when it is attached to all ranks;
- when a rank dies (the MPI launcher then ends the others and exits) reports the session failed with
  the MPI launcher's own words about which rank, and stops the web server;
- when the web server ends, or on SIGTERM (scancel, the walltime), stops every rank: none outlives the job.

What another user of the node sees, and can do. Each process's command line is everyone's to read
(``ps``), its environment only its user's. The connect id, a random number the web server must present, is in
the ranks' environment (PVHPC_CONNECT_ID, passed on by name: OpenMPI's ``-x NAME``), and the guard puts it
where pvserver reads it, in its argv inside the process, while its command line keeps the placeholder; the
web server gets it the same way (``${connect_id}``, filled in by argv_secret.py). The guard also takes on the
port only a connection from this node's loopback made by the job's own user, and closes any other before
ParaView reads from it: another user's client is refused whatever id it presents, and one that connects
first and sends nothing no longer holds the ranks in their handshake (ParaView waits on such a client for
as long as it stays, and takes the next only after). That the port shows (on pvserver's command line, and
in /proc/net/tcp for every listening socket anyway) then gives nothing away. After its first client,
pvserver closes its port.

A desktop session (``desktop`` in PVHPC_PARALLEL, docs/desktop.md) is the same pvserver with pvhpc's websocket
bridge (desktop_bridge.py) as its web server, and ParaView's desktop client behind the bridge; one rank runs
without an MPI launcher (``mpi`` empty). Its connect id is 0, ParaView's "none", which is what the desktop client
sends: ParaView 5.11's client puts its connect id in the handshake string ("paraview-5.11.connect_id.N.
renderingbackend.B", in a framed message of VTK's socket communicator), which the bridge would have to rewrite,
length and all, inside VTK's own protocol. It need not: the guard already takes only the job's user's loopback
connections, and that user can read the job's environment (the id with it) anyway, so an id keeps nobody out that
the guard lets in. The client that leaves ends the pvserver (it serves one client): then the ranks' end is the
session's, and the bridge, which sees its pvserver connection close, reports it (completed), not this.
"""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import jobhelper   # beside this file
import supervisor
import watchdog

PARALLEL_ENV = "PVHPC_PARALLEL"
# What pvserver's root rank prints once it accepts a client (ParaView 5.x).
LISTENING_LINE = r"Accepting connection\(s\)"
CONNECT_ID_ENV = "PVHPC_CONNECT_ID"   # read by argv_secret.py and by the guard in the ranks
CONNECT_ID_PLACEHOLDER = "@PVHPC_CONNECT_ID@"   # what the ranks' command lines show; the guard fills it in
GUARD_EXE_ENV, GUARD_PORT_ENV = "PVHPC_GUARD_EXE", "PVHPC_GUARD_PORT"   # pvserver_guard.c reads them
GUARD_ENV = (CONNECT_ID_ENV, GUARD_EXE_ENV, GUARD_PORT_ENV, "LD_PRELOAD")
# MPI launchers that pass a variable on to the ranks by its name with -x NAME (OpenMPI's, under any name).
OPENMPI_LAUNCHERS = re.compile(r"^(orterun|prterun)$|openmpi")
RANK_LINE = re.compile(r"\brank \d+\b", re.IGNORECASE)   # mpiexec: "process rank 2 ... on node cpu02 exited"
RANK_WORDS = re.compile(r"rank|signal|exit|abort|kill|fail|error", re.IGNORECASE)
# Short: the job script kills what is left of its children 2 s after its own SIGTERM, and a rank whose MPI
# launcher is gone would no longer be tracked as the job's.
STOP_GRACE = 1.5
POLL = 0.1
BRIDGE_GRACE = 10   # seconds a desktop session's bridge has to report its end once its pvserver has ended


def mpi_environment(keep_display: bool = False):
    env = dict(os.environ)
    # The web server's private things are not the ParaView server's.
    for name in ("PVHPC_SECRET", "PVHPC_REPORT_TOKEN", supervisor.REPORT_URL_ENV, supervisor.COMMAND_ENV,
                 supervisor.READY_ENV, PARALLEL_ENV):
        env.pop(name, None)
    # The job's X display is private to its first node; ranks elsewhere could not open it, and every rank
    # should render the same way: offscreen (pvserver --force-offscreen-rendering, EGL or OSMesa builds).
    # A pvserver of one rank started here, with no MPI launcher (a desktop session's), keeps it: an X-only
    # ParaView build (Debian's) renders nothing without one, and ParaView's desktop client, told so, warns its
    # user and renders on their machine instead.
    if not keep_display:
        for name in ("DISPLAY", "XAUTHORITY"):
            env.pop(name, None)
    # A job submitted with --export=NONE (pvhpc's are) hands SLURM_EXPORT_ENV=NONE down to every srun inside
    # it, the one the MPI launcher starts its daemons with too: they would find neither PATH nor anything the
    # job script set up. The ranks get the job's environment.
    env["SLURM_EXPORT_ENV"] = "ALL"
    if os.geteuid() == 0:
        # Only test clusters run jobs as root; OpenMPI refuses to start there without being told twice.
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return env


def guard_environment(env, guard, exe, port, connect_id):
    """The ranks' environment with the guard preloaded and what it needs."""
    env = dict(env)
    env["LD_PRELOAD"] = ":".join(p for p in (guard, env.get("LD_PRELOAD", "")) if p)
    env.update({CONNECT_ID_ENV: str(connect_id), GUARD_EXE_ENV: exe, GUARD_PORT_ENV: str(port)})
    return env


def passed_by_name(mpi, env):
    """Options that pass the guard's variables on to every rank by name, never by value: OpenMPI's mpiexec
    gives remote ranks only what -x names. Other launchers (srun, MPICH's mpiexec) pass the whole environment."""
    program = shutil.which(mpi[0], path=env.get("PATH")) if mpi else None
    if program and OPENMPI_LAUNCHERS.search(os.path.basename(os.path.realpath(program))):
        return [option for name in GUARD_ENV for option in ("-x", name)]
    return []


def pvserver_executable(pvserver, env):
    """pvserver's real path, as the ranks' /proc/self/exe will be: the guard acts in that program only."""
    found = shutil.which(pvserver[0], path=env.get("PATH"))
    return os.path.realpath(found) if found else None


def launcher_environment(command, connect_id):
    env = dict(os.environ)
    env.pop(PARALLEL_ENV, None)
    env.pop(watchdog.WATCHDOG_ENV, None)   # this process runs the session's watchdog
    env[supervisor.COMMAND_ENV] = json.dumps(command)
    # pvhpc's argv wrapper fills it into the web server's argv (${connect_id}) or, for servers that take no
    # connect id of their own (the Visualizer), sets it in their ParaView before they connect: it is on no
    # command line of the web server's.
    env[CONNECT_ID_ENV] = str(connect_id)
    return env


def why_ranks_ended(watch, code):
    """The MPI launcher's own words about the rank that ended (which rank, on which node, how), else its exit."""
    lines = [line.strip() for line in watch.last if "FATL" not in line and "Loguru" not in line]
    said = [line for line in lines if RANK_LINE.search(line)] or [line for line in lines if RANK_WORDS.search(line)]
    return " | ".join(said[-3:])[-900:] if said else f"the MPI launcher ended ({supervisor.how(code)})"


def wait_for(proc, seconds):
    """``proc``'s exit status once it has ended, within ``seconds``; else 143 (then stopped as on SIGTERM)."""
    try:
        return proc.wait(seconds)
    except subprocess.TimeoutExpired:
        return 143


def stop_all(web, servers):
    """SIGTERM the web server's launcher and the MPI launcher's group (it passes it to every rank) at once,
    then kill what is left. Quick, and all at once: the job script kills this 2 s after its own SIGTERM,
    and a process whose parent is gone is no longer tracked as the job's (proctrack/linuxproc)."""
    groups = [p for p in (web, servers) if p is not None]
    for proc in groups:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    while time.monotonic() < deadline and any(p.poll() is None for p in groups):
        time.sleep(0.05)
    for proc in groups:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def _signal_group(proc, signum):
    try:
        os.killpg(proc.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def run(spec, launcher_argv):
    args = launcher_argv_options(launcher_argv)
    ranks, desktop = int(spec["ranks"]), bool(spec.get("desktop"))
    port = supervisor.free_port("0.0.0.0")   # pvserver cannot be told an address: it listens on every interface
    # A desktop session's pvserver takes ParaView's "no connect id" (0), which the desktop client sends: see above.
    connect_id = 0 if desktop else random.SystemRandom().randint(1, 2**31 - 1)
    # The connect id is left for the web server's argv wrapper to fill in, inside its process.
    # 127.0.0.1, not localhost: pvserver listens on IPv4, and a node's hosts file may name ::1 first.
    values = {"ds_host": "127.0.0.1", "ds_port": str(port), "ranks": str(ranks)}
    env = mpi_environment(keep_display=not spec["mpi"])
    guard, exe = spec.get("guard") or "", pvserver_executable(spec["pvserver"], env)
    problem = ""
    if not os.path.isfile(guard):
        problem = (f"pvhpc's pvserver guard {guard or '(none named)'} is not on this node: run 'pvhpc runtime "
                   "install' (it needs a C compiler) into the runtime directory the nodes share")
    elif exe is None:
        problem = f"{spec['pvserver'][0]} is not found on this node"
    elif not os.path.basename(exe).startswith("pvserver"):
        # The guard acts in pvserver only: another program in front would start it unguarded (see
        # pvhpc/jobs/mpi.py check_pvserver, which refuses such a config before any job).
        problem = f"{spec['pvserver'][0]} is {exe}, not ParaView's pvserver"
    if problem:
        print(f"pvhpc: {problem}", flush=True)
        jobhelper.send(args.url, "failed", 30, reason=f"the ParaView server cannot be started: {problem}")
        return 1
    env = guard_environment(env, guard, exe, port, connect_id)
    argv = (list(spec["mpi"]) + passed_by_name(spec["mpi"], env) + list(spec["pvserver"])
            + [f"--server-port={port}", f"--connect-id={CONNECT_ID_PLACEHOLDER}"])
    print(f"pvhpc: starting the ParaView server, {ranks} ranks: {' '.join(argv)}", flush=True)
    servers = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               env=env, process_group=0)
    web = None
    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    # One watchdog for the whole session, from the ranks' start (launcher_environment keeps it from the launcher):
    # when pvhpc has ended the session, every rank stops with the web server, as on SIGTERM.
    watchdog.start(args.url, os.environ.get("PVHPC_REPORT_TOKEN", ""), os.environ.get(watchdog.WATCHDOG_ENV, ""),
                   on_end=lambda why: stopping.set())

    watch = supervisor.OutputWatch(servers.stdout, LISTENING_LINE, "")
    watch.start()
    try:
        deadline = time.monotonic() + args.start_timeout
        while not watch.seen.is_set():
            if stopping.is_set():
                return 143
            if servers.poll() is not None:
                watch.join(5)
                jobhelper.send(args.url, "failed", 30,
                               reason=f"the ParaView server ({ranks} ranks) exited before it listened "
                                      f"({supervisor.how(supervisor.exit_status(servers.returncode))}); its last "
                                      f"lines: {watch.tail() or '(no output)'}")
                return 1
            if time.monotonic() > deadline:
                jobhelper.send(args.url, "failed", 30,
                               reason=f"the ParaView server ({ranks} ranks) did not listen within "
                                      f"{args.start_timeout:g} s; its last lines: {watch.tail() or '(no output)'}")
                return 1
            time.sleep(POLL)

        # The launcher's command is templates (supervisor.expand): the connect arguments become templates too.
        connect = [supervisor.expand(supervisor.template_of(arg), values, final=False) for arg in spec["connect"]]
        command = json.loads(os.environ[supervisor.COMMAND_ENV]) + connect
        # Its own process group too: the web server under it is stopped with it, whatever becomes of the launcher.
        web = subprocess.Popen([sys.executable, *launcher_argv], env=launcher_environment(command, connect_id),
                               process_group=0)
        while True:
            if stopping.is_set():
                return 143
            if servers.poll() is not None:
                code = supervisor.exit_status(servers.returncode)
                if desktop and code == 0:
                    # Its desktop client left and the pvserver ended, as it does: the bridge, whose pvserver
                    # connection has closed, ends too and reports it.
                    print("pvhpc: the ParaView server ended after its client disconnected", flush=True)
                    return wait_for(web, BRIDGE_GRACE)
                # Said before the web server notices its server has gone, so the session ends with why.
                watch.join(2)
                reason = f"a ParaView server rank exited, so the session's server has stopped: {why_ranks_ended(watch, code)}"
                print(f"pvhpc: {reason}", flush=True)
                jobhelper.send(args.url, "failed", 30, reason=reason)
                return 1
            if web.poll() is not None:
                return web.returncode
            time.sleep(POLL)
    finally:
        stop_all(web, servers)
        print("pvhpc: every ParaView server rank has ended", flush=True)


def launcher_argv_options(launcher_argv):
    """The options meant for pvhpc's supervisor that this needs too: where to report, how long a start takes."""
    import argparse

    parser = argparse.ArgumentParser(prog="pvhpc-parallel", add_help=False)
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--url", default=os.environ.get(supervisor.REPORT_URL_ENV, ""))
    args, _ = parser.parse_known_args(launcher_argv[1:])
    return args


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if not argv or not argv[0].endswith(".py"):
        print("usage: PVHPC_PARALLEL=JSON parallel.py LAUNCHER.py LAUNCHER-ARGS...", file=sys.stderr)
        return 2
    raw = os.environ.get(PARALLEL_ENV)
    if not raw:
        print(f"{PARALLEL_ENV} is not set (the job script sets it)", file=sys.stderr)
        return 2
    return run(json.loads(raw), argv)


if __name__ == "__main__":
    sys.exit(main())
