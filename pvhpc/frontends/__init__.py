"""Front ends: how clients reach a session's server, and the mapping each keeps (see base.py)."""

from pvhpc.frontends.base import DirectFrontEnd, FrontEnd  # noqa: F401


def make_frontend(config) -> FrontEnd:
    fe = config.frontend
    if fe.kind == "direct":
        return DirectFrontEnd(fe.session_url)
    if fe.kind == "apache":
        from pvhpc.frontends.apache import ApacheFrontEnd
        from pvhpc.frontends.proxymap import ProxyMapFile

        return ApacheFrontEnd(fe.session_url, ProxyMapFile(fe.map_file, fe.map_group))
    if fe.kind == "builtin":
        from pvhpc.frontends.builtin import BuiltinFrontEnd

        return BuiltinFrontEnd(fe.session_url)
    raise ValueError(f"front end {fe.kind!r} is not available in this version")
