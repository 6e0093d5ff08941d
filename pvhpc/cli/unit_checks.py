"""``pvhpc doctor``'s checks of what the systemd units in deploy/systemd assume (docs/deploy.md).

The units run ``/usr/local/bin/pvhpc serve --config /etc/pvhpc/site.yaml`` (or, for instance
NAME of ``pvhpc@.service``, ``/etc/pvhpc/NAME.yaml``) as the account ``pvhpc``, with its state in
``/var/lib/pvhpc[/NAME]``, the front end's socket in ``/run/pvhpc[/NAME]``, and a file system
that is read-only everywhere else. Each check says what does not fit, and the command that fixes it.

Whether the account may read or write a path is worked out from owners and modes (ACLs are not
read), so doctor may run as root or as pvhpc.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from pvhpc.cli.check_report import FAIL, OK, SKIP, WARN, Check
from pvhpc.config import SiteConfig

SERVICE_USER = "pvhpc"
COMMAND = Path("/usr/local/bin/pvhpc")       # ExecStart's; install.sh links it to the venv's
CONFIG_DIR = Path("/etc/pvhpc")
STATE_ROOT = Path("/var/lib/pvhpc")
RUNTIME_ROOT = Path("/run/pvhpc")
UNITS_DIR = Path("/etc/systemd/system")
LOGROTATE_FILE = Path("/etc/logrotate.d/pvhpc")
READ, WRITE, SEARCH = 4, 2, 1


@dataclass(frozen=True)
class Unit:
    """The unit that runs this config, and the places it gives the service."""

    name: str            # pvhpc.service, or pvhpc@NAME.service
    state_dir: Path      # StateDirectory=, the only place ReadWritePaths= opens
    runtime_dir: Path    # RuntimeDirectory=, for the front end's socket

    @classmethod
    def for_config(cls, source: str) -> "Unit":
        path = Path(source)
        if path.parent == CONFIG_DIR and path.suffix == ".yaml" and path.stem != "site":
            return cls(f"pvhpc@{path.stem}.service", STATE_ROOT / path.stem, RUNTIME_ROOT / path.stem)
        return cls("pvhpc.service", STATE_ROOT, RUNTIME_ROOT)

    @property
    def template(self) -> str:
        return "pvhpc@.service" if "@" in self.name else self.name


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gids: frozenset[int]

    @classmethod
    def named(cls, name: str) -> "Account | None":
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            return None
        # As a login would see them, directories included (getgrall sees only local groups where sssd does not
        # enumerate, and walks every group where it does).
        gids = {entry.pw_gid, *os.getgrouplist(name, entry.pw_gid)}
        return cls(name, entry.pw_uid, frozenset(gids))

    def may(self, path: Path, what: int) -> bool:
        """Whether this account may read/write/search ``path`` by its owner, group and mode."""
        info = path.stat()
        if self.uid == 0:
            return True
        if info.st_uid == self.uid:
            return bool(info.st_mode & (what << 6))
        if info.st_gid in self.gids:
            return bool(info.st_mode & (what << 3))
        return bool(info.st_mode & what)

    def reaches(self, path: Path) -> Path | None:
        """The first directory above ``path`` this account may not enter, or None."""
        for parent in reversed(path.parents):
            if not self.may(parent, SEARCH):
                return parent
        return None


def deployment_checks(cfg: SiteConfig, user: str = SERVICE_USER) -> list[Check]:
    unit = Unit.for_config(cfg.source)
    account = Account.named(user)
    if account is None:
        return [Check("service account", WARN, f"no account {user}: the units in deploy/systemd run pvhpc as it "
                                               "(ignore this where pvhpc does not run under systemd)",
                      f"useradd --system --home-dir {STATE_ROOT} --shell /usr/sbin/nologin {user}")]
    checks = [Check("service account", OK, f"{user} (uid {account.uid}) runs {unit.name}")]
    parts = [check_command, lambda: check_config_file(cfg, account, unit), lambda: check_state_dir(unit, account),
             lambda: check_writable_places(cfg, account, unit), lambda: check_privileges(cfg, unit)]
    if cfg.service.frontend_socket is not None:
        parts.append(lambda: check_socket(cfg, account, unit))
    if cfg.scheduler.submit_as == "service":
        parts.append(check_log_rotation)
    for part in parts:
        try:
            found = part()
        except OSError as e:   # doctor runs as an account that may not look there
            found = Check("deployment", SKIP, f"cannot look at {e.filename}: {e.strerror}", "run pvhpc doctor as root")
        checks += found if isinstance(found, list) else [found]
    return checks


def check_command() -> Check:
    if os.access(COMMAND, os.X_OK):
        return Check("unit command", OK, f"{COMMAND} is there (ExecStart runs it)")
    return Check("unit command", FAIL, f"{COMMAND}, which the units' ExecStart runs, is missing or not executable",
                 f"ln -sf /opt/pvhpc/venv/bin/pvhpc {COMMAND} (install.sh does this)")


def check_config_file(cfg: SiteConfig, account: Account, unit: Unit) -> Check:
    path = Path(cfg.source).resolve()
    name = "config file"
    if not path.is_file():
        return Check(name, SKIP, f"{cfg.source} is not a file",
                     f"write it from docs/site.example.yaml (every key, with its default) as {expected(unit)}")
    blocked = account.reaches(path)
    if blocked is not None:
        return Check(name, FAIL, f"{account.name} cannot enter {blocked}, so it cannot read {path}",
                     f"chmod o+x {blocked}, or chgrp {account.name} {blocked} && chmod g+x {blocked}")
    if not account.may(path, READ):
        return Check(name, FAIL, f"{account.name} cannot read {path}",
                     f"chgrp {account.name} {path} && chmod 0640 {path}")
    if account.may(path, WRITE) and account.uid != 0:
        return Check(name, WARN, f"{account.name} may change its own config {path}",
                     f"chown root:{account.name} {path} && chmod 0640 {path}")
    if path.stat().st_mode & 0o004:
        return Check(name, WARN, f"every account can read {path} (a database URL in it may hold a password)",
                     f"chgrp {account.name} {path} && chmod 0640 {path}")
    where = "" if Path(cfg.source) == expected(unit) else f"; {unit.name} reads {expected(unit)}"
    return Check(name, OK, f"{account.name} can read {path}{where}")


def expected(unit: Unit) -> Path:
    return CONFIG_DIR / (unit.name.split("@", 1)[1].rsplit(".", 1)[0] + ".yaml" if "@" in unit.name else "site.yaml")


def check_state_dir(unit: Unit, account: Account) -> Check:
    name, path = "state directory", unit.state_dir
    if not path.exists():
        return Check(name, OK, f"{path} does not exist yet; systemd makes it, {account.name}'s, at the first start")
    problem = _owned_problem(path, account, 0o022)
    if problem:
        return Check(name, FAIL, problem, f"chown -R {account.name}: {path} && chmod 0750 {path}")
    return Check(name, OK, f"{path} is {account.name}'s")


def _owned_problem(path: Path, account: Account, forbidden: int) -> str | None:
    info = path.stat()
    if info.st_uid != account.uid:
        try:
            owner = pwd.getpwuid(info.st_uid).pw_name
        except KeyError:
            owner = str(info.st_uid)
        return f"{path} belongs to {owner}, not {account.name}"
    if info.st_mode & forbidden:
        return f"{path} has mode {stat.S_IMODE(info.st_mode):o}: others may change what is in it"
    return None


def check_writable_places(cfg: SiteConfig, account: Account, unit: Unit) -> list[Check]:
    """What pvhpc writes must be in the state directory (ProtectSystem=strict makes the rest read-only)."""
    places = []
    if cfg.scheduler.submit_as == "service":
        places.append(("service.job_output_dir", cfg.service.job_output_dir, 0o077))
    database = cfg.service.database_url
    if database.startswith("sqlite:///") and database != "sqlite:///:memory:":
        places.append(("service.database", Path(database[len("sqlite:///"):]).parent, 0o022))
    if cfg.frontend.map_file is not None:
        places.append(("frontend.map_file", cfg.frontend.map_file.parent, 0o002))
    checks = []
    for key, path, forbidden in places:
        if not _inside(path, unit.state_dir):
            checks.append(Check(key, WARN, f"{path} is outside {unit.state_dir}, where {unit.name} may write",
                                f"systemctl edit {unit.name}: [Service] ReadWritePaths={path}"))
            continue
        problem = _owned_problem(path, account, forbidden) if path.exists() else None
        if problem:
            mode = "0700" if forbidden == 0o077 else "0750"
            checks.append(Check(key, FAIL, problem, f"chown -R {account.name}: {path} && chmod {mode} {path}"))
        else:
            checks.append(Check(key, OK, f"{path}: in the state directory, {account.name}'s"))
    return checks


def _inside(path: Path, directory: Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False


def check_socket(cfg: SiteConfig, account: Account, unit: Unit) -> Check:
    name, socket, group = "service.frontend_socket", cfg.service.frontend_socket, cfg.service.frontend_socket_group
    if socket.parent != unit.runtime_dir:
        return Check(name, WARN, f"{socket} is not in {unit.runtime_dir}, the directory {unit.name} makes at start "
                                 "(RuntimeDirectory=) and ProtectSystem=strict leaves writable",
                     f"service.frontend_socket: {unit.runtime_dir / 'frontend.sock'}")
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            return Check("service.frontend_socket_group", FAIL, f"no group {group!r} on this host",
                         "name the front end's group (Apache's workers': www-data on Debian)")
        if gid not in account.gids:
            return Check("service.frontend_socket_group", FAIL,
                         f"{account.name} is not in {group}, so it cannot give its socket that group",
                         f"usermod -a -G {group} {account.name}")
    return Check(name, OK, f"{socket}: in {unit.runtime_dir}" + (f", group {group}" if group else ""))


def check_privileges(cfg: SiteConfig, unit: Unit) -> Check:
    """NoNewPrivileges=yes stops sudo; with submit_as user the drop-in must lift it."""
    name = "unit privileges"
    dropins = UNITS_DIR / f"{unit.template}.d"
    lifted = any("NoNewPrivileges=no" in f.read_text(errors="replace").replace(" ", "")
                 for f in sorted(dropins.glob("*.conf")) if f.is_file()) if dropins.is_dir() else False
    if cfg.scheduler.submit_as == "user" and not lifted:
        return Check(name, FAIL if (UNITS_DIR / unit.template).exists() else WARN,
                     f"scheduler.submit_as is user, so pvhpc runs sudo, which {unit.template}'s NoNewPrivileges=yes "
                     "forbids",
                     f"install -D -m 0644 deploy/systemd/submit-as-user.conf {dropins}/submit-as-user.conf && "
                     "systemctl daemon-reload")
    if cfg.scheduler.submit_as == "service" and lifted:
        return Check(name, WARN, f"a drop-in in {dropins} allows setuid programs, which submit_as service does not "
                                 "need", f"rm {dropins}/submit-as-user.conf && systemctl daemon-reload")
    return Check(name, OK, "sudo allowed (submit_as user)" if lifted else "no setuid programs (NoNewPrivileges=yes)")


def check_log_rotation() -> Check:
    if LOGROTATE_FILE.is_file():
        return Check("job log rotation", OK, f"{LOGROTATE_FILE} is installed")
    return Check("job log rotation", WARN, f"no {LOGROTATE_FILE}: a long session's log grows without bound",
                 f"install -m 0644 deploy/logrotate/pvhpc {LOGROTATE_FILE}; install -m 0644 deploy/tmpfiles/pvhpc.conf "
                 "/etc/tmpfiles.d/pvhpc.conf (deletes ended sessions' logs after 30 days)")
