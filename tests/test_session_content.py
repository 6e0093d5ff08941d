"""Issue 22: a session's own web content never acts with pvhpc's authority, in a real browser.

A session's server is its user's code: here a site application whose server is a plain HTTP server serving a
page with a script, as bob's session once pointed pvhpc at his own. The page, opened through pvhpc's built-in
front end at /session/<id>/, tries what bob's did to alice: read the user's sessions with their secrets from
pvhpc's API, and make the user a personal API token. In Chromium, on a real cluster.
"""

from __future__ import annotations

import json

import pytest

from tests.harness.browser import chromium

pytestmark = [pytest.mark.cluster, pytest.mark.browser]

# What the script got, in the page's title: read (the API's answer), token (the token POST's status).
ATTACK = """<!doctype html><title>waiting</title><script>
const out = {};
const api = location.pathname.replace(/\\/session\\/.*$/, "") + "/api/v1/";
fetch(api + "sessions").then((r) => r.text()).then((t) => { out.read = t; }, (e) => { out.read = "refused: " + e; })
  .then(() => fetch(api + "tokens", {method: "POST", body: JSON.stringify({name: "stolen", days: 365})}))
  .then((r) => { out.token = r.status; }, (e) => { out.token = "refused: " + e; })
  .then(() => { document.title = "done " + JSON.stringify(out); });
</script>"""


def test_a_sessions_page_cannot_read_pvhpcs_api_or_make_a_token(service_factory, cluster, tmp_path):
    site = tmp_path / "bobs-server"
    site.mkdir()
    (site / "index.html").write_text(ATTACK)
    data = tmp_path / "svc" / "data"
    data.mkdir(parents=True)
    svc = service_factory(frontend={"kind": "builtin"}, applications={
        "paraview": {"data_roots": [str(data)]},
        "own-page": {"data_roots": [str(data)], "partitions": ["cpu"], "serves_own_client": True,
                     "command": ["${python}", "-u", "-m", "http.server", "${port}", "--directory", str(site)],
                     "ready": {"line": r"Serving HTTP on .* port (?P<port>\d+)"}},
    }).start()
    client = svc.client()
    session = client.launch("own-page", partition="cpu", gpus="0")
    assert session["state"] == "ready", session
    try:
        with chromium() as browser:
            page = browser.new_page()
            page.goto(f"{svc.url}/session/{session['id']}/")
            page.wait_for_function("document.title.startsWith('done')", timeout=30_000)
            got = json.loads(page.title()[len("done "):])
        # The page ran (its script did), but as an origin of its own: pvhpc's answer was not readable...
        assert got["read"].startswith("refused"), got
        assert session["secret"] not in json.dumps(got)
        # ...and what it sent changed nothing (it says Origin: null, no page of pvhpc's): no token was made.
        assert client.tokens() == [], got
    finally:
        client.cancel(session["id"])
