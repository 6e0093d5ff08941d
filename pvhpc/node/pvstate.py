"""A session's ParaView state: saved before its job ends, loaded when a new session starts from it.

Imported inside the server's own process under pvpython (pvhpc's server, and any Python server run through
argv_secret.py such as the Visualizer): standard library, wslink and ParaView only, nothing from pvhpc.

Jobs end at their walltime, on cancel or when culled as idle, and the work in them would be lost. Slurm sends
SIGTERM first (then SIGKILL after its KillWait); the handler installed here saves the pipeline with
``paraview.simple.SaveState`` into ``$PVHPC_STATE_SAVE-<UTC time>.pvsm`` (the job's umask keeps it the user's
own; written beside and renamed, so a half-written state is never listed), then leaves. wslink's aiohttp
backend would take SIGTERM for itself (a graceful exit with no state saved), so ``start_webserver`` is wrapped
to leave the signals to this module. The same wrapper loads ``$PVHPC_STATE_LOAD`` before the server serves,
after checking again here, on the node, that every file the state reads lies inside the session's data roots.
"""

import os
import signal
import sys
import time
import xml.etree.ElementTree as ElementTree

SAVE_ENV, LOAD_ENV, ROOTS_ENV = "PVHPC_STATE_SAVE", "PVHPC_STATE_LOAD", "PVHPC_STATE_ROOTS"
# A pipeline's state is some hundred kB; a file far larger is not one pvhpc saved (the service's limit too).
MAX_STATE_BYTES = 16 * 1024 * 1024
INDEX = "index.tsv"
# Properties of readers that name files: what a state reads from disk.
FILE_PROPERTIES = ("FileName", "FileNames", "FilePattern", "FilePrefix")


class StateRefused(Exception):
    """The state cannot be loaded here; the message says why and what to do."""


def files_named(text, path):
    """Every file name the readers of a ParaView state (its XML ``text``, read from ``path``) name; raises
    StateRefused if it is not a state. pvhpc's service checks a request's state with this too, before submit."""
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise StateRefused(f"{path} is not a readable ParaView state file ({e}); start from another one") from None
    # pvpython writes <GenericParaViewApplication>, the desktop application <ParaView>: both hold this.
    if root.find("ServerManagerState") is None:
        raise StateRefused(f"{path} is not a ParaView state file (no ServerManagerState element)")
    names = []
    for prop in root.iter("Property"):
        if prop.get("name") in FILE_PROPERTIES:
            names.extend(e.get("value") for e in prop.findall("Element") if e.get("value"))
    return names


def untrusted(path, uid, file_stat=None):
    """Why the state at ``path`` may hold code of someone other than user ``uid``, or None when it cannot.

    A state runs the Python it holds (ProgrammableSource and ProgrammableFilter scripts, Python Calculator,
    Python annotations, ...) as the user who loads it. So a state is loaded only if that user owns it and no
    one else could have written it or put it where it is: neither the file nor any directory above it may be
    another user's (root's excepted) or writable by others (a sticky directory such as /tmp excepted: others
    cannot replace what is in it). The way OpenSSH's StrictModes judges a user's keys. ``file_stat``: the
    file as opened (the node judges what it will read, not what the name points at later). Raises OSError when
    a path cannot be looked at (the caller decides: pvhpc's service leaves it to the node, the node refuses)."""
    import pwd
    import stat

    def owner(st):
        try:
            return pwd.getpwuid(st.st_uid).pw_name
        except KeyError:
            return f"uid {st.st_uid}"

    real = os.path.realpath(path)
    st = file_stat or os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid != uid:
        return (f"{path} belongs to {owner(st)}, not to you: a state runs the Python it holds as whoever loads "
                "it, so only your own are loaded (read it, then save a copy of your own to start from)")
    if st.st_mode & 0o022:
        return (f"{path} can be written by other users (mode {stat.filemode(st.st_mode)}): any of them could "
                "have put code in it; make it yours alone (chmod go-w) or start from a copy of your own")
    directory = os.path.dirname(real)
    while True:
        st = os.stat(directory)
        if st.st_uid not in (uid, 0):
            return (f"{path} lies in {directory}, which belongs to {owner(st)}: they could have replaced it; "
                    "start from a copy in a directory of your own")
        if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            return (f"{path} lies in {directory}, which other users can write to (mode "
                    f"{stat.filemode(st.st_mode)}): any of them could have replaced it; start from a copy in a "
                    "directory only you can write to")
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def outside(names, roots):
    """The names not inside any of the roots (real paths: a link out of a root is outside)."""
    real_roots = [os.path.realpath(r) for r in roots]
    found = []
    for name in names:
        real = os.path.realpath(name)
        if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in real_roots):
            found.append(name)
    return found


