"""A session request, checked against the site config and turned into a SessionSpec.

Nothing from a request reaches a job script without passing through here: every
field is checked for type, range and membership in what the site allows, and
errors name the field.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pwd
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pvhpc.config import NAME, ApplicationConfig, PartitionConfig, SiteConfig
from pvhpc.errors import PvhpcError
from pvhpc.sessions import parallel_request
from pvhpc.sessions.outcomes import NotAllowed
from pvhpc.jobs.durations import format_minutes, parse_minutes

SPEC_FIELDS = ("application", "partition", "gpus", "walltime", "account", "qos", "data", "nodes", "ranks",
               "saved_state", "version")
# Old spellings still taken, each for the field it became: "state" said a saved .pvsm, beside a session's state.
DEPRECATED_FIELDS = {"state": "saved_state"}


class RequestError(PvhpcError):
    """The request is wrong; ``field`` names what (400)."""

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
    ranks: int = 0               # a parallel session's MPI ranks (pvhpc/sessions/parallel_request.py); 0: one process
    saved_state_file: str | None = None   # a saved ParaView state to start from (its content: sessions/savedstates.py)
    version: str | None = None   # one of the application's versions (its modules); None: it offers none

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


def _data(body: dict, app: ApplicationConfig, user: str | None = None) -> tuple[str, str | None]:
    value = body.get("data")
    default_root = str(app.data_roots[0])
    if value is None or value == "":
        return default_root, None
    # Only now: the user's account and groups are an NSS lookup or two, which most requests (no data file) need not.
    access = UserAccess.of(user)
    if not isinstance(value, str):
        raise RequestError(f"must be a path string, not {type(value).__name__}", field="data")
    if len(value) > 4096 or "\0" in value or "\n" in value or "\r" in value:
        raise RequestError("is not a usable path (too long, or holds NUL or line breaks)", field="data")
    candidate = Path(value) if os.path.isabs(value) else app.data_roots[0] / value
    resolved = Path(os.path.realpath(candidate))
    for root in app.data_roots:
        if resolved == root or root in resolved.parents:
            refused, is_file = judged(access, resolved, READ, Path.is_file, field="data",
                                      unchecked=f", so {value!r} cannot be checked")
            if refused is not None:
                what = "file" if refused == resolved else "directory"
                raise NotAllowed(f"{refused} is a {what} {access.name} may not read", field="data")
            if not is_file:
                raise RequestError(f"{value!r} is not an existing file", field="data")
            return str(root), str(resolved.relative_to(root))
    roots = ", ".join(str(r) for r in app.data_roots)
    raise RequestError(f"{value!r} is outside the allowed data directories ({roots})", field="data")


READ, WRITE, SEARCH = 4, 2, 1   # the permission bits asked for: r, w, x (a directory's x: search it)
_ACL = {"user_obj": 0x01, "user": 0x02, "group_obj": 0x04, "group": 0x08, "mask": 0x10, "other": 0x20}


class UserAccess:
    """What a Unix user may do to a file, decided as the kernel decides it: the user's uid, primary and
    supplementary groups (os.getgrouplist, through NSS) against the file's mode bits and POSIX access ACL.

    pvhpc runs as its own account and cannot act as a user (sudo lets it run only sbatch, scancel and tail as
    them), so it asks this before it shows a user a directory (the data browser) or takes a data file. Where
    the service itself cannot look (a directory only its user may search), OSError tells so."""

    def __init__(self, user: str):
        account = pwd.getpwnam(user)   # KeyError: no account on this host
        self.name, self.uid = user, account.pw_uid
        self.groups = frozenset(os.getgrouplist(user, account.pw_gid))

    @classmethod
    def of(cls, user: str | None) -> "UserAccess | None":
        """The user's, or None for a user with no account here (jobs then run as the service, which decides)."""
        if not user:
            return None
        try:
            return cls(user)
        except KeyError:
            return None

    def may(self, path: Path, want: int) -> bool:
        """Whether the user may ``want`` (READ, SEARCH, ... or'ed) ``path``; OSError when the service cannot look."""
        if self.uid == 0:
            return True
        st = os.stat(path)
        acl = _access_acl(path)
        if acl is None:
            if st.st_uid == self.uid:
                bits = st.st_mode >> 6
            elif st.st_gid in self.groups:
                bits = st.st_mode >> 3
            else:
                bits = st.st_mode
            return bits & want == want
        # acl(5), "access check algorithm": the owner; a named user (through the mask); the groups, any of
        # which may grant (through the mask); else other.
        mask = next((perm for tag, perm, _ in acl if tag == _ACL["mask"]), 7)
        if st.st_uid == self.uid:
            return next(perm for tag, perm, _ in acl if tag == _ACL["user_obj"]) & want == want
        for tag, perm, ident in acl:
            if tag == _ACL["user"] and ident == self.uid:
                return perm & mask & want == want
        matched = False
        for tag, perm, ident in acl:
            if (tag == _ACL["group_obj"] and st.st_gid in self.groups) or (tag == _ACL["group"]
                                                                          and ident in self.groups):
                matched = True
                if perm & mask & want == want:
                    return True
        if matched:
            return False
        return next(perm for tag, perm, _ in acl if tag == _ACL["other"]) & want == want

    def refusal(self, path: Path, want: int) -> Path | None:
        """Where the user's way to ``path`` (a real path, links resolved) ends: the first directory from / the
        user may not search, or ``path`` itself when the user may not ``want`` it; None when the way is open.
        Nothing past that point is looked at. OSError: the service cannot look (FileNotFoundError: not there)."""
        for directory in reversed(path.parents):
            if not self.may(directory, SEARCH):
                return directory
        return None if self.may(path, want) else path


