"""Front ends: how clients reach a session's server, and the mapping each keeps (see base.py)."""

from .base import DirectFrontEnd, FrontEnd  # noqa: F401


def make_frontend(config) -> FrontEnd:
    kind = config.frontend.kind
    if kind == "direct":
        return DirectFrontEnd(config.frontend.session_url)
    raise ValueError(f"front end {kind!r} is not available in this version")
