"""The gate a server run by pvhpc's supervisor waits at before it serves: the display up, and its life tied to
the supervisor's. Both are on every session's critical path, and both were paid before the server started.

The display: pvpython takes about a second to import ParaView, Xvfb about a tenth of one to accept clients, and
ParaView needs the display only once its server starts (its first render). So the job script starts Xvfb and,
without waiting for it, the supervisor, which starts the server at once. Xvfb says that it accepts clients by
writing its display number into a pipe (``-displayfd``), which the supervisor reads beside its other work
(``DisplayWatch``).

The supervisor's life: a server must not outlive its supervisor (even one SIGKILLed): an orphan would escape the
job's process tracking. The kernel's parent-death signal (prctl) says so, set in the server's process; from the
supervisor, that takes a hook run between fork and exec, which imports ctypes there, on the critical path, in
every start. A server that waits at the gate sets it itself once it has imported what it needs (ParaView has
ctypes imported by then), and leaves if the supervisor has died already.

A server that waits at the gate (pvhpc's own, and any script run through argv_secret.py) finds a pipe in
PVHPC_SERVER_GATE and its supervisor's pid in PVHPC_SUPERVISOR_PID: the supervisor writes one byte into the pipe
once the display is up (at once without Xvfb), or closes it without one when it never will be (``Gate``); the
server blocks on it (``wait``) just before its first use of the display. Any other server is started once the
display is up, with the parent-death signal set before it runs. No polling: each side blocks on a pipe.

Standard library only, beside supervisor.py; it imports nothing from pvhpc.
"""

import os
import threading
import time

GATE_ENV, SUPERVISOR_ENV = "PVHPC_SERVER_GATE", "PVHPC_SUPERVISOR_PID"
OPEN = b"1"
PR_SET_PDEATHSIG = 1


def die_with_the_supervisor():
    """The kernel kills this process (SIGKILL) when its parent, the supervisor, dies."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def wait(environ=os.environ, moments=None):
    """In the server's process, before its first use of the display: whether to go on (the display is up and the
    supervisor lives), blocking until the supervisor knows. True at once without a gate (not started by pvhpc's
    supervisor). The variables are taken out of the environment: what the server starts has no gate to wait at.
    ``moments`` (a dict) gets "tied": when the parent-death signal was set, before the wait."""
    fd, supervisor = environ.pop(GATE_ENV, None), environ.pop(SUPERVISOR_ENV, "")
    if fd is None:
        return True
    die_with_the_supervisor()
    if moments is not None:
        moments["tied"] = time.time()
    if str(os.getppid()) != supervisor:
        return False   # it died before the signal was set: nobody would stop this server
    try:
        fd = int(fd)
    except ValueError:
        return False
    try:
        said = os.read(fd, 1)
    except OSError:
        return False
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    return said == OPEN


def read_display(fd):
    """What Xvfb wrote into its -displayfd pipe: its display number (text) once it accepts clients, "" when it
    closed the pipe (exited) first."""
    text = b""
    while not text.endswith(b"\n"):
        try:
            chunk = os.read(fd, 64)
        except OSError:
            break
        if not chunk:
            break
        text += chunk
    shown = text.decode(errors="replace").strip()
    return shown if shown.isdigit() else ""


class Gate:
    """The supervisor's end of a server's gate: ``environment`` and ``fd`` for the server's start, ``started``
    once it runs (the server holds its own copy of the read end), then ``open`` or ``shut``, once."""

    def __init__(self):
        self.fd, self._write = os.pipe()
        self._lock = threading.Lock()

    def environment(self):
        return {GATE_ENV: str(self.fd), SUPERVISOR_ENV: str(os.getpid())}

    def started(self):
        self._close_read()

    def open(self):
        self._close_write(OPEN)

    def shut(self):
        self._close_write(b"")

    def _close_read(self):
        with self._lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None

    def _close_write(self, said):
        with self._lock:
            if self._write is None:
                return
            try:
                if said:
                    os.write(self._write, said)   # one byte: the pipe's buffer takes it, read or not
            except OSError:
                pass   # the server has gone: nobody to tell
            finally:
                os.close(self._write)
                self._write = None


class DisplayWatch(threading.Thread):
    """Reads Xvfb's -displayfd pipe (``fd``, from the job script) beside the supervisor's work. Once Xvfb has
    spoken or exited: ``up`` (True or False), ``at`` (time.time()), ``done`` set, then ``on_done()`` called."""

    def __init__(self, fd, on_done=lambda: None):
        super().__init__(name="pvhpc-display", daemon=True)
        self.fd, self.on_done = fd, on_done
        self.up, self.number, self.at = None, "", None
        self.done = threading.Event()

    def run(self):
        self.number = read_display(self.fd)
        try:
            os.close(self.fd)
        except OSError:
            pass
        self.up, self.at = bool(self.number), time.time()
        self.done.set()
        self.on_done()
