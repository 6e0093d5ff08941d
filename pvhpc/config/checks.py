"""The checks a config value passes: each takes a value as YAML gave it and returns what pvhpc uses,
or raises ValueError saying what is wrong with it. The reader (``schema.py``) puts the file and the
dotted key in front; a check names only the value.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Callable

from pvhpc import plugins
from pvhpc.config.model import AppRuntime, ReadyRule
from pvhpc.jobs.ids import HOST, NAME
from pvhpc.paths import JOBSCRIPTS_DIR
from pvhpc.jobs.durations import parse_minutes
from pvhpc.jobs.template import JobTemplate, TemplateError, find_template

HTTP_URL = re.compile(r"^https?://[^/\s]+")

Check = Callable[[Any], Any]


def text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"must be a non-empty string, not {value!r}")
    if "\0" in value or "\n" in value:
        raise ValueError("must be one line without NUL bytes")
    return value


def free_text(value: Any) -> str:
    """A description: anything YAML gives, as text."""
    return str(value)


def any_text(value: Any) -> str:
    """A one-line string made of whatever scalar was written (a group may be written as a number)."""
    return text(str(value))


def name(value: Any) -> str:
    value = text(value)
    if not NAME.match(value):
        raise ValueError(f"{value!r} is not a valid name (letters, digits, '_', '.', '-'; at most 64)")
    return value


def names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"must be a list of names, not {value!r}")
    return tuple(name(v) for v in value)


def whole(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"must be a whole number, not {value!r}")
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}, not {value}")
        return value
    return check


def seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 or value > 86400 * 7:
        raise ValueError(f"must be a number of seconds above 0, not {value!r}")
    return float(value)


def minutes(value: Any) -> int:
    """A walltime: minutes, or Slurm's [D-]HH:MM:SS."""
    found = parse_minutes(value)
    if found is None or found <= 0:
        raise ValueError(f"must be a positive walltime, not {value!r}")
    return found


def choice(options: tuple[str, ...]) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, not {value!r}")
        return value
    return check


def plugin(group: str, default: str) -> Check:
    """One of the names installed in entry-point ``group`` (pvhpc's own and any a site's package adds),
    asked when a config is read, so a plug-in installed later is found. The default is listed first."""
    def check(value: Any) -> str:
        found = plugins.names(group)
        return choice(tuple(sorted(found, key=lambda n: (n != default, n))))(value)
    return check


def mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping, not {value!r}")
    return value


def environment(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in mapping(value).items()}


def each(check: Check) -> Check:
    """``check`` on every item of a list; a wrong item is named by its index."""
    def check_all(value: Any) -> list:
        out = []
        for i, item in enumerate(value):
            try:
                out.append(check(item))
            except (ValueError, TypeError) as e:
                wrong = ValueError(str(e))
                wrong.index = i   # the reader names the item as key[index]
                raise wrong from None
        return out
    return check_all


def urls(value: Any) -> tuple[str, ...]:
    """One http(s) URL, or a list of them."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("must name at least one URL")
    found = []
    for item in values:
        item = text(item)
        if not re.match(r"^https?://[^/\s]+\S*$", item):
            raise ValueError(f"{item!r} is not an http(s) URL")
        found.append(item.rstrip("/"))
    return tuple(found)


def http_url(value: Any) -> str:
    value = text(value)
    if not HTTP_URL.match(value):
        raise ValueError(f"{value!r} is not an http(s) URL")
    return value.rstrip("/")


def origins(value: Any) -> tuple[str, ...]:
    """Web origins (scheme://host[:port], no path), as a browser sends them in its Origin header."""
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("must name at least one origin, e.g. https://viz.example.org")
    found = []
    for item in values:
        item = text(item).rstrip("/")
        if not re.match(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$", item):
            raise ValueError(f"{item!r} is not an origin such as https://viz.example.org (scheme, host, port; no path)")
        found.append(item.lower())
    return tuple(found)


def origin(value: Any) -> str:
    """One web origin (scheme://host[:port])."""
    if isinstance(value, list):
        raise ValueError("must be one origin, e.g. https://viz-sessions.example.net")
    return origins(value)[0]


def origin_of(url: str) -> str:
    """The origin (scheme://host[:port]) of an http(s) URL, as a browser would send it: no path, lower case."""
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0].split('?', 1)[0].split('#', 1)[0]}".lower()


def listen_address(value: Any) -> tuple[str, int]:
    """HOST:PORT, as (host, port)."""
    value = text(value)
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT")
    return host, int(port)


def listen_on(value: Any) -> str:
    """Where a session's server binds on its node: "node", "any", or an IP address."""
    import ipaddress

    value = text(value)
    if value in ("node", "any"):
        return value
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"must be \"node\", \"any\" or an IP address, not {value!r}") from None


def host(value: Any) -> str:
    value = text(value)
    if not HOST.match(value):
        raise ValueError(f"{value!r} is not a host name or address")
    return value


