"""A parallel session's MPI launch as staff write it: the MPI launcher, ParaView's pvserver, and the options
that attach an application's web server to the pvserver, each an argument list with placeholders of its own
(the grammar of ``command.py``). What a request may ask for is checked in pvhpc/sessions/parallel_request.py; the
node side runs in pvhpc/node/parallel.py (docs/parallel.md).
"""

from __future__ import annotations

import os

from pvhpc.jobs.command import PLACEHOLDER, check_argv

# Filled in when the job is built.
LAUNCHER_PLACEHOLDERS = {
    "ranks": "the session's MPI ranks",
    "nodes": "the session's nodes",
    "ranks_per_node": "ranks on each node (ranks / nodes, rounded up)",
}
# Filled in on the node by pvhpc/node/parallel.py, once the pvserver listens.
CONNECT_PLACEHOLDERS = {
    "ds_host": "the host the pvserver's root rank listens on (the job's first node, as 127.0.0.1)",
    "ds_port": "its port, free on that node",
    "connect_id": "the random connect id the pvserver was started with (a client must present it); filled in "
                  "inside a Python web server's own process (pvhpc's argv wrapper), never on a command line",
    "ranks": "the session's MPI ranks",
}
# pvhpc's own server (pvhpc/node/pvweb_server.py) takes these; the Visualizer takes --ds-host/--ds-port.
PVHPC_SERVER_CONNECT = ["--ds-host", "${ds_host}", "--ds-port", "${ds_port}", "--connect-id", "${connect_id}",
                        "--ranks", "${ranks}"]
WSLINK_APP_CONNECT = ["--ds-host", "${ds_host}", "--ds-port", "${ds_port}"]
DEFAULT_MPI_LAUNCHER = ["mpiexec", "-n", "${ranks}"]


def check_mpi_launcher(value) -> tuple[str, ...]:
    argv = check_argv(value, LAUNCHER_PLACEHOLDERS, "the MPI launcher and its options, before the pvserver")
    if not any("${ranks}" in arg for arg in argv):
        raise ValueError(f"must pass ${{ranks}} (e.g. {DEFAULT_MPI_LAUNCHER}): the ranks are the session's")
    return argv


def check_pvserver(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    argv = check_argv(value, {}, "ParaView's pvserver built with the site's MPI, and its options")
    # pvhpc's guard (pvhpc/node/pvserver_guard.c) hides the connect id and guards the port in the pvserver
    # program itself: a wrapper in front (numactl, vglrun, a container runner) would get the id and start
    # pvserver with it on its command line, unguarded. Wrappers go in the MPI launcher's options instead.
    if not os.path.basename(argv[0]).startswith("pvserver"):
        raise ValueError(f"must start with ParaView's pvserver itself, not {argv[0]!r}: pvhpc guards the pvserver "
                         "program (put wrappers such as numactl in the MPI launcher's command)")
    return argv


def check_connect(value) -> tuple[str, ...]:
    argv = check_argv(value, CONNECT_PLACEHOLDERS, "options that attach the web server to a pvserver")
    used = {name for arg in argv for name in PLACEHOLDER.findall(arg)}
    if not {"ds_host", "ds_port"} <= used:
        raise ValueError("must pass ${ds_host} and ${ds_port}, e.g. " + " ".join(WSLINK_APP_CONNECT))
    return argv


def launch(mpi_launcher: tuple[str, ...], nodes: int, ranks: int) -> list[str]:
    """The MPI launcher's argv with the session's sizes filled in."""
    values = {"ranks": str(ranks), "nodes": str(nodes), "ranks_per_node": str(-(-ranks // nodes))}
    return [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in mpi_launcher]
