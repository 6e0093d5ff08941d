"""What a job reports back to pvhpc (``POST /api/v1/sessions/<id>/report``; pvhpc/node/jobhelper.py sends it)."""

from __future__ import annotations

READY = "ready"                # the server listens: host and port
FAILED = "failed"              # the server could not start, and why
EXITED = "exited"              # the server stopped by itself, and why (states.EXIT_CAUSES)
IDLE_WARNING = "idle_warning"  # the server will stop as idle soon unless someone uses it

EVENTS = (READY, FAILED, EXITED, IDLE_WARNING)
