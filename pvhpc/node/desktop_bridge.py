"""A desktop session's server: a websocket on the node's address, carrying ParaView's client-server TCP stream to
the session's pvserver on loopback.

    PVHPC_SECRET=S python3 desktop_bridge.py --host H --port P --timeout SECONDS --ds-host 127.0.0.1 --ds-port N

pvhpc's supervisor runs it as a desktop application's server (parallel.py adds ``--ds-host``/``--ds-port`` once the
pvserver listens), so readiness, reports, the watchdog and stopping are those of every session; the front ends
(built-in proxy, Apache, an SSH tunnel) carry its websocket as they carry any session's. Standard library only,
beside supervisor.py; it imports nothing from pvhpc (docs/desktop.md).

The protocol, which ``pvhpc connect`` (pvhpc/client/desktop.py) speaks and others may rely on:

1. the client's first message is a text frame ``{"secret": "<the session's secret>"}``;
2. the bridge answers the text ``{"ok": true}``, then dials the pvserver on loopback;
3. from then on binary frames carry the raw TCP byte stream, both ways; either side's close closes the other.

A wrong or missing secret is closed with code 1008 and a reason that says so, and no pvserver connection is made.
pvserver serves one client and then ends: the bridge takes one client, and ends when that client's connection has
ended (cause ``client``: the session ends completed), or, when the pvserver cannot be dialled, with status 1 (failed).
A second client while the first is connected is closed with
a reason (1013). Nobody in ``--timeout`` seconds: it ends as idle.

Who can reach it: everyone who reaches the node's address, as every session server; it believes the secret alone.
Who can reach the pvserver behind it: only the job's user, from this node's loopback (pvserver_guard.c), which is
what the bridge is.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import struct
import sys

import wslink_exits   # beside this file: how the supervisor learns why its server stopped by itself

SECRET_ENV = "PVHPC_SECRET"
WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
MAX_HEAD = 16 * 1024          # an HTTP upgrade request's head
MAX_HELLO = 4096              # the first message: {"secret": ...}
MAX_FRAME = 64 * 1024 * 1024
HELLO_TIMEOUT = 20            # seconds a client has to upgrade and send its secret
CHUNK = 256 * 1024
WRONG_SECRET = (1008, "wrong secret")
NO_SECRET = (1008, 'the first message must be the text {"secret": "<the session\'s secret>"}')
TAKEN = (1013, "this session's ParaView server already has its client")
UNREACHABLE = (1011, "the session's ParaView server cannot be reached")


class HelloError(ValueError):
    """The first message is not what the protocol wants: (close code, reason)."""

    def __init__(self, close):
        super().__init__(close[1])
        self.close = close


def check_hello(kind, payload, secret):
    """Whether the first message presents ``secret``; HelloError (with the close to answer) when it does not."""
    if kind != TEXT or len(payload) > MAX_HELLO:
        raise HelloError(NO_SECRET)
    try:
        hello = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HelloError(NO_SECRET) from None
    given = hello.get("secret") if isinstance(hello, dict) else None
    if not isinstance(given, str) or not given:
        raise HelloError(NO_SECRET)
    if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
        raise HelloError(WRONG_SECRET)


def accept_key(key):
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + WEBSOCKET_GUID).digest()).decode("ascii")


def parse_upgrade(head):
    """The Sec-WebSocket-Key of an HTTP websocket upgrade request's head (bytes up to the blank line); ValueError
    for anything else."""
    lines = head.decode("latin-1").split("\r\n")
    method, _, rest = lines[0].partition(" ")
    if method != "GET" or not rest.endswith("HTTP/1.1"):
        raise ValueError("not a GET of HTTP/1.1")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in headers.get("connection", "").lower():
        raise ValueError("not a websocket upgrade")
    key = headers.get("sec-websocket-key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError
    except ValueError:
        raise ValueError("no valid Sec-WebSocket-Key") from None
    return key


def unmask(payload, mask):
    if not payload:
        return payload
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def frame(opcode, payload=b""):
    """One unmasked frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return head + payload


def close_frame(close):
    code, reason = close
    return frame(CLOSE, struct.pack("!H", code) + reason.encode()[:123])


async def read_frame(reader, max_size=MAX_FRAME):
    """(fin, opcode, payload) of the next frame, refused (ValueError) over ``max_size`` before it is read;
    IncompleteReadError when the connection ends."""
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    if n > max_size:
        raise ValueError(f"a frame of {n} bytes")
    mask = await reader.readexactly(4) if b1 & 0x80 else None
    payload = await reader.readexactly(n)
    return bool(b0 & 0x80), b0 & 0x0F, unmask(payload, mask) if mask else payload


