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
from pvhpc.sessions.durations import format_minutes, parse_minutes

SPEC_FIELDS = ("application", "partition", "gpus", "walltime", "account", "qos", "data")


class RequestError(Exception):
    """The request is wrong; ``field`` names what, ``status`` is the HTTP status to answer with."""

    def __init__(self, field: str | None, message: str, status: int = 400):
        self.field, self.message, self.status = field, message, status
        super().__init__(f"{field}: {message}" if field else message)


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

    def request_key(self, user: str) -> str:
        """Identifies 'the same request from the same user' for launcher retries."""
        canonical = json.dumps({"user": user, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _name_field(body: dict, field: str) -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise RequestError(field, f"must be a string, not {type(value).__name__}")
    if not NAME.match(value):
        raise RequestError(field, "must be a name of letters, digits, '_', '.' or '-' (at most 64)")
    return value


def _choose(options: tuple[str, ...], value: str | None, field: str, what: str) -> str | None:
    if value is None:
        return None
    if value not in options:
        allowed = ", ".join(options) if options else "none"
        raise RequestError(field, f"{value!r} is not {what} you may use (allowed: {allowed})")
    return value


def _gpus(body: dict, partition: PartitionConfig) -> int:
    value = body.get("gpus")
    if value is None:
        return partition.gpus.default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError("gpus", f"must be a whole number, not {value!r}"[:200])
    if value < 0:
        raise RequestError("gpus", "must not be negative")
    if value > partition.gpus.max:
        raise RequestError("gpus", f"{value} is over partition {partition.name}'s maximum of {partition.gpus.max}")
    return value


def _walltime(body: dict, partition: PartitionConfig) -> int:
    value = body.get("walltime")
    if value is None:
        return partition.walltime.default
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and len(value) > 32):
        raise RequestError("walltime", "must be minutes or HH:MM:SS")
    try:
        minutes = parse_minutes(value)
    except ValueError as e:
        raise RequestError("walltime", str(e)[:200]) from None
    if minutes is None or minutes <= 0:
        raise RequestError("walltime", "must be a positive time")
    if minutes > partition.walltime.max:
        raise RequestError(
            "walltime",
            f"{format_minutes(minutes)} is over partition {partition.name}'s maximum of "
            f"{format_minutes(partition.walltime.max)}",
        )
    return minutes


def _data(body: dict, app: ApplicationConfig) -> tuple[str, str | None]:
    value = body.get("data")
    default_root = str(app.data_roots[0])
    if value is None or value == "":
        return default_root, None
    if not isinstance(value, str):
        raise RequestError("data", f"must be a path string, not {type(value).__name__}")
    if len(value) > 4096 or "\0" in value or "\n" in value or "\r" in value:
        raise RequestError("data", "is not a usable path (too long, or holds NUL or line breaks)")
    candidate = Path(value) if os.path.isabs(value) else app.data_roots[0] / value
    resolved = Path(os.path.realpath(candidate))
    for root in app.data_roots:
        if resolved == root or root in resolved.parents:
            if not resolved.is_file():
                raise RequestError("data", f"{value!r} is not an existing file")
            return str(root), str(resolved.relative_to(root))
    roots = ", ".join(str(r) for r in app.data_roots)
    raise RequestError("data", f"{value!r} is outside the allowed data directories ({roots})")


def parse_spec(config: SiteConfig, body: Any, strict: bool) -> SessionSpec:
    """Check a request body. With ``strict``, unknown keys are errors (the native API);
    without, they are ignored (ParaViewWeb clients send their whole config to the launcher)."""
    if not isinstance(body, dict):
        raise RequestError(None, "the request body must be a JSON object")
    if strict:
        unknown = sorted(set(body) - set(SPEC_FIELDS))
        if unknown:
            raise RequestError(unknown[0], f"unknown field (known: {', '.join(SPEC_FIELDS)})")
    app_name = _name_field(body, "application")
    if app_name is None:
        raise RequestError("application", "is required")
    app = config.applications.get(app_name)
    if app is None:
        raise RequestError("application", f"{app_name!r} is not an application of this site "
                                          f"({', '.join(config.applications)})")
    partition_name = _choose(app.partitions, _name_field(body, "partition"), "partition",
                             f"a partition application {app_name}") or app.default_partition
    partition = config.partitions[partition_name]
    account = _choose(partition.accounts, _name_field(body, "account"), "account", "an account")
    qos = _choose(partition.qos, _name_field(body, "qos"), "qos", "a QoS")
    gpus = _gpus(body, partition)
    walltime = _walltime(body, partition)
    data_root, data_file = _data(body, app)
    return SessionSpec(app_name, partition_name, gpus, walltime, account, qos, data_root, data_file)
