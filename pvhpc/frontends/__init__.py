"""Front ends: how clients reach a session's server, and the mapping each keeps (see base.py)."""

from pvhpc import plugins
from pvhpc.frontends.base import DirectFrontEnd, FrontEnd  # noqa: F401


def make_frontend(config) -> FrontEnd:
    """The front end a site names in ``frontend.kind``, built by its ``from_config``."""
    return plugins.load(plugins.FRONTENDS, config.frontend.kind).from_config(config.frontend)
