"""Request validation and job script rendering: nothing from a request is ever interpreted by a shell."""

from __future__ import annotations

import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pvhpc import config
from pvhpc.paths import JOBSCRIPTS_DIR
from pvhpc.jobs.template import JobTemplate, TemplateError
from pvhpc.sessions.job import build_job
from pvhpc.sessions.spec import RequestError, parse_spec


@pytest.fixture
def site(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "sub" / "can.vtk").write_text("x")
    (tmp_path / "outside.vtk").write_text("x")
    return config.parse({
        "partitions": {
            "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 60, "max": 120},
                    "accounts": ["proj1", "proj2"]},
            "cpu": {"walltime": {"default": 30, "max": 60}},
        },
        "applications": {"paraview": {"data_roots": [str(data)]}},
    }, "site.yaml")


@pytest.mark.parametrize("body,field,message", [
    ({}, "application", "is required"),
    ({"application": "nope"}, "application", "'nope' is not an application of this site"),
    ({"application": 5}, "application", "must be a string"),
    ({"application": "paraview", "partition": "big"}, "partition", "'big' is not a partition application paraview"),
    ({"application": "paraview", "gpus": 3}, "gpus", "3 is over partition gpu's maximum of 2"),
    ({"application": "paraview", "gpus": -1}, "gpus", "must not be negative"),
    ({"application": "paraview", "gpus": "1.5"}, "gpus", "must be a whole number"),
    ({"application": "paraview", "gpus": True}, "gpus", "must be a whole number"),
    ({"application": "paraview", "gpus": 10**100}, "gpus", "is over partition gpu's maximum"),
    ({"application": "paraview", "partition": "cpu", "gpus": 1}, "gpus", "1 is over partition cpu's maximum of 0"),
    ({"application": "paraview", "walltime": "03:00:00"}, "walltime", "03:00:00 is over partition gpu's maximum of 02:00:00"),
    ({"application": "paraview", "walltime": "1:00:00; reboot"}, "walltime", "is not a walltime"),
    ({"application": "paraview", "walltime": 0}, "walltime", "must be a positive time"),
    ({"application": "paraview", "account": "other"}, "account", "'other' is not an account you may use"),
    ({"application": "paraview", "account": "$(id)"}, "account", "must be a name"),
    ({"application": "paraview", "data": "../outside.vtk"}, "data", "is outside the allowed data directories"),
    ({"application": "paraview", "data": "/etc/passwd"}, "data", "is outside the allowed data directories"),
    ({"application": "paraview", "data": "sub/none.vtk"}, "data", "is not an existing file"),
    ({"application": "paraview", "data": "a\0b"}, "data", "is not a usable path"),
    ({"application": "paraview", "data": ["x"]}, "data", "must be a path string"),
])
def test_bad_requests_name_the_field(site, body, field, message):
    with pytest.raises(RequestError) as e:
        parse_spec(site, body, strict=False)
    assert e.value.field == field and message in e.value.message and e.value.status == 400


def test_strict_mode_rejects_unknown_fields_launcher_mode_ignores_them(site):
    body = {"application": "paraview", "sessionManagerURL": "http://x/paraview/", "secret": "client-chosen"}
    assert parse_spec(site, body, strict=False).application == "paraview"
    with pytest.raises(RequestError) as e:
        parse_spec(site, body, strict=True)
    assert e.value.field == "secret"
    with pytest.raises(RequestError, match="JSON object"):
        parse_spec(site, ["application"], strict=False)


def test_good_request_and_defaults(site):
    spec = parse_spec(site, {"application": "paraview", "walltime": 90, "data": "sub/can.vtk", "account": "proj2"}, True)
    assert (spec.partition, spec.gpus, spec.walltime_minutes, spec.account, spec.data_file) == ("gpu", 1, 90, "proj2", "sub/can.vtk")
    assert spec.request_key("alice") != spec.request_key("bob")
    assert spec.request_key("alice") == parse_spec(site, {"application": "paraview", "walltime": "1:30:00",
                                                          "data": "sub/can.vtk", "account": "proj2"}, True).request_key("alice")


HOSTILE = ["$(touch /tmp/pvhpc-pwned)", "`id`", "a'b\"c", "x\ny", "; rm -rf /", "${HOME}", "\\", "€ünïcode", "-n", "*", ""]


@pytest.mark.parametrize("value", HOSTILE)
def test_rendered_values_reach_the_shell_as_literal_words(tmp_path, value):
    template = tmp_path / "echo.sh"
    template.write_text("#!/bin/bash\nVALUE={{ value }}\nprintf '%s' \"$VALUE\"\n")
    script = JobTemplate(template).render({"value": value})
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == value


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=60))
def test_any_text_survives_quoting(tmp_path_factory, value):
    template = tmp_path_factory.mktemp("t") / "echo.sh"
    template.write_text("V={{ v }}\nprintf '%s' \"$V\"\n")
    out = subprocess.run(["bash", "-c", JobTemplate(template).render({"v": value})], capture_output=True, check=True).stdout
    assert out.decode() == value


def test_template_errors(tmp_path):
    template = tmp_path / "t.sh"
    template.write_text("A={{ a }}\nB={{ b }}\n")
    t = JobTemplate(template)
    with pytest.raises(TemplateError, match="no value for b"):
        t.render({"a": 1})
    with pytest.raises(TemplateError, match="does not use c"):
        t.render({"a": 1, "b": 2, "c": 3})
    with pytest.raises(TemplateError, match="NUL"):
        t.render({"a": "x\0y", "b": 2})
    with pytest.raises(TemplateError, match="cannot read job script template"):
        JobTemplate(tmp_path / "missing.sh")


def test_a_template_is_read_again_once_its_file_changed_and_only_then(tmp_path, monkeypatch):
    template = tmp_path / "t.sh"
    template.write_text("A={{ a }}\n")
    first = JobTemplate.current(template)
    assert JobTemplate.current(template) is first   # unchanged: not read again
    template.write_text("A={{ a }}\nB={{ b }}\n")   # staff's edit, in place
    assert JobTemplate.current(template).names == {"a", "b"}
    replacement = tmp_path / "new.sh"
    replacement.write_text("A={{ a }}\nC={{ b }}\n")   # same size, another file moved over it
    replacement.replace(template)
    assert "C=" in JobTemplate.current(template).text
    template.unlink()
    with pytest.raises(TemplateError, match="cannot read job script template"):
        JobTemplate.current(template)


def test_session_job_script_is_valid_bash_and_options_are_arguments(site):
    spec = parse_spec(site, {"application": "paraview", "data": "sub/can.vtk", "account": "proj1"}, True)
    job = build_job(site, spec, "alice", "sid", "pvhpc-0123", "s3cret'$(id)", "tok")
    subprocess.run(["bash", "-n"], input=job.script, text=True, check=True)
    assert "export PVHPC_SECRET='s3cret'\"'\"'$(id)'" in job.script
    assert not any(line.startswith("#SBATCH") for line in job.script.splitlines())
    assert (job.partition, job.gpus, job.gpu_type, job.account, job.time_limit_minutes) == ("gpu", 1, "a100", "proj1", 60)
    from pvhpc.scheduler.slurm_cli import SlurmCLI

    argv = SlurmCLI.sbatch_argv(job)
    assert "--gres=gpu:a100:1" in argv and "--account=proj1" in argv and "--export=NONE" in argv


def test_every_template_in_jobscripts_renders():
    for path in JOBSCRIPTS_DIR.glob("*.sh"):
        assert JobTemplate(path).names, f"{path.name} has no placeholders"
