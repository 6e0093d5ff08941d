"""Which pages may change things with a browser's login, and open a session's websocket: the one origin rule,
for pvhpc's own handlers (web/base.py), what the front end forwards to a session's own web server
(frontends/served.py) and the websockets it proxies (frontends/builtin.py).

A browser sends another site's request with the user's login without asking (no preflight for a form POST
or a text/plain body), and says which page sent it: Origin, or else Referer. A state-changing request that
rode on a browser's login must name one of the site's own origins (``service.allowed_origins``); a script
with a personal token is not concerned, since a browser never adds that header by itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pvhpc.config.checks import origin_of

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


CROSS_SITE = "requests from another site's pages are refused here"
OTHER_SITES = ("cross-site", "same-site")   # what Sec-Fetch-Site says of a page that is not this origin's


def refusal(method: str, headers, allowed: tuple[str, ...], browser_credentials: bool, by_token: bool,
            fetch_site: bool = False) -> str | None:
    """Why this request may not change anything, or None when it may. With ``fetch_site`` (for a session's own
    server, which may check nothing itself), a page the browser says is of another site is refused before
    anything else, a sibling site it calls "same-site" included."""
    if method not in STATE_CHANGING or by_token:
        return None
    if fetch_site and headers.get("Sec-Fetch-Site") in OTHER_SITES:
        return CROSS_SITE
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


def cross_site_websocket(headers, opaque_allowed: bool = False) -> bool:
    """A browser page of another site opening a websocket (browsers let any page try), which the proxy refuses:
    Tornado's own rule for websockets, since the proxy carries them as bytes. Clients that are not browsers send
    no Origin. ``opaque_allowed``: a sandboxed page's own websocket, whose opaque origin says "null" (and which the
    browser calls cross-site), is let through; another site's sandboxed page says the same, but gets only as far
    as the session's server, which wants the session's secret."""
    if opaque_allowed and headers.get("Origin") == "null":
        return False
    fetch_site = headers.get("Sec-Fetch-Site")
    if fetch_site in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    if fetch_site is None:
        return origin is not None and urlsplit(origin).netloc.lower() != headers.get("Host", "").lower()
    return True
