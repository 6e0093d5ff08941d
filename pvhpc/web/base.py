"""What every API handler shares: JSON in, JSON out, errors always as {"error": ...}.

The ParaViewWeb JS client shows only JSON errors with an "error" key; anything
else (an HTML 500, a plain 404) it hides and silently falls back to a wrong URL.
So no handler here ever answers with anything but JSON.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy.exc import OperationalError
from tornado.web import HTTPError, RequestHandler

from pvhpc.sessions.service import ServiceError
from pvhpc.sessions.spec import RequestError
from pvhpc.web.accesslog import scrub

log = logging.getLogger("pvhpc.web")


class APIError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None, extra: dict | None = None):
        self.status, self.message, self.field, self.extra = status, message, field, extra or {}
        super().__init__(message)


class JSONHandler(RequestHandler):
    def initialize(self, ctx) -> None:
        self.ctx = ctx   # pvhpc.app.Context: config, service, store, frontend, auth

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        limit = self.ctx.config.limits.max_body_bytes
        if len(self.request.body or b"") > limit:
            raise APIError(413, f"the request body is {len(self.request.body)} bytes; at most {limit} are accepted")

    def get_current_user(self) -> str | None:
        return self.ctx.auth.user(self.request)

    def require_user(self) -> str:
        user = self.current_user
        if not user:
            raise APIError(401, "not logged in")
        if not getattr(self, "_counted", False):
            self._counted = True
            if not self.ctx.limiter.allow(user):
                wait = int(self.ctx.limiter.retry_after(user)) + 1
                raise APIError(429, f"too many requests: this site allows {self.ctx.config.limits.requests_per_minute}"
                                    f" a minute per user (limits.requests_per_minute); try again in {wait} s",
                               extra={"retry_after": wait})
        return user

    def json_body(self) -> Any:
        body = self.request.body or b""
        if not body.strip():
            raise APIError(400, "the request body is empty; a JSON object is expected")
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(400, f"the request body is not valid JSON: {e}"[:300]) from None

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def _handle_request_exception(self, e: BaseException) -> None:
        if isinstance(e, APIError):
            return self.send_error_json(e.status, e.message, e.field, e.extra)
        if isinstance(e, RequestError):
            return self.send_error_json(e.status, e.message, e.field)
        if isinstance(e, ServiceError):
            return self.send_error_json(e.status, e.message)
        if isinstance(e, HTTPError):
            return self.send_error_json(e.status_code, e.log_message or self._reason)
        if isinstance(e, OperationalError):
            # Locked or unreachable database: nothing was half-written (each change is one transaction).
            log.warning("database unavailable during %s %s: %s", self.request.method, scrub(self.request.path),
                        str(e).splitlines()[0][:200])
            return self.send_error_json(503, "the database is busy or unavailable; nothing was changed, retry shortly",
                                        extra={"retry_after": 2})
        log.exception("unexpected error in %s %s", self.request.method, scrub(self.request.path))
        return self.send_error_json(500, "internal error in pvhpc; the service log has the details")

    def send_error_json(self, status: int, message: str, field: str | None = None, extra: dict | None = None) -> None:
        if self._finished:
            return
        self.clear()
        self.set_default_headers()
        body = {"error": f"{field}: {message}" if field else message, **(extra or {})}
        if "retry_after" in body:
            self.set_header("Retry-After", str(body["retry_after"]))
        if field:
            body["field"] = field
        self.set_status(status)
        self.finish(json.dumps(body))

    def write_error(self, status_code: int, **kwargs) -> None:
        self.send_error_json(status_code, self._reason)

    def own_session(self, session_id: str):
        """The caller's session; another user's answers exactly like one that does not exist."""
        user = self.require_user()
        record = self.ctx.store.get(session_id)
        if record is None or (record.user != user and not self.ctx.auth.is_staff(user)):
            raise APIError(404, f"no session {session_id}")
        return record


class NotFoundHandler(JSONHandler):
    def prepare(self) -> None:
        raise APIError(404, f"no such endpoint: {self.request.method} {self.request.path}")
