"""What every API handler shares: JSON in, JSON out, errors always as {"error": ...}.

How an error becomes its answer is ``pvhpc.web.errors`` (the one place); this
module holds the request side: body limits, who is asking, JSON bodies.
"""

from __future__ import annotations

import json
from typing import Any

from pvhpc.web.errors import APIError, ErrorAnswers


class JSONHandler(ErrorAnswers):
    def initialize(self, ctx) -> None:
        self.ctx = ctx   # pvhpc.app.Context: config, service, store, frontend, auth

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        limit = self.ctx.config.limits.max_body_bytes
        if len(self.request.body or b"") > limit:
            raise APIError(f"the request body is {len(self.request.body)} bytes; at most {limit} are accepted",
                           status=413)

    def get_current_user(self) -> str | None:
        return self.ctx.auth.user(self.request)

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
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise APIError(f"the request body is not valid JSON: {e}"[:300]) from None

    def send(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(data, default=str))

    def own_session(self, session_id: str):
        """The caller's session; another user's answers exactly like one that does not exist."""
        user = self.require_user()
        record = self.ctx.store.get(session_id)
        if record is None or (record.user != user and not self.ctx.auth.is_staff(user)):
            raise APIError(f"no session {session_id}", status=404)
        return record


class NotFoundHandler(JSONHandler):
    def prepare(self) -> None:
        raise APIError(f"no such endpoint: {self.request.method} {self.request.path}", status=404)
