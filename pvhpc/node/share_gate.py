"""Sharees at a session's server: who may connect with a share key, what a view-only one may call, and cutting
them off within seconds of a revoke.

Imported inside the server's own process under pvpython (pvhpc's server, pvweb_server.py, and any Python server run
through argv_secret.py, such as the Visualizer): standard library and wslink 1.x only. Everything a client sends
arrives here whatever the front end (the built-in proxy and Apache both just carry the websocket), so this is
where ``view`` is enforced: nothing a view-only connection sends reaches ParaView unless it is on VIEW_CALLS, an
allow-list of calls that only read the picture. A list of what to refuse would miss the next protocol
ParaView or an application adds.

Which grants stand, this process learns from pvhpc through two files in the job's private work directory:

- PVHPC_SHARES_FILE, written by the job's watchdog (watchdog.py) from pvhpc's answer to its liveness ask:
  ``{"asked_at": EPOCH, "grants": {GRANT_ID: ROLE}}``;
- PVHPC_SHARES_ASK_FILE, written here: ``{"ask": EPOCH, "connected": N, "grants": [GRANT_ID...]}``. A new
  ``ask`` makes the watchdog ask pvhpc at once; while ``connected`` is above 0 it asks every FAST_ASK seconds
  (watchdog.py), so a revoke reaches a connected sharee within about that (each change to the grants file is read
  within WATCH_EVERY). ``grants``, those of the sharees connected, go to pvhpc with the ask, for the session's
  history.

A sharee's hello is answered only once a word from pvhpc newer than the hello lists its grant with its role (a
key whose grant was revoked never gets in, even for a moment); with no fresh word within ADMIT_WAIT (pvhpc
unreachable) the last word decides. The owner's secret is checked by wslink as before.
"""

import asyncio
import json
import os
import time

import share_keys   # beside this file

SHARES_ENV, ASK_ENV = "PVHPC_SHARES_FILE", "PVHPC_SHARES_ASK_FILE"
ADMIT_WAIT = 4.0     # seconds a sharee's hello waits for pvhpc's word on its grant
WATCH_EVERY = 0.25   # seconds between looks at the grants file
REFUSED = -32003     # the JSON-RPC error code of a call a view-only connection may not make

# What a view-only connection may call: the picture, and nothing that changes what the picture shows.
VIEW_CALLS = frozenset({"viewport.image.render"})
RENDER_OPTIONS = frozenset({"view", "size", "mtime", "quality", "localTime"})
QUICK_VIEW_CALL = "pvhpc.viewport.interact"   # allowed without events: the quick view's first picture


def view_may_call(method, args, kwargs=None):
    """Whether a view-only connection may make this call (``args``: the RPC's positional arguments; ``kwargs``:
    its keyword ones, which wslink passes on to the call too: none of the view's calls takes any, so any is
    refused rather than checked)."""
    if kwargs or not isinstance(args, list):
        return False
    options = args[0] if args else {}
    if method in VIEW_CALLS:
        return len(args) <= 1 and isinstance(options, dict) and set(options) <= RENDER_OPTIONS
    if method == QUICK_VIEW_CALL:
        # [events, options]: with no events it only renders
        return (len(args) == 2 and args[0] == [] and isinstance(args[1], dict)
                and set(args[1]) <= RENDER_OPTIONS)
    return False


def read_rpc(payload):
    """A client's text message as a dict, or None."""
    if isinstance(payload, bytes):
        try:
            payload = payload.decode("utf-8")
        except UnicodeDecodeError:
            return None
    try:
        rpc = json.loads(payload)
    except (TypeError, ValueError):
        return None
    return rpc if isinstance(rpc, dict) else None


def is_hello(rpc):
    return str(rpc.get("id", "")).startswith("system:") and rpc.get("method") == "wslink.hello"


class Word:
    """pvhpc's latest word on the session's grants, as the watchdog wrote it."""

    def __init__(self, asked_at, grants):
        self.asked_at, self.grants = asked_at, grants

    def stands(self, grant_id, role):
        return self.grants.get(grant_id) == role


