"""pvhpc's own application in this process: the Tornado application ``pvhpc.app`` builds, on a real SQLite store
in a temporary directory, with a stand-in scheduler (tests/fakes.py) behind it, asked over real HTTP on a free port.

No cluster, no other process: the routes, handlers, service and store are pvhpc's own, only the scheduler is not.
``fetch_all`` sends requests one after the other; ``served`` keeps the application listening for a test that
sends several at once (a launcher's POST that waits while the job reports).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import tornado.httpserver
import tornado.netutil
from tornado.httpclient import AsyncHTTPClient, HTTPResponse

from pvhpc import config
from pvhpc.app import PvhpcApp
from pvhpc.scheduler.spawner_client import SpawnerRunner
from pvhpc.scheduler import Scheduler


def site(tmp_path: Path, **sections) -> config.SiteConfig:
    """The least site config of an in-process app: its database in ``tmp_path``, the built-in front end, partition
    ``cpu`` and application ``paraview`` reading ``tmp_path``; each of ``sections`` adds its keys to the section
    of its name."""
    raw = {"service": {"database": f"sqlite:///{tmp_path / 'db.sqlite'}"},
           "frontend": {"kind": "builtin"}, "partitions": {"cpu": {}},
           "applications": {"paraview": {"data_roots": [str(tmp_path)]}}}
    for name, keys in sections.items():
        raw[name] = {**raw.get(name, {}), **keys}
    return config.parse(raw, "site.yaml")


def make_app(tmp_path: Path, scheduler: Scheduler | None = None, **sections) -> PvhpcApp:
    """pvhpc's application on a real SQLite store in ``tmp_path``, ``scheduler`` behind it (by default the base
    class, which answers nothing: for requests that must not get that far), its store open."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    app = PvhpcApp(site(tmp_path, **sections), scheduler=scheduler if scheduler is not None else Scheduler())
    app.ctx.store.open()
    return app


class Served:
    """An application listening on a free port of 127.0.0.1, and a client to ask it."""

    def __init__(self, port: int, client: AsyncHTTPClient):
        self.url = f"http://127.0.0.1:{port}"
        self.client = client

    async def fetch(self, method: str, path: str, body: str | dict | None = None,
                    headers: dict | None = None) -> HTTPResponse:
        """The response, errors included (no exception for a 4xx or 5xx); a dict ``body`` is sent as JSON."""
        if isinstance(body, dict):
            body = json.dumps(body)
        return await self.client.fetch(self.url + path, method=method, body=body, headers=headers,
                                       raise_error=False, allow_nonstandard_methods=True, request_timeout=60)


@contextlib.asynccontextmanager
async def served(app: PvhpcApp):
    server = tornado.httpserver.HTTPServer(app.web)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_sockets([sock])
    client = AsyncHTTPClient(force_instance=True)
    try:
        yield Served(sock.getsockname()[1], client)
    finally:
        client.close()
        server.stop()
        if isinstance(app.runner, SpawnerRunner):
            await app.runner.close()   # the command spawner its commands started ends here, not with pytest


def fetch_all(app: PvhpcApp, requests: list[tuple[str, str, str | None]], headers: dict | None = None) -> list:
    """Send ``requests`` ((method, path, body), one after the other) to ``app`` served on a free port of this host,
    and return the responses, errors included."""
    async def run() -> list:
        async with served(app) as there:
            return [await there.fetch(method, path, body, headers) for method, path, body in requests]

    return asyncio.run(run())
