"""Render job scripts from the templates in ``jobscripts/``.

A template is a shell script with ``{{ name }}`` placeholders. Every value is
shell-quoted when it is put in, so whatever a value holds (spaces, quotes, ``$``,
newlines) reaches the script as one literal word; nothing is ever interpreted by
the shell.

A template may name only values pvhpc gives (``JOB_SCRIPT_VALUES``): a name outside them is a config error
when the site config is read, so a typo never silently becomes an empty string. pvhpc then renders it with
exactly the values it names (pvhpc/sessions/job.py); ``render`` still refuses a missing or an extra value, for
a caller that passes others.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Mapping

from pvhpc.errors import PvhpcError
from pvhpc.paths import JOBSCRIPTS_DIR

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")

# Every value pvhpc gives a job script (pvhpc/sessions/job.py); a template uses those it needs.
JOB_SCRIPT_VALUES = (
    "helper_python", "job_helper", "launcher", "command", "ready", "report_url", "render_mode", "start_timeout",
    "secret", "report_token", "pythonpath", "venv", "log_file", "server_listen", "data_roots",
    # A parallel session's MPI ParaView server, for pvhpc/node/parallel.py (empty for one process).
    "parallel",
    # The ParaView state saved when the job is ended and the one loaded at start (pvhpc/node/pvstate.py).
    "state_save", "state_load", "state_roots",   # state_roots: the data roots, which a state reads inside
    # "1" for a continued session's successor job: its server waits for the handover and starts from the state its
    # predecessor saved (pvhpc/sessions/continuation.py, pvhpc/node/jobhelper.py handover); else empty.
    "continues",
    # SECONDS:WARNING without user input before the server stops as idle, or empty (pvhpc/node/input_idle.py).
    "input_idle",
    # INTERVAL:GRACE of the node's watchdog, which stops a server whose session has ended (pvhpc/node/watchdog.py).
    "watchdog",
    # Environment modules to load, one a line; the module system's init scripts to try and the modulefile
    # directories to add, one a line (pvhpc/jobs/modules.py).
    "modules", "modules_init", "module_paths",
    # What templates written before applications had a command use: pvhpc's own server's arguments.
    "pvpython", "server_script", "data_dir", "load_file", "idle_timeout",
)



class TemplateError(PvhpcError):
    """A job script template cannot be read or rendered; the message names the template or the value."""


class JobTemplate:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.text = self.path.read_text()
        except OSError as e:
            raise TemplateError(f"cannot read job script template {self.path}: {e.strerror}") from None
        self.names = frozenset(PLACEHOLDER.findall(self.text))

    @classmethod
    def current(cls, path: str | Path) -> "JobTemplate":
        """The template at ``path`` as the file is now, read again only when it has changed (a file of another
        inode, size or change time): staff's edit counts from the next submission, as when every submission read
        the file, which in a burst of 200 was a file read on the event loop per request."""
        path = Path(path)
        try:
            st = path.stat()
        except OSError as e:
            raise TemplateError(f"cannot read job script template {path}: {e.strerror}") from None
        version = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = _CURRENT.get(path)
        if known is None or known[0] != version:
            known = _CURRENT[path] = (version, cls(path))
        return known[1]

    def render(self, values: Mapping[str, object]) -> str:
        missing = self.names - values.keys()
        if missing:
            raise TemplateError(f"{self.path.name}: no value for {', '.join(sorted(missing))}")
        unused = values.keys() - self.names
        if unused:
            raise TemplateError(f"{self.path.name}: does not use {', '.join(sorted(unused))}")
        return PLACEHOLDER.sub(lambda m: shlex.quote(_as_text(values[m.group(1)], m.group(1))), self.text)


_CURRENT: dict[Path, tuple[tuple[int, int, int, int], "JobTemplate"]] = {}   # path -> (its version, as read)


def _as_text(value: object, name: str) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (str, int, float, Path)):
        text = str(value)
    else:
        raise TemplateError(f"value for {name} is a {type(value).__name__}, not text or a number")
    if "\0" in text:
        raise TemplateError(f"value for {name} contains a NUL byte")
    return text


def find_template(name_or_path: str, search_dir: Path = JOBSCRIPTS_DIR) -> Path:
    path = Path(name_or_path)
    if not path.is_absolute():
        path = search_dir / path
    return path
