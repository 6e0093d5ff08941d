"""The service's access log, without secrets: session ids, tokens and query strings never reach a log line."""

from __future__ import annotations

import logging
import re

access_log = logging.getLogger("tornado.access")

# Session ids, report tokens, API tokens: long URL-safe random words. Shown by their first characters only.
LONG_RANDOM = re.compile(r"[A-Za-z0-9_-]{20,}")


def scrub(path: str) -> str:
    return LONG_RANDOM.sub(lambda m: m.group(0)[:4] + "…", path.split("?", 1)[0])


def log_request(handler) -> None:
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    if level == logging.INFO and request.method in getattr(handler, "routine_methods", ()):
        level = logging.DEBUG   # asked by every live session's job, every few seconds: the log would be all this
    access_log.log(level, "%d %s %s (%s) %.1fms", status, request.method, scrub(request.uri or ""),
                   request.remote_ip, 1000.0 * request.request_time())
