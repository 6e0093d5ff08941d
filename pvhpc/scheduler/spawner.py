"""The command spawner: a small process of the service's own that starts its local commands (sbatch, squeue, ...).

Why a process: starting a command costs the starting process a few milliseconds under load (Python 3.11 holds
the GIL through vfork until the child has exec'd, then sets up three pipes, their transports and the wait), and
in a burst of 200 sbatch that work, done in the service, took a third of its event loop's time and stalled every
request meanwhile. Here it runs beside the service, on the other core, while the service's loop only writes a
request and reads an answer on one pipe (``SpawnerRunner`` in ``spawner_client.py``).

Who reaches it: only the service, through the stdin and stdout pipes it was started with (no socket, no name);
the commands it starts get neither (stdin is theirs or /dev/null, every other descriptor is closed), so a
command cannot ask it for another. It believes the service entirely: it runs what it is sent, as the service's
own user, with the environment it was started with (the service's runner's), exactly as ``LocalRunner`` would in
the service (each command its own process group, its timeout, SIGTERM before SIGKILL). What it carries (a job
script on sbatch's stdin) stays in pipes; it logs nothing of what it runs. When its stdin closes (the service
ended or let it go), it waits for the commands under way (each bounded by its timeout) and exits.

Wire format, both ways: frames of a 4-byte big-endian length and that many bytes of JSON.
    request  {"id": N, "argv": [...], "input": str|null, "timeout": s, "max_output": n|null}
             {"id": N, "cancel": true}                     (end that command: its caller gave up)
    answer   {"id": N, "returncode": n, "stdout": str, "stderr": str, "seconds": s, "truncated": bool}
             {"id": N, "unavailable": "why", "timed_out": bool}
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys

from pvhpc.scheduler.runners import CommandTimedOut, CommandUnavailable, LocalRunner, watch_commands_without_threads

HEADER = struct.Struct(">I")
# A frame past this is not one the service sends (a job script is at most limits' size): the pipe is out of step.
MAX_REQUEST = 16 * 1024 * 1024


def frame(message: dict) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, limit: int | None = None) -> dict | None:
    """The next message, or None at the end of the pipe."""
    try:
        size, = HEADER.unpack(await reader.readexactly(HEADER.size))
        if limit is not None and size > limit:
            raise ValueError(f"a frame of {size} bytes")
        return json.loads(await reader.readexactly(size))
    except asyncio.IncompleteReadError:
        return None


async def answer(runner: LocalRunner, request: dict) -> dict:
    """Run one request's command and say what came of it, as a frame's message."""
    try:
        result = await runner.run(request["argv"], input=request.get("input"), timeout=request["timeout"],
                                  max_output=request.get("max_output"))
    except CommandUnavailable as e:
        return {"id": request["id"], "unavailable": e.message, "timed_out": isinstance(e, CommandTimedOut)}
    return {"id": request["id"], "returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr,
            "seconds": result.seconds, "truncated": result.truncated}


async def serve(reader: asyncio.StreamReader, writer: asyncio.WriteTransport) -> None:
    # Its own environment is the service runner's (LC_ALL included): the commands get it unchanged.
    runner = LocalRunner(os.environ)
    running: dict[int, asyncio.Task] = {}

    async def one(request: dict) -> None:
        try:
            message = await answer(runner, request)
        finally:
            running.pop(request["id"], None)
        if not writer.is_closing():
            writer.write(frame(message))

    while (request := await read_frame(reader, MAX_REQUEST)) is not None:
        if request.get("cancel"):
            task = running.get(request["id"])
            if task is not None:
                task.cancel()   # LocalRunner ends the command (its process group) on the way out
        else:
            running[request["id"]] = asyncio.ensure_future(one(request))
    if running:
        await asyncio.gather(*running.values(), return_exceptions=True)


async def main_async() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2 ** 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(0, "rb", buffering=0))
    writer, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(1, "wb", buffering=0))
    try:
        await serve(reader, writer)
    finally:
        writer.close()


def main() -> None:
    # The service's stop (or a terminal's Ctrl-C to it) ends the spawner by closing its stdin, not by a signal:
    # the commands under way are then still answered.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    watch_commands_without_threads()
    try:
        asyncio.run(main_async())
    except BrokenPipeError:
        pass   # the service is gone: nobody reads the answers
    sys.exit(0)


if __name__ == "__main__":
    main()
