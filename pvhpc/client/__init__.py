"""Clients of a pvhpc service: the Python API for scripts (api.py), where to find the service (config.py),
and a minimal wslink 1.x client for a session's server (wslink.py)."""
