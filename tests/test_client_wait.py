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


def test_wait_outlasts_the_services_stream_time_and_a_refused_stream(service_factory):
    """The service ends an event stream after limits.event_stream_seconds and refuses one past
    limits.event_streams_per_user (429): a wait longer than either still returns only when the session does
    what it waits for."""
    import threading

    client = service_factory(limits={"event_stream_seconds": 5, "event_streams_per_user": 1}).start().client()
    session = client.wait(client.create("paraview", partition="cpu")["id"], timeout=120)
    assert session["state"] == "ready", session
    threading.Timer(12, client.cancel, [session["id"]]).start()
    started = time.monotonic()
    waited = client.wait(session["id"], until=("ended",), timeout=60)   # over two of the service's streams
    assert waited["state"] == "ended" and 11 < time.monotonic() - started < 25, (waited, time.monotonic() - started)

    again = client.wait(client.create("paraview", partition="cpu")["id"], timeout=120)
    held = client.events(again["id"], timeout=30)   # the user's one stream, held open
    assert next(held)["state"] == "ready"
    threading.Timer(3, client.cancel, [again["id"]]).start()
    waited = client.wait(again["id"], until=("ended",), timeout=30)   # refused a stream: asks instead
    assert waited["state"] == "ended", waited
    held.close()
