"""Apache's RewriteMap file: one ``<sessionId> <host>:<port>|<owner>`` line per routable session.

The whole file is written anew on every change and moved into place with
``os.replace``: Apache (``RewriteMap ... txt:FILE``, re-read when the file's
mtime changes) sees either the old map or the new one, never half of one.
Rewriting everything keeps the file exactly equal to the table, so a line can
never outlive its session; bench/proxymap_bench.py measures what that costs.

The file is mode 0640. Apache's worker processes read it, so its group should be
the group they run as (``frontend.map_group``; www-data on Debian); the pvhpc
service must be allowed to give files that group (be a member of it, or root),
and must be able to create files in the directory (see docs/apache.md).
"""

from __future__ import annotations

import grp
import os
import tempfile
from pathlib import Path
from typing import Mapping

from pvhpc.errors import PvhpcError

MODE = 0o640


class ProxyMapError(PvhpcError):
    """The map file cannot be written where and how the site config says.

    ``about`` is "directory" or "group": which of the two settings to fix.
    """

    def __init__(self, message: str, *, about: str = "directory"):
        super().__init__(message)
        self.about = about


def group_id(group: str | int | None) -> int | None:
    """A group name or number as a gid; None keeps the writing process's own group."""
    if group is None:
        return None
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise ProxyMapError(f"group {group!r} does not exist on this host", about="group") from None


class ProxyMapFile:
    def __init__(self, path: str | os.PathLike, group: str | int | None = None):
        self.path = Path(path)
        self.group = group
        self.gid = group_id(group)

    def check(self) -> None:
        """Fail now, with a message that says why, if ``write`` would fail later."""
        directory = self.path.parent
        if not directory.is_dir():
            group = f" -g {self.group}" if self.group is not None else ""
            raise ProxyMapError(f"directory {directory} does not exist "
                                f"(create it: install -d -m 0750{group} {directory})")
        try:
            fd, probe = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".check", dir=directory)
        except OSError as e:
            raise ProxyMapError(f"directory {directory} is not writable by this process "
                                f"(uid {os.geteuid()}): {e.strerror}") from None
        try:
            self._set_owner_and_mode(fd)
        finally:
            os.close(fd)
            os.unlink(probe)

    def write(self, targets: Mapping[str, str]) -> None:
        """Replace the file with exactly ``targets`` (session id -> "host:port"), atomically."""
        text = "".join(f"{sid} {target}\n" for sid, target in sorted(targets.items()))
        directory = self.path.parent
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=directory)
        except OSError as e:
            raise ProxyMapError(f"cannot write the proxy map in {directory}: {e.strerror}") from None
        try:
            with os.fdopen(fd, "w") as f:
                self._set_owner_and_mode(f.fileno())
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        # The rename itself is durable only once the directory is synced.
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def read(self) -> dict[str, str]:
        """The map as Apache would read it (for checks and tests)."""
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return {}
        return dict(line.split(" ", 1) for line in lines if line and not line.startswith("#"))

    def _set_owner_and_mode(self, fd: int) -> None:
        os.fchmod(fd, MODE)
        if self.gid is not None:
            try:
                os.fchown(fd, -1, self.gid)
            except OSError as e:
                raise ProxyMapError(f"cannot give the proxy map group {self.group!r} (gid {self.gid}): {e.strerror}; "
                                    "the pvhpc service must be a member of that group", about="group") from None
