"""Clients of a pvhpc service: the Python API for scripts (api.py), where to find the service (config.py),
a minimal wslink 1.x client for a session's server (wslink.py), and ParaView's desktop client to a desktop session
through a local cs://localhost:PORT (desktop.py: open_desktop, as pvhpc connect uses it)."""

from pvhpc.client.api import Client, ClientError  # noqa: E402,F401  (scripts write ``from pvhpc.client import Client``)
