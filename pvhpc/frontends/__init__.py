"""Front ends: how clients reach a session's server, and the mapping each keeps (see base.py)."""

from pvhpc import plugins
from pvhpc.frontends.base import DirectFrontEnd, FrontEnd  # noqa: F401


def make_frontend(config, ssh_link=None, traffic=None) -> FrontEnd:
    """The front end a site names in ``frontend.kind``, built whole by its ``from_config``: ``ssh_link`` is SSH
    mode's link to the login host (a proxy reaches the nodes through it), ``traffic`` counts what a proxy carries."""
    return plugins.load(plugins.FRONTENDS, config.frontend.kind).from_config(
        config.frontend, served_applications=config.served_applications(), ssh_link=ssh_link, traffic=traffic,
        limits=config.limits)
