"""Idle means idle: a server that gets no user input for its input-idle time warns, then stops as ``idle``.

Imported inside the server's own process under pvpython (installed by wslink_exits.install): standard library
and wslink only. wslink's own ``--timeout`` stops a server only when no client is connected, so a browser tab
left open on a session holds its node (and GPU) until the walltime. Here every message a client sends is looked
at where all traffic arrives, whatever the front end: an RPC other than an image request (mouse, camera, proxy
changes, file listings) is user input, as is a client connecting. After PVHPC_INPUT_IDLE's ``SECONDS:WARNING``
(``900:120``) with no input, WARNING seconds before the end the server

- writes ``idle-warning`` in the job's work directory (PVHPC_IDLE_WARNING_FILE), which pvhpc's supervisor reports
  to pvhpc, which pushes the warning to the user's page (``event: warning``, reason ``idle``);
- publishes ``pvhpc.idle.warning`` to its connected clients (for clients that listen);

and at the end says ``input_idle`` as its exit cause (the session ends ``idle``) (wslink_exits.note), runs the same hooks as wslink's idle stop
(pvstate.py saves the ParaView state) and stops. Any input in between cancels the warning's end.
"""

import asyncio
import json
import os
import time

IDLE_ENV, WARNING_FILE_ENV = "PVHPC_INPUT_IDLE", "PVHPC_IDLE_WARNING_FILE"
# What a page that nobody looks at still sends: image requests and their bookkeeping. Everything else is input.
NOT_INPUT_PREFIXES = ("viewport.image.", "wslink.")
CHECK_EVERY = 1.0


def is_input(method):
    return isinstance(method, str) and not method.startswith(NOT_INPUT_PREFIXES)


def method_of(payload):
    """The RPC method of a client's text message, or None (attachments, malformed ones)."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(payload, str) or '"method"' not in payload:
        return None
    try:
        rpc = json.loads(payload)
    except ValueError:
        return None
    return rpc.get("method") if isinstance(rpc, dict) and "id" in rpc else None


def settings():
    """(seconds, warning lead) from PVHPC_INPUT_IDLE, or None when off."""
    text = os.environ.get(IDLE_ENV, "")
    seconds, _, lead = text.partition(":")
    try:
        seconds, lead = float(seconds), float(lead or 0)
    except ValueError:
        return None
    return (seconds, min(max(lead, 0.0), seconds)) if seconds > 0 else None


class InputClock:
    """When the last user input came; the watch that warns and stops."""

    def __init__(self, seconds, lead, stop):
        self.seconds, self.lead, self.stop = seconds, lead, stop
        self.last_input = time.monotonic()
        self.warned = False
        self.task = None

    def input(self):
        self.last_input = time.monotonic()
        if self.warned:
            self.warned = False
            try:
                os.unlink(os.environ[WARNING_FILE_ENV])
            except (KeyError, OSError):
                pass

    async def watch(self, handler):
        while True:
            await asyncio.sleep(CHECK_EVERY)
            quiet = time.monotonic() - self.last_input
            if quiet >= self.seconds:
                await self.stop()
                return
            if not self.warned and quiet >= self.seconds - self.lead:
                self.warned = True
                left = self.seconds - quiet
                warn(left)
                try:
                    handler.publish("pvhpc.idle.warning", {"seconds_left": round(left)})
                except Exception:   # a client's publish channel is a courtesy; the warning file is the record
                    pass


def warn(seconds_left):
    path = os.environ.get(WARNING_FILE_ENV)
    if not path:
        return
    try:
        with open(path + ".part", "w") as f:
            f.write(f"{seconds_left:.0f}\n")
        os.replace(path + ".part", path)
    except OSError:
        pass
    print(f"pvhpc: no user input for a while; the server stops in {seconds_left:.0f} s without any", flush=True)


def install(note, before_stop):
    """Hook wslink's message handling (1.x or 2.x); ``note`` says the exit cause, ``before_stop`` are called before the
    stop. Returns whether input idleness is watched."""
    found = settings()
    if found is None:
        return False
    try:
        from wslink import protocol
    except ImportError:
        return False
    handler_class = getattr(protocol, "WslinkHandler", None)
    if handler_class is None or not all(hasattr(handler_class, m) for m in ("onMessage", "onConnect", "publish")):
        return False
    # wslink 2.x (trame) speaks msgpack in chunks and hands each whole RPC, decoded, to onCompleteMessage;
    # wslink 1.x (the Visualizer, pvhpc's server) speaks JSON text frames to onMessage.
    decoded = hasattr(handler_class, "onCompleteMessage")
    seconds, lead = found
    clocks = {}

    def clock_of(handler):
        if handler not in clocks:
            async def stop():
                print(f"pvhpc: no user input for {seconds:.0f} s; stopping the server (idle)", flush=True)
                note("input_idle")
                for call in before_stop:
                    call()
                await handler.web_app.stop()
            clocks[handler] = clock = InputClock(seconds, lead, stop)
            clock.task = asyncio.ensure_future(clock.watch(handler))
        return clocks[handler]

    on_connect = handler_class.onConnect

    async def onConnect(self, request, client_id):
        clock_of(self).input()   # someone opened the session: that is a user at it
        return await on_connect(self, request, client_id)

    handler_class.onConnect = onConnect
    if decoded:
        on_complete = handler_class.onCompleteMessage

        async def onCompleteMessage(self, rpc, client_id):
            if (isinstance(rpc, dict) and "id" in rpc and self.isClientAuthenticated(client_id)
                    and is_input(rpc.get("method"))):
                clock_of(self).input()
            return await on_complete(self, rpc, client_id)

        handler_class.onCompleteMessage = onCompleteMessage
    else:
        on_message = handler_class.onMessage

        async def onMessage(self, is_binary, msg, client_id):
            if not is_binary and self.isClientAuthenticated(client_id) and is_input(method_of(msg.data)):
                clock_of(self).input()
            return await on_message(self, is_binary, msg, client_id)

        handler_class.onMessage = onMessage
    return True
