"""The Apache front end: clients reach sessions through Apache's /proxy (and /session/) URLs; pvhpc keeps its map file.

Apache's part is the configuration in apache/ (``pvhpc apache render``); this
part keeps the RewriteMap file equal to the set of routable sessions. The file
is rewritten only when that set changes, not on every state detail.
"""

from __future__ import annotations

import logging
from typing import Iterable

from tornado.ioloop import PeriodicCallback

from pvhpc.db.store import SessionRecord
from pvhpc.frontends.base import FrontEnd, FrontEndError
from pvhpc.frontends.proxymap import ProxyMapError, ProxyMapFile
from pvhpc.frontends.routes import OWNER, RouteTable

log = logging.getLogger("pvhpc.frontends.apache")
RETRY_SECONDS = 5


class ApacheFrontEnd(FrontEnd):
    @classmethod
    def from_config(cls, config, *, served_applications: frozenset[str] = frozenset(), ssh_link=None,
                    traffic=None, limits=None) -> "ApacheFrontEnd":
        return cls(config.session_url, ProxyMapFile(config.map_file, config.map_group), served_applications)

    @classmethod
    def config_problem(cls, config) -> tuple[str, str] | None:
        # The map is written while sessions change; a directory it cannot be written
        # to must stop the service now, not fail the first session that becomes ready.
        try:
            ProxyMapFile(config.map_file, config.map_group).check()
        except ProxyMapError as e:
            return ("map_group" if e.about == "group" else "map_file", str(e))
        return None

    def __init__(self, session_url: str, map_file: ProxyMapFile, served_applications: frozenset[str] = frozenset()):
        super().__init__(session_url, served_applications)
        self.map_file = map_file
        self.routes = RouteTable(self.routable)
        self._stale = False    # the last write failed: the file lags the table
        self._sharees: dict[str, frozenset[str]] = {}   # session id -> users it is shared with (sessions/sharing.py)
        self._retry: PeriodicCallback | None = None

    async def start(self) -> None:
        try:
            self.map_file.check()
        except ProxyMapError as e:
            raise FrontEndError(f"frontend.map_file {self.map_file.path}: {e}") from None
        # A failed write is retried even if no session changes after it.
        self._retry = PeriodicCallback(self._write_if_stale, RETRY_SECONDS * 1000)
        self._retry.start()

    async def stop(self) -> None:
        # The file stays: sessions that outlive this process stay reachable, and
        # the next start rebuilds it from the store.
        if self._retry:
            self._retry.stop()

    def rebuild(self, records: Iterable[SessionRecord]) -> None:
        self.routes.reset(records)
        self._write()

    def update(self, record: SessionRecord) -> None:
        if record.state == "ended":
            self._sharees.pop(record.id, None)
        if self.routes.apply(record) or self._stale:
            self._write()

    def set_sharees(self, session_id: str, users: frozenset[str]) -> None:
        if self._sharees.get(session_id, frozenset()) == users:
            return
        if users:
            self._sharees[session_id] = users
        else:
            self._sharees.pop(session_id, None)
        if self.routes.get(session_id) is not None:
            self._write()

    def entries(self) -> dict[str, str]:
        """The map's lines: each routable session's "<id> <host>:<port>|<owner>", from which /proxy checks the
        owner (a websocket to another user's server would let it feed that user's client); and for a session
        whose server serves its own client also "<id>.http <host>:<port>|<owner>", for /session/<id>/. (Ids have
        no dots, so the two kinds of key never meet.) A user name that cannot be written there is left out, so
        its sessions are unreachable through Apache rather than anyone's."""
        out = {}
        for route in self.routes:
            if not OWNER.match(route.user):
                continue
            out[route.session_id] = f"{route.target}|{route.user}"
            # A user the session is shared with: "<id>.as.<user>", which /proxy looks up with the user Apache
            # logged in (apacheconf.py); the session's server still wants their own key (node/share_gate.py).
            for sharee in sorted(self._sharees.get(route.session_id, ())):
                if OWNER.match(sharee) and sharee != route.user:
                    out[f"{route.session_id}.as.{sharee}"] = f"{route.target}|{sharee}"
            if self.serves_http(route):
                out[f"{route.session_id}.http"] = f"{route.target}|{route.user}"
        return out

    def _write_if_stale(self) -> None:
        if self._stale:
            self._write()

    def _write(self) -> None:
        # Called from the event bus inside a state change: a full disk must not
        # fail the change itself. The next change tries again.
        try:
            self.map_file.write(self.entries())
            self._stale = False
        except (OSError, ProxyMapError) as e:
            self._stale = True
            log.error("could not write the proxy map %s (%d sessions): %s", self.map_file.path, len(self.routes), e)
