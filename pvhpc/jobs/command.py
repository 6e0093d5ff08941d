"""An application's command line: its ``${name}`` placeholders, checked when the config is read and filled in
when a session's job is built.

Staff write the command as a list of arguments, as the wslink launcher's ``cmd``; it is never a shell string
and never passes through a shell. Most placeholders are known when the job is built (the data directory, the
file to load, ...). Four are known only on the node, and pvhpc's supervisor there fills them in
(pvhpc/node/supervisor.py): ``${port}``, ``${port_file}``, ``${host}`` and ``${secret}``. The secret is never put on the
command line the node's ``ps`` shows: a command that names it is run through pvhpc's argv wrapper, which
puts it into the server's own ``sys.argv`` inside the process.

The other argument lists staff write (a parallel session's MPI launch, ``mpi.py``) follow the same grammar,
``check_argv``, with placeholders of their own.
"""

from __future__ import annotations

import re
from typing import Mapping

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")

# Filled in when the job is built, by pvhpc/sessions/job.py.
BUILD_PLACEHOLDERS = {
    "pvpython": "ParaView's pvpython (runtime.pvpython)",
    "python": "the application's venv's python, else runtime.helper_python",
    "server_script": "the application's server_script",
    "data_dir": "the data root the session opens files from",
    "load_file": "the file to open at start, relative to data_dir (empty when none)",
    "load_path": "the file to open at start, as an absolute path (empty when none)",
    "idle_timeout": "the application's idle_timeout, in seconds",
    "web_client": "the application's web_client directory",
}
# Filled in on the node, by pvhpc/node/supervisor.py.
NODE_PLACEHOLDERS = {
    "port": "the port to listen on: 0 when the ready rule reports the port (the kernel picks one), "
            "else a free port the launcher picks on the node",
    "port_file": "a private file the server writes its port into (for ready: {port_file: true})",
    "host": "the address the server listens on (runtime.server_listen: by default the node's address on its route "
            "to pvhpc, which the job reports and the front end dials)",
    "secret": "the session's secret; the command is then run as INTERPRETER pvhpc-argv-wrapper SCRIPT.py ..., "
              "which puts the secret into the script's sys.argv inside the process, never on its command line",
}
PLACEHOLDERS = {**BUILD_PLACEHOLDERS, **NODE_PLACEHOLDERS}
HELP = ", ".join(f"${{{name}}}" for name in PLACEHOLDERS)


def placeholders(command: tuple[str, ...] | list[str]) -> set[str]:
    return {name for arg in command for name in PLACEHOLDER.findall(arg)}


def item_error(index: int, message: str) -> ValueError:
    """What is wrong with one item of a list staff wrote; the config reader names it as key[index]."""
    wrong = ValueError(message)
    wrong.index = index
    return wrong


def check_argv(value, known: Mapping[str, str], what: str, known_words: str | None = None) -> tuple[str, ...]:
    """A list of arguments as staff write one (never a shell string): a non-empty list of one-line strings (numbers
    are taken as their text) whose ``${name}`` placeholders are all in ``known``, each closed.
    ``known_words``: how the error names the known ones (default: "known here: ${a}, ${b}")."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list of arguments ({what}), not {value!r}")
    if known_words is None:
        known_words = "known here: " + (", ".join(f"${{{n}}}" for n in known) or "none")
    out = []
    for i, arg in enumerate(value):
        if isinstance(arg, bool) or not isinstance(arg, (str, int, float)):
            raise item_error(i, f"must be a string, not {arg!r}")
        arg = str(arg)
        if "\0" in arg or "\n" in arg:
            raise item_error(i, "must be one line without NUL bytes")
        for name in PLACEHOLDER.findall(arg):
            if name not in known:
                raise item_error(i, f"unknown placeholder ${{{name}}} ({known_words})")
        if "${" in PLACEHOLDER.sub("", arg):
            raise item_error(i, f"{arg!r} opens a placeholder '${{' it does not close")
        out.append(arg)
    return tuple(out)


def check_command(value) -> tuple[str, ...]:
    """A command as staff write it: a non-empty list of one-line strings with only known placeholders."""
    out = check_argv(value, PLACEHOLDERS, "the command line, one item per argument", f"known: {HELP}")
    if "secret" in placeholders(out[:2]):
        raise item_error(0, "${secret} may not be the interpreter or the script: it is given to the script as an "
                            "argument")
    if "secret" in placeholders(out) and (len(out) < 2 or not out[1].endswith(".py")):
        raise item_error(1, "a command that passes ${secret} must be INTERPRETER SCRIPT.py ARGS...: pvhpc runs the "
                            "script through its argv wrapper, so the secret never shows on the command line")
    return out


def fill(command: tuple[str, ...], values: Mapping[str, str]) -> list[str]:
    """The command with the build-time placeholders filled in; node-side ones are left for the launcher.

    An item that is only a placeholder with an empty value (no file to load) is left out, and so is the
    option right before it (``--load-file ${load_file}``): an empty argument is not "no file" to most
    servers, and pvpython cannot even start with one ("unable to decode the command line argument")."""
    def one(match: re.Match) -> str:
        name = match.group(1)
        return match.group(0) if name in NODE_PLACEHOLDERS else str(values[name])
    out: list[str] = []
    for arg in command:
        filled = PLACEHOLDER.sub(one, arg)
        if filled == "" and PLACEHOLDER.fullmatch(arg):
            if out and out[-1].startswith("-") and len(out) > 1:
                out.pop()
            continue
        out.append(filled)
    return out