def save(prefix):
    """Save the current pipeline; returns the file written."""
    from paraview import simple

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = f"{prefix}-{stamp}.pvsm"
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    partial = target + ".partial"
    simple.SaveState(partial)
    os.chmod(partial, 0o600)
    size = os.path.getsize(partial)
    os.replace(partial, target)
    # The list pvhpc reads back (pvhpc/sessions/savedstates.py), where jobs run as their users through the one
    # command sudo lets it run as them (tail): one line per state, appended whole.
    fd = os.open(os.path.join(os.path.dirname(target), INDEX), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "w") as index:
        index.write(f"{os.path.basename(target)}\t{size}\n")
    return target


def save_and_leave(signum, frame):
    # A second SIGTERM (Slurm signals every process of the job, the launcher its server) must not cut the save.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    prefix = os.environ.get(SAVE_ENV)
    try:
        if prefix:
            print(f"pvhpc: state saved to {save(prefix)}", flush=True)
    except Exception as e:   # whatever went wrong, the job is ending: say why and go
        print(f"pvhpc: the state could not be saved: {e}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signum)


def save_before_idle_end():
    """For wslink_exits: the idle timer is about to stop the server."""
    prefix = os.environ.get(SAVE_ENV)
    if prefix:
        try:
            print(f"pvhpc: state saved to {save(prefix)}", flush=True)
        except Exception as e:
            print(f"pvhpc: the state could not be saved: {e}", file=sys.stderr, flush=True)


def load(path, roots):
    """Load a state whose every data file lies inside ``roots``; the first render view becomes active."""
    import tempfile

    from paraview import simple

    try:
        # Opened once, by its real path, never through a link (one swapped in after realpath fails here), and
        # judged and read through that one descriptor: what is checked is what is loaded.
        fd = os.open(os.path.realpath(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            why = untrusted(path, os.getuid(), file_stat=os.fstat(f.fileno()))
            data = b"" if why else f.read(MAX_STATE_BYTES + 1)
    except OSError as e:
        raise StateRefused(f"the state {path} cannot be read here: {e.strerror}") from None
    if why:
        raise StateRefused(f"the state is refused: {why}")
    if len(data) > MAX_STATE_BYTES:
        raise StateRefused(f"the state {path} is over {MAX_STATE_BYTES // (1024 * 1024)} MB: not a saved state")
    text = data.decode("utf-8", errors="replace")
    names = files_named(text, path)
    bad = outside(names, roots)
    if bad:
        raise StateRefused(f"the state {path} reads {bad[0]}, outside the session's data roots "
                           f"({', '.join(roots)}); start from a state whose data is inside them")
    # ParaView opens the file by name: it gets a private copy of exactly what was checked, which nobody can
    # change between the check and the load.
    with tempfile.NamedTemporaryFile("wb", suffix=".pvsm", prefix="pvhpc-state-") as copy:
        copy.write(data)
        copy.flush()
        simple.LoadState(copy.name)
    views = [v for v in simple.GetViews() if v.GetXMLName() == "RenderView"]
    if views:
        simple.SetActiveView(views[0])
        sources = list(simple.GetSources().values())
        if sources:
            simple.SetActiveSource(sources[-1])


def load_requested_or_leave():
    """Load the state this job was asked to start from ($PVHPC_STATE_LOAD), once: the variable is taken out,
    so a server that loads it itself before building its view (the trame app) is not given it a second time
    when wslink starts. A state refused here ends the server, saying why (the session ends start_failed with
    that line). Returns the path loaded, or None."""
    path = os.environ.pop(LOAD_ENV, None)
    if not path:
        return None
    roots = [r for r in os.environ.get(ROOTS_ENV, "").split(os.pathsep) if r]
    try:
        load(path, roots)
    except StateRefused as e:
        print(f"pvhpc: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(3)
    print(f"pvhpc: loaded the state {path}", flush=True)
    return path


def install():
    """Take SIGTERM for saving, and wrap wslink's start_webserver to load a state and keep its hands off it.
    Without either variable (a server run outside a pvhpc job) nothing changes."""
    if not (os.environ.get(SAVE_ENV) or os.environ.get(LOAD_ENV)):
        return
    import wslink_exits   # beside this file (imported here: pvhpc's service reads states with this module)

    signal.signal(signal.SIGTERM, save_and_leave)
    wslink_exits.before_idle_stop.append(save_before_idle_end)
    try:
        from wslink import server
    except ImportError:
        return
    start = server.start_webserver

    def start_webserver(options, protocol, *args, **kwargs):
        load_requested_or_leave()
        options.nosignalhandlers = True
        return start(options, protocol, *args, **kwargs)

    server.start_webserver = start_webserver
