"""Site config: validation errors name the file, the key and what is wrong."""

from __future__ import annotations

import pytest

from pvhpc import config

BASE = {"partitions": {"gpu": {"gpu_type": "a100", "gpus": {"max": 2}}}, "applications": {"paraview": {"data_roots": ["/tmp"]}}}


def with_(path: str, value):
    import copy

    data = copy.deepcopy(BASE)
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value
    return data


@pytest.mark.parametrize("path,value,message", [
    ("partitions.gpu.gpus.defualt", 1, "partitions.gpu.gpus.defualt: unknown key (did you mean 'default'?)"),
    ("partitions.gpu.walltime", {"default": "10:00:00", "max": "08:00:00"}, "partitions.gpu.walltime.default: 600 is over max (480)"),
    ("partitions.gpu.walltime", {"max": "8 hours"}, "partitions.gpu.walltime.max: '8 hours' is not a walltime"),
    ("partitions.gpu.render", "opengl", "partitions.gpu.render: must be one of xvfb, egl, osmesa, not 'opengl'"),
    ("partitions.gpu.cpus", "two", "partitions.gpu.cpus: must be a whole number, not 'two'"),
    ("partitions.gpu.gpus", {"max": 2, "default": True}, "partitions.gpu.gpus.default: must be a whole number"),
    ("partitions.gpu.slurm_partition", "gpu; rm -rf /", "partitions.gpu.slurm_partition: 'gpu; rm -rf /' is not a valid name"),
    ("applications.paraview.partitions", ["gpx"], "applications.paraview.partitions[0]: 'gpx' is not a partition of this site (gpu)"),
    ("applications.paraview.data_roots", ["/nonexistent-pvhpc"], "applications.paraview.data_roots[0]: /nonexistent-pvhpc is not an existing directory"),
    ("applications.paraview.data_roots", ["relative/dir"], "applications.paraview.data_roots[0]: relative/dir is not an absolute path"),
    ("applications.paraview.jobscript", "missing.sh", "applications.paraview.jobscript:"),
    ("applications.paraview.start_timeout", 0, "applications.paraview.start_timeout: must be between 5 and 86400, not 0"),
    ("service.listen", "nope", "service.listen: 'nope' is not HOST:PORT"),
    ("service.poll_interval", -1, "service.poll_interval: must be a number of seconds above 0"),
    ("service.public_url", "ftp://x", "service.public_url: 'ftp://x' is not an http(s) URL"),
    ("scheduler.backend", "pbs", "scheduler.backend: must be one of slurm, pyslurm, not 'pbs'"),
    ("limits.sessions_per_user", 0, "limits.sessions_per_user: must be between 1 and 10000, not 0"),
    ("frontend.session_url", "ws://{nope}/ws", "frontend.session_url: only {id}, {host} and {port} may be used"),
    ("colour", "blue", "colour: unknown key"),
    ("servise", {}, "servise: unknown key (did you mean 'service'?)"),
    ("frontend.kind", "nginx", "frontend.kind: must be one of direct, apache, builtin, not 'nginx'"),
    ("auth.kind", "pam", "auth.kind: must be one of local, header, not 'pam'"),
    # Both once escaped the loader as a bare exception (AttributeError, ValueError) instead of a config error.
    ("frontend.session_url", "ws://{id.x}/ws", "frontend.session_url: only {id}, {host} and {port} may be used"),
    # The header is believed over the front end's socket only: an old config that names addresses is told so.
    ("auth.trusted_proxies", ["127.0.0.1"], "auth.trusted_proxies: is no longer read"),
    ("auth", {"kind": "header", "users_trust_each_other": True},
     "auth.kind: 'header' believes the front end's user header only over a Unix socket"),
    ("service.allowed_origins", ["https://viz.example.org/pvhpc"],
     "service.allowed_origins: 'https://viz.example.org/pvhpc' is not an origin"),
    ("scheduler", {"backend": "pyslurm", "submit_as": "user"},
     "scheduler.submit_as: 'user' needs backend 'slurm' (pyslurm acts only as the service's own user)"),
    # Sessions' own content must not share pvhpc's origin (issue 22), nor a host name whose cookies it would get.
    ("frontend", {"kind": "builtin", "session_origin": "http://127.0.0.1:9999"},
     "frontend.session_origin: must be a host name of its own: 127.0.0.1 is also pvhpc's"),
    ("frontend", {"kind": "direct", "session_origin": "https://sessions.example.org"},
     "frontend.session_origin: is served by the builtin and apache front ends only"),
    ("frontend", {"kind": "builtin", "session_origin": "https://sessions.example.org/x"},
     "frontend.session_origin: 'https://sessions.example.org/x' is not an origin"),
    ("applications.paraview.default_partition", "cpu",
     "applications.paraview.default_partition: 'cpu' is not among this application's partitions"),
])
def test_errors_name_the_key(path, value, message):
    with pytest.raises(config.ConfigError) as e:
        config.parse(with_(path, value), "site.yaml")
    assert str(e.value).startswith("site.yaml: " + message.split(":")[0])
    assert message in str(e.value)


