"""pvhpc's own application in this process: the Tornado application ``pvhpc.app`` builds, on a real SQLite store
in a temporary directory, with a stand-in scheduler (tests/fakes.py) behind it, asked over real HTTP on a free port.

No cluster, no other process: the routes, handlers, service and store are pvhpc's own, only the scheduler is not.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import tornado.httpserver
import tornado.netutil
from tornado.httpclient import AsyncHTTPClient

from pvhpc import config
from pvhpc.app import PvhpcApp
from pvhpc.scheduler import Scheduler


def site(tmp_path: Path, **sections) -> config.SiteConfig:
    """The least site config of an in-process app: its database in ``tmp_path``, the built-in front end, partition
    ``cpu`` and application ``paraview`` reading ``tmp_path``; ``sections`` add or replace whole sections."""
    raw = {"service": {"database": f"sqlite:///{tmp_path / 'db.sqlite'}"},
           "frontend": {"kind": "builtin"}, "partitions": {"cpu": {}},
           "applications": {"paraview": {"data_roots": [str(tmp_path)]}}}
    raw.update(sections)
    return config.parse(raw, "site.yaml")


def make_app(tmp_path: Path, scheduler: Scheduler | None = None, **sections) -> PvhpcApp:
    """pvhpc's application on a real SQLite store in ``tmp_path``, ``scheduler`` behind it (by default the base
    class, which answers nothing: for requests that must not get that far), its store open."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    app = PvhpcApp(site(tmp_path, **sections), scheduler=scheduler if scheduler is not None else Scheduler())
    app.ctx.store.open()
    return app


def fetch_all(app: PvhpcApp, requests: list[tuple[str, str, str | None]], headers: dict | None = None) -> list:
    """Send ``requests`` ((method, path, body), one after the other) to ``app`` served on a free port of this host,
    and return the responses, errors included (no exception for a 4xx or 5xx)."""
    return asyncio.run(fetch_in_loop(app, requests, headers))


async def fetch_in_loop(app: PvhpcApp, requests: list[tuple[str, str, str | None]],
                        headers: dict | None = None) -> list:
    """``fetch_all`` for a test already inside an event loop (one that also runs the app's tracker, say)."""
    server = tornado.httpserver.HTTPServer(app.web)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True)
    try:
        return [await client.fetch(f"http://127.0.0.1:{sock.getsockname()[1]}{path}", method=method, body=body,
                                   headers=headers, raise_error=False, allow_nonstandard_methods=True)
                for method, path, body in requests]
    finally:
        client.close()
        server.stop()
