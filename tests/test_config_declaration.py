"""Each config key is declared once (pvhpc/config/keys.py): the dataclasses, the loader and
docs/site.example.yaml all agree with that declaration."""

from __future__ import annotations

import dataclasses
import difflib
import grp
import os
from pathlib import Path

import pytest
import yaml

from pvhpc import config
from pvhpc.config import example
from pvhpc.config.keys import SITE
from pvhpc.config.schema import Named

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "site.example.yaml"


def test_every_dataclass_field_has_a_declared_key_and_every_key_a_field():
    for section in SITE:
        declared = [f for key in section.keys for f in key.fields]
        assert len(declared) == len(set(declared)), f"{section.name}: two keys fill one field"
        expected = {"name"} | set(declared) if isinstance(section, Named) else set(declared)
        found = {f.name for f in dataclasses.fields(section.model)}
        assert found == expected, (f"{section.model.__name__} and section {section.name}: fields without a key "
                                   f"{sorted(found - expected)}, keys without a field {sorted(expected - found)}")
    site_fields = [f.name for f in dataclasses.fields(config.SiteConfig)]
    assert site_fields == ["source"] + [s.name for s in SITE], "SiteConfig's sections, in the order they are read"


def test_the_example_file_is_written_from_the_declarations():
    written, expected = EXAMPLE.read_text(), example.render()
    if written != expected:
        diff = "".join(list(difflib.unified_diff(written.splitlines(True), expected.splitlines(True),
                                                 "docs/site.example.yaml", "declared"))[:40])
        pytest.fail(f"docs/site.example.yaml differs from the declarations in pvhpc/config/keys.py; "
                    f"regenerate it: {example.REGENERATE}\n{diff}")


def test_the_example_loads_as_written():
    cfg = config.load(EXAMPLE)
    assert cfg.partitions["gpu"].walltime.max == 480 and cfg.partitions["gpu"].gpus.max == 2
    assert cfg.partitions["cpu"].render == "osmesa" and cfg.partitions["cpu"].gpus.max == 0
    assert cfg.applications["paraview"].default_partition == "gpu" and cfg.frontend.kind == "direct"
    assert cfg.limits.requests_per_minute == 600 and cfg.scheduler.submit_as == "service" and cfg.ssh is None


def uncommented(text: str) -> str:
    """The example with every commented-out key (and the optional ssh: section) written in."""
    return "\n".join(example.COMMENTED_KEY.sub(r"\1\2:\3", line) for line in text.splitlines())


def test_every_key_the_loader_accepts_is_in_the_example_and_loads(tmp_path):
    data = yaml.safe_load(uncommented(EXAMPLE.read_text()))
    assert list(data) == [s.name for s in SITE]
    for section in SITE:
        entries = data[section.name]
        if isinstance(section, Named):   # the first entry shows every key
            entries = next(iter(entries.values()))
        assert list(entries) == [k.name for k in section.keys], f"{section.name}: keys missing or out of order"

    # What the file names on a site's machines, here: SSH's key files, and the apache front end whose map it keeps.
    for key in ("key_file", "known_hosts"):
        (tmp_path / key).write_text("")
        data["ssh"][key] = str(tmp_path / key)
    (tmp_path / "apache").mkdir()
    (tmp_path / "client").mkdir()
    (tmp_path / "client" / "index.html").write_text("<html></html>")
    data["applications"]["paraview"]["web_client"] = str(tmp_path / "client")
    data["applications"]["paraview"]["runtime"] = {"pythonpath": [str(tmp_path)]}
    data["frontend"].update(kind="apache", map_file=str(tmp_path / "apache" / "session-map.txt"),
                            map_group=grp.getgrgid(os.getegid()).gr_name)
    cfg = config.parse(data, str(EXAMPLE))
    assert cfg.ssh.host == "login1.example.org" and cfg.ssh.known_hosts == tmp_path / "known_hosts"
    assert cfg.service.callback_urls == ("http://login1:8480", "http://login2:8480")
    assert cfg.partitions["gpu"].memory_mb == 8000 and cfg.partitions["gpu"].slurm_partition == "gpu-a100"
    assert cfg.frontend.session_url == "wss://USE_HOST/proxy?sessionId={id}&path=ws" and cfg.auth.user == "alice"
    # A key written with no value (job_helper:) takes its default, as if left out.
    assert cfg.runtime.job_helper.endswith("jobhelper.py")


def test_a_front_end_a_sites_package_declares_can_be_chosen(tmp_path, monkeypatch):
    """Choices come from installed entry points, so a site's plug-in is named like pvhpc's own."""
    dist = tmp_path / "site_frontend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: site-frontend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[pvhpc.frontends]\nnginx = site_frontend:NginxFrontEnd\n")
    base = {"partitions": {"gpu": {}}, "applications": {"paraview": {"data_roots": [str(tmp_path)]}}}
    with pytest.raises(config.ConfigError) as e:
        config.parse({**base, "frontend": {"kind": "nginx"}}, "site.yaml")
    assert str(e.value) == "site.yaml: frontend.kind: must be one of direct, apache, builtin, not 'nginx'"
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = config.parse({**base, "frontend": {"kind": "nginx"}}, "site.yaml")
    assert cfg.frontend.kind == "nginx" and cfg.frontend.map_file is None
