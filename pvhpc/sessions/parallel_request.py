"""Parallel sessions: a ParaView server of several MPI ranks, over one or more nodes, under the web server.

Staff allow them per partition (``max_nodes``, ``max_ranks``, ``max_ranks_per_node``,
``ranks_divisible_by_nodes``) and per application (``pvserver``: the server binary and its options; left
out, the application takes no ranks; ``mpi_launcher``: how ranks are started, e.g. ``mpiexec -n ${ranks}``
or ``srun --mpi=pmix -n ${ranks}``; ``pvserver_connect``: the arguments that attach the application's web
server to a running pvserver). A request asks for ``ranks`` (and ``nodes``); without ranks a session is one
process, exactly as before. The job runs pvhpc/node/parallel.py on its first node (docs/parallel.md). How
staff write the MPI launch, and its checks: pvhpc/jobs/mpi.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from pvhpc.errors import PvhpcError
from pvhpc.jobs.mpi import launch

if TYPE_CHECKING:
    from pvhpc.config.model import ApplicationConfig, PartitionConfig


class ParallelRequestError(PvhpcError):
    """A request's nodes or ranks are not what the partition and application allow (400, naming the field)."""

    status = 400


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
    ``guard``: the library the ranks run with (pvhpc/node/pvserver_guard.c, built by ``pvhpc runtime install``).

    A desktop application's session is its pvserver whatever its size: of one rank (asked for or not), one pvserver
    process started directly (no MPI launcher, and so with the job's X display: pvhpc/node/parallel.py), under the
    same guard; ``desktop`` tells the node that the pvserver's end after its client left is the session's end, not
    a crash (docs/desktop.md)."""
    if not ranks and not app.desktop:
        return ""
    one_process = app.desktop and (ranks or 1) == 1
    mpi = [] if one_process or not ranks else launch(app.mpi_launcher, nodes, ranks)
    return json.dumps({"mpi": mpi, "pvserver": list(app.pvserver), "connect": list(app.pvserver_connect),
                       "ranks": ranks or 1, "guard": guard, "desktop": app.desktop})
