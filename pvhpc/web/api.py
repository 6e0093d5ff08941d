"""pvhpc's native API (/api/v1): create returns at once; a push channel reports each change."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

from tornado.iostream import StreamClosedError

from pvhpc.client import pvsc
from pvhpc.db import tokens
from pvhpc.scheduler import SchedulerUnavailable
from pvhpc.jobs import reports
from pvhpc.jobs.durations import format_minutes
from pvhpc.sessions.events import Notice
from pvhpc.sessions.sharing import application_sharing
from pvhpc.sessions.spec import parse_spec
from pvhpc.jobs.states import SessionState
from pvhpc.db.store import SessionRecord
from pvhpc.web.base import JSONHandler
from pvhpc.web.errors import APIError

S = SessionState


class SessionsHandler(JSONHandler):
    async def get(self) -> None:
        user = self.require_user()
        # Everyone may ask for all; only staff get it, and the answer says which they got.
        everyone = bool(self.get_query_argument("all", "")) and self.ctx.auth.is_staff(user)
        state = self.get_query_argument("state", "")
        live, wanted = state == "live", None
        if state and not live:
            try:
                wanted = S(state)
            except ValueError:
                raise APIError(f"{state!r} is not a session state or 'live'", field="state") from None
        records = await self.ctx.service.sessions_of(None if everyone else user, state=wanted, live=live,
                                                     limit=1000)
        listed = [self.session_view(r, with_secret=r.user == user) for r in records]
        if not everyone and (wanted is None or wanted is not S.ENDED):
            # Sessions others shared with this user: live ones only, each marked with its owner and their role.
            sharing = self.ctx.sharing
            listed += [sharing.view_for_sharee(self.session_view(r, with_secret=False), r, g)
                       for r, g in await sharing.shared_with(user) if wanted is None or r.state == wanted.value]
        self.send({"all": everyone, "sessions": listed})

    async def post(self) -> None:
        user = self.require_user()
        body = self.json_body()
        # "continue": go on in a successor job before the walltime (pvhpc/sessions/continuation.py); not a field of
        # the job's own request, checked here before anything is recorded or submitted.
        keep_on = False
        if isinstance(body, dict) and "continue" in body:
            body = dict(body)
            keep_on = body.pop("continue")
            if not isinstance(keep_on, bool):
                raise APIError("must be true or false", field="continue")
        spec = parse_spec(self.ctx.config, body, strict=True, user=user)
        if keep_on:
            if self.ctx.continuation is None:
                raise APIError("this service does not continue sessions", status=403, field="continue")
            self.ctx.continuation.check_launch(spec)
        record = await self.ctx.service.create(user, spec, continue_wanted=keep_on)
        self.send(self.session_view(record), status=201)


class SessionHandler(JSONHandler):
    async def get(self, session_id: str) -> None:
        record, grant = await self.session_with_grant(session_id)
        if grant is not None:
            self.send(self.ctx.sharing.view_for_sharee(self.session_view(record, with_secret=False), record, grant))
            return
        data = self.session_view(record, with_secret=record.user == self.current_user)
        data["history"] = [{"at": e.at.isoformat() + "Z", "state": e.state, "detail": e.detail}
                           for e in await self.ctx.service.history(record.id)]
        self.send(data)

    async def delete(self, session_id: str) -> None:
        record = await self.ctx.service.cancel(await self.own_session(session_id))
        self.send(self.session_view(record))


class SessionLogHandler(JSONHandler):
    """The job's output (the server's log), for its owner: the first place to look when a session fails."""

    async def get(self, session_id: str) -> None:
        record = await self.own_session(session_id)
        text, truncated = await self.ctx.logs.read_tail(record.user, record.job_name)
        self.send({"id": record.id, "job_id": record.job_id, "truncated": truncated, "log": text})


class ReportHandler(JSONHandler):
    """The job's report from the node (POST), and its watchdog's question whether the session is still live
    (GET: ``{"live": true, "state": ...}``, or ``{"live": false, "state": "ended", "end_reason": ...}``);
    both authenticated by the session's own token, not by a user, and refused alike (403) for an unknown
    session or a wrong token."""

    # Every live session's job asks every runtime.watchdog_interval seconds: the access log says so at DEBUG.
    routine_methods = frozenset({"GET"})

    async def get(self, session_id: str) -> None:
        answer = await self.ctx.service.liveness(session_id, report_token(self.request))
        if answer.get("live") and self.ctx.sharing is not None and self.ctx.config.sharing.enabled:
            # Every live job asks this often: with sharing off no grant can stand, so the grants are not read.
            # The grants that stand, for the server's share gate (pvhpc/node/share_gate.py): ids and roles only,
            # nothing a key can be made from. The job's user (the owner) may read them; they are theirs.
            # Said only when there are any: no "grants" means none stand, so a revoke of the last one still cuts.
            grants = await self.ctx.sharing.grants_for_session(session_id)
            if grants:
                answer["grants"] = grants
            # The grants whose sharees the session's server has connected now: a new one is a line in the history.
            connected = self.get_query_argument("connected", "")
            if connected:
                await self.ctx.sharing.seen_connected(session_id, connected.split(","))
        self.send(answer)

    async def post(self, session_id: str) -> None:
        event = None
        try:
            body = self.json_body()
            event = body.get("event") if isinstance(body, dict) else None
            token = report_token(self.request)
            try:
                report = reports.parse(body)
            except reports.ReportError:
                # Who may report comes first, whatever the body: an unknown session and a wrong token look alike
                # (403), and an ended session takes no report (409). service.report checks the same for a good one.
                await self.ctx.service.reporting(session_id, token, live=True)
                raise
            await self.ctx.service.report(session_id, token, report, peer=self.request.remote_ip)
        except Exception:
            self.ctx.metrics.report(event, taken=False)
            raise
        self.ctx.metrics.report(event, taken=True)
        self.send({"ok": True})


def report_token(request) -> str:
    auth = request.headers.get("Authorization", "")
    return auth[len("token "):] if auth.startswith("token ") else ""


class SessionEventsHandler(JSONHandler):
    """Server-sent events: the session now, then every change, until it ends; and warnings to its user
    (``event: warning``: its walltime is near, it is idle), which change nothing.

    Bounded, since each open stream holds a front-end worker (Apache's, where it fronts pvhpc): a user holds at
    most ``limits.event_streams_per_user`` at once (one more is answered 429), and a stream ends after
    ``limits.event_stream_seconds``, when its client reconnects (``retry:`` says how soon) and gets the session
    anew; a client that takes no keep-alive for STALLED seconds is cut off."""

    KEEPALIVE = 15.0
    STALLED = 60.0
    RETRY_MS = 2000

    async def get(self, session_id: str) -> None:
        # A sharee follows it too, seeing it as sharees do (sessions/sharing.py).
        record, grant = await self.session_with_grant(session_id)
        self._shared = (record, grant) if grant is not None else None
        user = self.current_user
        limit = self.ctx.config.limits.event_streams_per_user
        streams = self.ctx.open_streams
        if not streams.take(user, limit):
            raise APIError(f"too many event streams: this site allows {limit} open at once per user "
                           "(limits.event_streams_per_user); close one (a browser tab, a pvhpc wait) or ask for the "
                           f"session itself (GET api/v1/sessions/{session_id})", status=429,
                           extra={"limit": "limits.event_streams_per_user", "retry_after": int(self.KEEPALIVE)})
        self._gone = asyncio.Event()
        try:
            await self._stream(record, session_id, self.ctx.config.limits.event_stream_seconds)
        finally:
            streams.release(user)

    def on_connection_close(self) -> None:
        gone = getattr(self, "_gone", None)
        if gone is not None:
            gone.set()   # the client left: its stream (and its place in the user's count) ends now, not at a write

    async def _stream(self, record: SessionRecord, session_id: str, seconds: int) -> None:
        deadline = time.monotonic() + seconds
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("X-Accel-Buffering", "no")
        with self.ctx.bus.subscribe(notices=True) as events:
            try:
                self.write(f"retry: {self.RETRY_MS}\n\n")
                await self._send_event(record)
                while record.state != S.ENDED.value:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        # The client reconnects (EventSource by itself, pvhpc's command too) and gets the session anew.
                        self.write(f": this stream ends after {seconds} s (limits.event_stream_seconds); "
                                   "reconnect to follow the session\n\n")
                        break
                    changed = await self._next(events, min(self.KEEPALIVE, left))
                    if changed is None:
                        return   # the client left
                    if changed is KEEPALIVE:
                        if time.monotonic() < deadline:
                            self.write(": keepalive\n\n")
                            await self._flush()
                        continue
                    if isinstance(changed, Notice):
                        if changed.session_id == session_id:
                            # Nothing is published at a revoke: a sharee's grant is checked here too, so the owner's
                            # news (walltime, idle, continued) never reaches one it is no longer shared with.
                            if self._shared is not None and not await self._still_shared(record):
                                continue   # _still_shared ended the stream
                            self.write(f"event: warning\ndata: {json.dumps(changed.json())}\n\n")
                            await self._flush()
                        continue
                    if changed.id == session_id:
                        record = changed
                        await self._send_event(record)
            except StreamClosedError:
                return
        self.finish()

    async def _next(self, events, timeout: float):
        """The next change or notice; KEEPALIVE when none came within ``timeout``; None when the client left."""
        if self._gone.is_set():
            return None
        getting = asyncio.ensure_future(events.get(timeout))
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({getting, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if not getting.done():
            getting.cancel()
            return None
        try:
            return getting.result()
        except asyncio.TimeoutError:
            return KEEPALIVE

    async def _flush(self) -> None:
        """Flush; a client that reads nothing for STALLED seconds is cut off (it would hold its place forever)."""
        try:
            await asyncio.wait_for(asyncio.shield(self.flush()), self.STALLED)
        except asyncio.TimeoutError:
            self.request.connection.close()
            raise StreamClosedError() from None

    async def _send_event(self, record: SessionRecord) -> None:
        data = self.session_view(record, with_secret=record.user == self.current_user)
        if getattr(self, "_shared", None) is not None:
            # A sharee's stream lasts as long as their share: revoked (or the session ended), it ends.
            grant = await self.ctx.sharing.grant_of(record.id, self.current_user)
            if grant is None:
                await self._end_unshared(record)
                return
            data = self.ctx.sharing.view_for_sharee(self.session_view(record, with_secret=False), record, grant)
        self.write(f"event: session\ndata: {json.dumps(data, default=str)}\n\n")
        await self._flush()

    async def _still_shared(self, record: SessionRecord) -> bool:
        """Whether the caller's grant still stands; when not, the stream's last event is sent and it ends."""
        if await self.ctx.sharing.grant_of(record.id, self.current_user) is not None:
            return True
        await self._end_unshared(record)
        return False

    async def _end_unshared(self, record: SessionRecord) -> None:
        """The last event for a sharee whose grant is gone: no key, nothing of the job, but still marked
        ``shared`` (with ``revoked``) so the page never offers Cancel or the job's log of another's session."""
        data = {k: v for k, v in self.session_view(record, with_secret=False).items()
                if k in ("id", "user", "application", "state", "end_reason", "end_reason_text")}
        data["shared"] = {"by": record.user, "revoked": True}
        self.write(f"event: session\ndata: {json.dumps(data, default=str)}\n\n")
        await self._flush()
        self._gone.set()


KEEPALIVE = object()   # SessionEventsHandler._next: nothing came, time for a keep-alive


class SavedStatesHandler(JSONHandler):
    """The user's saved ParaView states (saved when a session's job was ended), newest first: each path may be
    given as a new session's ``saved_state``."""

    async def get(self) -> None:
        user = self.require_user()
        self.send({"states": await self.ctx.service.saved_states.list(user)})


