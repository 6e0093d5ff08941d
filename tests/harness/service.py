"""A real ``pvhpc serve`` in a child process, and the site config that points it at the test cluster."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import yaml

from pvhpc.scheduler.localcluster import LocalCluster

from tests.harness.daemon import Daemon
from tests.harness.ports import free_port_block

REPO = Path(__file__).resolve().parents[2]


def site_config(cluster: LocalCluster, directory: Path, runtime_path: Path, **overrides) -> dict:
    """A site config for the test cluster; ``overrides`` replace whole top-level sections or service keys."""
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port_block(1)
    config = {
        "service": {
            "listen": f"127.0.0.1:{port}",
            "database": f"sqlite:///{directory / 'pvhpc.sqlite'}",
            "job_output_dir": str(directory / "jobs"),
            "poll_interval": 1,
            "launcher_wait": 60,
            "submit_grace": 20,
        },
        "scheduler": {"environment": cluster.environment(), "command_timeout": 20},
        "runtime": {"pythonpath": str(runtime_path)},
        "partitions": {
            "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 30, "max": 120}},
            "cpu": {"walltime": {"default": 30, "max": 120}},
        },
        "applications": {"paraview": {"data_roots": [str(data_dir)], "start_timeout": 120}},
    }
    for key, value in overrides.items():
        if key in config["service"] or key in ("public_url", "callback_url"):
            config["service"][key] = value
        else:
            config[key] = value
    return config


class ServiceProcess(Daemon):
    """``pvhpc serve`` of this checkout with a site config written to ``directory/site.yaml``.

    Ready when its health endpoint answers.
    """

    name = "pvhpc serve"

    def __init__(self, directory: Path, config: dict):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.dir / "service.log")
        self.config_path = self.dir / "site.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.port = int(config["service"]["listen"].rsplit(":", 1)[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.as_user: str | None = None

    def start(self, timeout: float = 30, as_user: str | None = None) -> "ServiceProcess":
        self.as_user = as_user
        return super().start(timeout)

    def command(self) -> list[str]:
        argv = [sys.executable, "-m", "pvhpc", "serve", "--config", str(self.config_path), "--log-level", "DEBUG"]
        if self.as_user:
            # A service account, as a site would run it: it may only read what every user may read.
            argv = ["runuser", "-u", self.as_user, "--", *argv]
        return argv

    def environment(self) -> dict[str, str]:
        return dict(os.environ, PYTHONPATH=str(REPO))   # this checkout's pvhpc, whoever runs it

    def ready(self) -> bool:
        try:
            urllib.request.urlopen(self.url + "/api/v1/health", timeout=2).read()
            return True
        except OSError:
            return False

    def client(self, **kwargs):
        from pvhpc.client.api import Client

        return Client(self.url, **kwargs)