class Bridge:
    def __init__(self, secret, ds_host, ds_port):
        self.secret, self.ds_host, self.ds_port = secret, ds_host, ds_port
        self.taken = asyncio.Event()   # the one client came
        self.unreachable = False      # the pvserver could not be dialled: the session failed, it did not complete
        self.done = asyncio.Event()   # the one client's session with the pvserver is over

    async def handle(self, reader, writer):
        try:
            await self._handle(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError, ValueError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HELLO_TIMEOUT)
            key = parse_upgrade(head)   # at most MAX_HEAD: the reader's limit
        except (ValueError, asyncio.LimitOverrunError):
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n")
        # The first message is read only up to MAX_HELLO: whoever reaches the node's address gets this far.
        _, kind, payload = await asyncio.wait_for(read_frame(reader, MAX_HELLO), HELLO_TIMEOUT)
        try:
            check_hello(kind, payload, self.secret)
        except HelloError as e:
            print(f"pvhpc-bridge: refused a client: {e}", flush=True)
            writer.write(close_frame(e.close))
            await writer.drain()
            return
        if self.taken.is_set():
            writer.write(close_frame(TAKEN))
            await writer.drain()
            return
        self.taken.set()
        try:
            writer.write(frame(TEXT, b'{"ok": true}'))
            await writer.drain()
            try:
                upstream_reader, upstream = await asyncio.open_connection(self.ds_host, self.ds_port)
            except OSError as e:
                print(f"pvhpc-bridge: cannot reach the pvserver at {self.ds_host}:{self.ds_port}: {e}", flush=True)
                self.unreachable = True
                writer.write(close_frame(UNREACHABLE))
                await writer.drain()
                return
            print("pvhpc-bridge: a client is connected to the ParaView server", flush=True)
            await self._relay(reader, writer, upstream_reader, upstream)
            print("pvhpc-bridge: the client's connection to the ParaView server has ended", flush=True)
        finally:
            self.done.set()

    async def _relay(self, reader, writer, upstream_reader, upstream):
        async def to_server():
            while True:
                _, opcode, payload = await read_frame(reader)
                if opcode in (BINARY, CONTINUATION, TEXT):
                    upstream.write(payload)   # a byte stream: frames' edges mean nothing
                    await upstream.drain()
                elif opcode == PING:
                    writer.write(frame(PONG, payload))
                elif opcode == CLOSE:
                    writer.write(frame(CLOSE, payload[:2]))
                    return

        async def to_client():
            while data := await upstream_reader.read(CHUNK):
                writer.write(frame(BINARY, data))
                await writer.drain()
            writer.write(close_frame((1000, "the ParaView server closed the connection")))

        tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            upstream.close()
            try:
                await writer.drain()
            except (ConnectionError, OSError):
                pass


async def serve(args, secret):
    bridge = Bridge(secret, args.ds_host, args.ds_port)
    server = await asyncio.start_server(bridge.handle, args.host, args.port, limit=MAX_HEAD)
    port = server.sockets[0].getsockname()[1]
    print(f"pvhpc-bridge: listening on port {port}", flush=True)
    try:
        if args.timeout > 0:
            await asyncio.wait_for(bridge.taken.wait(), args.timeout)
        await bridge.done.wait()
    except asyncio.TimeoutError:
        print(f"pvhpc-bridge: no client came within {args.timeout:g} s", flush=True)
        wslink_exits.note("idle")
        return 0
    finally:
        server.close()
    if bridge.unreachable:
        return 1   # reported as the server's exit: the session ends failed, with the line above in its log
    wslink_exits.note("client")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pvhpc-desktop-bridge")
    parser.add_argument("--host", required=True, help="the address to listen on (the node's, as the supervisor says)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=0, help="seconds to wait for a client (0: for ever)")
    parser.add_argument("--ds-host", required=True, help="where the session's pvserver listens (loopback)")
    parser.add_argument("--ds-port", type=int, required=True)
    args = parser.parse_args(argv)
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        print(f"pvhpc-bridge: {SECRET_ENV} is not set: refusing to serve without a secret", flush=True)
        return 2
    return asyncio.run(serve(args, secret))


if __name__ == "__main__":
    sys.exit(main())