class DeprecatedSavedStatesHandler(SavedStatesHandler):
    """/api/v1/states, the list's old URL ("states" beside a session's state): the same answer, with a
    ``Deprecation: true`` header and a ``Link`` to where it moved (relative to this URL, so under any prefix)."""

    async def get(self) -> None:
        self.set_header("Deprecation", "true")
        self.set_header("Link", '<saved-states>; rel="successor-version"')
        await super().get()


class ApplicationsHandler(JSONHandler):
    def get(self) -> None:
        self.require_user()
        config = self.ctx.config
        self.send({"applications": [{**application_json(a), **application_sharing(a, config)}
                                    for a in config.applications.values()]})


def application_json(a) -> dict:
    return {"name": a.name, "description": a.description, "partitions": list(a.partitions),
            "default_partition": a.default_partition, "data_roots": [str(r) for r in a.data_roots],
            # Whether it can run over an MPI pvserver: a partition whose "parallel" is not null says how far.
            "parallel": a.pvserver is not None,
            # For ParaView's desktop client (pvhpc connect), not a browser: docs/desktop.md.
            "desktop": a.desktop,
            # The versions users choose from (request field "version"), in the config's order, and the one a
            # request that names none gets; [] and null where the application offers none.
            "versions": list(a.versions), "default_version": a.default_version,
            **opens(a)}


