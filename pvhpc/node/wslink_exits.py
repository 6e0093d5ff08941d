"""Why a wslink server stopped by itself, written where pvhpc's supervisor reads it (pvhpc/node/supervisor.py).

Imported inside the server's own process (pvhpc's server, and any Python server run through argv_secret.py),
under pvpython: standard library and wslink only. wslink stops a server in two ways that look the same from
outside (exit status 0): a client asked (``application.exit`` / ``application.exit.later``, which the Visualizer's
``autoStopServer`` and SmartConnect send), or no client came back within ``--timeout`` (idle). The hooks below
write which one into the file named by PVHPC_EXIT_CAUSE_FILE, first cause wins, just before wslink stops.
Without that variable, or with a wslink whose insides differ, nothing is hooked and the server runs as it would.

How long a server waits without a client is pvhpc's rule, not the server's: a network drop or a laptop's sleep
must find the server still there while pvhpc keeps the session. So the idle timer hooked here counts
PVHPC_CLIENT_IDLE seconds (the application's ``idle_timeout``, set by the job script) whatever ``--timeout`` the
command gave wslink (wslink's own default is 300 s, and a site's command may hard-code one); 0 there: never.
"""

import functools
import os

import input_idle   # beside this file

CAUSE_ENV = "PVHPC_EXIT_CAUSE_FILE"
CLIENT_IDLE_ENV = "PVHPC_CLIENT_IDLE"
# Called before the idle timer stops the server (pvstate.py saves the session's state there).
before_idle_stop = []


def note(cause):
    path = os.environ.get(CAUSE_ENV)
    if not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return   # already said (the first cause is the one), or nowhere to say it
    with os.fdopen(fd, "w") as f:
        f.write(cause + "\n")


def client_idle_seconds(wslink_timeout):
    """Seconds the server waits without a client before it stops as idle: pvhpc's PVHPC_CLIENT_IDLE where the job
    set it (0: never), else the server's own ``--timeout`` (a server run outside a pvhpc job)."""
    text = os.environ.get(CLIENT_IDLE_ENV, "").strip()
    try:
        return max(0.0, float(text)) if text else float(wslink_timeout or 0)
    except ValueError:
        return float(wslink_timeout or 0)


def install():
    """Hook wslink 1.x's idle shutdown and its exit RPCs; returns whether they were hooked."""
    if not os.environ.get(CAUSE_ENV):
        return False
    try:
        import wslink
        from wslink import protocol, websocket
    except ImportError:
        return False
    web_app = getattr(protocol, "AbstractWebApp", None)
    server = getattr(websocket, "ServerProtocol", None)
    if web_app is None or server is None or not all(
            hasattr(c, m) for c, m in ((web_app, "shutdown_schedule"), (server, "exit"), (server, "exitLater"))):
        return False

    def shutdown_schedule(self):
        # As wslink's own, with the cause said when the idle timer fires, on pvhpc's time (not --timeout's).
        async def idle_stop():
            note("idle")
            for call in before_idle_stop:
                call()
            await self.stop()
        seconds = client_idle_seconds(self.timeout)
        self._shutdown_task = wslink.schedule_coroutine(seconds, idle_stop) if seconds > 0 else None

    exit_now, exit_later = server.exit, server.exitLater

    # functools.wraps keeps the RPC registration (wslink marks the function itself).
    @functools.wraps(exit_now)
    def exit(self):
        note("client")
        return exit_now(self)

    @functools.wraps(exit_later)
    def exitLater(self, secondsLater=60):
        def client_stop():
            note("client")
            self.stopServer()
        print(f"schedule exit for {secondsLater} seconds from now", flush=True)
        wslink.schedule_callback(secondsLater, client_stop)

    web_app.shutdown_schedule = shutdown_schedule
    server.exit, server.exitLater = exit, exitLater
    # No user input for the application's input_idle_timeout ends the server too, even with a client connected.
    input_idle.install(note, before_idle_stop)
    return True
