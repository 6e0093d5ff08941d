"""The application's stop: the HTTP server first, so no request starts a command (and a new command spawner) while
or after the parts behind it close."""

from __future__ import annotations

import asyncio

from pvhpc.scheduler.spawner_client import SpawnerRunner

from tests.harness.inprocess import make_app


class RecordedServer:
    def __init__(self, order):
        self.order = order

    def stop(self):
        self.order.append("server stops listening")

    async def close_all_connections(self):
        self.order.append("server closes its connections")


def test_the_http_server_stops_before_the_command_spawner_closes(tmp_path):
    app = make_app(tmp_path)
    assert isinstance(app.runner, SpawnerRunner)
    order = []
    app.server = RecordedServer(order)
    close = app.runner.close

    async def recorded_close():
        order.append("spawner closes")
        await close()

    app.runner.close = recorded_close
    asyncio.run(app.stop())
    assert order == ["server stops listening", "server closes its connections", "spawner closes"]


def test_the_stop_ends_the_sharing_lookup_threads(tmp_path):
    """Users' groups and groups' members are looked up in threads of sharing's own: an application stopped (a
    service restarted in one process, a test) leaves none of them behind."""
    app = make_app(tmp_path)
    pool = app.ctx.sharing._nss

    async def look_up_then_stop():
        await asyncio.get_running_loop().run_in_executor(pool, app.ctx.sharing.directory.groups_of, "root")
        assert pool._threads and all(t.is_alive() for t in pool._threads)
        await app.stop()

    asyncio.run(look_up_then_stop())
    for thread in pool._threads:
        thread.join(5)
    assert not [t.name for t in pool._threads if t.is_alive()]
