"""A TCP link with a round trip of its own, for benches: what a user's browser at home or on a VPN sees.

The sandbox's kernel has no netem qdisc, so the delay is made here: a relay on 127.0.0.1 that holds every chunk
it reads for half the round trip before passing it on, in order, both ways. It delays; it does not limit the
rate (the links compared here carry well under a megabyte a second).
"""

from __future__ import annotations

import asyncio
import socket
import threading


class DelayedLink:
    """Listens on 127.0.0.1 (``port`` once started) and connects each client to ``target`` (host, port)."""

    def __init__(self, target: tuple[str, int], round_trip_ms: float):
        self.target = target
        self.one_way = round_trip_ms / 2000
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="delayed-link", daemon=True)

    def start(self) -> "DelayedLink":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, "127.0.0.1", 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            carrying = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in carrying:
                task.cancel()
            await asyncio.gather(*carrying, return_exceptions=True)

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _client(self, reader, writer) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        for w in (writer, up_writer):
            w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            await asyncio.gather(self._carry(reader, up_writer), self._carry(up_reader, writer))
        except (OSError, asyncio.CancelledError):
            pass
        finally:   # both ways done (or one failed): only now both sockets close, so a half-close carries on
            writer.close()
            up_writer.close()

    async def _carry(self, reader, writer) -> None:
        """Everything ``reader`` reads, written ``one_way`` seconds after it was read, in order; its end passed on
        as a half-close."""
        loop = asyncio.get_running_loop()
        held: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while True:
                due, chunk = await held.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(chunk)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                chunk = await reader.read(1 << 16)
                held.put_nowait((loop.time() + self.one_way, chunk))
                if not chunk:
                    break
            await delivering
        finally:
            delivering.cancel()
