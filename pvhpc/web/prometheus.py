"""GET /metrics for Prometheus, and HTTP requests counted by route pattern (the metrics are pvhpc/metrics.py).

Who may read them: staff (auth.staff), as for every staff view, or a scraper that sends
``Authorization: Bearer <token>`` with the token staff put in ``metrics.token_file``. The
token is read once at start, compared in constant time, never logged (the access log has
no headers) and never taken from a URL, where proxies and browsers would keep it.
"""

from __future__ import annotations

import functools
import hmac
import re
import stat
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from pvhpc.errors import PvhpcError
from pvhpc.web.base import JSONHandler
from pvhpc.web.errors import APIError

MIN_TOKEN_LENGTH = 16
MAKE_TOKEN = "make one: (umask 077; openssl rand -hex 32 > {path})"


def read_token_file(path: Path | None) -> str | None:
    """The scrape token in ``metrics.token_file``, checked: a file only its owner may read, holding one long word."""
    if path is None:
        return None
    try:
        info = path.stat()
    except OSError as e:
        raise PvhpcError(f"metrics.token_file: cannot read {path}: {e.strerror}; "
                         + MAKE_TOKEN.format(path=path)) from None
    if not stat.S_ISREG(info.st_mode):
        raise PvhpcError(f"metrics.token_file: {path} is not a file; " + MAKE_TOKEN.format(path=path))
    if info.st_mode & 0o077:
        raise PvhpcError(f"metrics.token_file: {path} has mode {info.st_mode & 0o777:o}, so other accounts can read "
                         f"the token; only its owner may: chmod 600 {path}")
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as e:
        raise PvhpcError(f"metrics.token_file: cannot read {path}: {e}") from None
    if len(token) < MIN_TOKEN_LENGTH or not token.isascii() or not token.isprintable() or " " in token:
        raise PvhpcError(f"metrics.token_file: {path} must hold one word of at least {MIN_TOKEN_LENGTH} printable "
                         f"characters; " + MAKE_TOKEN.format(path=path))
    return token


class MetricsHandler(JSONHandler):
    def initialize(self, ctx, token: str | None = None) -> None:
        super().initialize(ctx)
        self.token = token

    def get(self) -> None:
        self.check_reader()
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(self.ctx.metrics.registry))

    def check_reader(self) -> None:
        scheme, _, presented = self.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            given = presented.strip().encode()
            # Always one comparison of the same cost, token configured or not: the answer's timing says nothing.
            expected = (self.token or "").encode()
            if not (hmac.compare_digest(given, expected) and self.token):
                raise APIError("wrong metrics token: send the one in metrics.token_file (Authorization: Bearer ...)"
                               if self.token else "this site has no metrics token (metrics.token_file); log in as "
                               "staff instead", status=401)
            return
        if not self.current_user:
            raise APIError("log in as staff, or send Authorization: Bearer <the token in metrics.token_file>",
                           status=401)
        user = self.require_user()
        if not self.ctx.auth.is_staff(user):
            raise APIError(f"only staff (auth.staff) may read the metrics; {user} is not staff", status=403)


# -- HTTP requests counted by route ---------------------------------------------------------------
# A capturing group of a route pattern, with one level of groups inside (``(?:css|js)``), and its ``?``.
GROUP = re.compile(r"\((?!\?:)(?:[^()\\]|\\.|\((?:[^()\\]|\\.)*\))*\)\??")
UNROUTED = "(no route)"


@functools.lru_cache(maxsize=256)
def route_label(pattern: str) -> str:
    """A route's pattern in words: ``/api/v1/sessions/([A-Za-z0-9_-]{1,128})/log$`` -> ``/api/v1/sessions/{id}/log``.

    The label a request is counted under: never its own path, which holds session ids and is unbounded.
    """
    def name(group: re.Match) -> str:
        return "{id}" if "{1," in group.group(0) and "/" not in group.group(0) else "{path}"

    label = GROUP.sub(name, pattern.rstrip("$"))
    label = label.replace("/?", "/")
    return re.sub(r"\\(.)", r"\1", label)


def route_of(handler) -> str:
    """The pattern of the route that took the request (found again: Tornado does not keep it on the handler)."""
    for rule in handler.application.wildcard_router.rules:
        regex = getattr(rule.matcher, "regex", None)
        if regex is not None and rule.matcher.match(handler.request) is not None:
            return route_label(regex.pattern)
    return UNROUTED


def counting(log_function, metrics):
    """Tornado's log_function: log the request as ``log_function`` does, then count it."""
    def log_and_count(handler) -> None:
        log_function(handler)
        request = handler.request
        metrics.request(request.method or "", route_of(handler), handler.get_status(), request.request_time())

    return log_and_count
