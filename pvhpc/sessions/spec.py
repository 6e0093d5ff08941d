"""A session request, checked against the site config and turned into a SessionSpec.

Nothing from a request reaches a job script without passing through here: every
field is checked for type, range and membership in what the site allows, and
errors name the field.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pvhpc.config import NAME, ApplicationConfig, PartitionConfig, SiteConfig
from pvhpc.errors import PvhpcError
from pvhpc.sessions import parallel
from pvhpc.sessions.durations import format_minutes, parse_minutes

SPEC_FIELDS = ("application", "partition", "gpus", "walltime", "account", "qos", "data", "nodes", "ranks",
               "state")


class RequestError(PvhpcError):
    """The request is wrong; ``field`` names what (400, or 429 for a limit the request would pass)."""

    status = 400


@dataclass(frozen=True)
class SessionSpec:
    application: str
    partition: str
    gpus: int
    walltime_minutes: int
    account: str | None
    qos: str | None
    data_root: str
    data_file: str | None        # relative to data_root
    nodes: int = 1
    ranks: int = 0               # a parallel session's MPI ranks (pvhpc/sessions/parallel.py); 0: one process
    state_file: str | None = None   # a saved ParaView state to start from (its content: sessions/savedstates.py)

    def request_key(self, user: str) -> str:
        """Identifies 'the same request from the same user' for launcher retries."""
        canonical = json.dumps({"user": user, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _name_field(body: dict, field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(f"must be a string, not {type(value).__name__}", field=field)
    if not NAME.match(value):
        raise RequestError("must be a name of letters, digits, '_', '.' or '-' (at most 64)", field=field)
    return value


def _choose(options: tuple[str, ...], value: str | None, field: str, what: str) -> str | None:
    if value is None:
        return None
    if value not in options:
        allowed = ", ".join(options) if options else "none"
        raise RequestError(f"{value!r} is not {what} you may use (allowed: {allowed})", field=field)
    return value


def _gpus(body: dict, partition: PartitionConfig) -> int:
    value = body.get("gpus")
    if value is None:
        return partition.gpus.default
    if isinstance(value, str) and value.strip().isdigit() and len(value) <= 8:
        value = int(value)   # from a URL query (an app page's ?gpus=2), every field is a string
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"must be a whole number, not {value!r}"[:200], field="gpus")
    if value < 0:
        raise RequestError("must not be negative", field="gpus")
    if value > partition.gpus.max:
        raise RequestError(f"{value} is over partition {partition.name}'s maximum of {partition.gpus.max}",
                           field="gpus")
    return value


def _walltime(body: dict, partition: PartitionConfig) -> int:
    value = body.get("walltime")
    if value is None:
        return partition.walltime.default
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and len(value) > 32):
        raise RequestError("must be minutes or HH:MM:SS", field="walltime")
    try:
        minutes = parse_minutes(value)
    except ValueError as e:
        raise RequestError(str(e)[:200], field="walltime") from None
    if minutes is None or minutes <= 0:
        raise RequestError("must be a positive time", field="walltime")
    if minutes > partition.walltime.max:
        raise RequestError(
            f"{format_minutes(minutes)} is over partition {partition.name}'s maximum of "
            f"{format_minutes(partition.walltime.max)}",
            field="walltime",
        )
    return minutes


def _data(body: dict, app: ApplicationConfig) -> tuple[str, str | None]:
    value = body.get("data")
    default_root = str(app.data_roots[0])
    if value is None or value == "":
        return default_root, None
    if not isinstance(value, str):
        raise RequestError(f"must be a path string, not {type(value).__name__}", field="data")
    if len(value) > 4096 or "\0" in value or "\n" in value or "\r" in value:
        raise RequestError("is not a usable path (too long, or holds NUL or line breaks)", field="data")
    candidate = Path(value) if os.path.isabs(value) else app.data_roots[0] / value
    resolved = Path(os.path.realpath(candidate))
    for root in app.data_roots:
        if resolved == root or root in resolved.parents:
            if not resolved.is_file():
                raise RequestError(f"{value!r} is not an existing file", field="data")
            return str(root), str(resolved.relative_to(root))
    roots = ", ".join(str(r) for r in app.data_roots)
    raise RequestError(f"{value!r} is outside the allowed data directories ({roots})", field="data")


def _state(body: dict) -> str | None:
    """The form of a ``state`` path; what it holds is checked before submit (pvhpc/sessions/savedstates.py)."""
    value = body.get("state")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RequestError(f"must be a path string, not {type(value).__name__}", field="state")
    if len(value) > 4096 or "\0" in value or "\n" in value or "\r" in value or not os.path.isabs(value):
        raise RequestError("must be an absolute path to a .pvsm file (without NUL or line breaks)", field="state")
    if not value.endswith(".pvsm"):
        raise RequestError(f"{value[:200]!r} is not a ParaView state file (.pvsm)", field="state")
    return value


def parse_spec(config: SiteConfig, body: Any, strict: bool) -> SessionSpec:
    """Check a request body. With ``strict``, unknown keys are errors (the native API);
    without, they are ignored (ParaViewWeb clients send their whole config to the launcher)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if not strict:
        # A ParaViewWeb client sends its page's URL query as strings: an empty one (?partition=) says nothing.
        body = {k: v for k, v in body.items() if not (k in SPEC_FIELDS and isinstance(v, str) and not v.strip())}
    if strict:
        unknown = sorted(set(body) - set(SPEC_FIELDS))
        if unknown:
            raise RequestError(f"unknown field (known: {', '.join(SPEC_FIELDS)})", field=unknown[0])
    app_name = _name_field(body, "application")
    if app_name is None:
        raise RequestError("is required", field="application")
    app = config.applications.get(app_name)
    if app is None:
        raise RequestError(f"{app_name!r} is not an application of this site "
                           f"({', '.join(config.applications)})", field="application")
    partition_name = _choose(app.partitions, _name_field(body, "partition"), "partition",
                             f"a partition application {app_name}") or app.default_partition
    partition = config.partitions[partition_name]
    account = _choose(partition.accounts, _name_field(body, "account"), "account", "an account")
    qos = _choose(partition.qos, _name_field(body, "qos"), "qos", "a QoS")
    gpus = _gpus(body, partition)
    walltime = _walltime(body, partition)
    data_root, data_file = _data(body, app)
    nodes, ranks = parallel.sizes(body, partition, app)
    return SessionSpec(app_name, partition_name, gpus, walltime, account, qos, data_root, data_file, nodes, ranks,
                       _state(body))
