"""Replaceable parts found by name: scheduler backends, front ends and authenticators.

pvhpc's own are declared as entry points in pyproject.toml beside any a site installs, the way
JupyterHub finds spawners: a site adds a backend by installing a package that declares one in the
same group, and names it in its config. Nothing here imports a part before it is chosen, so a
backend whose library is missing (pyslurm) costs nothing until a site asks for it.
"""

from __future__ import annotations

from importlib.metadata import entry_points

from pvhpc.errors import PvhpcError

SCHEDULERS = "pvhpc.schedulers"
FRONTENDS = "pvhpc.frontends"
AUTHENTICATORS = "pvhpc.authenticators"


class PluginError(PvhpcError):
    pass


def names(group: str) -> tuple[str, ...]:
    """The names a site may choose in ``group``, pvhpc's own first."""
    found = sorted(ep.name for ep in entry_points(group=group))
    return tuple(found)


def load(group: str, name: str):
    """The class (or factory) named ``name`` in ``group``."""
    matches = [ep for ep in entry_points(group=group) if ep.name == name]
    if not matches:
        raise PluginError(f"{name!r} is not an installed {group.rsplit('.', 1)[1][:-1]} "
                          f"(installed: {', '.join(names(group)) or 'none'})")
    try:
        return matches[0].load()
    except ImportError as e:
        raise PluginError(f"{group.rsplit('.', 1)[1][:-1]} {name!r} cannot be loaded: {e}") from None
