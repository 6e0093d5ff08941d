"""A loop the service runs beside its requests (the tracker's polling, the store feed), started and stopped
with the service."""

from __future__ import annotations

import asyncio


class BackgroundLoop:
    _task: asyncio.Task | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
