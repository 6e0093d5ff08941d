"""A session's own web content (``/session/<id>/``), kept from acting with pvhpc's authority.

A session's server runs its user's code, and so does every page it serves: a trame app's client, a site's own
application, or anything the user put on a port of the node and reported. On pvhpc's origin such a page could
read pvhpc's API with the login of whoever opens it (their sessions, secrets, a new token). Both front ends
therefore keep it off that origin, in one of two ways:

- **A separate origin** (``frontend.session_origin``, a host name of its own, as JupyterHub's
  ``subdomain_host``): the content is served there and nowhere else, and nothing of pvhpc's API is; pvhpc's
  origin redirects ``/session/`` there. The session's owner logs in there as on pvhpc's origin (the front end's
  login; a site's single sign-on covers both hosts), and a page there is of another origin than pvhpc's: it can
  neither read pvhpc's answers nor send a request pvhpc's origin rule accepts.
- **A sandbox**, where a site gives no such origin: every answer carries ``Content-Security-Policy: sandbox``
  (no ``allow-same-origin``), so the browser runs the page in an opaque origin of its own. Its scripts cannot
  read pvhpc's answers (another origin, no CORS) nor its cookies, and what they send says ``Origin: null``,
  which pvhpc's origin rule refuses (web/origins.py). Its own websocket is let through (``Origin: null`` on an
  upgrade under its own ``/session/<id>/`` path only); the session's server still wants its secret.

Both ways every answer also carries the framing and content-type headers of pvhpc's own pages, and no Referer
leaves with the session's id (``Referrer-Policy: no-referrer``).
"""

from __future__ import annotations

# Everything a web client needs but the one thing that would give it pvhpc's origin (allow-same-origin).
# Popups stay sandboxed (no allow-popups-to-escape-sandbox).
SANDBOX = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"
FRAMING = "frame-ancestors 'self'"


def answer_headers(sandboxed: bool) -> tuple[tuple[str, str], ...]:
    """Headers added to every answer served as a session's content (the app's own headers are kept beside)."""
    policy = f"{SANDBOX}; {FRAMING}" if sandboxed else FRAMING
    return (("Content-Security-Policy", policy), ("X-Frame-Options", "SAMEORIGIN"),
            ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer"))


def web_client_policy(proxied: bool) -> str:
    """The Content-Security-Policy of the applications' own web clients at /apps/<name>/ (pvhpc's files, on
    pvhpc's origin). Their URL's query becomes their config (the Visualizer's and trame's clients both take a
    ``sessionURL`` or ``sessionManagerURL`` from it), so a link could point them at a server of anyone's, whose
    answers (trame's templates) would run here with the user's login: they may connect to this origin only,
    where /proxy joins a user to their own sessions alone. With the direct front end the sessions' servers are
    elsewhere (their websockets are let through; that front end is for one trusted user, docs/security.md).
    Scripts only from here (and what the clients build themselves: inline, eval, blob workers)."""
    connect = "connect-src 'self'" if proxied else "connect-src 'self' ws: wss:"
    return (f"{connect}; script-src 'self' 'unsafe-inline' 'unsafe-eval' blob:; worker-src 'self' blob:; "
            f"{FRAMING}")