def opens(app) -> dict:
    """How a ready session of ``app`` opens in a browser (docs/web.md): the page's quick view, the application's
    own client at /apps/<name>/ (``client_url``, relative), or the client its server serves at /session/<id>/
    (with a static copy at ``client_url`` where staff installed one, as trame's: the page opens that, which
    gets the secret from the launcher rather than from the URL); a desktop application's opens in ParaView's
    desktop client ("desktop")."""
    if app.desktop:   # in ParaView's desktop client, through pvhpc connect (docs/desktop.md): nothing opens here
        return {"opens": "desktop", "client_url": None}
    if app.serves_own_client:
        return {"opens": "served", "client_url": f"apps/{app.name}/" if app.web_client is not None else None}
    if app.web_client is not None:
        return {"opens": "client", "client_url": f"apps/{app.name}/"}
    return {"opens": "view", "client_url": None}


class PartitionsHandler(JSONHandler):
    async def get(self) -> None:
        self.require_user()
        try:
            live = {p.name: p for p in await self.ctx.scheduler.partitions()}
            error = None
        except SchedulerUnavailable as e:
            live, error = {}, str(e)
        self.send({"partitions": [partition_json(p, live.get(p.slurm_partition))
                                  for p in self.ctx.config.partitions.values()],
                   "scheduler_error": error})


