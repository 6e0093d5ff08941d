"""The front-end interface: a session URL for clients, and a mapping kept in step with the store.

``update`` is called with every session change (from the event bus), ``rebuild``
once at start with every live session; a front end that keeps a map (Apache's
RewriteMap, the built-in proxy's table) holds exactly the ready sessions.
"""

from __future__ import annotations

from typing import Iterable

from pvhpc.db.store import SessionRecord
from pvhpc.errors import PvhpcError
from pvhpc.jobs.states import SessionState

# Ready, or last seen ready while the scheduler cannot be asked.
ROUTABLE = (SessionState.READY.value, SessionState.UNKNOWN.value)


class FrontEndError(PvhpcError):
    """A front end cannot do its job (e.g. its map file cannot be written); the service must not start."""


class FrontEnd:
    def __init__(self, session_url: str, served_applications: frozenset[str] = frozenset()):
        """``served_applications``: applications whose session server serves its own web client over HTTP (trame
        apps); a front end that proxies proxies them at /session/<id>/ too, HTTP and websocket, to the session's
        owner only (the site's applications with ``serves_own_client``)."""
        self.url_template = session_url
        self.served_applications = served_applications

    @classmethod
    def from_config(cls, config, *, served_applications: frozenset[str] = frozenset(), ssh_link=None,
                    traffic=None, limits=None) -> "FrontEnd":
        """Built from the site's ``frontend`` section (a FrontendConfig), with what the service gives every front
        end, for one that carries sessions' traffic itself: ``ssh_link`` (SSH mode's link to the login host, or
        None), ``traffic`` (what counts a proxy's connections, or None) and ``limits`` (the site's limits: what a
        user may hold open). One that needs more overrides this."""
        return cls(config.session_url, served_applications)

    @classmethod
    def config_problem(cls, config) -> tuple[str, str] | None:
        """What in the site's ``frontend`` section this front end cannot work with, as (key, why), checked when
        the config is read; None: nothing."""
        return None

    def open_connections(self) -> int:
        """Client connections this front end carries now (a proxy's websockets; 0 for one that carries none)."""
        return 0

    def session_url(self, record: SessionRecord) -> str | None:
        if not (record.host and record.port):
            return None
        return self.url_template.format(id=record.id, host=record.host, port=record.port)

    def update(self, record: SessionRecord) -> None:
        pass

    def set_sharees(self, session_id: str, users: frozenset[str]) -> None:
        """The users a session is shared with now (sessions/sharing.py), for a front end that checks who may
        reach a session on its own (Apache's map); the built-in one asks pvhpc at each connection instead."""

    def rebuild(self, records: Iterable[SessionRecord]) -> None:
        pass

    def handlers(self, ctx) -> list:
        """Extra Tornado routes this front end serves (the built-in proxy's /proxy and /session/<id>/)."""
        return []

    async def start(self) -> None:
        """Called once when the service starts, before rebuild (check paths, open connections)."""

    async def stop(self) -> None:
        pass

    def routable(self, record: SessionRecord) -> bool:
        """Ready, or last seen ready while the scheduler cannot be asked (its server is most likely still up)."""
        return bool(record.host and record.port) and record.state in ROUTABLE

    def serves_http(self, route) -> bool:
        """The route's server is one whose own web client is proxied at /session/<id>/."""
        return route.application in self.served_applications


class DirectFrontEnd(FrontEnd):
    """No front end: clients connect straight to node:port (the node must be reachable from them)."""
