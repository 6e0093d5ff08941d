"""Environment modules (Lmod, Environment Modules): the names staff write, which a session loads, and how they are
looked for.

Staff name modules per partition, per application and per version of an application (``versions:``); a session
loads them in that order, in its job, before anything else runs (jobscripts/paraview-web.sh). Module names are
staff-written but still never pass through a shell: the job script gets them as one shell-quoted word, the names
apart by spaces (which no name holds), reads them into an array and hands each to ``module load`` as one argument; the availability probe below gets them as arguments of
its own, never inside its script.

Jobs run with ``--export=NONE`` in a non-login bash, where no ``module`` command is defined: the job script (and
the probe) source the module system's init themselves, the one staff name (``runtime.modules_init``) or the first of
``INIT_CANDIDATES`` that defines ``module``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

# Lmod and Environment Modules names: paraview/5.11-egl, ParaView/5.11.2-foss-2022a-mpi, gcc@12 (Spack), ...
# Never starting with '-' (an option) or '/', never holding blanks or shell syntax.
MODULE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+/@%,=~-]{0,199}$")

# Where module systems put their bash init, the login scripts first (they also set MODULEPATH): Lmod's and
# Environment Modules' profile.d scripts, then their init/bash as Debian, RHEL and source builds install them.
INIT_CANDIDATES = (
    "/etc/profile.d/lmod.sh",
    "/etc/profile.d/modules.sh",
    "/usr/share/lmod/lmod/init/bash",
    "/usr/share/modules/init/bash",
    "/usr/share/Modules/init/bash",
    "/opt/apps/lmod/lmod/init/bash",
    "/usr/local/Modules/init/bash",
)
INIT_HELP = ", ".join(INIT_CANDIDATES)


def module_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a module name, not {type(value).__name__}")
    if not MODULE_NAME.fullmatch(value):
        raise ValueError(f"{value[:100]!r} is not a module name (letters, digits and _.+/@%,=~-, not starting "
                         "with '-' or '/', no blanks; at most 200)")
    return value


def check_modules(value: Any) -> tuple[str, ...]:
    """A list of module names (a bare name is a list of one); a wrong one is named by its index."""
    return _each(value, module_name, "module names")


def _each(value: Any, check, what: str) -> tuple[str, ...]:
    """``value`` as a list (a bare string is a list of one), each item through ``check``; the ValueError of a wrong
    one carries its ``index``, which the config's error names."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"must be a list of {what}, not {value!r}"[:200])
    out = []
    for i, item in enumerate(value):
        try:
            out.append(check(item))
        except ValueError as e:
            wrong = ValueError(str(e))
            wrong.index = i
            raise wrong from None
    return tuple(out)


VERSION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")


def check_path(value: Any) -> str:
    """A directory or init script: absolute, and without ':' (the lists the job gets are ':'-separated)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{str(value)[:200]!r} is not an absolute path")
    if ":" in value or "\n" in value:
        raise ValueError(f"{value[:200]!r} holds ':' or a line break, which module systems' paths may not")
    return value


def check_paths(value: Any) -> tuple[str, ...]:
    return _each(value, check_path, "absolute paths")


def check_versions(value: Any) -> dict[str, tuple[str, ...]]:
    """``{VERSION: [MODULE, ...]}``, in the order written (the first is the default unless said otherwise)."""
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of version names to lists of modules, not {value!r}"[:200])
    out = {}
    for key, modules in value.items():
        name = str(key)   # YAML reads 5.11 as a number: the version users see is what staff wrote
        if isinstance(key, float):
            raise _at(name, "is read as a number by YAML (5.10 would become 5.1): quote it, e.g. \"5.11\"")
        if not VERSION_NAME.fullmatch(name):
            raise _at(name, f"{name[:100]!r} is not a version name (letters, digits and _.+-, at most 64)")
        try:
            found = check_modules(modules)
        except ValueError as e:
            index = getattr(e, "index", None)
            raise _at(name if index is None else f"{name}[{index}]", str(e)) from None
        if not found:
            raise _at(name, "names no module: a version is the modules it loads")
        out[name] = found
    return out


def _at(where: str, message: str) -> ValueError:
    wrong = ValueError(message)
    wrong.index = where   # the reader names the key as versions.<where>
    return wrong


def for_session(partition_modules: Iterable[str], app_modules: Iterable[str],
                version_modules: Iterable[str]) -> tuple[str, ...]:
    """What a session loads, in order: the partition's, the application's, its version's; each once."""
    out: list[str] = []
    for name in (*partition_modules, *app_modules, *version_modules):
        if name not in out:
            out.append(name)
    return tuple(out)


def job_value(modules: Iterable[str]) -> str:
    """The modules as the job script reads them: apart by spaces (no name holds one)."""
    return " ".join(modules)


def init_value(modules_init: str | None) -> str:
    """The init scripts the job script and the probe try, apart by ':': staff's own, or the usual places."""
    return modules_init if modules_init else ":".join(INIT_CANDIDATES)


def paths_value(paths: Iterable[object]) -> str:
    """Directories of modulefiles, apart by ':' as in MODULEPATH (config checks that none holds one)."""
    return ":".join(str(p) for p in paths)


# The probe: run as ``bash -c PROBE pvhpc-modules INITS PATHS NAME...`` (every value an argument of its own; INITS and
# PATHS apart by ':'). It
# sources the module system as a job would, then says, a line each: "system Lmod 8.6.19" (or "system none"), and
# "avail NAME", "spider NAME" (found only by Lmod's spider: loadable once the modules it needs are) or
# "missing NAME". Environment Modules 4.1+ and Lmod 8 both have is-avail.
PROBE = r"""
set +u
IFS=: read -r -a inits <<<"$1"
IFS=: read -r -a paths <<<"$2"
shift 2
if ! type module >/dev/null 2>&1; then
    for init in "${inits[@]}"; do
        [ -n "$init" ] && [ -r "$init" ] || continue
        . "$init" >/dev/null 2>&1
        type module >/dev/null 2>&1 && break
    done
fi
if ! type module >/dev/null 2>&1; then
    echo "system none"
    exit 0
fi
if [ -n "${LMOD_CMD:-}" ]; then
    echo "system Lmod $("$LMOD_CMD" bash --version 2>&1 | grep -o 'Version [0-9.]*' | head -n 1 | cut -d' ' -f2)"
else
    echo "system Environment Modules ${MODULES_VERSION:-}"
fi
for dir in "${paths[@]}"; do
    [ -n "$dir" ] && module use "$dir" >/dev/null 2>&1
done
for name in "$@"; do
    if module is-avail "$name" >/dev/null 2>&1; then
        echo "avail $name"
    elif [ -n "${LMOD_CMD:-}" ] && module --terse spider "$name" >/dev/null 2>&1; then
        echo "spider $name"
    else
        echo "missing $name"
    fi
done
"""


def probe_argv(init: str, paths: Iterable[str], names: Iterable[str]) -> list[str]:
    return ["bash", "--noprofile", "--norc", "-c", PROBE, "pvhpc-modules", init, paths_value(paths), *names]


@dataclass(frozen=True)
class Probe:
    """What the probe found: the module system ("" for none) and each name's answer (avail, spider, missing)."""
    system: str
    found: dict[str, str]

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(name for name, answer in self.found.items() if answer == "missing")


def parse_probe(stdout: str) -> Probe:
    system, found = "", {}
    for line in stdout.splitlines():
        word, _, rest = line.partition(" ")
        if word == "system":
            system = "" if rest == "none" else rest.strip()
        elif word in ("avail", "spider", "missing") and rest:
            found[rest] = word
    return Probe(system, found)
