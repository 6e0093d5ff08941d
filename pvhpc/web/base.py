"""What every API handler shares: JSON in, JSON out, errors always as {"error": ...}.

How an error becomes its answer is ``pvhpc.web.errors`` (the one place); this
module holds the request side: body and argument limits, where a request that
changes state comes from (origin rules), who is asking, JSON bodies.
"""

from __future__ import annotations

import json
from typing import Any

from pvhpc.web import origins
from pvhpc.web.errors import APIError, ErrorAnswers

MAX_JSON_DEPTH = 16        # no request pvhpc takes nests deeper; a deeper body is an attack, not a request
MAX_QUERY_ARGUMENT = 1024  # characters; a data path, a state name, a flag: all far shorter


def json_depth(value: Any) -> int:
    """How deeply ``value`` nests lists and objects, counted without recursion (the value may be hostile)."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                return depth
            todo.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


class JSONHandler(ErrorAnswers):
    def initialize(self, ctx) -> None:
        self.ctx = ctx   # pvhpc.app.Context: config, service, store, frontend, auth

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    async def prepare(self) -> None:
        limit = self.ctx.config.limits.max_body_bytes
        if len(self.request.body or b"") > limit:
            raise APIError(f"the request body is {len(self.request.body)} bytes; at most {limit} are accepted",
                           status=413)
        for name, values in self.request.query_arguments.items():
            if any(len(v) > MAX_QUERY_ARGUMENT for v in values):
                raise APIError(f"is longer than the {MAX_QUERY_ARGUMENT} characters accepted", field=name[:64])
        self.check_origin_of_change()
        # Who is asking, found before the method runs (a personal token is looked up in the database, off the
        # event loop): ``current_user`` is then this.
        self.current_user = await self.ctx.auth.user_off_loop(self.request)

    def check_origin_of_change(self) -> None:
        """A request that changes state with a browser's credentials must come from one of the site's origins.

        Scripts with a personal token are not concerned (a browser never adds that header by itself),
        nor are jobs' reports (they carry their session's token the same way).
        """
        why = origins.refusal(self.request.method, self.request.headers, self.ctx.config.service.allowed_origins,
                              self.ctx.auth.browser_credentials, self.ctx.auth.by_token(self.request))
        if why:
            raise APIError(why, status=403)

    @property
    def by_token(self) -> bool:
        """Whether the caller authenticated with a personal API token rather than the site's own login."""
        return self.ctx.auth.by_token(self.request)

    def require_user(self) -> str:
        user = self.current_user
        if not user:
            raise APIError("not logged in", status=401)
        if not getattr(self, "_counted", False):
            self._counted = True
            if not self.ctx.limiter.allow(user):
                wait = int(self.ctx.limiter.retry_after(user)) + 1
                raise APIError(f"too many requests: this site allows {self.ctx.config.limits.requests_per_minute}"
                               f" a minute per user (limits.requests_per_minute); try again in {wait} s",
                               status=429, extra={"retry_after": wait})
        return user

    def json_body(self) -> Any:
        body = self.request.body or b""
        if not body.strip():
            raise APIError("the request body is empty; a JSON object is expected")
        try:
            value = json.loads(body)
        except RecursionError:
            value = None
            depth = MAX_JSON_DEPTH + 1
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(f"the request body is not valid JSON: {e}"[:300]) from None
        else:
            depth = json_depth(value)
        if depth > MAX_JSON_DEPTH:
            raise APIError(f"the request body nests lists and objects deeper than the {MAX_JSON_DEPTH} levels "
                           "accepted")
        return value

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def session_view(self, record, with_secret: bool = True) -> dict:
        """A session as the APIs show it (views.py), with what this site's config says of its application."""
        from pvhpc.sessions.more_time import offer
        from pvhpc.web.views import session_json

        # What more time its owner may ask for now (the page's button says it): the owner's business only.
        more_time = offer(record, self.ctx.config) if record.user == self.current_user else None
        return session_json(record, self.ctx.frontend, with_secret, self.ctx.config.desktop_applications(),
                            more_time=more_time)

    async def own_session(self, session_id: str):
        """The caller's session; another user's answers exactly like one that does not exist."""
        user = self.require_user()
        record = await self.ctx.service.get(session_id)
        if record is None or (record.user != user and not self.ctx.auth.is_staff(user)):
            raise APIError(f"no session {session_id}", status=404)
        return record

    async def grant_for(self, record):
        """The caller's share of ``record`` (sessions/sharing.py) where it is someone else's session; else None."""
        user = self.require_user()
        if record is None or record.user == user or self.ctx.sharing is None:
            return None
        return await self.ctx.sharing.grant_of(record.id, user)

    async def session_with_grant(self, session_id: str):
        """(session, None) for its owner or staff; (session, grant) for one it is shared with; else 404 as a session
        that does not exist. One read of the session."""
        user = self.require_user()
        record = await self.ctx.service.get(session_id)
        if record is not None and (record.user == user or self.ctx.auth.is_staff(user)):
            return record, None
        grant = await self.grant_for(record)
        if grant is None:
            raise APIError(f"no session {session_id}", status=404)
        return record, grant


class NotFoundHandler(JSONHandler):
    def prepare(self) -> None:   # no origin rule: there is nothing here to change
        raise APIError(f"no such endpoint: {self.request.method} {self.request.path}", status=404)
