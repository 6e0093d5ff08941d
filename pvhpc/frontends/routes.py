"""Where each routable session listens: the in-memory table both map-keeping front ends share.

A route is a session id and the host:port of its server. Ids and hosts are
checked here (against pvhpc/jobs/ids.py), because both end up in places where a stray space or
newline would be read as something else (a line of Apache's map file, a URL).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from pvhpc.db.store import SessionRecord
from pvhpc.jobs.ids import HOST, SESSION_ID

OWNER = re.compile(r"^[^\s|]{1,255}$")   # written after a '|' in Apache's map: no separator, no space


@dataclass(frozen=True)
class Route:
    session_id: str
    host: str
    port: int
    user: str
    application: str = ""

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


def route_of(record: SessionRecord) -> Route | None:
    """The record's route, or None when its id or address could not be written safely."""
    if not (SESSION_ID.match(record.id or "") and HOST.match(record.host or "")):
        return None
    if not isinstance(record.port, int) or not 0 < record.port < 65536:
        return None
    return Route(record.id, record.host, record.port, record.user, record.application or "")


class RouteTable:
    """Exactly the routable sessions, kept in step by ``apply`` (each change) and ``reset`` (all at once)."""

    def __init__(self, routable: Callable[[SessionRecord], bool]):
        self._routable = routable
        self._routes: dict[str, Route] = {}

    def apply(self, record: SessionRecord) -> bool:
        """Take one session change; True when the table changed."""
        route = route_of(record) if self._routable(record) else None
        old = self._routes.get(record.id)
        if route == old:
            return False
        if route is None:
            del self._routes[record.id]
        else:
            self._routes[record.id] = route
        return True

    def reset(self, records: Iterable[SessionRecord]) -> None:
        self._routes = {}
        for record in records:
            self.apply(record)

    def get(self, session_id: str) -> Route | None:
        return self._routes.get(session_id)

    def targets(self) -> dict[str, str]:
        return {sid: route.target for sid, route in self._routes.items()}

    def __iter__(self):
        return iter(list(self._routes.values()))

    def __len__(self) -> int:
        return len(self._routes)
