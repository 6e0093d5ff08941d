"""Environment modules and application versions, without a cluster: the keys, the request field, the job's values,
the probe against this machine's Lmod (Debian's, from install.sh) on modulefiles written here, what the service
refuses before submit and what ``pvhpc config check`` says. A real session of each version: tests/test_module_jobs.py."""

from __future__ import annotations

import asyncio
import json
import shlex
from pathlib import Path

import pytest

from pvhpc import config
from pvhpc.cli import config_check
from pvhpc.cli.check_report import FAIL, OK, WARN
from pvhpc.jobs import modules
from pvhpc.scheduler.runners import CommandResult, CommandRunner, LocalRunner
from pvhpc.sessions import job
from pvhpc.sessions.modules import RECHECK, ModuleAvailability, every_module
from pvhpc.sessions.spec import RequestError, parse_spec

from tests.fakes import SubmittingScheduler
from tests.harness.inprocess import fetch_all, make_app

VERSIONS = {"5.11": ["paraview/5.11"], "5.11-egl": ["paraview/5.11-egl"]}


def site(tmp_path: Path, **app) -> config.SiteConfig:
    return config.parse({
        "runtime": {"module_paths": [str(tmp_path / "modulefiles")]},
        "partitions": {"gpu": {"gpu_type": "a100", "modules": ["cuda/12"]}, "cpu": {}},
        "applications": {"paraview": {"data_roots": [str(tmp_path)], "modules": ["base"], "versions": VERSIONS,
                                      **app}},
    }, "site.yaml")


def write_modulefiles(root: Path, names: list[str]) -> None:
    for name in names:
        path = root / f"{name}.lua"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'setenv("PVHPC_TEST_MODULE", "{name}")\n')


# -- the keys -----------------------------------------------------------------------------------------

def test_versions_are_read_in_order_and_the_first_is_the_default(tmp_path):
    app = site(tmp_path).applications["paraview"]
    assert list(app.versions) == ["5.11", "5.11-egl"] and app.default_version == "5.11"
    assert app.versions["5.11-egl"] == ("paraview/5.11-egl",) and app.modules == ("base",)
    assert site(tmp_path, default_version="5.11-egl").applications["paraview"].default_version == "5.11-egl"
    assert site(tmp_path, versions={}).applications["paraview"].default_version is None


@pytest.mark.parametrize("app, key, words", [
    ({"versions": {5.11: ["paraview/5.11"]}}, "applications.paraview.versions.5.11", "quote it"),
    ({"versions": {"5.11": ["paraview/5.11", "-x"]}}, "applications.paraview.versions.5.11[1]", "not a module name"),
    ({"versions": {"5.11": []}}, "applications.paraview.versions.5.11", "names no module"),
    ({"versions": {"5.11": ["x"]}, "default_version": "6"}, "applications.paraview.default_version", "(5.11)"),
    ({"versions": {}, "default_version": "6"}, "applications.paraview.default_version", "no versions"),
    ({"modules": ["ok", "$(reboot)"]}, "applications.paraview.modules[1]", "not a module name"),
    ({"modules": ["a b"]}, "applications.paraview.modules[0]", "no blanks"),
])
def test_a_wrong_module_or_version_is_a_config_error_naming_its_key(tmp_path, app, key, words):
    with pytest.raises(config.ConfigError) as e:
        site(tmp_path, **app)
    assert e.value.key == key and words in str(e.value), str(e.value)


def test_module_paths_and_init_must_be_absolute_and_free_of_colons(tmp_path):
    for runtime, key in (({"module_paths": ["rel/dir"]}, "runtime.module_paths[0]"),
                         ({"module_paths": ["/a:b"]}, "runtime.module_paths[0]"),
                         ({"modules_init": "lmod.sh"}, "runtime.modules_init")):
        with pytest.raises(config.ConfigError) as e:
            config.parse({"runtime": runtime, "partitions": {"cpu": {}},
                          "applications": {"paraview": {"data_roots": [str(tmp_path)]}}})
        assert e.value.key == key, str(e.value)


# -- the request field ------------------------------------------------------------------------------------

def test_a_request_gets_the_version_it_names_or_the_default(tmp_path):
    cfg = site(tmp_path)
    assert parse_spec(cfg, {"application": "paraview"}, strict=True).version == "5.11"
    assert parse_spec(cfg, {"application": "paraview", "version": "5.11-egl"}, strict=True).version == "5.11-egl"
    # The launcher API takes a URL query's empty value as nothing said.
    assert parse_spec(cfg, {"application": "paraview", "version": ""}, strict=False).version == "5.11"


@pytest.mark.parametrize("value", ["6.0", 5.11, ["5.11"]])
def test_a_version_the_application_does_not_offer_is_refused_naming_the_field_and_the_versions(tmp_path, value):
    with pytest.raises(RequestError) as e:
        parse_spec(site(tmp_path), {"application": "paraview", "version": value}, strict=True)
    assert e.value.field == "version" and e.value.status == 400 and "5.11, 5.11-egl" in str(e.value), str(e.value)


