"""Who is asking, through a real service: trusted header, personal tokens, and each user seeing only their own."""

from __future__ import annotations

import pytest

from pvhpc.client.api import Client, ClientError

pytestmark = pytest.mark.cluster

HEADER_AUTH = {"kind": "header", "header": "X-Remote-User", "staff": ["staffer"]}


def as_user(svc, user: str) -> Client:
    """``user`` through the front end (the stand-in for Apache after its login: tests/harness/frontend.py)."""
    return svc.user_client(user)


def status_of(call) -> int:
    try:
        call()
    except ClientError as e:
        return e.status
    return 200


def test_users_see_only_their_own_sessions_and_staff_see_all(service_factory):
    svc = service_factory(auth=HEADER_AUTH).start()
    alice, bob, staff = as_user(svc, "alice"), as_user(svc, "bob"), as_user(svc, "staffer")
    session = alice.create("paraview", partition="cpu")
    try:
        assert status_of(lambda: Client(svc.url).list()) == 401
        # Another user's session answers exactly like one that does not exist.
        for call in (lambda: bob.get(session["id"]), lambda: bob.cancel(session["id"]),
                     lambda: bob.request("GET", f"/paraview/{session['id']}"), lambda: bob.log(session["id"])):
            with pytest.raises(ClientError) as e:
                call()
            assert (e.value.status, e.value.message) == (404, f"no session {session['id']}")
        assert bob.list() == [] and bob.list(all_users=True) == []
        assert [s["id"] for s in staff.list(all_users=True)] == [session["id"]]
        assert "secret" not in staff.list(all_users=True)[0]
        assert alice.get(session["id"])["user"] == "alice"
    finally:
        alice.cancel(session["id"])


def test_header_over_tcp_is_ignored(service_factory):
    """Only the front end's socket carries a believed user; pvhpc's TCP port (jobs', scripts') never does."""
    svc = service_factory(auth=HEADER_AUTH).start()
    assert status_of(lambda: Client(svc.url, headers={"X-Remote-User": "alice"}).list()) == 401
    assert status_of(lambda: Client(svc.url).request("GET", "/api/v1/pvsc")) == 401
    assert as_user(svc, "alice").list() == []


def test_personal_tokens(service_factory):
    svc = service_factory(auth=HEADER_AUTH).start()
    alice = as_user(svc, "alice")
    made = alice.request("POST", "/api/v1/tokens", {"name": "laptop", "days": 7})
    assert made["token"].startswith("pvhpc_") and made["state"] == "active"
    script = Client(svc.url, token=made["token"])
    session = script.create("paraview", partition="cpu")
    try:
        assert session["user"] == "alice" and [s["id"] for s in alice.list()] == [session["id"]]
        listed = alice.request("GET", "/api/v1/tokens")["tokens"]
        assert [t["name"] for t in listed] == ["laptop"] and "token" not in listed[0]
        # A bad token is nobody, even with a trusted header beside it.
        forged = Client(svc.frontend_url, token="pvhpc_forged", headers={"X-Remote-User": "alice"})
        assert status_of(forged.list) == 401
        assert status_of(lambda: as_user(svc, "bob").request("DELETE", f"/api/v1/tokens/{made['id']}")) == 404
        assert alice.request("DELETE", f"/api/v1/tokens/{made['id']}")["state"] == "revoked"
        assert status_of(script.list) == 401
        for body, field in (({"days": 0}, "days"), ({"days": 9999}, "days"), ({"name": ""}, "name"), ({"x": 1}, "x")):
            with pytest.raises(ClientError) as e:
                alice.request("POST", "/api/v1/tokens", body)
            assert e.value.status == 400 and e.value.field == field
    finally:
        alice.cancel(session["id"])


def test_requests_per_minute_are_limited_per_user(service_factory):
    svc = service_factory(auth=HEADER_AUTH, limits={"sessions_per_user": 2, "gpus_per_user": 2,
                                                    "requests_per_minute": 5}).start()
    alice, bob = as_user(svc, "alice"), as_user(svc, "bob")
    for _ in range(5):
        alice.list()
    with pytest.raises(ClientError) as e:
        alice.list()
    assert e.value.status == 429 and "limits.requests_per_minute" in e.value.message
    assert bob.list() == []   # another user's budget is untouched
