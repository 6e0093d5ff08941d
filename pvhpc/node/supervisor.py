"""pvhpc's supervisor on the node: runs one session's server, as the site's application command says.

    PVHPC_LAUNCH_COMMAND=JSON PVHPC_LAUNCH_READY=JSON PVHPC_REPORT_URL=U python3 supervisor.py --start-timeout S --workdir DIR

The command (a JSON list), the ready rule (``{"line": REGEX}`` or ``{"port_file": true}``) and where to report
(its URLs name the session) come in the environment, so the launcher's own command line, which ``ps`` shows to
every user of the node, holds nothing of the session's. The job script runs it (standard library only, beside
jobhelper.py; it imports nothing from pvhpc). It

- fills in what only the node knows: ``${port}`` (0 when the server reports its port, else a free port chosen
  here), ``${port_file}`` (a file in the job's private work directory), ``${host}``. Each item of the command is
  a template (``expand``): ``${name}`` is a value filled in here, ``$$`` a ``$`` of its own, which is how the
  service writes a ``$`` of what it filled in already (a data file called ``${port}x.vtk`` stays that): every
  value is filled in once, and never looked at again;
- runs a command that names ``${secret}`` or ``${connect_id}`` (a parallel session's pvserver connect id, from
  parallel.py) as ``INTERPRETER argv_secret.py SCRIPT.py ARGS``: the wrapper fills them into the script's own
  sys.argv, so the command line ``ps`` shows holds only the placeholders. The secret reaches the server through
  PVHPC_SECRET, the connect id through PVHPC_CONNECT_ID; the report token and URL do not reach it at all;
- starts the command directly (a JSON list: no shell), copies its output to the job's log and watches it for the
  ready line (or watches the port file), then reports ready with the port and the address the server listens
  on: this node's address on its route to pvhpc (server_address), which pvhpc checks against Slurm's view of
  the node and dials, never a name pvhpc's side may not resolve;
- when the server exits before it is ready, or is not ready in time, reports the start as failed with the last
  lines of its output; when it exits after, reports its exit status and why it stopped (its client asked, or it
  was idle) as the server's wslink hooks wrote it (wslink_exits.py);
- on SIGTERM (scancel, the walltime) stops the server and reports nothing: the scheduler says how the job ended.

With ``--display-fd FD`` (the job script's Xvfb, started beside it rather than before) it starts the server at
once if it waits for the display itself (server_gate.py), any other once the display is up, and reports ready
only once both are; when Xvfb exits before it accepts clients it stops the server and exits with DISPLAY_FAILED,
reporting nothing, and the job script starts Xvfb again. Its start-up is on every session's critical path: what
the server's start does not need (the report's HTTP modules, the watchdog) is imported while the server starts,
and it waits on events (output, the display, a signal) rather than polling. It prints when each step of the
start happened (``pvhpc-timing:``, epoch seconds) once the ready report is answered: bench/node_startup.py.
"""

import time

STARTED = time.time()   # before the imports: their time is part of the start-up the timing line tells

import argparse
import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse

import jobhelper   # beside this file
import server_gate

IMPORTED = time.time()

HERE = os.path.dirname(os.path.abspath(__file__))
ARGV_WRAPPER = os.path.join(HERE, "argv_secret.py")
# A ``$`` of the argument's own, or a placeholder: read left to right in one pass (expand).
TEMPLATE = re.compile(r"\$\$|\$\{(\w+)\}")
# Filled in inside the server's own process by argv_secret.py, never on a command line.
PRIVATE_PLACEHOLDERS = ("secret", "connect_id")
EXIT_CAUSE_ENV = "PVHPC_EXIT_CAUSE_FILE"
IDLE_WARNING_ENV = "PVHPC_IDLE_WARNING_FILE"   # where the server says nobody used it for a while (input_idle.py)
SHARES_ENV, SHARES_ASK_ENV = "PVHPC_SHARES_FILE", "PVHPC_SHARES_ASK_FILE"   # share_gate.py and watchdog.py
COMMAND_ENV, READY_ENV, LISTEN_ENV = "PVHPC_LAUNCH_COMMAND", "PVHPC_LAUNCH_READY", "PVHPC_LISTEN"
REPORT_URL_ENV = jobhelper.REPORT_URL_ENV
LAST_LINES = 12
# Seconds a server has to stop after SIGTERM before it is killed: within the job script's own grace for the
# launcher (2 s), so that the server never outlives it.
STOP_GRACE = 1.5
PR_SET_PDEATHSIG = 1
# The supervisor's exit status when Xvfb exited before it accepted clients: the job script starts it again.
DISPLAY_FAILED = 75
DISPLAY_FAILED_MARK = "display-failed"   # in the workdir: the job script starts Xvfb again only when it is there