def _access_acl(path: Path) -> list[tuple[int, int, int]] | None:
    """The POSIX access ACL of ``path`` as (tag, permissions, id) entries, or None where it has none."""
    try:
        raw = os.getxattr(path, "system.posix_acl_access")
    except OSError as e:
        if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
            return None
        raise
    if len(raw) < 4 or (len(raw) - 4) % 8 or struct.unpack_from("<I", raw)[0] != 2:
        raise OSError(errno.EINVAL, f"an access ACL pvhpc cannot read on {path}")
    return [struct.unpack_from("<HHI", raw, offset) for offset in range(4, len(raw), 8)]


def judged(access: "UserAccess | None", path: Path, want: int, is_kind, field: str | None = None,
           unchecked: str = "") -> tuple[Path | None, bool]:
    """Where on ``path``'s way the user may not ``want`` (None: nowhere, or no account here) and whether
    ``is_kind(path)``: the user's own permissions first, so nothing past a directory the user may not search is
    looked at. Where the service itself cannot look, NotAllowed naming the place; a name too long stays the
    client's doing (400, web/errors.py)."""
    try:
        return (access.refusal(path, want) if access is not None else None), is_kind(path)
    except FileNotFoundError:
        return None, False
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise
        raise NotAllowed(f"{service_refusal(path)} cannot be read by pvhpc's service account{unchecked}",
                         field=field) from None


def service_refusal(path: Path) -> Path:
    """The first directory from / the service itself cannot search on the way to ``path`` (else ``path``)."""
    for directory in reversed(path.parents):
        if not os.access(directory, os.X_OK):
            return directory
    return path


def _version(body: dict, app: ApplicationConfig) -> str | None:
    """The application's version asked for (its default when none is), checked against the versions it offers."""
    value = body.get("version")
    if value is None or value == "":
        return app.default_version
    offered = ", ".join(app.versions) if app.versions else "none"
    if not isinstance(value, str):
        raise RequestError(f"must be a version name, one of: {offered}", field="version")
    if value not in app.versions:
        raise RequestError(f"{value[:100]!r} is not a version of application {app.name} (offered: {offered})",
                           field="version")
    return value


def _saved_state(body: dict) -> str | None:
    """The form of a ``saved_state`` path (or of ``state``, its deprecated old name); what it holds is checked
    before submit (pvhpc/sessions/savedstates.py)."""
    given = [name for name in ("saved_state", "state") if body.get(name) is not None and body.get(name) != ""]
    if len(given) > 1:
        raise RequestError("was given twice, as 'saved_state' and as 'state' (its deprecated old name): "
                           "give 'saved_state' only", field="saved_state")
    if not given:
        return None
    value = body[given[0]]
    if not isinstance(value, str):
        raise RequestError(f"must be a path string, not {type(value).__name__}", field="saved_state")
    if len(value) > 4096 or "\0" in value or "\n" in value or "\r" in value or not os.path.isabs(value):
        raise RequestError("must be an absolute path to a .pvsm file (without NUL or line breaks)",
                           field="saved_state")
    if not value.endswith(".pvsm"):
        raise RequestError(f"{value[:200]!r} is not a ParaView state file (.pvsm)", field="saved_state")
    return value


def parse_spec(config: SiteConfig, body: Any, strict: bool, user: str | None = None) -> SessionSpec:
    """Check a request body. With ``strict``, unknown keys are errors (the native API);
    without, they are ignored (ParaViewWeb clients send their whole config to the launcher).
    With ``user``, a data file must be one that user may read (UserAccess), else NotAllowed naming where not.
    A deprecated field name (DEPRECATED_FIELDS) is taken as the field it became."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    if not strict:
        # A ParaViewWeb client sends its page's URL query as strings: an empty one (?partition=) says nothing.
        body = {k: v for k, v in body.items()
                if not ((k in SPEC_FIELDS or k in DEPRECATED_FIELDS) and isinstance(v, str) and not v.strip())}
    if strict:
        unknown = sorted(set(body) - set(SPEC_FIELDS) - set(DEPRECATED_FIELDS))
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
    data_root, data_file = _data(body, app, user)
    nodes, ranks = parallel_request.sizes(body, partition, app)
    return SessionSpec(app_name, partition_name, gpus, walltime, account, qos, data_root, data_file, nodes, ranks,
                       _saved_state(body), _version(body, app))
