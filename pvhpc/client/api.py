"""Python client for a pvhpc service, for scripts and notebooks.

    from pvhpc.client.api import Client
    c = Client("https://viz.example.org", token="...")
    s = c.create(application="paraview", partition="gpu", gpus=1)
    s = c.wait(s["id"])                 # until ready or ended
    print(s["sessionURL"], s["secret"])
    c.cancel(s["id"])

Standard library only (and pvhpc's error root), so it works wherever Python does. The service URL and
token default to PVHPC_URL and PVHPC_TOKEN.
"""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from typing import Any, Iterator
from urllib.parse import quote, urlsplit

from pvhpc.errors import PvhpcError


WAIT_POLL = 5   # seconds between asking for a session while no event stream is to be had (429)

def connect_url(session_url: str | None, service_url: str) -> str | None:
    """The session URL with USE_HOST/USE_HOSTNAME filled in, as the ParaViewWeb JS client fills it from its page."""
    if not session_url:
        return None
    parts = urlsplit(service_url)
    return session_url.replace("USE_HOSTNAME", parts.hostname or "").replace("USE_HOST", parts.netloc)


class ClientError(PvhpcError):
    """The service answered with an error. ``status`` is the HTTP status (0: no answer at all).

    ``message`` is the service's whole answer, which already names its ``field``;
    ``retry_after`` is the seconds it asked to wait, if it did.
    """

    status = 0

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message, status=status)
        self.field, self.retry_after = field, retry_after   # not in the text: the service's message names it

    def __str__(self) -> str:
        return f"{self.message} (HTTP {self.status})" if self.status else self.message


