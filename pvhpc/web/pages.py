"""The browser page: launch a session, follow it, and use ParaView in it.

The page itself is static (HTML, CSS, plain JS modules under ``static/``) and
talks to the native API like any other client. Only two things are served from
here rather than by the API: the page, with the user's name and staff flag
filled in (one round trip less on a slow link), and a one-directory listing of
an application's data roots for the data-file chooser.

Every URL the page uses is relative, so it works unchanged under a front end
that serves pvhpc below a path prefix.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
from pathlib import Path

from tornado.web import RedirectHandler, StaticFileHandler

from pvhpc.web import content, reattach
from pvhpc.paths import web_clients_dir
from pvhpc.sessions.spec import READ, SEARCH, UserAccess, judged

from pvhpc.web.base import JSONHandler
from pvhpc.web.errors import APIError, ErrorAnswer, ErrorAnswers

STATIC_DIR = Path(__file__).resolve().parent / "static"
WSLINK_DIR = web_clients_dir() / "wslink" / "dist"   # npm wslink 1.x, installed by `pvhpc runtime install`
MAX_LISTING = 500   # entries of one directory; a chooser with more is no longer a chooser


# path -> ((mtime_ns, size), hash): every page load names a dozen assets; each is hashed again only when it changed.
_VERSIONS: dict[Path, tuple[tuple[int, int], str]] = {}


def _version(name: str, directory: Path = STATIC_DIR) -> str:
    """A short content hash: the asset URL changes when the file does, so browsers may cache it for long."""
    path = directory / name
    try:
        stat = path.stat()
        known = _VERSIONS.get(path)
        if known is None or known[0] != (stat.st_mtime_ns, stat.st_size):
            known = _VERSIONS[path] = ((stat.st_mtime_ns, stat.st_size),
                                       hashlib.sha256(path.read_bytes()).hexdigest()[:12])
        return known[1]
    except FileNotFoundError:
        return "missing"   # the page then says the wslink client did not load, and what to run


def _module_map() -> str:
    """The page's import map: each module of the page at a URL versioned by its content, as the page's own
    ``<script>`` is, so a browser never joins a cached module of one release to the modules of the next.
    (A browser without import maps loads them unversioned: AssetHandler has it revalidate each.)"""
    modules = {f"./static/{path.name}": f"./static/{path.name}?v={_version(path.name)}"
               for path in sorted(STATIC_DIR.glob("*.js"))}
    return json.dumps({"imports": modules}, indent=1)


class PageHandler(ErrorAnswers):
    """``/``: the page, with who is logged in. Without a user it says how to log in (401)."""

    def initialize(self, ctx) -> None:
        self.ctx = ctx

    def write_answer(self, answer: ErrorAnswer) -> None:
        # A person reads this one: the same words as the API's answer, as a page.
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(f"<!doctype html><title>pvhpc: error {answer.status}</title>"
                    f"<p>{html.escape(answer.body['error'])}</p>")

    async def get(self) -> None:
        user = await self.ctx.auth.user_off_loop(self.request)
        template = (STATIC_DIR / "index.html").read_text()
        values = {
            "user": html.escape(user or ""),
            "staff": "true" if user and self.ctx.auth.is_staff(user) else "false",
            "css": _version("pvhpc.css"),
            "js": _version("page.js"),
            "modules": _module_map(),
            "wslink": _version("wslink.js", WSLINK_DIR),
        }
        for key, value in values.items():
            template = template.replace("{{" + key + "}}", value)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        if not user:
            self.set_status(401)
        self.finish(template)


class AssetHandler(ErrorAnswers, StaticFileHandler):
    """The page's own files. Asked for with ``?v=<content hash>`` a file is kept for long (Tornado's cache
    time); without one (a module imported where the browser has no import map) it is revalidated each time."""

    def set_extra_headers(self, path: str) -> None:
        self.set_header("X-Content-Type-Options", "nosniff")
        if "v" not in self.request.arguments:
            self.set_header("Cache-Control", "no-cache")


class VendorHandler(AssetHandler):
    """A file installed from npm rather than shipped here: a missing one says how to install it."""

    def validate_absolute_path(self, root: str, absolute_path: str):
        if not os.path.isfile(absolute_path):
            raise APIError(f"{absolute_path} is not installed: run 'pvhpc runtime install' on the service host "
                           "(it installs the web clients from npm)", status=404)
        return super().validate_absolute_path(root, absolute_path)


class WebClientHandler(ErrorAnswers, StaticFileHandler):
    """``/apps/<name>/...``: an application's own web client (the Visualizer's dist/), as installed.

    Its file names carry no content hash, so browsers revalidate each file (ETag) rather than keep it.
    No directory is ever listed; an application without a web client, or a file it lacks, is a 404.
    """

    def initialize(self, path: str, default_filename: str | None = None, policy: str = "") -> None:
        super().initialize(path, default_filename)
        self.policy = policy

    async def get(self, path: str, include_body: bool = True) -> None:
        if path not in ("", reattach.INDEX):
            return await super().get(path, include_body)
        # The client's page, with pvhpc's reattachment loaded first (pvhpc/web/reattach.py).
        body = reattach.client_page(Path(self.root), _version("reattach.js"))
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Etag", f'"{hashlib.sha256(body).hexdigest()[:32]}"')
        self.set_extra_headers(path)
        if self.check_etag_header():
            self.set_status(304)
            return self.finish()
        self.finish(body if include_body else b"")

    def set_extra_headers(self, path: str) -> None:
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        # The page's URL may carry a session id (?attach=<id>): it must not travel in a Referer elsewhere.
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Content-Security-Policy", self.policy)


def web_client_routes(config) -> list:
    """One static route per application with a web client; ``/apps/<name>`` redirects to ``/apps/<name>/``."""
    out = []
    for name, directory in config.web_clients().items():
        out.append((rf"/apps/{re.escape(name)}", RedirectHandler, {"url": f"{name}/"}))
        out.append((rf"/apps/{re.escape(name)}/(.*)", WebClientHandler,
                    {"path": str(directory), "default_filename": "index.html",
                     "policy": content.web_client_policy(proxied=config.frontend.kind != "direct")}))
    return out


class DataFilesHandler(JSONHandler):
    """One directory of an application's data roots: what the data-file chooser shows.

    ``path`` is relative to the root (``root`` is its index); the answer names
    only entries inside the root after symlinks are resolved, as the session
    request itself will insist.

    It shows what the user may read and nothing more (pvhpc lists as its own account, which may read more):
    a directory on whose way the user may not search, or which the user may not list, answers 403 naming it
    (nothing past it is looked at); of its entries only the directories the user may list and the files the
    user may read are shown (sessions/spec.py UserAccess: the user's uid and groups against modes and ACLs).
    A user with no account on this host gets what the service account may read, as their jobs do.
    """

    def get(self, app_name: str) -> None:
        user = self.require_user()
        app = self.ctx.config.applications.get(app_name)
        if app is None:
            raise APIError(f"no application {app_name}", status=404)
        try:
            index = int(self.get_query_argument("root", "0"))
            root = app.data_roots[index]
        except (ValueError, IndexError):
            raise APIError(f"must be a number from 0 to {len(app.data_roots) - 1}", field="root") from None
        relative = self.get_query_argument("path", "").strip("/")
        directory = Path(os.path.realpath(root / relative))
        if not (directory == root or root in directory.parents):
            raise APIError("is outside the data directory", field="path")
        access = UserAccess.of(user)
        refused, is_dir = judged(access, directory, READ | SEARCH, Path.is_dir)
        if refused is not None:
            raise APIError(f"{refused} is a directory {user} may not read", status=403)
        if not is_dir:
            raise APIError(f"{relative or '/'} is not a directory", status=404)
        entries = []
        try:
            names = sorted(os.listdir(directory), key=str.lower)
        except PermissionError:
            raise APIError(f"{directory} cannot be read by pvhpc's service account", status=403) from None
        for name in names:
            if name.startswith("."):
                continue
            entry = self._entry(root, directory, name, access)
            if entry is not None:
                entries.append(entry)
            if len(entries) >= MAX_LISTING:
                break
        path = str(directory.relative_to(root)) if directory != root else ""
        self.send({"root": str(root), "path": path, "entries": entries, "truncated": len(entries) >= MAX_LISTING})

    @staticmethod
    def _entry(root: Path, directory: Path, name: str, access: UserAccess | None) -> dict | None:
        """An entry as the chooser shows it, or None: outside the root, neither a directory nor a file, or one the
        user may not open (a link's target is judged on its own way from /)."""
        target = Path(os.path.realpath(directory / name))
        if not (target == root or root in target.parents):
            return None   # a link out of the root: the request would refuse it anyway
        try:
            if target.is_dir():
                kind, want = "directory", READ | SEARCH
            elif target.is_file():
                kind, want = "file", READ
            else:
                return None
            if access is not None:
                # An entry of this directory: only itself is left to judge; a link's target, its whole way.
                linked = target.parent != directory
                if not (access.refusal(target, want) is None if linked else access.may(target, want)):
                    return None
            return {"name": name, "kind": kind} if kind == "directory" else {
                "name": name, "kind": kind, "size": target.stat().st_size}
        except OSError:
            return None   # gone meanwhile, or behind a directory the service cannot search


def routes(ctx) -> list:
    c = {"ctx": ctx}
    return [
        (r"/", PageHandler, c),
        (r"/static/([A-Za-z0-9_-]+\.(?:css|js|svg))", AssetHandler, {"path": str(STATIC_DIR)}),
        # The wslink 1.x browser client from npm, installed with the web clients (pvhpc runtime install).
        (r"/static/vendor/(wslink\.js)", VendorHandler, {"path": str(WSLINK_DIR)}),
        *web_client_routes(ctx.config),
        (r"/api/v1/applications/([A-Za-z0-9_.-]{1,64})/files", DataFilesHandler, c),
    ]
