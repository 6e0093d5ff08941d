"""`pvhpc token create|list|revoke` as a user runs them, against a real service: with local auth, and behind Apache
with its Basic login (a token cannot make tokens)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pvhpc.frontends import apacheconf
from tests.harness.apache import APACHE_PASSWORD, APACHE_USER
from tests.harness.ports import free_port_block

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parent.parent


def token_cmd(*args, url: str, token: str | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    """``pvhpc token ...`` with nothing from this machine's client config; ``token`` as PVHPC_TOKEN."""
    env = dict(os.environ, PYTHONPATH=str(REPO), PVHPC_CLIENT_CONFIG=str(REPO / "no-such-client.yaml"),
               PVHPC_URL=url)
    env.pop("PVHPC_TOKEN", None)
    if token:
        env["PVHPC_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "pvhpc", "token", *map(str, args)], env=env, input=stdin,
                          capture_output=True, text=True, timeout=60)


def as_json(proc: subprocess.CompletedProcess):
    assert proc.stdout, f"exit {proc.returncode}, nothing on stdout; stderr: {proc.stderr}"
    return json.loads(proc.stdout)


def test_token_commands_with_local_auth(service_factory):
    svc = service_factory().start()
    made = token_cmd("create", "laptop", "--days", "7", url=svc.url)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    # The token alone on standard output (for $(...)); how to keep and revoke it on standard error.
    assert made.stdout == token + "\n" and token.startswith("pvhpc_")
    assert "shown this once" in made.stderr and "pvhpc token revoke 1" in made.stderr and token not in made.stderr

    # Made with a token in the environment: that token is not sent (it could not make one), the login is.
    second = as_json(token_cmd("create", "ci", "--json", url=svc.url, token=token))
    assert second["token"].startswith("pvhpc_") and second["name"] == "ci" and second["state"] == "active"

    listed = token_cmd("list", "--json", url=svc.url, token=token)
    assert listed.returncode == 0, listed.stderr
    tokens = as_json(listed)["tokens"]
    assert [(t["name"], t["state"]) for t in tokens] == [("laptop", "active"), ("ci", "active")]
    assert token not in listed.stdout and second["token"] not in listed.stdout
    words = token_cmd("list", url=svc.url, token=token).stdout
    assert "laptop" in words and "ci" in words and "active" in words

    revoked = token_cmd("revoke", second["id"], url=svc.url, token=token)
    assert (revoked.returncode, revoked.stdout.strip()) == (0, f"token {second['id']} (ci): revoked")
    # The revoked token is nobody now (exit 6); an id that is not the user's is not found (exit 3).
    assert token_cmd("list", url=svc.url, token=second["token"]).returncode == 6
    missing = token_cmd("revoke", "999", "--json", url=svc.url)
    assert missing.returncode == 3 and as_json(missing)["status"] == 404
    bad = token_cmd("create", "x", "--days", "0", "--json", url=svc.url)
    assert bad.returncode == 2 and as_json(bad)["field"] == "days"


@pytest.mark.apache
def test_token_create_through_apache_with_its_login(service_factory, apache_factory, apache_dir, apache_login):
    map_file = apache_dir / "session-map.txt"
    port = free_port_block(1)
    public = f"http://127.0.0.1:{port}"
    site = apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port, auth_include=apache_login)
    svc = service_factory("apache", frontend={"kind": "apache", "map_file": str(map_file), "map_group": "www-data",
                                              "session_url": site.session_url},
                          auth={"kind": "header", "header": "X-Remote-User"}, public_url=public,
                          allowed_origins=[public])
    site = apacheconf.Site("localhost", map_file, svc.frontend_target, port=port, auth_include=apache_login)
    svc.start()
    apache = apache_factory(site).start()

    wrong = token_cmd("create", "laptop", "--login", APACHE_USER, "--password-stdin", url=apache.url,
                      stdin="not-the-password\n")
    assert wrong.returncode == 6 and "--login USER" in wrong.stderr
    made = token_cmd("create", "laptop", "--login", APACHE_USER, "--password-stdin", "--json", url=apache.url,
                     stdin=APACHE_PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    token = as_json(made)["token"]
    # The token works where scripts go (pvhpc's own port), as the user Apache logged in...
    tokens = as_json(token_cmd("list", "--json", url=svc.url, token=token))["tokens"]
    assert [t["name"] for t in tokens] == ["laptop"]
    # ...but cannot make another: without the front end's login there is nobody to make it for.
    refused = token_cmd("create", "successor", url=svc.url, token=token)
    assert refused.returncode == 6 and "a token cannot make tokens" in refused.stderr and not refused.stdout
    assert as_json(token_cmd("revoke", tokens[0]["id"], "--json", url=svc.url, token=token))["state"] == "revoked"
    assert token_cmd("list", url=svc.url, token=token).returncode == 6
