"""Front ends: how clients reach a session's server, and the mapping each keeps (see base.py)."""

from pathlib import Path

from pvhpc import plugins
from pvhpc.frontends.base import DirectFrontEnd, FrontEnd  # noqa: F401


def make_frontend(config) -> FrontEnd:
    """The front end a site names in ``frontend.kind``, built by its ``from_config``."""
    frontend = plugins.load(plugins.FRONTENDS, config.frontend.kind).from_config(config.frontend)
    frontend.served_applications = served_applications(config)
    return frontend


def served_applications(config) -> frozenset[str]:
    """The site's applications whose session server serves its own web client (``serves_own_client``)."""
    return frozenset(name for name, app in config.applications.items() if getattr(app, "serves_own_client", False))


def web_clients(config) -> dict[str, Path]:
    """Application name -> the directory of its static web client (``web_client``), served at /apps/<name>/."""
    return {name: Path(app.web_client) for name, app in config.applications.items()
            if getattr(app, "web_client", None)}
