"""One websocket carried as bytes between a client and its session's server, once the proxy has let it through.

After the opening handshake both ends speak websocket to each other and the
proxy has nothing to add to a frame: it does not parse, unmask, check or
re-mask messages (that per-message work in Python held the built-in proxy well
below Apache), it writes what it reads on one connection to the other, whole
frames at once (a frame's start waits for its rest, up to HOLD bytes). The
handshake is passed on too: the client's key goes to the server and the
server's accept comes back, so each end checks the other as if they had met.

Only the frames' headers are followed, a few bytes each, because a close frame
of the proxy's own (the session ended) may only go between two frames.
"""

from __future__ import annotations

import asyncio
import errno
import os
import struct
from typing import Callable

from tornado.httputil import HTTPHeaders, ResponseStartLine, parse_response_start_line
from tornado.iostream import IOStream

from pvhpc.errors import PvhpcError

CLOSE = 0x8
CLOSE_GRACE = 2.0          # seconds a frame under way at a cut-off may take to end before the connection just drops
# Seconds a client told to close has to answer with its own close frame before its connection is closed anyway.
# (Closing at once would race its next write, which then fails as a broken connection instead of a closed one.)
CLOSE_WAIT = 5.0
MAX_ANSWER = 16 * 1024     # the server's handshake answer is headers only
# The most of an unfinished frame kept back until the rest of it comes (carry): a 4-byte header held for its
# payload saves a wake-up of both the proxy's peer and this process; a large frame (a 1080p image can be MBs)
# still streams through in chunks of the kernel's reads.
HOLD = 64 * 1024
# What a websocket upgrade needs to travel; nothing else of the client's request (its cookies, its login) does.
# No Sec-WebSocket-Extensions: the proxy never offered compression to servers, and does not start now.
REQUEST_HEADERS = ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Protocol")
ANSWER_HEADERS = ("Sec-WebSocket-Accept", "Sec-WebSocket-Protocol")
# What a dial to a node says when no path leads there (a cut link, a prohibit rule, a host down).
UNREACHABLE = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EACCES, errno.EPERM}


class HandshakeError(PvhpcError):
    """The server's answer to the upgrade was not HTTP (or far too long to be a handshake)."""

    status = 502


class FrameBoundary:
    """Where one direction's bytes are between two frames (RFC 6455 5.2), and whether a close frame went by."""

    __slots__ = ("_remaining", "_header", "close_seen", "completed")

    def __init__(self):
        self._remaining = 0     # payload bytes of the current frame still to come
        self._header = b""      # a frame header read only in part
        self.close_seen = False
        self.completed = 0      # of the bytes last fed, how many end at the end of a frame (0: no frame ended)

    @property
    def between_frames(self) -> bool:
        return self._remaining == 0 and not self._header

    def feed(self, data, stop: bool = False) -> int:
        """Follow ``data``; with ``stop``, only as far as the next point between frames. Returns the bytes followed."""
        n, i = len(data), 0
        self.completed = 0
        while i < n:
            if stop and self.between_frames:
                return i
            if self._remaining:   # the common case: inside a payload, one subtraction per chunk
                step = min(self._remaining, n - i)
                self._remaining -= step
                i += step
                if not self._remaining:
                    self.completed = i
                continue
            known = len(self._header)
            header = self._header + bytes(data[i:i + 14])
            size = _header_size(header)
            if size is None or len(header) < size:
                self._header = header   # all that is left of data is this header's start
                return n
            i += size - known
            self._header = b""
            self._remaining = _payload_size(header)
            if not self._remaining:
                self.completed = i
            if header[0] & 0x0F == CLOSE:
                self.close_seen = True
        return i


def _header_size(header: bytes) -> int | None:
    if len(header) < 2:
        return None
    length = header[1] & 0x7F
    return 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if header[1] & 0x80 else 0)


def _payload_size(header: bytes) -> int:
    length = header[1] & 0x7F
    if length == 126:
        return struct.unpack_from("!H", header, 2)[0]
    if length == 127:
        return struct.unpack_from("!Q", header, 2)[0]
    return length