def test_an_application_without_versions_refuses_any(tmp_path):
    with pytest.raises(RequestError, match="offered: none") as e:
        parse_spec(site(tmp_path, versions={}), {"application": "paraview", "version": "5.11"}, strict=True)
    assert e.value.field == "version"


# -- the job -------------------------------------------------------------------------------------------

def test_a_session_loads_its_partitions_then_its_applications_then_its_versions_modules_each_once(tmp_path):
    cfg = site(tmp_path, modules=["base", "cuda/12"])
    spec = parse_spec(cfg, {"application": "paraview", "partition": "gpu", "version": "5.11-egl"}, strict=True)
    assert job.session_modules(cfg, spec) == ("cuda/12", "base", "paraview/5.11-egl")
    spec = parse_spec(cfg, {"application": "paraview", "partition": "cpu"}, strict=True)
    assert job.session_modules(cfg, spec) == ("base", "cuda/12", "paraview/5.11")


def test_the_job_script_gets_the_modules_as_quoted_words_and_loads_them_before_xvfb(tmp_path):
    cfg = site(tmp_path)
    spec = parse_spec(cfg, {"application": "paraview", "partition": "gpu", "version": "5.11-egl"}, strict=True)
    script = job.build_job(cfg, spec, "alice", "sid", "pvhpc-x", "s" * 32, "t" * 32).script
    values = {}
    for line in script.splitlines():
        words = shlex.split(line) if line.startswith("MODULE") else []
        if len(words) == 1:
            name, _, value = words[0].partition("=")
            values[name] = value
    assert values["MODULES"].split(" ") == ["cuda/12", "base", "paraview/5.11-egl"]
    assert values["MODULE_PATHS"] == str(tmp_path / "modulefiles")
    assert values["MODULES_INIT"].split(":") == list(modules.INIT_CANDIDATES)
    assert script.index('module load "$name"') < script.index('Xvfb ":$n"') < script.index('"$LAUNCHER" --start')
    assert "pvhpc paraview 5.11-egl" == job.build_job(cfg, spec, "alice", "sid", "pvhpc-x", "s" * 32,
                                                      "t" * 32).comment


# -- the probe, against this machine's Lmod -------------------------------------------------------------------

def probe(argv) -> modules.Probe:
    result = asyncio.run(LocalRunner().run(argv, timeout=60))
    assert result.ok, result.describe()
    return modules.parse_probe(result.stdout)


def test_the_probe_finds_lmod_and_tells_available_modules_from_missing_ones(tmp_path):
    write_modulefiles(tmp_path / "modulefiles", ["paraview/5.11", "paraview/5.11-egl"])
    found = probe(modules.probe_argv(modules.init_value(None), [str(tmp_path / "modulefiles")],
                                     ["paraview/5.11", "paraview/9", "paraview/5.11-egl"]))
    assert found.system.startswith("Lmod 8"), found
    assert found.found == {"paraview/5.11": "avail", "paraview/9": "missing", "paraview/5.11-egl": "avail"}
    assert found.missing == ("paraview/9",)


def test_the_probe_says_when_there_is_no_module_system(tmp_path):
    found = probe(modules.probe_argv(str(tmp_path / "no-such-init.sh"), [], ["paraview/5.11"]))
    assert found == modules.Probe("", {})


# -- refused before submit ------------------------------------------------------------------------------------

class CountingRunner(CommandRunner):
    """Answers the probe as a module system that has ``present``, and counts how often it is asked."""

    def __init__(self, present: set[str], system: str = "Lmod 8.6.19"):
        self.present, self.system, self.calls = present, system, []

    async def run(self, argv, input=None, timeout=30, max_output=None):
        names = list(argv[8:])
        self.calls.append(names)
        lines = [f"system {self.system or 'none'}"]
        if self.system:
            lines += [f"{'avail' if n in self.present else 'missing'} {n}" for n in names]
        return CommandResult(list(argv), 0, "\n".join(lines) + "\n", "", 0.01)


def test_a_version_whose_module_is_missing_is_refused_and_asked_again_only_after_a_while(tmp_path):
    now = [1000.0]
    runner = CountingRunner({"cuda/12", "base", "paraview/5.11"})
    cfg = site(tmp_path)
    known = ModuleAvailability(cfg, runner, clock=lambda: now[0])
    asyncio.run(known.check())
    assert runner.calls == [["cuda/12", "base", "paraview/5.11", "paraview/5.11-egl"]]
    assert known.missing == {"paraview/5.11-egl"}

    fine = parse_spec(cfg, {"application": "paraview", "version": "5.11"}, strict=True)
    for _ in range(3):
        asyncio.run(known.refuse_missing(fine))
    egl = parse_spec(cfg, {"application": "paraview", "version": "5.11-egl"}, strict=True)
    with pytest.raises(RequestError) as e:
        asyncio.run(known.refuse_missing(egl))
    assert e.value.field == "version" and "paraview/5.11-egl" in str(e.value) and "(5.11)" in str(e.value)
    assert len(runner.calls) == 1, "a request asked the module system although nothing was due"

    runner.present.add("paraview/5.11-egl")   # staff install it
    now[0] += RECHECK
    asyncio.run(known.refuse_missing(egl))
    assert runner.calls[1:] == [["paraview/5.11-egl"]] and not known.missing


