"""deploy/: the systemd units, log rotation and cleanup, checked by the tools that will read them, and against
what pvhpc itself uses (its command line, its paths, its config); and doctor's checks of what the units assume."""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from pvhpc import config, paths
from pvhpc.cli import build_parser, unit_checks
from pvhpc.cli.check_report import FAIL, OK, WARN
from pvhpc.cli.serve_cmd import run as serve

from tests.helpers import MINIMAL_SITE

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = {"pvhpc.service": "site", "pvhpc@.service": "login1"}   # unit -> the config name it reads


def unit_values(path: Path, instance: str = "") -> dict[str, list[str]]:
    """A unit file's KEY=VALUE lines (every value of a key that is given more than once), %i filled in."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip().replace("%i", instance))
    return values


def needs(tool: str) -> str:
    found = shutil.which(tool)
    if not found and os.environ.get("PVHPC_TESTS_AFTER_INSTALL"):
        pytest.fail(f"{tool} is missing although install.sh ran: it must install it")
    if not found:
        pytest.skip(f"{tool} is not installed (Debian: apt-get install {'systemd' if 'systemd' in tool else tool})")
    return found


# -- systemd ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("unit", UNITS)
def test_systemd_analyze_verify_finds_nothing_wrong(unit, tmp_path):
    tool = needs("systemd-analyze")
    # A template is verified as one of its instances; the drop-in for submit_as user is verified inside the unit.
    name = unit.replace("@.", f"@{UNITS[unit]}.")
    (tmp_path / name).write_text((DEPLOY / "systemd" / unit).read_text())
    with_dropin = tmp_path / "with-dropin" / name
    with_dropin.parent.mkdir()
    with_dropin.write_text((DEPLOY / "systemd" / unit).read_text() + (DEPLOY / "systemd" / "submit-as-user.conf")
                           .read_text())
    for path in (tmp_path / name, with_dropin):
        result = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True)
        # Unknown keys and bad values are only warnings to systemd: any output at all is a finding.
        assert result.returncode == 0 and not result.stderr.strip() and not result.stdout.strip(), result.stderr
    assert unit_values(with_dropin)["NoNewPrivileges"] == ["yes", "no"]   # the drop-in's comes last and wins


@pytest.mark.parametrize("unit", UNITS)
def test_the_units_run_pvhpcs_own_command_with_the_config_the_docs_name(unit):
    values = unit_values(DEPLOY / "systemd" / unit, UNITS[unit])
    [exec_start] = values["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[0] == str(unit_checks.COMMAND)
    assert f'ln -sf "$PREFIX/venv/bin/pvhpc" {argv[0]}' in (ROOT / "install.sh").read_text()
    args = build_parser().parse_args(argv[1:])
    assert args.func is serve and args.config == str(unit_checks.CONFIG_DIR / f"{UNITS[unit]}.yaml")
    unit_name = unit.replace("@.", f"@{UNITS[unit]}.")
    assert unit_checks.Unit.for_config(args.config).name == unit_name   # doctor checks the right unit's places
    assert values["User"] == [unit_checks.SERVICE_USER]
    for doc in ("README.md", "docs/deploy.md"):
        assert "/etc/pvhpc/site.yaml" in (ROOT / doc).read_text()
    assert "/etc/pvhpc/%i.yaml" in (ROOT / "docs/deploy.md").read_text()


@pytest.mark.parametrize("unit", UNITS)
def test_everything_pvhpc_writes_by_default_is_where_the_unit_lets_it_write(unit, monkeypatch):
    values = unit_values(DEPLOY / "systemd" / unit, UNITS[unit])
    [state] = values["StateDirectory"]
    [environment] = values["Environment"]
    place = unit_checks.Unit.for_config(str(unit_checks.CONFIG_DIR / f"{UNITS[unit]}.yaml"))
    assert Path("/var/lib", state) == place.state_dir and Path("/run", values["RuntimeDirectory"][0]) == \
        place.runtime_dir
    assert environment == f"PVHPC_STATE_DIR={place.state_dir}"
    assert values["ProtectSystem"] == ["strict"] and values["ReadWritePaths"] == [str(place.state_dir)]
    assert values["Restart"] == ["on-failure"] and values["NoNewPrivileges"] == ["yes"]
    assert values["PrivateTmp"] == ["yes"]
    # The defaults of a site config read under that environment, as the service reads them.
    monkeypatch.setenv("PVHPC_STATE_DIR", str(place.state_dir))
    assert paths.state_dir() == place.state_dir
    cfg = config.parse(MINIMAL_SITE, "site.yaml")
    database = Path(cfg.service.database_url.split("///", 1)[1])
    for written in (database, cfg.service.job_output_dir):
        assert place.state_dir in written.parents, written
    # The front end's socket, as the docs configure it, is in the directory the unit makes.
    from pvhpc.config.keys import SERVICE
    example = Path(next(k for k in SERVICE.keys if k.name == "frontend_socket").example)
    assert example.parent == unit_checks.RUNTIME_ROOT
    assert f"frontend_socket: {unit_checks.RUNTIME_ROOT}/frontend.sock" in (ROOT / "docs/deploy.md").read_text()


# -- job logs: rotated in place while the job writes, removed after 30 days ---------------------------

def test_logrotate_reads_the_rule(tmp_path):
    tool = needs("logrotate")
    rule = tmp_path / "pvhpc"
    rule.write_text(_as_this_account((DEPLOY / "logrotate" / "pvhpc").read_text()))
    result = subprocess.run([tool, "-d", "-s", str(tmp_path / "state"), str(rule)], capture_output=True, text=True)
    assert result.returncode == 0 and "error" not in result.stderr.lower(), result.stderr
    assert "rotating pattern: /var/lib/pvhpc/jobs/*.out /var/lib/pvhpc/*/jobs/*.out  20971520 bytes (1 rotations)" \
        in result.stderr


def _as_this_account(rule: str, root: Path | None = None) -> str:
    """The rule for this machine: its su line names the account running the test (pvhpc may not exist here)."""
    me, group = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
    rule = rule.replace(f"su {unit_checks.SERVICE_USER} {unit_checks.SERVICE_USER}", f"su {me} {group}")
    return rule.replace("/var/lib/pvhpc", f"{root}/var/lib/pvhpc") if root else rule


def test_a_running_jobs_log_is_rotated_in_place_and_its_job_keeps_writing(tmp_path):
    tool = needs("logrotate")
    jobs = tmp_path / "var/lib/pvhpc/jobs"
    jobs.mkdir(parents=True)
    rule = tmp_path / "pvhpc.logrotate"
    rule.write_text(_as_this_account((DEPLOY / "logrotate" / "pvhpc").read_text(), tmp_path))
    log = jobs / "pvhpc-0123456789abcdef.out"
    small = jobs / "pvhpc-fedcba9876543210.out"
    small.write_text("a short log\n")
    # As Slurm writes a job's output by default: opened once, truncated at open, not in append mode.
    with open(log, "wb", buffering=0) as job:
        job.write(b"x" * (21 * 1024 * 1024))
        result = subprocess.run([tool, "-s", str(tmp_path / "state"), str(rule)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        job.write(b"written after the rotation\n")
    rotated = jobs / (log.name + ".1.gz")
    assert rotated.is_file() and rotated.stat().st_size < 1024 * 1024
    # The disk space is back, though the job's file offset leaves a hole (sparse) before its next line.
    assert log.stat().st_blocks * 512 < 1024 * 1024
    assert log.read_bytes().endswith(b"written after the rotation\n")
    assert small.read_text() == "a short log\n" and not (jobs / (small.name + ".1.gz")).exists()


def test_tmpfiles_removes_ended_sessions_logs_after_30_days_and_keeps_the_rest(tmp_path):
    tool = needs("systemd-tmpfiles")
    old_day = time.time() - 31 * 86400
    files = {}
    for jobs in ("var/lib/pvhpc/jobs", "var/lib/pvhpc/login1/jobs"):
        (tmp_path / jobs).mkdir(parents=True)
        for name, when in (("old.out", old_day), ("recent.out", time.time() - 86400)):
            path = tmp_path / jobs / name
            path.write_text("log\n")
            os.utime(path, (when, when))
            files[path] = name == "recent.out"
    result = subprocess.run([tool, f"--root={tmp_path}", "--clean", str(DEPLOY / "tmpfiles" / "pvhpc.conf")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert {path: path.exists() for path in files} == files


# -- doctor: what the units assume -----------------------------------------------------------------------

def this_account() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def checks_by_name(checks) -> dict:
    return {c.name: c for c in checks}


def test_doctor_without_the_service_account_warns_once_with_the_command_that_makes_it():
    cfg = config.parse(MINIMAL_SITE, "site.yaml")
    [check] = unit_checks.deployment_checks(cfg, user="no-such-pvhpc-account")
    assert check.status == WARN and "useradd --system" in check.fix and "no-such-pvhpc-account" in check.fix


def test_doctor_checks_the_state_dir_config_and_places_against_the_unit(request, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("makes files of another account: needs root")
    nobody = pwd.getpwnam("nobody")
    # Not under pytest's tmp_path, whose parents only root may enter: the account must reach the files.
    tmp_path = Path(tempfile.mkdtemp(prefix="pvhpc-units-"))
    tmp_path.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    state = tmp_path / "state"
    monkeypatch.setattr(unit_checks, "STATE_ROOT", state)
    monkeypatch.setattr(unit_checks, "CONFIG_DIR", tmp_path / "etc")
    site = tmp_path / "etc" / "site.yaml"
    site.parent.mkdir()
    site.write_text("")
    site.chmod(0o600)
    os.chown(site, 0, 0)
    (state / "jobs").mkdir(parents=True)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    os.chown(state / "jobs", 0, 0)
    state.chmod(0o750)
    cfg = config.parse({**MINIMAL_SITE, "service": {"job_output_dir": str(state / "jobs"),
                                                     "database": f"sqlite:///{state / 'pvhpc.sqlite'}"}}, str(site))
    found = checks_by_name(unit_checks.deployment_checks(cfg, user="nobody"))
    assert found["service account"].status == OK
    assert found["config file"].status == FAIL and f"chgrp nobody {site}" in found["config file"].fix
    assert found["state directory"].status == OK
    jobs_check = found["service.job_output_dir"]
    assert jobs_check.status == FAIL and "belongs to root" in jobs_check.detail
    assert f"chown -R nobody: {state / 'jobs'}" in jobs_check.fix
    assert found["service.database"].status == OK

    site.chmod(0o644)
    os.chown(state / "jobs", nobody.pw_uid, nobody.pw_gid)
    elsewhere = tmp_path / "scratch-jobs"
    cfg = config.parse({**MINIMAL_SITE, "service": {"job_output_dir": str(elsewhere),
                                                     "frontend_socket": "/srv/pvhpc.sock"}}, str(site))
    found = checks_by_name(unit_checks.deployment_checks(cfg, user="nobody"))
    assert found["config file"].status == WARN and "password" in found["config file"].detail
    assert found["service.job_output_dir"].status == WARN
    assert found["service.job_output_dir"].fix == f"systemctl edit pvhpc.service: [Service] ReadWritePaths={elsewhere}"
    socket_check = found["service.frontend_socket"]
    assert socket_check.status == WARN and socket_check.fix == f"service.frontend_socket: {unit_checks.RUNTIME_ROOT}/frontend.sock"


def test_doctor_wants_the_service_account_in_the_sockets_group(monkeypatch, tmp_path):
    monkeypatch.setattr(unit_checks, "RUNTIME_ROOT", tmp_path / "run")
    account = this_account()
    others = [g.gr_name for g in grp.getgrall()
              if g.gr_gid not in unit_checks.Account.named(account).gids]
    if not others:
        pytest.skip("this account is in every group")
    cfg = config.parse({**MINIMAL_SITE, "service": {"frontend_socket": str(tmp_path / "run" / "frontend.sock"),
                                                     "frontend_socket_group": others[0]}}, "site.yaml")
    found = checks_by_name(unit_checks.deployment_checks(cfg, user=account))
    check = found["service.frontend_socket_group"]
    assert check.status == FAIL and check.fix == f"usermod -a -G {others[0]} {account}"


def test_doctor_says_submit_as_user_needs_the_drop_in_that_allows_sudo(monkeypatch, tmp_path):
    monkeypatch.setattr(unit_checks, "UNITS_DIR", tmp_path)
    (tmp_path / "pvhpc.service").write_text((DEPLOY / "systemd" / "pvhpc.service").read_text())
    cfg = config.parse({**MINIMAL_SITE, "scheduler": {"submit_as": "user"}}, "site.yaml")
    check = unit_checks.check_privileges(cfg, unit_checks.Unit.for_config(cfg.source))
    assert check.status == FAIL and "deploy/systemd/submit-as-user.conf" in check.fix
    (tmp_path / "pvhpc.service.d").mkdir()
    shutil.copy(DEPLOY / "systemd" / "submit-as-user.conf", tmp_path / "pvhpc.service.d")
    assert unit_checks.check_privileges(cfg, unit_checks.Unit.for_config(cfg.source)).status == OK
    as_service = config.parse(MINIMAL_SITE, "site.yaml")
    assert unit_checks.check_privileges(as_service, unit_checks.Unit.for_config("site.yaml")).status == WARN