def partition_json(p, info=None) -> dict:
    """A partition as staff configured it, with what Slurm says is free there now (``info``; None: not asked)."""
    return {
        "name": p.name, "description": p.description, "render": p.render, "gpu_type": p.gpu_type,
        "gpus": {"default": p.gpus.default, "max": p.gpus.max},
        "walltime_minutes": {"default": p.walltime.default, "max": p.walltime.max},
        # The same as a walltime is written (HH:MM:SS, D-HH:MM:SS), for the page's form and hints.
        "walltime": {"default": format_minutes(p.walltime.default), "max": format_minutes(p.walltime.max)},
        "accounts": list(p.accounts), "qos": list(p.qos),
        "parallel": parallel_limits(p),
        "now": None if info is None else {
            "available": info.available, "nodes": len(info.nodes), "idle_nodes": info.idle_nodes,
            "gpus_total": info.gpus_total, "gpus_free": info.gpus_total - info.gpus_used,
        },
    }


class ServerConfigurationHandler(JSONHandler):
    """``GET /api/v1/pvsc``: the site's server configuration for the desktop ParaView's Connect dialog, as
    ``pvhpc pvsc`` writes it from the two answers above (pvhpc/client/pvsc.py), naming the service's public URL;
    the page links it. Nothing in it is the user's: their pvhpc finds their token where it always does."""

    def get(self) -> None:
        self.require_user()
        config = self.ctx.config
        try:
            text = pvsc.server_configuration([application_json(a) for a in config.applications.values()],
                                             [partition_json(p) for p in config.partitions.values()],
                                             config.service.public_url)
        except ValueError as e:
            raise APIError(str(e), status=404) from None
        host = urlsplit(config.service.public_url).hostname or "pvhpc"
        self.set_header("Content-Type", "application/xml; charset=utf-8")
        self.set_header("Content-Disposition", f'attachment; filename="{host}.pvsc"')
        self.finish(text)