class Client:
    def __init__(self, url: str | None = None, token: str | None = None, headers: dict | None = None,
                 timeout: float = 120):
        url = url or os.environ.get("PVHPC_URL")
        if not url:
            raise ClientError("no service URL: pass url= or set PVHPC_URL", status=0)
        self.url = url.rstrip("/")
        self.token = token if token is not None else os.environ.get("PVHPC_TOKEN")
        self.headers = dict(headers or {})
        self.timeout = timeout

    def auth_headers(self) -> dict:
        """Who is asking, as every request to the service says it: the given headers, the token."""
        headers = dict(self.headers)
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        return headers

    # -- transport --------------------------------------------------------------
    def _open(self, method: str, path: str, body: Any = None, timeout: float | None = None, raw: bytes | None = None):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Accept": "application/json", **self.auth_headers()}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as e:
            text = e.read().decode(errors="replace")
            try:
                err = json.loads(text)
                raise ClientError(err.get("error", text), status=e.code, field=err.get("field"),
                                  retry_after=err.get("retry_after")) from None
            except (ValueError, AttributeError):
                raise ClientError(text[:300] or e.reason, status=e.code) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ClientError(f"cannot reach pvhpc at {self.url}: {reason}", status=0) from None

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = None,
                raw: bytes | None = None) -> Any:
        with self._open(method, path, body, timeout, raw) as response:
            text = response.read().decode()
            return json.loads(text) if text else None

    # -- the ParaViewWeb launcher API ------------------------------------------
    def launch(self, application: str, **fields) -> dict:
        """POST /paraview/ like a ParaViewWeb client: returns the session once it is ready."""
        return self.request("POST", "/paraview/", {"application": application, **fields})

    # -- the native API ---------------------------------------------------------
    def create(self, application: str, **fields) -> dict:
        return self.request("POST", "/api/v1/sessions", {"application": application, **fields})

    def get(self, session_id: str) -> dict:
        return self.request("GET", f"/api/v1/sessions/{session_id}")

    def list(self, state: str = "", all_users: bool = False) -> list[dict]:
        query = "&".join(q for q in (f"state={state}" if state else "", "all=1" if all_users else "") if q)
        return self.request("GET", "/api/v1/sessions" + (f"?{query}" if query else ""))["sessions"]

    def cancel(self, session_id: str) -> dict:
        return self.request("DELETE", f"/api/v1/sessions/{session_id}")

    def set_continue(self, session_id: str, on: bool = True) -> dict:
        """Whether the session goes on in a successor job before its walltime (docs/web.md, Continuation)."""
        return self.request("POST", f"/api/v1/sessions/{session_id}/continue", {"continue": bool(on)})

    def extend(self, session_id: str, minutes: int) -> dict:
        """More time for a running session: its walltime grows by ``minutes`` where the site allows; returns the
        session with its new walltime, ``ends_at`` and ``time_left`` (ClientError says why not)."""
        return self.request("POST", f"/api/v1/sessions/{session_id}/extend", {"minutes": minutes})

    def saved_states(self) -> list[dict]:
        """Your saved ParaView states (.pvsm), newest first (``path`` may be a new session's ``saved_state``)."""
        try:
            return self.request("GET", "/api/v1/saved-states")["states"]
        except ClientError as e:
            if e.status != 404:
                raise
            return self.request("GET", "/api/v1/states")["states"]   # a service from before the list's new URL

    states = saved_states   # its earlier name, kept for scripts that call it

    def log(self, session_id: str) -> str:
        """The session job's output (the ParaView server's log); the last 256 KiB."""
        return self.request("GET", f"/api/v1/sessions/{session_id}/log")["log"]

    def log_record(self, session_id: str) -> dict:
        """The job's output with what it belongs to: ``id``, ``job_id``, ``truncated``, ``log``."""
        return self.request("GET", f"/api/v1/sessions/{session_id}/log")

    # -- sharing a session (docs/sharing.md) -----------------------------------------------------------------
    def shares(self, session_id: str) -> list[dict]:
        """Whom your session is shared with: ``kind`` (user, group), ``name``, ``role`` (view, control)."""
        return self.request("GET", f"/api/v1/sessions/{session_id}/shares")["shares"]

    def share(self, session_id: str, user: str | None = None, role: str = "view", group: str | None = None) -> list[dict]:
        """Share your session with a user (or a group, where the site allows) as ``view`` or ``control``;
        returns the shares that now stand."""
        body = {"role": role, **({"group": group} if group is not None else {"user": user})}
        return self.request("POST", f"/api/v1/sessions/{session_id}/shares", body)["shares"]

    def unshare(self, session_id: str, name: str, group: bool = False) -> list[dict]:
        """Revoke a share (the sharee is cut off within seconds); returns the shares that still stand."""
        kind = "?kind=group" if group else ""
        return self.request("DELETE", f"/api/v1/sessions/{session_id}/shares/{quote(name, safe='')}{kind}")["shares"]

    # -- personal API tokens (docs/security.md: a token cannot make tokens) -------------------------
    def tokens(self) -> list[dict]:
        return self.request("GET", "/api/v1/tokens")["tokens"]

    def create_token(self, name: str, days: int = 90) -> dict:
        """A new token of the caller's: the answer holds its value (``token``), shown this once only.
        The request must carry the front end's login (or none, with ``auth.kind: local``), not a token."""
        return self.request("POST", "/api/v1/tokens", {"name": name, "days": days})

    def revoke_token(self, token_id: int) -> dict:
        return self.request("DELETE", f"/api/v1/tokens/{int(token_id)}")

    def health(self) -> dict:
        return self.request("GET", "/api/v1/health")

    def partitions(self) -> dict:
        return self.request("GET", "/api/v1/partitions")

    def applications(self) -> list[dict]:
        return self.request("GET", "/api/v1/applications")["applications"]

    def events(self, session_id: str, timeout: float = 3600, warnings: bool = False) -> Iterator[dict]:
        """Each state of the session as it happens (server-sent events), ending when the session ends
        or ``timeout`` seconds have passed (checked at each event and each keep-alive, every 15 s).
        With ``warnings``, the warnings to its user too (``{"type": "warning", "reason", "message",
        "seconds_left", ...}``: walltime near, idle), which are not states."""
        deadline = time.monotonic() + timeout
        wanted = ("session", "warning") if warnings else ("session",)
        with self._open("GET", f"/api/v1/sessions/{session_id}/events", timeout=timeout) as response:
            data, name = [], "message"
            try:
                for raw in response:
                    line = raw.decode().rstrip("\r\n")
                    if line.startswith("event:"):
                        name = line[6:].strip()
                    elif line.startswith("data:"):
                        data.append(line[5:].strip())
                    elif not line:
                        if data and name in wanted:
                            yield json.loads("\n".join(data))
                        data, name = [], "message"
                    if time.monotonic() > deadline:
                        return
            except (TimeoutError, socket.timeout):
                return   # nothing, not even a keep-alive, before the timeout: the caller's time is up

    def wait(self, session_id: str, until: tuple[str, ...] = ("ready",), timeout: float = 3600) -> dict:
        """Follow the session until it reaches one of ``until``, ends, or ``timeout`` passes; return it then.

        The service ends a stream after a while (limits.event_stream_seconds) and refuses one while the user
        holds as many as the site allows (429, limits.event_streams_per_user): either way the session is asked
        for, and followed again (or asked for every ``WAIT_POLL`` seconds) until the time is up."""
        deadline = time.monotonic() + timeout

        def done(session: dict) -> bool:
            return session["state"] in until or session["state"] == "ended"

        while True:
            try:
                for event in self.events(session_id, timeout=max(0.0, deadline - time.monotonic())):
                    if done(event):
                        return event
                refused = False
            except ClientError as e:
                if e.status != 429:
                    raise
                refused = True
            session = self.get(session_id)
            if done(session) or time.monotonic() >= deadline:
                return session
            if refused:
                time.sleep(min(WAIT_POLL, max(0.0, deadline - time.monotonic())))
