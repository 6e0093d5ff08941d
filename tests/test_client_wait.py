"""The Python client's wait against a real service: it returns at its timeout even when the session's push
channel has nothing to say (a ready session sends only a keep-alive every 15 s)."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.cluster


def test_wait_returns_the_session_as_it_is_at_its_timeout(service_factory):
    client = service_factory().start().client()
    session = client.wait(client.create("paraview", partition="cpu")["id"], timeout=120)
    assert session["state"] == "ready", session
    started = time.monotonic()
    # Nothing happens to a ready session: no event, and the next keep-alive is 15 s away.
    waited = client.wait(session["id"], until=("ended",), timeout=2)
    assert waited["state"] == "ready" and waited["id"] == session["id"]
    assert time.monotonic() - started < 6
    client.cancel(session["id"])
