"""A real ``pvhpc serve`` in a child process, and the site config that points it at the test cluster."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.request
from pathlib import Path

import yaml

from pvhpc.localcluster.cluster import LocalCluster

from tests.harness.daemon import Daemon
from tests.harness.frontend import TrustedFrontEnd
from tests.harness.ports import free_port_block

REPO = Path(__file__).resolve().parents[2]


def site_config(cluster: LocalCluster, directory: Path, runtime_path: Path, **overrides) -> dict:
    """A site config for the test cluster; ``overrides`` replace whole top-level sections or service keys.

    With ``auth.kind: header`` the service also listens on a front-end socket (the only channel its user header
    is believed on), and its pages are those of the stand-in front end on the port after its own
    (``ServiceProcess.frontend_url``); jobs still report to its own port.
    """
    data_dir = directory / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port_block(2)   # pvhpc's own, and the next for the stand-in front end
    config = {
        "service": {
            # Where the nodes are hosts of their own they reach pvhpc on their network (cluster.login_address),
            # tests at 127.0.0.1: the service listens on both.
            "listen": f"{'0.0.0.0' if cluster.multi_host else '127.0.0.1'}:{port}",
            "public_url": f"http://127.0.0.1:{port}",
            "callback_url": f"http://{cluster.login_address}:{port}",
            "database": f"sqlite:///{directory / 'pvhpc.sqlite'}",
            "job_output_dir": str(directory / "jobs"),
            "poll_interval": 1,
            "launcher_wait": 60,
            "submit_grace": 20,
        },
        "scheduler": {**cluster.scheduler_config(), "command_timeout": 20},
        "runtime": {"pythonpath": str(runtime_path)},
        "partitions": {
            "gpu": {"gpu_type": "a100", "gpus": {"default": 1, "max": 2}, "walltime": {"default": 30, "max": 120}},
            "cpu": {"walltime": {"default": 30, "max": 120}},
        },
        "applications": {"paraview": {"data_roots": [str(data_dir)], "start_timeout": 120}},
    }
    auth = overrides.get("auth")
    if isinstance(auth, dict) and auth.get("kind") == "header":
        # Apache's workers (www-data) may connect, as on a site; other accounts may not.
        config["service"].update(frontend_socket=str(socket_dir() / "frontend.sock"), frontend_socket_group="www-data",
                                 public_url=f"http://127.0.0.1:{port + 1}")
        if (overrides.get("scheduler") or {}).get("submit_as") != "user":
            # Test users are names made up on one machine, all of whose jobs run as the service: said explicitly.
            overrides = {**overrides, "auth": {"users_trust_each_other": True, **auth}}
    for key, value in overrides.items():
        if key in config["service"] or key in ("public_url", "callback_url", "allowed_origins", "walltime_warnings",
                                                 "continuation", "continue_max_total", "continue_lead"):
            config["service"][key] = value
        else:
            config[key] = value
    return config


def socket_dir() -> Path:
    """A directory for a front-end socket: a Unix socket's path must be short (108 bytes), pytest's are long.
    Mode 0755, so that whether another account may connect is the socket's own mode, as on a site."""
    directory = Path(tempfile.mkdtemp(prefix="pvhpc-fe-"))
    directory.chmod(0o755)
    return directory


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
        socket_path = config["service"].get("frontend_socket")
        self.frontend_socket = Path(socket_path) if socket_path else None
        self.frontend_url = f"http://127.0.0.1:{self.port + 1}" if socket_path else None
        self.public_url = config["service"].get("public_url", self.url)
        self.frontend: TrustedFrontEnd | None = None

    def start(self, timeout: float = 30, as_user: str | None = None) -> "ServiceProcess":
        self.as_user = as_user
        if as_user and self.frontend_socket:
            shutil.chown(self.frontend_socket.parent, as_user)   # the service makes its socket there
        super().start(timeout)
        if self.frontend_socket and self.frontend is None:   # started again after kill(): the stand-in stays
            self.frontend = TrustedFrontEnd(self.frontend_socket, self.port + 1)
        return self

    def stop(self) -> None:
        if self.frontend:
            self.frontend.stop()
            self.frontend = None
        super().stop()
        if self.frontend_socket and self.frontend_socket.parent.name.startswith("pvhpc-fe-"):
            shutil.rmtree(self.frontend_socket.parent, ignore_errors=True)   # made by socket_dir()

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

    @property
    def frontend_target(self) -> str:
        """Where Apache reaches this service (its --service-url): the front-end socket, if it has one."""
        return f"unix:{self.frontend_socket}" if self.frontend_socket else self.url

    def client(self, **kwargs):
        from pvhpc.client.api import Client

        return Client(self.url, **kwargs)

    def user_client(self, user: str, **headers):
        """A client that is ``user`` as a browser page of the site is: through the (stand-in) front end, with
        the site's own Origin, as a browser sends it."""
        from pvhpc.client.api import Client

        return Client(self.frontend_url, headers={"X-Remote-User": user, "Origin": self.public_url, **headers})