def close_frame(code: int, reason: str, masked: bool) -> bytes:
    """A close frame; a client's frames are masked (RFC 6455 5.3), a server's are not."""
    payload = struct.pack("!H", code) + reason.encode()[:123]
    if not masked:
        return bytes((0x80 | CLOSE, len(payload))) + payload
    key = os.urandom(4)
    return bytes((0x80 | CLOSE, 0x80 | len(payload))) + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def why_unreachable(error: BaseException, timeout: float) -> str:
    """Why dialling a session's server failed, in words: never empty (``str(TimeoutError())`` is "")."""
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return f"no answer within {timeout:g} s (the node or its network may be down)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (nothing listens on that port now: the server may have stopped)"
    if isinstance(error, OSError) and error.errno in UNREACHABLE:
        return f"{error.strerror or os.strerror(error.errno)} (no route to the node)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def upgrade_request(path: str, host: str, headers: HTTPHeaders) -> bytes:
    """The client's upgrade, for the server at ``host`` (host:port) and ``path`` (with its query, if any)."""
    lines = [f"GET /{path} HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade"]
    lines += [f"{name}: {headers[name]}" for name in REQUEST_HEADERS if name in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class _Connection(asyncio.Protocol):
    """One of the two connections. What it reads goes to the other; before the two are joined it is kept."""

    def __init__(self, relay: "WebSocketRelay", direction: str):
        self.relay = relay
        self.direction = direction          # where what it reads goes: "to_server" or "to_client"
        self.boundary = FrameBoundary()     # of what it reads
        self.peer: _Connection | None = None
        self.transport: asyncio.Transport | None = None
        self.early = bytearray()            # read before joining (the server's handshake answer, ...)
        self.held = b""                     # a frame's part kept back until its rest comes (see carry)
        self.sent_whole = True              # whether what went to the peer so far ends between two frames
        self.answer_read: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.relay.made(self)

    def data_received(self, data: bytes) -> None:
        if self.relay.joined:
            self.relay.carry(self, data)
            return
        self.early += data
        if self.answer_read is not None and not self.answer_read.done():
            if b"\r\n\r\n" in self.early:
                self.answer_read.set_result(None)
            elif len(self.early) > MAX_ANSWER:
                self.answer_read.set_exception(HandshakeError("the server's answer has no end of headers"))

    def eof_received(self) -> None:
        self.relay.gone(self)   # and the transport closes itself (None: no half-open websockets)

    def connection_lost(self, exc) -> None:
        if self.answer_read is not None and not self.answer_read.done():
            self.answer_read.set_exception(ConnectionError("the server closed the connection during the handshake"))
        self.relay.gone(self)

    # Flow control: a connection that cannot write fast enough slows down the reading of the other.
    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.transport.resume_reading()


class WebSocketRelay:
    """A client's websocket joined byte for byte to its server's: ``dial``, ``join``, then until either side
    closes or ``end`` cuts it off.

    ``carried(direction, nbytes)`` is told of every chunk; ``on_done(relay)`` once, when it is over.
    """

    def __init__(self, session_id: str, carried: Callable[[str, int], None]):
        self.session_id = session_id
        self._carried = carried
        self.on_done: Callable[[WebSocketRelay], None] = lambda relay: None
        self.server = _Connection(self, "to_client")
        self.client = _Connection(self, "to_server")
        self.joined = False
        self.done = False
        self._cut_off: tuple[int, str] | None = None
        self._grace: asyncio.TimerHandle | None = None
        self._lingering: asyncio.TimerHandle | None = None   # told to close, waiting for the client's close

    async def dial(self, host: str, port: int, request: bytes, timeout: float) -> tuple[ResponseStartLine,
                                                                                        HTTPHeaders]:
        """Connect to the server, send it ``request`` (the upgrade) and read its answer's status and headers."""
        loop = asyncio.get_running_loop()
        self.server.answer_read = loop.create_future()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: self.server, host, port), timeout)
            self.server.transport.write(request)
            await asyncio.wait_for(self.server.answer_read, timeout)
        except BaseException:
            self.abandon()
            raise
        head, _, rest = bytes(self.server.early).partition(b"\r\n\r\n")
        self.server.early = bytearray(rest)   # frames the server sent right after its answer
        start, _, fields = head.decode("latin-1").partition("\r\n")
        try:
            return parse_response_start_line(start), HTTPHeaders.parse(fields)
        except Exception as e:   # tornado's HTTPInputError, or a header line it cannot split
            self.abandon()
            raise HandshakeError(f"the server's answer is not HTTP: {start[:80]!r}") from e

    async def join(self, stream: IOStream) -> None:
        """Take the client's connection from Tornado (its 101 answer written) and start carrying."""
        await stream.write(b"")   # resolves once everything written before, the 101 answer, is out
        # The connection leaves Tornado: a duplicate of its socket goes to a plain asyncio transport, the
        # cheapest way to move bytes, and Tornado's stream is closed. The client has sent nothing more
        # since its upgrade: RFC 6455 4.1 has it wait for the answer first.
        sock = stream.socket.dup()
        stream.close()
        self.client.peer, self.server.peer = self.server, self.client
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: self.client, sock=sock)
        except BaseException:
            sock.close()
            self.abandon()
            raise

    def made(self, connection: _Connection) -> None:
        # The client's transport exists and reads nothing yet (asyncio starts reading after this call):
        # from here on each read is carried, after what the server sent early.
        if connection is self.client:
            self.joined = True
            if self.server.early:
                self.carry(self.server, bytes(self.server.early))
            self.server.early = bytearray()

    def carry(self, source: _Connection, data: bytes) -> None:
        if self.done:
            if source is self.client and self._lingering is not None:
                source.boundary.feed(data)
                if source.boundary.close_seen:
                    self._stop_lingering()
            return
        if self._cut_off is not None:
            if source is self.server:   # let the frame under way end, then close
                self.client.transport.write(source.held + data[:source.boundary.feed(data, stop=True)])
                source.held = b""
                if source.boundary.between_frames:
                    self._finish_cut_off()
            return
        # Whole frames go on at once; the start of a frame whose rest is still on its way waits for it (up to
        # HOLD bytes). A sender often writes a frame's header and its payload apart (aiohttp, wslink's server,
        # does for payloads over 16 KiB), and a receiver can do nothing with part of a frame: passed on as it
        # came, each part would wake the receiver, and cost this process a write, for nothing.
        boundary = source.boundary
        boundary.feed(data)
        held, cut = source.held, boundary.completed
        if boundary.between_frames:
            out, source.held, source.sent_whole = (held + data if held else data), b"", True
        elif (len(data) - cut if cut else len(held) + len(data)) <= HOLD:
            if not cut:
                source.held = held + data
                return
            out, source.held, source.sent_whole = held + data[:cut], data[cut:], True
        else:   # a large frame streams through, as it comes
            out, source.held, source.sent_whole = (held + data if held else data), b"", False
        source.peer.transport.write(out)
        self._carried(source.direction, len(out))

    def end(self, code: int, reason: str) -> None:
        """Cut the connection off (the session ended): a close frame to each side that is between frames."""
        if self.done or self._cut_off is not None:
            return
        if not self.joined:
            self.abandon()
            return
        self._cut_off = (code, reason)
        if self.server.boundary.between_frames:
            self._finish_cut_off()
        else:
            self._grace = asyncio.get_running_loop().call_later(CLOSE_GRACE, self._finish_cut_off)

    def _finish_cut_off(self) -> None:
        self._close(self._cut_off, self._cut_off)

    def gone(self, source: _Connection) -> None:
        """One side's connection ended: the other is told, by a close frame if none went by, and closed."""
        if source is self.client and self._lingering is not None:
            self._stop_lingering()
        if self._cut_off is not None:
            self._finish_cut_off()
        elif source is self.server:
            self._close((1011, "the session's server went away"), None)
        else:
            self._close(None, (1001, "the client went away"))

    def abandon(self) -> None:
        """Before joining: close whatever is open, tell nobody."""
        self._close(None, None)

    def _close(self, to_client: tuple[int, str] | None, to_server: tuple[int, str] | None) -> None:
        if self.done:
            return
        self.done = True
        if self._grace is not None:
            self._grace.cancel()
        for connection, farewell in ((self.client, to_client), (self.server, to_server)):
            if connection.transport is None or connection.transport.is_closing():
                continue
            came = connection.peer   # the connection whose bytes this one was writing
            # Between frames as this connection's end saw them: what is held back (carry) never went on, so a
            # frame whose start is held is not under way there; one that streamed through in part is.
            told = bool(farewell and self.joined and (came.boundary.between_frames or came.sent_whole)
                        and not came.boundary.close_seen)
            if told:
                connection.transport.write(close_frame(*farewell, masked=connection is self.server))
            if told and connection is self.client and not connection.boundary.close_seen:
                # As a websocket server does: the client answers the close, then its connection is closed.
                self._lingering = asyncio.get_running_loop().call_later(CLOSE_WAIT, self._stop_lingering)
            else:
                connection.transport.close()   # after what is buffered has been written
        self.on_done(self)

    def _stop_lingering(self) -> None:
        self._lingering.cancel()
        self._lingering = None
        self.client.transport.close()