def test_without_a_module_system_nothing_is_refused(tmp_path):
    runner = CountingRunner(set(), system="")
    known = ModuleAvailability(site(tmp_path), runner)
    asyncio.run(known.check())
    assert known.system == "" and not known.missing
    asyncio.run(known.refuse_missing(parse_spec(site(tmp_path), {"application": "paraview"}, strict=True)))


def test_the_service_refuses_an_unknown_version_and_a_missing_module_before_any_job(tmp_path):
    """Through the native API and the launcher API, with the module system of this machine asked as at start."""
    write_modulefiles(tmp_path / "modulefiles", ["cuda/12", "base", "paraview/5.11"])
    scheduler = SubmittingScheduler()
    app = make_app(tmp_path, scheduler, runtime={"module_paths": [str(tmp_path / "modulefiles")]},
                   partitions={"cpu": {"modules": ["cuda/12"]}},
                   applications={"paraview": {"data_roots": [str(tmp_path)], "modules": ["base"],
                                              "versions": VERSIONS}})
    async def check_at_start():
        await app.ctx.service.modules.check()
        await app.runner.close()   # its command spawner belongs to this event loop; fetch_all runs another

    asyncio.run(check_at_start())
    assert app.ctx.service.modules.system.startswith("Lmod")
    answers = fetch_all(app, [
        ("POST", "/api/v1/sessions", json.dumps({"application": "paraview", "version": "7.0"})),
        ("POST", "/paraview/", json.dumps({"application": "paraview", "version": "7.0"})),
        ("POST", "/api/v1/sessions", json.dumps({"application": "paraview", "version": "5.11-egl"})),
        ("GET", "/api/v1/applications", None),
        ("POST", "/api/v1/sessions", json.dumps({"application": "paraview", "version": "5.11"})),
    ])
    for answer in answers[:3]:
        body = json.loads(answer.body)
        assert answer.code == 400 and body["field"] == "version", (answer.code, body)
    assert "offered: 5.11, 5.11-egl" in json.loads(answers[0].body)["error"]
    assert "paraview/5.11-egl" in json.loads(answers[2].body)["error"]
    [listed] = json.loads(answers[3].body)["applications"]
    assert (listed["versions"], listed["default_version"]) == (["5.11", "5.11-egl"], "5.11")
    created = json.loads(answers[4].body)
    assert answers[4].code == 201 and created["version"] == "5.11", created
    assert [c[0] for c in scheduler.calls].count("submit") == 1, scheduler.calls
    [request] = scheduler.submitted.values()
    assert "MODULES='cuda/12 base paraview/5.11'" in request.script


# -- pvhpc config check ---------------------------------------------------------------------------------------

def test_config_check_names_each_key_whose_module_is_missing(tmp_path):
    write_modulefiles(tmp_path / "modulefiles", ["cuda/12", "paraview/5.11"])
    cfg = site(tmp_path)
    assert every_module(cfg)["paraview/5.11-egl"] == ["applications.paraview.versions.5.11-egl[0]"]
    checks = asyncio.run(config_check.check_modules(cfg, LocalRunner()))
    by_key = {c.name: c for c in checks}
    assert by_key["partitions.gpu.modules[0]"].status == OK
    assert by_key["applications.paraview.versions.5.11[0]"].status == OK
    for key in ("applications.paraview.modules[0]", "applications.paraview.versions.5.11-egl[0]"):
        assert by_key[key].status == FAIL and "does not exist" in by_key[key].detail, by_key[key]


def test_config_check_says_when_no_module_system_is_found_while_modules_are_configured(tmp_path):
    cfg = config.parse({"runtime": {"modules_init": str(tmp_path / "none.sh")}, "partitions": {"cpu": {}},
                        "applications": {"paraview": {"data_roots": [str(tmp_path)], "modules": ["paraview"]}}})
    [check] = asyncio.run(config_check.check_modules(cfg, LocalRunner()))
    assert (check.name, check.status) == ("runtime.modules_init", FAIL) and "no module system" in check.detail
    found = modules.Probe("Lmod 8.6.19", {"a": "spider"})
    assert [c.status for c in config_check.module_findings({"a": ["partitions.cpu.modules[0]"]}, found, "")] == [WARN]
