"""The root of pvhpc's errors. Each carries what a caller needs to answer for it: an HTTP status
and, when one field of a request or key of a config is wrong, its name. The web layer turns any
of them into JSON in one place (``pvhpc.web.errors``); commands turn them into an exit code.
"""

from __future__ import annotations


class PvhpcError(Exception):
    """Something pvhpc can explain: ``message`` says what, ``field`` names the request field or config
    key at fault (or None), ``status`` is the HTTP status to answer with."""

    status = 500

    def __init__(self, message: str, *, field: str | None = None, status: int | None = None):
        self.message, self.field = message, field
        if status is not None:
            self.status = status
        super().__init__(f"{field}: {message}" if field else message)