def display_failed(workdir):
    """Says, beside the exit code, that Xvfb failed: a server's own exit code may be 75 too, and must not be
    taken for this (the job script would start the session over)."""
    open(os.path.join(workdir, DISPLAY_FAILED_MARK), "w").close()
    return DISPLAY_FAILED
# How often a server that reports ready in a port file is looked for, besides at each of its output lines.
PORT_FILE_POLL = 0.05
# How soon a signal's stop is acted on before ready (the server has its SIGTERM at once, from the handler).
SIGNAL_POLL = 0.1
TIMING_PREFIX = "pvhpc-timing:"
# The server's own start, under the name its gate is known by: pvhpc's server waits at the gate itself.
OWN_SERVER = os.path.join(HERE, "pvweb_server.py")


def die_with_the_launcher():
    """In the server's process, before it runs: the kernel kills it if the launcher dies (even by SIGKILL).
    An orphan would escape the job's process tracking (proctrack/linuxproc follows parents) and live on.
    (A server that waits at server_gate.py's gate sets it itself: this import of ctypes costs every start.)"""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class ServerAddress(collections.namedtuple("ServerAddress", "bind report why")):
    """Where the server binds, the address the job reports (what the front end dials), and how it was found
    (a line for the job's log)."""


def route_address(host, port):
    """This node's own IPv4 address on its route to ``host``:``port``, or None when ``host`` does not resolve
    here or has no route. It is the source address the kernel picks for a UDP socket connect()ed there: connect
    sends no packet, it only looks up the route."""
    try:
        found = socket.getaddrinfo(host, port or 9, socket.AF_INET, socket.SOCK_DGRAM)
    except (OSError, UnicodeError):
        return None
    for family, kind, proto, _, where in found:
        with socket.socket(family, kind, proto) as s:
            try:
                s.connect(where)
                return s.getsockname()[0]
            except OSError:
                continue
    return None


def reachable_address(report_urls, environ):
    """This node's address that pvhpc's side reaches, and how it was found; (None, why not) if none was.

    Not the address of this node's host name, as this node resolves it: that may be 127.0.1.1 (the line
    Debian's installer writes into /etc/hosts), which nobody else reaches, or a name's address on another
    network. The route this node takes to pvhpc's callback URL is the one pvhpc's side can take back."""
    for url in report_urls.split():
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            continue
        if parts.hostname:
            found = route_address(parts.hostname, port)
            if found:
                return found, f"this node's address on its route to pvhpc ({parts.hostname})"
    # Without a callback (doctor's probe reports to nobody): the host the job was submitted from, where pvhpc
    # or the login host it uses runs.
    submit_host = environ.get("SLURM_SUBMIT_HOST", "")
    found = route_address(submit_host, 9) if submit_host else None
    if found:
        return found, f"this node's address on its route to the host the job came from ({submit_host})"
    try:
        named = socket.gethostbyname(socket.gethostname())
    except OSError:
        named = None
    if named and not named.startswith("127."):
        return named, "the address of this node's host name (no route to pvhpc was found)"
    return None, "no route to pvhpc was found and this node's host name resolves to " + (named or "nothing")


def server_address(setting, report_urls, environ=os.environ):
    """A ServerAddress for runtime.server_listen (PVHPC_LISTEN): "node", the node's address that pvhpc's side
    reaches (reachable_address), so the port is not open on the node's other interfaces; "any", every
    interface, reporting that address all the same; else the one address the site named."""
    if setting and setting not in ("node", "any"):
        return ServerAddress(setting, setting, f"the server listens on {setting} (runtime.server_listen)")
    found, how = reachable_address(report_urls, environ)
    # Nothing found: the host name, which pvhpc resolves on its side, is the last word the report can give.
    report = found or socket.gethostname()
    if setting == "any":
        return ServerAddress("0.0.0.0", report, f"the server listens on every interface; the job reports {report}, "
                                                f"{how}")
    if found is None:
        return ServerAddress("0.0.0.0", report, f"{how}: the server listens on every interface and the job "
                                                f"reports {report}")
    return ServerAddress(found, found, f"the server listens on {found}, {how}")