def parallel_limits(partition) -> dict | None:
    """How big a parallel session may be here (pvhpc/sessions/parallel_request.py checks requests against the same
    keys), or None where staff allow none; an application runs one only where its own "parallel" is true."""
    if partition.max_ranks == 0:
        return None
    return {"max_nodes": partition.max_nodes, "max_ranks": partition.max_ranks,
            "max_ranks_per_node": partition.max_ranks_per_node,
            "ranks_divisible_by_nodes": partition.ranks_divisible_by_nodes}


class TokensHandler(JSONHandler):
    """The caller's personal API tokens: list them, or make one (its value is shown only in this answer)."""

    async def get(self) -> None:
        user = self.require_user()
        listed = await self.ctx.store.off_loop.read(self.ctx.tokens.list, user)
        self.send({"tokens": [tokens.describe(t) for t in listed]})

    async def post(self) -> None:
        user = self.require_user()
        if self.by_token:
            # Else a leaked token makes itself a successor that its revocation does not reach.
            raise APIError("a token cannot make tokens: log in through the site's front end (the web page or "
                           "a browser) to make one", status=403)
        body = self.json_body()
        if not isinstance(body, dict):
            raise APIError("the request body must be a JSON object")
        unknown = sorted(set(body) - {"name", "days"})
        if unknown:
            raise APIError("unknown field (known: name, days)", field=unknown[0])
        name = body.get("name", "token")
        if not isinstance(name, str) or not 0 < len(name) <= 64 or not name.isprintable():
            raise APIError("must be a printable name of 1 to 64 characters", field="name")
        days = body.get("days", 90)
        if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= tokens.MAX_DAYS:
            raise APIError(f"must be a whole number of days from 1 to {tokens.MAX_DAYS}", field="days")
        record, token = await self.ctx.store.off_loop.write(self.ctx.tokens.create, user, name, days)
        self.send({**tokens.describe(record), "token": token}, status=201)


class TokenHandler(JSONHandler):
    async def delete(self, token_id: str) -> None:
        user = self.require_user()
        record = await self.ctx.store.off_loop.write(self.ctx.tokens.revoke, user, int(token_id))
        if record is None:
            raise APIError(f"no token {token_id}", status=404)
        self.send(tokens.describe(record))


class HealthHandler(JSONHandler):
    async def get(self) -> None:
        tracker = self.ctx.tracker
        self.send({"ok": True, "live_sessions": await self.ctx.service.count_live(),
                   # Which instance polls the scheduler, when several share a database.
                   "poller": {"leading": tracker.leading, "how": tracker.leadership.kind,
                              "cycles": tracker.poll_cycles, "scheduler_calls": tracker.scheduler_calls},
                   # Which backend, and which Slurm release it found and speaks (no paths of this host: anyone
                   # may ask; pvhpc doctor tells staff the rest).
                   "scheduler": {k: v for k, v in (await self.ctx.scheduler.about()).items()
                                 if k in ("backend", "slurm", "pyslurm")}})
