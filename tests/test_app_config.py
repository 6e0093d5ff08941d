"""Applications as staff define them (command, ready rule, runtime, web client): checked when the config is read,
and turned into the job a session becomes."""

from __future__ import annotations

import json
import shlex

import pytest

from pvhpc import config
from pvhpc.jobs import command
from pvhpc.sessions.job import build_job, script_values
from pvhpc.jobs.template import JOB_SCRIPT_VALUES
from pvhpc.sessions.spec import RequestError, parse_spec


def site(tmp_path, **app):
    return {"partitions": {"gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}}, "cpu": {}},
            "applications": {"viz": {"data_roots": [str(tmp_path)], **app}}}


def error(tmp_path, **app) -> str:
    with pytest.raises(config.ConfigError) as e:
        config.parse(site(tmp_path, **app), "site.yaml")
    return str(e.value)


SERVER = ["${pvpython}", "/opt/app/server.py", "--port", "${port}"]


@pytest.mark.parametrize("app, says", [
    ({"command": SERVER + ["--data", "${datadir}"]},
     "site.yaml: applications.viz.command[5]: unknown placeholder ${datadir} (known: ${pvpython}"),
    ({"command": SERVER + ["--x", "${port"]},
     "site.yaml: applications.viz.command[5]: '${port' opens a placeholder '${' it does not close"),
    ({"command": "pvpython server.py"}, "site.yaml: applications.viz.command: must be a non-empty list"),
    ({"command": ["${pvpython}", "-c", "import app", "--authKey", "${secret}"]},
     "site.yaml: applications.viz.command[1]: a command that passes ${secret} must be INTERPRETER SCRIPT.py"),
    ({"command": SERVER, "ready": {"line": "App running at ("}},
     "site.yaml: applications.viz.ready.line: 'App running at (' is not a regular expression"),
    ({"command": SERVER, "ready": {"line": ".*"}},
     "site.yaml: applications.viz.ready.line: '.*' matches an empty line"),
    ({"command": SERVER, "ready": {"line": "ready\\nport"}},
     "site.yaml: applications.viz.ready.line: 'ready\\\\nport' can never match"),
    ({"command": SERVER, "ready": {"port_file": True}},
     "site.yaml: applications.viz.ready.port_file: can never be met: the command has no ${port_file}"),
    ({"command": ["${pvpython}", "/opt/app/server.py"], "ready": {"line": "listening"}},
     "site.yaml: applications.viz.ready: the port the server listens on can never be known"),
    ({"command": SERVER, "ready": {"url": "x"}}, "site.yaml: applications.viz.ready: must be {line: REGEX}"),
    ({"runtime": {"venv": "/nonexistent/venv"}},
     "site.yaml: applications.viz.runtime.venv: /nonexistent/venv is not an existing directory"),
    ({"runtime": {"pythonpath": ["/nonexistent/site"]}},
     "site.yaml: applications.viz.runtime.pythonpath[0]: /nonexistent/site is not an existing directory"),
    ({"web_client": "/nonexistent/dist"}, "site.yaml: applications.viz.web_client: /nonexistent/dist is not an "
                                          "existing directory"),
    ({"render": "vulkan"}, "site.yaml: applications.viz.render: must be one of xvfb, egl, osmesa"),
])
def test_an_application_that_could_never_start_is_a_config_error_naming_the_key(tmp_path, app, says):
    assert error(tmp_path, **app).startswith(says)


def test_a_web_client_without_index_html_and_a_venv_without_python_are_refused(tmp_path):
    (tmp_path / "dist").mkdir()
    assert error(tmp_path, web_client=str(tmp_path / "dist")).startswith(
        f"site.yaml: applications.viz.web_client: {tmp_path / 'dist'} holds no index.html")
    (tmp_path / "venv").mkdir()
    assert error(tmp_path, runtime={"venv": str(tmp_path / "venv")}) == (
        f"site.yaml: applications.viz.runtime.venv: {tmp_path / 'venv'} is not a virtual environment "
        "(it has no bin/python)")


def test_a_job_script_naming_a_value_pvhpc_does_not_give_is_refused(tmp_path):
    template = tmp_path / "job.sh"
    template.write_text("#!/bin/bash\nexec {{ server }} --port {{ port }}\n")
    assert error(tmp_path, jobscript=str(template)).startswith(
        f"site.yaml: applications.viz.jobscript: {template} uses port, server, which pvhpc does not give")


def test_pvhpcs_own_server_is_an_application_command_like_any_other(tmp_path):
    """An application written as before (no command) runs pvhpc's server, reporting its port through a file."""
    app = config.parse(site(tmp_path), "site.yaml").applications["viz"]
    assert app.command[:2] == ("${pvpython}", "${server_script}") and "${port_file}" in app.command
    assert app.ready.port_file and app.ready.reports_port and app.render is None and app.web_client is None
    assert app.runtime.pythonpath and app.runtime.venv is None


def job_values(script: str) -> dict[str, str]:
    """The assignments at the top of a rendered job script, as the shell would read them."""
    values = {}
    for line in script.splitlines():
        words = shlex.split(line.removeprefix("export "), comments=True) if "=" in line else []
        if len(words) == 1 and "=" in words[0] and words[0].split("=")[0].isupper():
            name, _, value = words[0].partition("=")
            values[name] = value
    return values


def test_a_site_defined_application_becomes_a_job_with_its_argv_as_one_quoted_json_word(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "can.ex2").write_text("")
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").write_text("")
    (venv / "lib" / "python3.11" / "site-packages").mkdir(parents=True)
    cfg = config.parse(site(
        data, command=["${python}", "/opt/app/app.py", "--server", "--port", "${port}", "--data", "${data_dir}",
                       "--load-file", "${load_file}", "--authKey", "${secret}", "--note", "it's $(rm -rf ~)"],
        ready={"line": r"App running at http://\S+:(?P<port>\d+)"}, runtime={"venv": str(venv)}, render="osmesa"),
        "site.yaml")
    spec = parse_spec(cfg, {"application": "viz", "partition": "gpu"}, strict=True)
    values = job_values(build_job(cfg, spec, "alice", "sid", "pvhpc-x", "the-secret", "the-token").script)
    argv = json.loads(values["PVHPC_LAUNCH_COMMAND"])
    # No file to load: the option and its empty value are left out. Node-side placeholders stay for the launcher.
    assert argv == [str(venv / "bin" / "python"), "/opt/app/app.py", "--server", "--port", "${port}", "--data",
                    str(data), "--authKey", "${secret}", "--note", "it's $(rm -rf ~)"]
    assert json.loads(values["PVHPC_LAUNCH_READY"]) == {"line": r"App running at http://\S+:(?P<port>\d+)"}
    assert values["RENDER_MODE"] == "osmesa" and values["VENV"] == str(venv)
    assert values["PYTHONPATH"].startswith(str(venv / "lib" / "python3.11" / "site-packages"))
    assert "the-secret" not in values["PVHPC_LAUNCH_COMMAND"]

    spec = parse_spec(cfg, {"application": "viz", "data": "can.ex2"}, strict=True)
    argv = json.loads(job_values(build_job(cfg, spec, "alice", "sid", "x", "s", "t").script)["PVHPC_LAUNCH_COMMAND"])
    assert argv[argv.index("--load-file") + 1] == "can.ex2"


def test_build_job_gives_every_value_a_job_script_may_name(tmp_path):
    """The values a job gets and the names the config check lets a template use are one list."""
    template = tmp_path / "all.sh"
    template.write_text("#!/bin/bash\n" + "".join(f"# {{{{ {name} }}}}\n" for name in JOB_SCRIPT_VALUES))
    cfg = config.parse(site(tmp_path, jobscript=str(template)), "site.yaml")
    spec = parse_spec(cfg, {"application": "viz"}, strict=True)
    build_job(cfg, spec, "alice", "sid", "x", "s", "t")
    assert sorted(script_values(cfg, spec, "alice", "sid", "x", "s", "t")) == sorted(JOB_SCRIPT_VALUES)


def test_the_embedded_defaults_offer_the_visualizer_unmodified_where_it_is_installed(tmp_path, monkeypatch):
    from pvhpc import runtime

    monkeypatch.setenv("PVHPC_WEB_CLIENTS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("PVHPC_RUNTIME_DIR", str(tmp_path / "no-runtime"))   # no trame there either
    # What needs no installed runtime of its own: pvhpc's server and the desktop client's bare pvserver.
    assert list(config.embedded_defaults().applications) == ["paraview", "pvserver"]
    package = tmp_path / "clients" / "pvw-visualizer"
    (package / "server").mkdir(parents=True)
    (package / "dist").mkdir()
    (package / "server" / "pvw-visualizer.py").write_text("")
    (package / "dist" / "index.html").write_text("")
    monkeypatch.setenv("PVHPC_WEB_CLIENTS_DIR", str(tmp_path / "clients"))
    app = config.embedded_defaults().applications["visualizer"]
    assert app.web_client == package / "dist" and app.command[1] == str(package / "server" / "pvw-visualizer.py")
    assert "--authKey" in app.command and app.ready.line == "wslink: Starting factory" and not app.ready.reports_port
    assert runtime.WEB_CLIENTS["pvw-visualizer"] == "3.2.0"


def test_launch_fields_from_a_url_query_arrive_as_strings_and_are_accepted(tmp_path):
    cfg = config.parse(site(tmp_path), "site.yaml")
    spec = parse_spec(cfg, {"application": "viz", "partition": "gpu", "gpus": "2", "walltime": "90", "qos": ""},
                      strict=False)
    assert (spec.partition, spec.gpus, spec.walltime_minutes, spec.qos) == ("gpu", 2, 90, None)
    with pytest.raises(RequestError) as e:
        parse_spec(cfg, {"application": "viz", "partition": "gpu", "gpus": "3"}, strict=False)
    assert e.value.field == "gpus" and "over partition gpu's maximum of 2" in str(e.value)
    with pytest.raises(RequestError) as e:
        parse_spec(cfg, {"application": "viz", "gpus": "two"}, strict=False)
    assert e.value.field == "gpus"


def test_fill_leaves_out_an_empty_placeholder_with_its_option_and_keeps_node_placeholders():
    filled = command.fill(("${pvpython}", "s.py", "--load", "${load_file}", "--port", "${port}", "-k", "${secret}"),
                          {"pvpython": "/usr/bin/pvpython", "load_file": ""})
    assert filled == ["/usr/bin/pvpython", "s.py", "--port", "${port}", "-k", "${secret}"]