def free_port(address):
    """A port free on this node now, for servers that cannot bind port 0 and say which port they got.
    Another process could take it before the server binds; the server then fails to start, and says so."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def escape(value):
    """``value`` as it stands in a template: its every ``$`` doubled, so that nothing in it is ever filled in."""
    return value.replace("$", "$$")


def template_of(arg):
    """An argument as staff wrote it (its ``${name}`` placeholders, any other ``$`` its own) as a template: a
    ``$`` of its own that could be read otherwise (before ``{`` or ``$``) doubled. pvhpc/sessions/job.py writes
    the application's command the same way."""
    return re.sub(r"(\$\{[^}]*\})|\$(?=[{$])", lambda m: m.group(1) or "$$", arg)


def expand(template, values, final=True):
    """``template`` with the ``${name}`` of ``values`` filled in, in one pass: what a value holds is never read
    as a placeholder. ``final``: ``$$`` becomes ``$``; else the result is a template still (argv_secret.py fills
    the rest), with the values escaped. A placeholder not in ``values`` is left as it is."""
    def one(match):
        name = match.group(1)
        if name is None:
            return "$" if final else "$$"
        if name not in values:
            return match.group(0)
        return values[name] if final else escape(values[name])
    return TEMPLATE.sub(one, template)


def placeholders(template):
    return {m.group(1) for m in TEMPLATE.finditer(template) if m.group(1)}


class CommandProblem(Exception):
    """The command cannot be run as pvhpc runs servers: it says why."""


def server_argv(command, ready, workdir, address=None):
    """The argv to run and the port it was given (0: the server reports the one it got). ``address``: where
    it binds (by default, as runtime.server_listen says: server_address)."""
    reports_port = ready.get("port_file") or "port" in re.compile(ready.get("line") or "x").groupindex
    if address is None:
        address = server_address(os.environ.get(LISTEN_ENV, "node"), os.environ.get(REPORT_URL_ENV, "")).bind
    port = 0 if reports_port else free_port(address)
    values = {"port": str(port), "port_file": os.path.join(workdir, "port"), "host": address}
    private = {name for arg in command[2:] for name in placeholders(arg)} & set(PRIVATE_PLACEHOLDERS)
    if private and not (len(command) > 1 and command[1].endswith(".py")):
        raise CommandProblem(f"the command passes {', '.join('${%s}' % n for n in sorted(private))}, which pvhpc "
                             "gives only to a Python script, inside its process (INTERPRETER SCRIPT.py ARGS...): "
                             "it would otherwise be on the command line every user of the node can read")
    # The interpreter and the script are run as they are; the wrapper fills in the rest of a wrapped command.
    argv = [expand(arg, values, final=not private or i < 2) for i, arg in enumerate(command)]
    if private:
        argv = [argv[0], ARGV_WRAPPER] + argv[1:]
    return argv, port


def shares_files(workdir):
    return os.path.join(workdir, "shares.json"), os.path.join(workdir, "shares-ask.json")


def server_environment(workdir):
    env = dict(os.environ)
    # The server cannot report for its session: only this launcher can.
    for name in ("PVHPC_REPORT_TOKEN", REPORT_URL_ENV, COMMAND_ENV, READY_ENV, LISTEN_ENV):
        env.pop(name, None)
    env[EXIT_CAUSE_ENV] = os.path.join(workdir, "exit-cause")
    env[IDLE_WARNING_ENV] = os.path.join(workdir, "idle-warning")
    # Where the watchdog writes pvhpc's word on the session's grants and the server asks for it (share_gate.py).
    env[SHARES_ENV], env[SHARES_ASK_ENV] = shares_files(workdir)
    # wslink prints its ready line without a newline; unbuffered, it arrives when printed.
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class OutputWatch(threading.Thread):
    """Copies the server's output to the job's log line by line, keeps the last lines, and looks for the
    ready line, also in a line not yet ended (wslink prints its line without a newline)."""

    def __init__(self, stream, ready_line, secret, on_output=lambda: None):
        super().__init__(daemon=True)
        self.stream, self.secret = stream, secret
        self.ready_line = re.compile(ready_line) if ready_line else None
        self.last = collections.deque(maxlen=LAST_LINES)
        self.match = None
        self.seen = threading.Event()
        self.seen_at = None
        self.on_output = on_output   # after each read, and at the end: whoever waits on the server looks again

    def _clean(self, line):
        return line.replace(self.secret, "<secret>") if self.secret else line

    def _look(self, line):
        if self.ready_line is not None and self.match is None:
            found = self.ready_line.search(line)
            if found:
                self.match = found
                self.seen_at = time.time()
                self.seen.set()

    def run(self):
        pending = b""
        while True:
            chunk = os.read(self.stream.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = self._clean(raw.decode(errors="replace"))
                self.last.append(line)
                sys.stdout.write(line + "\n")
                self._look(line)
            self._look(pending.decode(errors="replace"))
            sys.stdout.flush()
            self.on_output()
        if pending:
            line = self._clean(pending.decode(errors="replace"))
            self.last.append(line)
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        self.on_output()

    def tail(self):
        return " | ".join(line.strip() for line in self.last if line.strip())[-1500:]


def exit_status(returncode):
    return 128 - returncode if returncode < 0 else returncode


def how(code):
    return f"killed by signal {code - 128}" if code > 128 else f"exit code {code}"


def read_port_file(path):
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_cause(path):
    try:
        with open(path) as f:
            cause = f.read().strip()
    except OSError:
        return ""
    return cause if cause in jobhelper.EXIT_CAUSES else ""


def waits_at_the_gate(argv):
    """Whether the server waits at server_gate.py's gate (for the display, and it ties its life to this process's
    itself): pvhpc's own server, and any script run through the argv wrapper, which waits before it runs it."""
    return len(argv) > 1 and os.path.realpath(argv[1]) in (os.path.realpath(ARGV_WRAPPER),
                                                           os.path.realpath(OWN_SERVER))


def timing_line(moments):
    """The start's moments (epoch seconds, in the order they came) as one line of the job's log."""
    return TIMING_PREFIX + " supervisor " + " ".join(f"{name}={at:.6f}" for name, at in moments.items()
                                                     if at is not None)


def run(args):
    moments = {"started": STARTED, "imported": IMPORTED}
    wake = threading.Event()   # something the start waits on may have happened: look again
    display = None
    if args.display_fd is not None:
        # Xvfb, started beside this: read its word beside the server's start.
        display = server_gate.DisplayWatch(args.display_fd, on_done=wake.set)
        display.start()
    command, ready = json.loads(os.environ[COMMAND_ENV]), json.loads(os.environ[READY_ENV])
    where = server_address(os.environ.get(LISTEN_ENV, "node"), args.url)
    print(f"pvhpc: {where.why}", flush=True)
    try:
        argv, port = server_argv(command, ready, args.workdir, where.bind)
    except CommandProblem as e:
        print(f"pvhpc: {e}", flush=True)
        jobhelper.send(args.url, "failed", 30, reason=f"the server could not be started: {e}")
        return 1
    env = server_environment(args.workdir)
    for stale in (env[EXIT_CAUSE_ENV], env[IDLE_WARNING_ENV], os.path.join(args.workdir, "port"),
                  env[SHARES_ENV], env[SHARES_ASK_ENV]):
        if os.path.exists(stale):
            os.unlink(stale)   # only what this server says counts
    deadline = time.monotonic() + args.start_timeout
    gate = server_gate.Gate() if waits_at_the_gate(argv) else None
    if gate:
        env.update(gate.environment())
    if display is not None:
        if gate is None and not display.done.wait(args.start_timeout):
            print(f"pvhpc: Xvfb did not accept clients within {args.start_timeout:g} s", flush=True)
            jobhelper.send(args.url, "failed", 30, reason=f"Xvfb did not accept clients within "
                                                          f"{args.start_timeout:g} s")
            return 1
        if display.done.is_set() and not display.up:
            print("pvhpc: Xvfb exited before it accepted clients", flush=True)
            if gate:
                gate.shut()
            return display_failed(args.workdir)
    stopping = threading.Event()
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=None if gate else die_with_the_launcher,
                                pass_fds=(gate.fd,) if gate else ())
    except OSError as e:
        # A program that is not there (a wrong runtime.pvpython, say): the start failed, and this says why.
        if gate:
            gate.shut()
        print(f"pvhpc: cannot run {argv[0]}: {e.strerror}", flush=True)
        jobhelper.send(args.url, "failed", 30, reason=f"the server could not be started: {argv[0]}: {e.strerror}")
        return 1
    moments["spawned"] = time.time()
    if gate:
        gate.started()
        if display is None:
            gate.open()
        else:
            # Opened (or shut) once Xvfb has spoken; at once if it already has.
            display.on_done = lambda: (gate.open() if display.up else gate.shut(), wake.set())
            if display.done.is_set():
                display.on_done()

    def on_signal(signum, frame):
        # Slurm (scancel, walltime) or the job script: stop the server; the scheduler tells how the job ended.
        # Not wake.set() here, nor a thread started: a handler runs between two bytecodes of the main thread,
        # which may hold the event's lock (or threading's) just then. The wait below ends soon enough.
        stopping.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    watch = OutputWatch(proc.stdout, ready.get("line"), os.environ.get("PVHPC_SECRET", ""), on_output=wake.set)
    watch.start()
    # While the server starts (a second, for pvpython): what only comes after, imported now, off the critical path.
    jobhelper.preload()
    import watchdog   # beside this file
    # pvhpc may end the session where Slurm cannot end the job (its node was cut off): the watchdog asks pvhpc,
    # and stops the server as Slurm's SIGTERM would (parallel.py runs its own for a parallel session, and not this).
    watchdog.start(args.url, os.environ.get("PVHPC_REPORT_TOKEN", ""), os.environ.get(watchdog.WATCHDOG_ENV, ""),
                   on_end=lambda why: on_signal(None, None), shares=shares_files(args.workdir))

    port_file = os.path.join(args.workdir, "port")
    listening = None
    while True:
        wake.clear()   # before looking: whatever happens from here on wakes the wait below
        if listening is None:
            if ready.get("port_file"):
                listening = read_port_file(port_file)
                if listening is not None:
                    moments["ready"] = time.time()
            elif watch.seen.is_set():
                group = watch.match.groupdict().get("port")
                listening = int(group) if group and group.isdigit() else port
                moments["ready"] = watch.seen_at
        if display is not None and display.done.is_set() and not display.up:
            print("pvhpc: Xvfb exited before it accepted clients: stopping the server", flush=True)
            stop(proc)
            watch.join(5)
            return display_failed(args.workdir)
        if listening is not None and (display is None or display.up):
            break
        if stopping.is_set():
            stop(proc)
            return 143
        if proc.poll() is not None:
            watch.join(5)
            code = exit_status(proc.returncode)
            jobhelper.send(args.url, "failed", 30, reason=f"the server exited ({how(code)}) before it was ready; "
                                                          f"its last lines: {watch.tail() or '(no output)'}")
            return 1
        if time.monotonic() > deadline:
            stop(proc)
            watch.join(5)
            what = "the server was" if listening is None else "Xvfb was"
            jobhelper.send(args.url, "failed", 30, reason=f"{what} not ready within {args.start_timeout:g} s; "
                                                          f"its last lines: {watch.tail() or '(no output)'}")
            return 1
        # A port file is looked for at each output line too; the wait's end is only for what says nothing (a
        # signal, an exit seen by its status, the deadline, a server that writes its port file silently).
        wake.wait(PORT_FILE_POLL if ready.get("port_file") else SIGNAL_POLL)
    if display is not None:
        moments["display"] = display.at

    def report_ready():
        moments["report"] = time.time()
        jobhelper.send(args.url, "ready", args.start_timeout, port=listening, host=where.report)
        moments["answered"] = time.time()
        print(timing_line(moments), flush=True)

    reporter = threading.Thread(target=report_ready, daemon=True)
    reporter.start()
    idle_warned = False
    while proc.poll() is None:
        if stopping.is_set():
            stop(proc)
            break
        # The server warns once per quiet spell (the file goes when input comes back): passed on to pvhpc.
        warning = read_port_file(env[IDLE_WARNING_ENV])
        if warning is not None and not idle_warned:
            threading.Thread(target=jobhelper.send, args=(args.url, "idle_warning", 30),
                             kwargs={"seconds_left": warning}, daemon=True).start()
        idle_warned = warning is not None
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    watch.join(2 if stopping.is_set() else 5)
    code = exit_status(proc.returncode)
    print(f"pvhpc: the server ended ({how(code)})", flush=True)
    if stopping.is_set():
        return 143
    reporter.join(5)
    # Said at once, so the session ends now and with why, not at the next poll with only Slurm's word.
    jobhelper.send(args.url, "exited", 30, code=code, cause=read_cause(env[EXIT_CAUSE_ENV]))
    return code


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pvhpc-supervisor")
    parser.add_argument("--start-timeout", type=float, default=300)
    parser.add_argument("--url", default=os.environ.get(REPORT_URL_ENV, ""),
                        help=f"where to report (space-separated URLs; default: ${REPORT_URL_ENV}, which keeps them "
                             "off the command line); none: only print")
    parser.add_argument("--workdir", required=True, help="the job's private directory (port and exit-cause files)")
    parser.add_argument("--display-fd", type=int, default=None,
                        help="the pipe Xvfb, started beside this, writes its display number into once it accepts "
                             "clients (-displayfd): the server may start before it does")
    args = parser.parse_args(argv)
    for name in (COMMAND_ENV, READY_ENV):
        if not os.environ.get(name):
            parser.error(f"{name} is not set (the job script sets it)")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
