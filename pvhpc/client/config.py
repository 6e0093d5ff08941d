"""Where the command-line client finds its service: URL, token and login host.

In order, the first that gives a value wins: the command line (``--url``,
``--login``), the environment (PVHPC_URL, PVHPC_TOKEN, PVHPC_LOGIN_HOST), then
a small YAML file (PVHPC_CLIENT_CONFIG, else $XDG_CONFIG_HOME/pvhpc/client.yaml,
else ~/.config/pvhpc/client.yaml)::

    url: https://viz.example.org
    token: pvhpc_...
    login_host: login.example.org

The token has no command-line option on purpose: arguments show in ``ps`` to
every user of a login node. A file holding a token that others can read is
used, with a warning: the token should be revoked and the file made private.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from pvhpc.errors import PvhpcError

KEYS = ("url", "token", "login_host")


class ClientConfigError(PvhpcError):
    """The client config file is unreadable or wrong; the message names the file and the key."""


@dataclass(frozen=True)
class ClientSettings:
    url: str | None
    token: str | None
    login_host: str | None
    file: Path | None                       # the config file that was read, if any
    warnings: tuple[str, ...] = field(default=())


def config_path(env: Mapping[str, str] = os.environ) -> Path:
    if env.get("PVHPC_CLIENT_CONFIG"):
        return Path(env["PVHPC_CLIENT_CONFIG"]).expanduser()
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "pvhpc" / "client.yaml"


def read_file(path: Path) -> tuple[dict[str, str], list[str]]:
    """The file's values and warnings about it; {} when there is no file."""
    import yaml

    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}, []
    except OSError as e:
        raise ClientConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ClientConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}, []
    if not isinstance(data, dict):
        raise ClientConfigError(f"{path}: must be a mapping of {', '.join(KEYS)}")
    values = {}
    for key, value in data.items():
        if key not in KEYS:
            raise ClientConfigError(f"{path}: {key}: unknown key (known: {', '.join(KEYS)})")
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip() or "\n" in value:
            raise ClientConfigError(f"{path}: {key}: must be a one-line string")
        values[key] = value.strip()
    warnings = []
    if "token" in values and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.append(f"{path} holds a token and other users can read it: revoke that token, "
                        f"make a new one and run: chmod 600 {path}")
    return values, warnings


def load(url: str | None = None, login_host: str | None = None,
         env: Mapping[str, str] = os.environ) -> ClientSettings:
    path = config_path(env)
    values, warnings = read_file(path)
    return ClientSettings(
        url=url or env.get("PVHPC_URL") or values.get("url"),
        token=env.get("PVHPC_TOKEN") or values.get("token"),
        login_host=login_host or env.get("PVHPC_LOGIN_HOST") or values.get("login_host"),
        file=path if values else None,
        warnings=tuple(warnings),
    )
