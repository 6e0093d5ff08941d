"""Parallel sessions: a ParaView server of several MPI ranks, over one or more nodes, under the web server.

Staff allow them per partition (``max_nodes``, ``max_ranks``, ``max_ranks_per_node``,
``ranks_divisible_by_nodes``) and per application (``pvserver``: the server binary and its options; left
out, the application takes no ranks; ``mpi_launcher``: how ranks are started, e.g. ``mpiexec -n ${ranks}``
or ``srun --mpi=pmix -n ${ranks}``; ``pvserver_connect``: the arguments that attach the application's web
server to a running pvserver). A request asks for ``ranks`` (and ``nodes``); without ranks a session is one
process, exactly as before. The job runs pvhpc/node/parallel.py on its first node (docs/parallel.md).
"""

from __future__ import annotations

import json
import os
import re
from typing import TYPE_CHECKING

from pvhpc.errors import PvhpcError

if TYPE_CHECKING:   # the config's keys use this module's checks
    from pvhpc.config.model import ApplicationConfig, PartitionConfig

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
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


class ParallelRequestError(PvhpcError):
    """A request's nodes or ranks are not what the partition and application allow (400, naming the field)."""

    status = 400


def _argv(value, known: dict[str, str], what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of arguments ({what}), not {value!r}")
    out = []
    for i, arg in enumerate(value):
        if isinstance(arg, bool) or not isinstance(arg, (str, int)):
            raise _at(i, f"must be a string, not {arg!r}")
        arg = str(arg)
        if "\0" in arg or "\n" in arg:
            raise _at(i, "must be one line without NUL bytes")
        for name in PLACEHOLDER.findall(arg):
            if name not in known:
                allowed = ", ".join(f"${{{n}}}" for n in known) or "none"
                raise _at(i, f"unknown placeholder ${{{name}}} (known here: {allowed})")
        out.append(arg)
    return tuple(out)


def _at(index: int, message: str) -> ValueError:
    wrong = ValueError(message)
    wrong.index = index   # the config reader names the item as key[index]
    return wrong


def check_mpi_launcher(value) -> tuple[str, ...]:
    argv = _argv(value, LAUNCHER_PLACEHOLDERS, "the MPI launcher and its options, before the pvserver")
    if not any("${ranks}" in arg for arg in argv):
        raise ValueError(f"must pass ${{ranks}} (e.g. {DEFAULT_MPI_LAUNCHER}): the ranks are the session's")
    return argv


def check_pvserver(value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    argv = _argv(value, {}, "ParaView's pvserver built with the site's MPI, and its options")
    # pvhpc's guard (pvhpc/node/pvserver_guard.c) hides the connect id and guards the port in the pvserver
    # program itself: a wrapper in front (numactl, vglrun, a container runner) would get the id and start
    # pvserver with it on its command line, unguarded. Wrappers go in the MPI launcher's options instead.
    if not os.path.basename(argv[0]).startswith("pvserver"):
        raise ValueError(f"must start with ParaView's pvserver itself, not {argv[0]!r}: pvhpc guards the pvserver "
                         "program (put wrappers such as numactl in the MPI launcher's command)")
    return argv


def check_connect(value) -> tuple[str, ...]:
    argv = _argv(value, CONNECT_PLACEHOLDERS, "options that attach the web server to a pvserver")
    used = {name for arg in argv for name in PLACEHOLDER.findall(arg)}
    if not {"ds_host", "ds_port"} <= used:
        raise ValueError("must pass ${ds_host} and ${ds_port}, e.g. " + " ".join(WSLINK_APP_CONNECT))
    return argv


def allowed(partition: PartitionConfig, app: ApplicationConfig) -> bool:
    return partition.max_ranks > 0 and app.pvserver is not None


def _whole(body: dict, field: str) -> int | None:
    value = body.get(field)
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value) <= 8:
        value = int(value)   # from a URL query (an app page's ?ranks=4) every field is a string
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParallelRequestError(f"must be a whole number, not {value!r}"[:200], field=field)
    if value < 1:
        raise ParallelRequestError("must be at least 1", field=field)
    return value


def sizes(body: dict, partition: PartitionConfig, app: ApplicationConfig) -> tuple[int, int]:
    """A request's (nodes, ranks); ranks 0 is a session of one process with no separate ParaView server."""
    nodes, ranks = _whole(body, "nodes"), _whole(body, "ranks")
    if nodes is None and ranks is None:
        return 1, 0
    field = "ranks" if ranks is not None else "nodes"
    if partition.max_ranks == 0:
        raise ParallelRequestError(f"partition {partition.name} runs no parallel sessions (its max_ranks is 0); "
                                   "leave out nodes and ranks, or choose a partition that allows them", field=field)
    if app.pvserver is None:
        raise ParallelRequestError(f"application {app.name} runs no parallel sessions (it has no pvserver); "
                                   "leave out nodes and ranks", field=field)
    nodes = nodes or 1
    if ranks is None:
        ranks = nodes   # one a node
    if nodes > partition.max_nodes:
        raise ParallelRequestError(f"{nodes} is over partition {partition.name}'s maximum of {partition.max_nodes}",
                                   field="nodes")
    if ranks > partition.max_ranks:
        raise ParallelRequestError(f"{ranks} is over partition {partition.name}'s maximum of {partition.max_ranks}",
                                   field="ranks")
    if ranks < nodes:
        raise ParallelRequestError(f"{ranks} ranks cannot fill {nodes} nodes: ask for at least one rank a node",
                                   field="ranks")
    if partition.ranks_divisible_by_nodes and ranks % nodes:
        raise ParallelRequestError(f"{ranks} ranks do not divide evenly over {nodes} nodes, as partition "
                                   f"{partition.name} requires: ask for a multiple of {nodes}", field="ranks")
    per_node = -(-ranks // nodes)
    if partition.max_ranks_per_node and per_node > partition.max_ranks_per_node:
        raise ParallelRequestError(f"{ranks} ranks on {nodes} nodes make {per_node} a node, over partition "
                                   f"{partition.name}'s maximum of {partition.max_ranks_per_node} a node: ask for "
                                   "more nodes or fewer ranks", field="ranks")
    return nodes, ranks


def job_value(app: ApplicationConfig, nodes: int, ranks: int, guard: str) -> str:
    """What the job script hands pvhpc/node/parallel.py (PVHPC_PARALLEL): empty for a one-process session.
    ``guard``: the library the ranks run with (pvhpc/node/pvserver_guard.c, built by ``pvhpc runtime install``)."""
    if not ranks:
        return ""
    values = {"ranks": str(ranks), "nodes": str(nodes), "ranks_per_node": str(-(-ranks // nodes))}
    mpi = [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in app.mpi_launcher]
    return json.dumps({"mpi": mpi, "pvserver": list(app.pvserver), "connect": list(app.pvserver_connect),
                       "ranks": ranks, "guard": guard})