def test_a_config_error_is_a_pvhpc_error_naming_its_key():
    from pvhpc.errors import PvhpcError

    with pytest.raises(PvhpcError) as e:
        config.parse(with_("limits.gpus_per_user", -1), "site.yaml")
    assert isinstance(e.value, config.ConfigError)
    assert (e.value.source, e.value.key, e.value.field) == ("site.yaml", "limits.gpus_per_user", "limits.gpus_per_user")
    assert e.value.message == "must be between 0 and 100000, not -1"
    assert str(e.value) == "site.yaml: limits.gpus_per_user: must be between 0 and 100000, not -1"


def test_load_reports_file_errors(tmp_path):
    with pytest.raises(config.ConfigError, match=r"missing.yaml: cannot read"):
        config.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partitions: [unclosed\n")
    with pytest.raises(config.ConfigError, match=r"bad.yaml: not valid YAML"):
        config.load(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(config.ConfigError, match=r"empty.yaml: partitions: at least one partition is needed"):
        config.load(empty)


def test_defaults_fill_in():
    cfg = config.parse(BASE, "site.yaml")
    gpu = cfg.partitions["gpu"]
    assert gpu.slurm_partition == "gpu" and gpu.render == "xvfb" and gpu.gpus.default == 1 and gpu.gpus.max == 2
    assert gpu.walltime.default == 60 and gpu.walltime.max == 480
    app = cfg.applications["paraview"]
    assert app.partitions == ("gpu",) and app.default_partition == "gpu" and app.jobscript.name == "paraview-web.sh"
    assert cfg.frontend.kind == "direct" and cfg.auth.kind == "local"


def test_serve_refuses_to_start_on_bad_config(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "site.yaml"
    bad.write_text("partitions:\n  gpu: {gpus: {max: -1}}\napplications:\n  paraview: {}\n")
    proc = subprocess.run([sys.executable, "-m", "pvhpc", "serve", "--config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"{bad}: partitions.gpu.gpus.max: must be between 0 and 64, not -1" in proc.stderr


def test_embedded_defaults_are_valid():
    cfg = config.embedded_defaults()
    assert set(cfg.partitions) == {"gpu", "cpu"} and cfg.partitions["gpu"].gpu_type == "a100"


def test_a_path_too_long_for_the_system_is_a_config_error(tmp_path):
    """Found by the hostile-config test: a 5,000-character jobscript name made stat() raise ENAMETOOLONG."""
    long_name = "x" * 5000
    for section, message in (({"jobscript": long_name, "data_roots": [str(tmp_path)]}, "jobscript: "),
                             ({"data_roots": ["/" + long_name]}, r"data_roots\[0\]: ")):
        with pytest.raises(config.ConfigError, match=message):
            config.parse({"partitions": {"gpu": {}}, "applications": {"paraview": section}}, "site.yaml")


def test_a_pvserver_behind_a_wrapper_is_refused():
    """pvhpc guards the pvserver program itself (issue 22): a wrapper in front would start it unguarded, with
    the connect id on its command line."""
    site = {**BASE, "partitions": {"cpu": {"max_ranks": 4}}}
    with pytest.raises(config.ConfigError, match=r"applications.paraview.pvserver: must start with ParaView's "
                                                 r"pvserver itself, not 'numactl'"):
        config.parse({**site, "applications": {"paraview": {"data_roots": ["/tmp"],
                                                            "pvserver": ["numactl", "-N0", "pvserver"]}}}, "s.yaml")
    parsed = config.parse({**site, "applications": {"paraview": {"data_roots": ["/tmp"],
                                                                 "pvserver": ["/usr/bin/pvserver-mpi", "--x"]}}},
                          "s.yaml")
    assert parsed.applications["paraview"].pvserver == ("/usr/bin/pvserver-mpi", "--x")


def test_a_session_origin_is_https_where_pvhpc_is():
    site = {**BASE, "service": {"public_url": "https://viz.example.org"},
            "frontend": {"kind": "builtin", "session_origin": "http://viz-sessions.example.net"}}
    with pytest.raises(config.ConfigError, match="frontend.session_origin: must be https, as pvhpc's public_url is"):
        config.parse(site, "s.yaml")
    site["frontend"]["session_origin"] = "https://viz-sessions.example.net"
    assert config.parse(site, "s.yaml").frontend.session_origin == "https://viz-sessions.example.net"