def read_word(path):
    try:
        with open(path) as f:
            data = json.load(f)
        asked_at, grants = float(data["asked_at"]), data["grants"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(grants, dict):
        return None
    return Word(asked_at, {str(k): str(v) for k, v in grants.items()})


def write_json(path, data):
    tmp = f"{path}.{os.getpid()}.part"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class Sharee:
    __slots__ = ("handler", "client_id", "grant_id", "role")

    def __init__(self, handler, client_id, grant_id, role):
        self.handler, self.client_id, self.grant_id, self.role = handler, client_id, grant_id, role


class Gate:
    """The connected sharees and pvhpc's word on their grants (no wslink of its own: ``install`` hooks it)."""

    def __init__(self, shares_path, ask_path, clock=time.time):
        self.shares_path, self.ask_path, self.clock = shares_path, ask_path, clock
        self.sharees = {}   # client id -> Sharee
        self.asked = 0.0
        self.task = None

    def word(self):
        return read_word(self.shares_path)

    def say(self, ask=None):
        """Tell the watchdog how many sharees are connected, and to ask pvhpc now when ``ask`` is given."""
        if ask is not None:
            self.asked = ask
        try:
            write_json(self.ask_path, {"ask": self.asked, "connected": len(self.sharees),
                                       "grants": sorted({s.grant_id for s in self.sharees.values()})})
        except OSError:
            pass

    async def admits(self, grant_id, role):
        since = self.clock()
        self.say(ask=since)
        deadline = since + ADMIT_WAIT
        while self.clock() < deadline:
            word = self.word()
            if word is not None and word.asked_at >= since:
                return word.stands(grant_id, role)
            await asyncio.sleep(0.1)
        word = self.word()
        return word is not None and word.stands(grant_id, role)

    def role_of(self, client_id):
        sharee = self.sharees.get(client_id)
        return sharee.role if sharee is not None else None

    def let_in(self, handler, client_id, grant_id, role):
        self.sharees[client_id] = Sharee(handler, client_id, grant_id, role)
        print(f"pvhpc: a sharee connected ({role})", flush=True)
        self.say()
        if self.task is None:
            self.task = asyncio.ensure_future(self.watch())

    def forget(self, client_id):
        if self.sharees.pop(client_id, None) is not None:
            self.say()

    def revoked(self, word):
        """The connected sharees whose grants ``word`` no longer lists with their role."""
        return [s for s in self.sharees.values() if not word.stands(s.grant_id, s.role)]

    async def watch(self):
        seen = None
        while True:
            await asyncio.sleep(WATCH_EVERY)
            try:
                stamp = os.stat(self.shares_path).st_mtime_ns
            except OSError:
                continue
            if stamp == seen:
                continue
            seen = stamp
            word = self.word()
            if word is None:
                continue
            for sharee in self.revoked(word):
                await self.cut(sharee)

    async def cut(self, sharee):
        self.forget(sharee.client_id)
        handler = sharee.handler
        handler.authentified_client_ids.discard(sharee.client_id)
        connection = handler.connections.get(sharee.client_id)
        print(f"pvhpc: a sharee's grant was revoked; closing its connection ({sharee.role})", flush=True)
        if connection is not None:
            try:
                await connection.close(code=4403, message=b"pvhpc: this session is no longer shared with you")
            except Exception:   # already closing: it is cut either way, as it is no longer authenticated
                pass


def install(gate=None):
    """Hook wslink 1.x's handler: share keys at hello, view-only calls, cutting off. Returns the gate, or None
    where there is nothing to do (no grants file named: pvhpc's probe job, a wslink of other insides)."""
    if gate is None:
        shares, ask = os.environ.get(SHARES_ENV), os.environ.get(ASK_ENV)
        if not shares or not ask:
            return None
        gate = Gate(shares, ask)
    try:
        from wslink import protocol
    except ImportError:
        return None
    handler_class = getattr(protocol, "WslinkHandler", None)
    needed = ("validateToken", "onMessage", "onClose", "sendWrappedError")
    if handler_class is None or hasattr(handler_class, "onCompleteMessage") or not all(
            hasattr(handler_class, m) for m in needed):
        return None   # wslink 2.x (trame) hands messages elsewhere: its applications offer no view-only sharing
    if getattr(handler_class, "_pvhpc_share_gate", None) is not None:
        return handler_class._pvhpc_share_gate   # once per process: the wrapper and pvhpc's server both install

    validate, on_message, on_close = handler_class.validateToken, handler_class.onMessage, handler_class.onClose

    async def validateToken(self, token, client_id):
        if not share_keys.is_share_key(token):
            gate.forget(client_id)   # the owner's secret, checked as wslink always did
            return await validate(self, token, client_id)
        secret = getattr(self.serverProtocol, "secret", None) if self.serverProtocol else None
        found = share_keys.read(secret, token)
        if found is None or not await gate.admits(*found):
            return False
        gate.let_in(self, client_id, *found)
        return True

    async def onMessage(self, is_binary, msg, client_id):
        if gate.role_of(client_id) == "view":
            if is_binary:
                return   # an attachment is always an argument of a call that changes something
            rpc = read_rpc(msg.data)
            if rpc is None or "id" not in rpc:
                return
            if not is_hello(rpc) and not view_may_call(rpc.get("method"), rpc.get("args", []), rpc.get("kwargs")):
                await self.sendWrappedError(rpc["id"], REFUSED, "refused: this session is shared with you to "
                                            f"view only, and {str(rpc.get('method'))[:80]} is not a view's call",
                                            client_id=client_id)
                return
        return await on_message(self, is_binary, msg, client_id)

    async def onClose(self, client_id):
        gate.forget(client_id)
        return await on_close(self, client_id)

    handler_class.validateToken = validateToken
    handler_class.onMessage = onMessage
    handler_class.onClose = onClose
    handler_class._pvhpc_share_gate = gate
    return gate