def path(value: Any) -> Path:
    return Path(text(value))


def absolute_path(value: Any) -> Path:
    found = Path(text(value)).expanduser()
    if not found.is_absolute():
        raise ValueError(f"{found} is not an absolute path")
    return found


def exists(found: Path, kind: str) -> bool:
    """Whether ``found`` is a file (kind "file") or directory ("dir"). A name the system refuses outright
    (too long, say) is not one, instead of an OSError escaping the config check."""
    try:
        return found.is_file() if kind == "file" else found.is_dir()
    except OSError:
        return False


def existing_dir(value: Any) -> Path:
    """An absolute path of an existing directory, with links resolved (data roots are compared by prefix)."""
    found = Path(text(value)).expanduser()
    if not found.is_absolute():
        raise ValueError(f"{found} is not an absolute path")
    if not exists(found, "dir"):
        raise ValueError(f"{found} is not an existing directory")
    return Path(os.path.realpath(found))


def web_client(value: Any) -> Path:
    """A directory of static files a browser loads: it must exist and hold index.html."""
    found = existing_dir(value)
    if not exists(found / "index.html", "file"):
        raise ValueError(f"{found} holds no index.html (is it the client's built dist/ directory?)")
    return found


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {value!r}")
    return value


def directories(value: Any) -> tuple[Path, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"must be a non-empty list, not {value!r}")
    return tuple(each(existing_dir)(value))


def jobscript(value: Any) -> Path:
    """A job script template: a name in pvhpc's share/jobscripts, or an absolute path; it must parse."""
    found = find_template(text(value), JOBSCRIPTS_DIR)
    if not exists(found, "file"):
        raise ValueError(f"{found} does not exist")
    try:
        JobTemplate(found)
    except TemplateError as e:
        raise ValueError(str(e)) from None
    return found


def session_url(value: Any) -> str:
    value = text(value)
    try:
        value.format(id="x", host="h", port=1)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"only {{id}}, {{host}} and {{port}} may be used ({e})") from None
    return value


def _in(key: str, message: str) -> ValueError:
    wrong = ValueError(message)
    wrong.index = key   # the reader names the key as ready.line, runtime.venv, ...
    return wrong


READY_FORMS = ("{line: REGEX} (a line of the server's output that says it listens) or {port_file: true} "
               "(the server writes its port into ${port_file})")


def ready_rule(value: Any) -> ReadyRule:
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("line", "port_file"):
        raise ValueError(f"must be {READY_FORMS}, not {value!r}")
    if "port_file" in value:
        if value["port_file"] is not True:
            raise _in("port_file", f"must be true, not {value['port_file']!r}")
        return ReadyRule(line=None, port_file=True)
    line = value["line"]
    if not isinstance(line, str) or not line:
        raise _in("line", f"must be a regular expression, not {line!r}")
    try:
        found = re.compile(line)
    except re.error as e:
        raise _in("line", f"{line!r} is not a regular expression: {e}") from None
    if found.search(""):
        raise _in("line", f"{line!r} matches an empty line: every server would be ready before it listens")
    if "\n" in line or "\\n" in line:
        raise _in("line", f"{line!r} can never match: the output is searched line by line, without line breaks")
    others = sorted(set(found.groupindex) - {"port"})
    if others:
        raise _in("line", f"only a group named port is understood (the port the server listens on), not {others}")
    return ReadyRule(line=line, port_file=False)


def app_runtime(value: Any) -> AppRuntime:
    """{pythonpath: [DIR, ...]} or {venv: DIR}: each must exist (it must on the nodes too: a shared file system).
    The default (the site's runtime.pythonpath) comes built, unchecked, as it always was."""
    if isinstance(value, AppRuntime):
        return value
    if not isinstance(value, dict) or len(value) != 1 or next(iter(value)) not in ("pythonpath", "venv"):
        raise ValueError(f"must be {{pythonpath: [DIR, ...]}} (directories put on the server's PYTHONPATH) or "
                         f"{{venv: DIR}} (a virtual environment), not {value!r}")
    if "venv" in value:
        try:
            venv = existing_dir(value["venv"])
        except ValueError as e:
            raise _in("venv", str(e)) from None
        if not exists(venv / "bin" / "python", "file"):
            raise _in("venv", f"{venv} is not a virtual environment (it has no bin/python)")
        return AppRuntime(pythonpath=(), venv=venv)
    items = value["pythonpath"]
    items = [items] if isinstance(items, str) else items
    if not isinstance(items, list) or not items:
        raise _in("pythonpath", f"must be a non-empty list of directories, not {items!r}")
    for i, item in enumerate(items):
        found = Path(text(item))
        if not found.is_absolute() or not exists(found, "dir"):
            raise _in(f"pythonpath[{i}]", f"{found} is not an existing directory (absolute path)")
    return AppRuntime(pythonpath=tuple(str(i) for i in items), venv=None)
