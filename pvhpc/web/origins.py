"""Which pages may change things with a browser's login: the one rule for pvhpc's own handlers (web/base.py)
and for what the front end forwards to a session's own web server (frontends/served.py).

A browser sends another site's request with the user's login without asking (no preflight for a form POST
or a text/plain body), and says which page sent it: Origin, or else Referer. A state-changing request that
rode on a browser's login must name one of the site's own origins (``service.allowed_origins``); a script
with a personal token is not concerned, since a browser never adds that header by itself.
"""

from __future__ import annotations

from pvhpc.config.checks import origin_of

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refusal(method: str, headers, allowed: tuple[str, ...], browser_credentials: bool, by_token: bool) -> str | None:
    """Why this request may not change anything, or None when it may."""
    if method not in STATE_CHANGING or by_token:
        return None
    origin, said = headers.get("Origin"), "Origin"
    if origin is None and headers.get("Referer"):
        origin, said = origin_of(headers["Referer"]), "Referer"
    if origin is None:
        if not browser_credentials:
            return None   # auth.kind local: no login a browser could lend; a cross-site request would name its page
        return ("a request that changes anything must say which page sent it (Origin or Referer header, as "
                "browsers do); scripts use a personal token (Authorization: token ...)")
    if origin.lower() not in allowed:
        return (f"a page of {origin[:100]} (the request's {said}) may not change anything here: only pages of "
                f"{', '.join(allowed)} may (service.allowed_origins)")
    return None
