"""Which of the site's environment modules are known to be missing, so that a session that would load one is refused
before its job is submitted (rather than queued for an hour, then ended start_failed).

Asked once, at service start, for every module the config names: one probe (pvhpc/jobs/modules.py) where Slurm's
commands run (here, or the login host in SSH mode), which sources the module system as a job does. The answer is
kept; the submit path only looks it up, and never runs a shell for a module found or for a service with no
module system to ask (a session then finds out in its job, with the module system's own words). Only a request
that would load a module known missing asks again, at most once every RECHECK seconds, with a short timeout: a
module staff install later is found without a restart, and a missing one costs one probe a minute, not one a
request.

What the login host's module system cannot see (a path only compute nodes have, a module that Lmod's spider finds
only behind another) is never called missing: the probe says "spider", and the job tries.
"""

from __future__ import annotations

import asyncio
import logging
import time

from pvhpc.config import SiteConfig
from pvhpc.jobs import modules
from pvhpc.scheduler.runners import CommandRunner, CommandUnavailable
from pvhpc.sessions.job import session_modules
from pvhpc.sessions.spec import RequestError, SessionSpec

log = logging.getLogger("pvhpc.sessions.modules")

START_TIMEOUT = 20.0   # seconds the first probe may take (at service start, not on a request)
RECHECK_TIMEOUT = 5.0  # seconds a probe on a request's way may take
RECHECK = 60.0         # seconds between probes of modules known missing


def every_module(config: SiteConfig) -> dict[str, list[str]]:
    """Each module the config names -> the keys that name it, in the config's order."""
    named: dict[str, list[str]] = {}
    for p in config.partitions.values():
        for i, name in enumerate(p.modules):
            named.setdefault(name, []).append(f"partitions.{p.name}.modules[{i}]")
    for app in config.applications.values():
        for i, name in enumerate(app.modules):
            named.setdefault(name, []).append(f"applications.{app.name}.modules[{i}]")
        for version, names in app.versions.items():
            for i, name in enumerate(names):
                named.setdefault(name, []).append(f"applications.{app.name}.versions.{version}[{i}]")
    return named


async def probe(config: SiteConfig, runner: CommandRunner, names: list[str], timeout: float) -> modules.Probe:
    """Ask the module system where ``runner`` runs about ``names``; CommandUnavailable if it could not be asked."""
    argv = modules.probe_argv(modules.init_value(config.runtime.modules_init),
                              config.runtime.module_paths, names)
    result = await runner.run(argv, timeout=timeout)
    if not result.ok:
        raise CommandUnavailable(f"the module probe failed: {result.describe()}")
    return modules.parse_probe(result.stdout)


class ModuleAvailability:
    """The modules known missing, kept from the last probe; refuses a session that would load one."""

    def __init__(self, config: SiteConfig, runner: CommandRunner, clock=time.monotonic):
        self.config, self.runner, self.clock = config, runner, clock
        self.named = every_module(config)
        self.missing: set[str] = set()
        self.system: str | None = None      # None: not asked (yet), or could not be; "": no module system found
        self.checked_at: float | None = None
        self._lock = asyncio.Lock()

    async def check(self, names: list[str] | None = None, timeout: float = START_TIMEOUT) -> None:
        """Probe ``names`` (every module the config names); a probe that cannot run leaves what is known."""
        names = list(self.named) if names is None else names
        if not names:
            return
        try:
            found = await probe(self.config, self.runner, names, timeout)
        except CommandUnavailable as e:
            log.warning("could not ask the module system about %s: %s", ", ".join(names), e)
            return
        finally:
            self.checked_at = self.clock()
        self.system = found.system
        if not found.system:
            log.warning("no module system found here (runtime.modules_init, or one of %s): the modules the config "
                        "names are not checked before submit", modules.INIT_HELP)
            self.missing -= set(names)
            return
        now_missing = set(found.missing)
        self.missing = (self.missing - set(names)) | now_missing
        for name in sorted(now_missing):
            log.warning("module %s (%s) is not available to %s: sessions that load it are refused", name,
                        ", ".join(self.named.get(name, ())), found.system)

    async def refuse_missing(self, spec: SessionSpec) -> None:
        """RequestError naming the field the missing module came with (version, partition, application)."""
        wanted = session_modules(self.config, spec)
        if not self.missing.intersection(wanted):
            return
        async with self._lock:
            if self.missing.intersection(wanted) and self.clock() - (self.checked_at or 0) >= RECHECK:
                await self.check(sorted(self.missing), timeout=RECHECK_TIMEOUT)
        gone = [name for name in wanted if name in self.missing]
        if not gone:
            return
        app = self.config.applications[spec.application]
        name = gone[0]
        if spec.version and name in app.versions.get(spec.version, ()):
            others = [v for v, names in app.versions.items() if not self.missing.intersection(names)]
            raise RequestError(f"version {spec.version} of {app.name} needs module {name}, which is not installed "
                               f"on this cluster ({self.system}); choose another version "
                               f"({', '.join(others) or 'none is available either'}), or ask staff",
                               field="version")
        field = "partition" if name in self.config.partitions[spec.partition].modules else "application"
        raise RequestError(f"{field} {getattr(spec, field)} needs module {name}, which is not installed on this "
                           f"cluster ({self.system}); ask staff", field=field)
