"""Which Slurm: an installation (where its programs are) and its release.

A machine may hold more than one Slurm: Debian's packages (programs in /usr) and builds from source in
prefixes of their own (``/opt/slurm-25.11``, as install.sh builds them). A site names its own with
``scheduler.slurm_prefix``, and pvhpc then runs that installation's tools by their full path (sudo's
secure_path and a login host's PATH would otherwise pick whatever ``sbatch`` comes first); the local
cluster runs the daemons of the installation it was started with.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pvhpc.errors import PvhpcError

SYSTEM_PREFIX = Path("/usr")
BUILT_PREFIXES = "/opt/slurm-*"      # where install.sh builds Slurm from source (docs/scheduler.md)
#: the Slurm releases pvhpc's tests run on (the backend contract, the launcher's path and the drills)
TESTED_RELEASES = ("22.05", "25.11")
VERSION = re.compile(r"^(?:slurm(?:-wlm)?\s+)?(\d+)\.(\d+)\.(\d+)\b")


class SlurmNotFound(PvhpcError):
    """No Slurm installation where one was named, or none of the release asked for."""

    status = 500


@dataclass(frozen=True, order=True)
class SlurmVersion:
    major: int
    minor: int
    micro: int

    @classmethod
    def parse(cls, text: str) -> "SlurmVersion":
        """What Slurm's programs print for ``--version``/``-V`` ('slurm 25.11.7', Debian's 'slurm-wlm 22.05.8')."""
        m = VERSION.match((text or "").strip())
        if not m:
            raise ValueError(f"not a Slurm version: {text.strip()[:100]!r}")
        return cls(*(int(g) for g in m.groups()))

    @property
    def release(self) -> str:
        """The release line ('25.11'): what output formats, plug-ins and pyslurm builds go by."""
        return f"{self.major}.{self.minor:02d}"

    def __str__(self) -> str:
        return f"{self.release}.{self.micro}"


def tool_path(prefix: str | os.PathLike | None, name: str) -> str:
    """How to run one of Slurm's client tools: by its full path under ``prefix``, or by name (PATH) without one."""
    return str(Path(prefix) / "bin" / name) if prefix else name


@dataclass(frozen=True)
class SlurmInstall:
    prefix: Path
    version: SlurmVersion

    def program(self, name: str) -> str:
        """A client tool (bin/) or a daemon (sbin/) of this installation."""
        for sub in ("sbin", "bin"):
            path = self.prefix / sub / name
            if path.exists():
                return str(path)
        raise SlurmNotFound(f"Slurm {self.version} in {self.prefix} has no {name}")

    @property
    def path_dirs(self) -> list[str]:
        """The directories to put first on PATH to find this installation's programs (Debian's are on it)."""
        return [] if self.prefix == SYSTEM_PREFIX else [f"{self.prefix}/bin", f"{self.prefix}/sbin"]

    def environment(self) -> dict[str, str]:
        """PATH with this installation's programs first, for shells and commands of this process."""
        if not self.path_dirs:
            return {}
        return {"PATH": ":".join([*self.path_dirs, os.environ.get("PATH", os.defpath)])}

    def describe(self) -> str:
        return f"Slurm {self.version} ({self.prefix})"


def at(prefix: str | os.PathLike) -> SlurmInstall:
    """The installation in ``prefix``. Its version comes from slurmd, which (unlike the client tools)
    prints it without a slurm.conf."""
    prefix = Path(prefix).resolve()
    daemon = prefix / "sbin" / "slurmd"
    if not daemon.exists():
        raise SlurmNotFound(f"no Slurm in {prefix} ({daemon} is missing)")
    try:
        said = subprocess.run([str(daemon), "-V"], capture_output=True, text=True, timeout=20)
        return SlurmInstall(prefix, SlurmVersion.parse(said.stdout or said.stderr))
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        raise SlurmNotFound(f"cannot tell the version of the Slurm in {prefix}: {e}") from None


def installed() -> list[SlurmInstall]:
    """Every Slurm on this machine with its daemons, newest release first."""
    found = []
    for prefix in [SYSTEM_PREFIX, *sorted(glob.glob(BUILT_PREFIXES))]:
        try:
            found.append(at(prefix))
        except SlurmNotFound:
            continue
    return sorted(found, key=lambda s: s.version, reverse=True)


def choose(choice: str | os.PathLike | None = None) -> SlurmInstall:
    """The installation ``choice`` names: a release ('25.11', '22.05'), a prefix (a path), or None: the newest."""
    if choice and ("/" in str(choice)):
        return at(choice)
    found = installed()
    if not found:
        raise SlurmNotFound("no Slurm is installed: install.sh installs Debian's (and builds 25.11 where its "
                            "source is beside the checkout)")
    if not choice:
        return found[0]
    for install in found:
        if install.version.release == choice or str(install.version) == choice:
            return install
    have = ", ".join(s.describe() for s in found)
    raise SlurmNotFound(f"Slurm {choice} is not installed here (installed: {have}); name a release or a prefix")
