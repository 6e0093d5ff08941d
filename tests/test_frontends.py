"""The Apache and built-in front ends with real parts: Debian's apache2, a real pvhpc service, real sessions.

Both answer the same URL, /proxy?sessionId=<id>&path=ws; a client follows the
sessionURL the launcher gives it, replacing USE_HOSTNAME/USE_HOST as the
ParaViewWeb JS client does, and cannot tell which front end it talks to.
"""

from __future__ import annotations

import asyncio
import base64
import grp
import secrets
import ssl
import stat
import subprocess
import time
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.websocket import websocket_connect

from pvhpc.frontends import apacheconf
from pvhpc.cli import main as pvhpc_main
from pvhpc.client.api import Client, ClientError
from pvhpc.frontends.proxymap import ProxyMapFile
from pvhpc.client.wslink import WslinkClient

from tests.harness.apache import APACHE_PASSWORD, APACHE_USER
from tests.harness.ports import free_port_block
from tests.helpers import foreground_fraction

USER, PASSWORD = APACHE_USER, APACHE_PASSWORD
BASIC = {"Authorization": "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}


def as_js_client(session_url: str, page_host: str) -> str:
    """What wslink's SmartConnect does to a sessionURL before it connects (hostname first, then host:port)."""
    return session_url.replace("USE_HOSTNAME", page_host.split(":")[0]).replace("USE_HOST", page_host)


async def render_through(url: str, secret: str, headers: dict | None = None, ca_file: Path | None = None) -> bytes:
    if ca_file is None:
        client = await WslinkClient.connect(url, secret, headers=headers)
    else:   # wss:// with the test's own certificate authority
        conn = await websocket_connect(HTTPRequest(url, headers=headers, ca_certs=str(ca_file)))
        client = WslinkClient(conn)
        await client.call("wslink.hello", [{"secret": secret}], system=True)
    try:
        await client.create_source("Sphere")
        return await client.render((400, 300))
    finally:
        client.close()


async def refused_status(url: str, headers: dict | None = None, ca_file: Path | None = None) -> int:
    """The HTTP status a websocket upgrade to ``url`` is answered with (it must not succeed)."""
    try:
        conn = await websocket_connect(HTTPRequest(url, headers=headers, ca_certs=ca_file and str(ca_file),
                                                   connect_timeout=10, request_timeout=10))
    except HTTPClientError as e:
        return e.code
    conn.close()
    raise AssertionError(f"{url} accepted a websocket")


def http_answer(url: str, headers: dict, method: str = "GET", data: bytes | None = None):
    """Status, body and headers of one request, whatever its status."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=headers, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read(), answer.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers


class _trusting:
    """urllib (pvhpc.client.api) trusts ``cert`` while inside: the test's self-signed certificate."""

    def __init__(self, cert: Path):
        self.context = ssl.create_default_context(cafile=str(cert))

    def __enter__(self):
        import urllib.request

        self.opener = urllib.request._opener
        urllib.request.install_opener(urllib.request.build_opener(urllib.request.HTTPSHandler(context=self.context)))

    def __exit__(self, *exc):
        import urllib.request

        urllib.request._opener = self.opener


def proxy_url_shape(session_url: str, session_id: str) -> str:
    return session_url.split("/proxy", 1)[1].replace(session_id, "<id>")


# -- rendering and checking the configuration ---------------------------------------------------------

def make_cert(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.mark.apache
def test_every_variant_passes_apaches_configuration_test(apache_dir, capsys):
    map_file = apache_dir / "map.txt"
    ProxyMapFile(map_file).write({})
    cert, key = make_cert(apache_dir)
    auth = apache_dir / "auth.conf"
    auth.write_text(f"AuthType Basic\nAuthName pvhpc\nAuthUserFile {apache_dir}/users\nRequire valid-user\n")
    variants = {
        "plain": [],
        "tls": ["--tls-cert", str(cert), "--tls-key", str(key)],
        "prefix": ["--prefix", "/viz", "--listen", "8080"],
        "all": ["--tls-cert", str(cert), "--tls-key", str(key), "--prefix", "/viz", "--auth-include", str(auth)],
        "session-origin": ["--tls-cert", str(cert), "--tls-key", str(key), "--prefix", "/viz", "--auth-include",
                           str(auth), "--session-origin", "https://sessions.example.org"],
    }
    for name, extra in variants.items():
        out = apache_dir / f"{name}.conf"
        assert pvhpc_main(["apache", "render", "--server-name", "viz.example.org", "--map-file", str(map_file),
                           "--service-url", "http://127.0.0.1:8480", "-o", str(out), *extra]) == 0
        assert pvhpc_main(["apache", "check", str(out)]) == 0, capsys.readouterr().err
        assert "configuration test passed" in capsys.readouterr().out
    text = (apache_dir / "all.conf").read_text()
    assert 'session_url: "wss://USE_HOST/viz/proxy?sessionId={id}&path=ws"' in text
    assert "RewriteRule ^/viz/proxy$ ws://%1/%3 [P,L,QSD]" in text and "SSLEngine on" in text
    # Sessions' content: sandboxed on this host, or on a virtual host of its own that serves nothing else.
    assert "Header always add Content-Security-Policy \"sandbox allow-scripts" in text
    text = (apache_dir / "session-origin.conf").read_text()
    assert "sandbox" not in text and text.count("<VirtualHost") == 2 and "ServerName sessions.example.org" in text
    assert "RewriteRule ^/viz/session/(.*)$ https://sessions.example.org/viz/session/$1 [R=302,L]" in text


@pytest.mark.apache
def test_check_reports_apaches_own_complaint_and_what_to_do(apache_dir, capsys):
    good = apache_dir / "site.conf"
    assert pvhpc_main(["apache", "render", "--server-name", "viz.example.org", "--map-file",
                       str(apache_dir / "not-yet.txt"), "--service-url", "http://127.0.0.1:8480", "-o", str(good)]) == 0
    capsys.readouterr()
    assert pvhpc_main(["apache", "check", str(good)]) == 1
    err = capsys.readouterr().err
    assert f"{good} FAILS Apache's configuration test" in err
    assert "RewriteMap: file for map session-to-port not found" in err     # Apache's own words
    assert "hint: the map file does not exist yet: start pvhpc first" in err

    broken = apache_dir / "broken.conf"
    ProxyMapFile(apache_dir / "map.txt").write({})
    broken.write_text(good.read_text().replace("not-yet.txt", "map.txt").replace("RewriteEngine On", "RewriteEngin On"))
    assert pvhpc_main(["apache", "check", str(broken)]) == 1
    err = capsys.readouterr().err
    assert "Invalid command 'RewriteEngin'" in err and f"of {broken}" in err

    assert pvhpc_main(["apache", "render", "--server-name", "bad name", "--map-file", "/m",
                       "--service-url", "http://x"]) == 2
    assert "--server-name: 'bad name' is not a host name" in capsys.readouterr().err


# -- a real session through each front end -----------------------------------------------------------

@pytest.mark.cluster
@pytest.mark.apache
def test_session_through_apache_renders_and_is_gone_after_delete(service_factory, apache_factory, apache_dir,
                                                                   apache_login, artifacts):
    map_file = apache_dir / "session-map.txt"
    auth = apache_login
    port = free_port_block(1)
    site = apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port, auth_include=auth)

    tls_port = free_port_block(1)
    svc = service_factory("apache", frontend={"kind": "apache", "map_file": str(map_file), "map_group": "www-data",
                                              "session_url": site.session_url},
                          auth={"kind": "header", "header": "X-Remote-User"}, public_url=f"http://127.0.0.1:{port}",
                          allowed_origins=[f"http://127.0.0.1:{port}", f"https://127.0.0.1:{tls_port}"])
    # Apache speaks to pvhpc over its front-end socket, the only channel the identity header is believed on.
    site = apacheconf.Site("localhost", map_file, svc.frontend_target, port=port, auth_include=auth)
    svc.start()
    # pvhpc writes the (empty) map at start, with the mode and group Apache's workers need.
    st = map_file.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == grp.getgrnam("www-data").gr_gid
    apache = apache_factory(site).start()
    page_host = f"127.0.0.1:{port}"

    # Without Apache's authentication nothing reaches pvhpc; a forged identity header is dropped.
    with pytest.raises(ClientError) as e:
        Client(apache.url, headers={"X-Remote-User": USER}).launch("paraview")
    assert e.value.status == 401
    # A page of the site, as a browser sends its requests (with its Origin).
    client = Client(apache.url, headers={**BASIC, "X-Remote-User": "mallory", "Origin": f"http://{page_host}"})
    session = client.launch("paraview", partition="cpu")
    assert session["state"] == "ready" and session["user"] == USER
    sid = session["id"]
    assert ProxyMapFile(map_file).read() == {sid: f"{session['host']}:{session['port']}|{USER}"}
    assert proxy_url_shape(session["sessionURL"], sid) == "?sessionId=<id>&path=ws"

    url = as_js_client(session["sessionURL"], page_host)
    assert url == f"ws://{page_host}/proxy?sessionId={sid}&path=ws"
    image = asyncio.run(render_through(url, session["secret"], BASIC))
    (artifacts / "through-apache.jpg").write_bytes(image)
    assert foreground_fraction(image) > 0.01

    unknown = f"ws://{page_host}/proxy?sessionId={secrets.token_urlsafe(24)}&path=ws"
    assert asyncio.run(refused_status(unknown, BASIC)) == 404
    # Apache logged the requests, but never a session id (in the query string, or in an API path).
    client.request("GET", f"/paraview/{sid}")
    access_log = site.access_log.read_text()
    assert "GET /proxy HTTP/1.1" in access_log and "GET /paraview/<id> HTTP/1.1" in access_log
    assert sid not in access_log

    # The same session through a second Apache with TLS and a URL prefix: https://.../viz, wss://.../viz/proxy.
    cert, key = make_cert(apache_dir)
    tls_site = apacheconf.Site("localhost", map_file, svc.frontend_target, port=tls_port, prefix="/viz",
                               tls_cert=cert, tls_key=key, auth_include=auth)
    apache_factory(tls_site).start()
    tls_host = f"127.0.0.1:{tls_port}"
    tls_client = Client(f"https://{tls_host}/viz", headers=BASIC)
    with _trusting(cert):
        assert tls_client.request("GET", f"/paraview/{sid}")["state"] == "ready"
    wss_url = as_js_client(tls_site.session_url.format(id=sid), tls_host)
    assert wss_url == f"wss://{tls_host}/viz/proxy?sessionId={sid}&path=ws"
    image = asyncio.run(render_through(wss_url, session["secret"], BASIC, ca_file=cert))
    assert foreground_fraction(image) > 0.01
    assert asyncio.run(refused_status(f"ws://{page_host}/proxy?sessionId={sid}&path=../etc", BASIC)) == 404

    ended = client.request("DELETE", f"/paraview/{sid}")
    assert ended["state"] == "ended"
    assert ProxyMapFile(map_file).read() == {}
    assert asyncio.run(refused_status(url, BASIC)) == 404, "the ended session is still reachable"

    # The service ended and started again (a crash, systemd's restart): Apache answers 503 while it is away, and
    # passes requests on again as soon as it is back, not after a back-off of its own.
    svc.kill()
    for _ in range(3):
        with pytest.raises(ClientError) as e:
            client.request("GET", "/api/v1/sessions")
        assert e.value.status == 503
    svc.start()
    client.request("GET", "/api/v1/sessions")


@pytest.mark.cluster
def test_session_through_the_builtin_proxy_renders_and_is_cut_off_by_delete(service_factory, artifacts):
    svc = service_factory("builtin", frontend={"kind": "builtin"}).start()
    client = svc.client()
    session = client.launch("paraview", partition="cpu")
    sid = session["id"]
    assert session["state"] == "ready"
    # The same URL as through Apache.
    assert proxy_url_shape(session["sessionURL"], sid) == "?sessionId=<id>&path=ws"
    url = as_js_client(session["sessionURL"], f"127.0.0.1:{svc.port}")
    assert url == f"ws://127.0.0.1:{svc.port}/proxy?sessionId={sid}&path=ws"

    async def render_then_delete() -> tuple[bytes, float]:
        image = await render_through(url, session["secret"])
        held = await WslinkClient.connect(url, session["secret"])
        await held.create_source("Cone")
        await asyncio.to_thread(client.request, "DELETE", f"/paraview/{sid}")
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            await held.call("viewport.image.render", [{"size": [100, 100], "view": -1, "quality": 50, "mtime": 0}],
                            timeout=20)
        return image, time.monotonic() - started

    image, cut_after = asyncio.run(render_then_delete())
    (artifacts / "through-builtin.jpg").write_bytes(image)
    assert foreground_fraction(image) > 0.01
    assert cut_after < 5, f"an open connection to the ended session lived {cut_after:.1f} s"

    assert asyncio.run(refused_status(url)) == 404, "the ended session is still reachable"
    unknown = f"ws://127.0.0.1:{svc.port}/proxy?sessionId={secrets.token_urlsafe(24)}&path=ws"
    assert asyncio.run(refused_status(unknown)) == 404


# -- /session/<id>/ through Apache: a session whose server serves its own client (trame apps) ---------------

@pytest.mark.apache
def test_a_served_session_through_apache_is_its_owners_only_http_and_websocket(apache_factory, apache_dir,
                                                                                apache_login, artifacts):
    """pvhpc's Apache front end writes the map (with the owner line /session/ needs), real Apache serves it; the
    session's server is a real small HTTP + websocket server in place of a trame app."""
    import json
    from pvhpc.db.store import SessionRecord
    from pvhpc.frontends.apache import ApacheFrontEnd

    from tests.harness.served_app import PAGE, ServedAppThread

    users = apache_login.parent / "users"
    subprocess.run(["htpasswd", "-b", str(users), "bob", "bobs-password"], check=True, capture_output=True)
    map_file = apache_dir / "session-map.txt"
    frontend = ApacheFrontEnd("unused", ProxyMapFile(map_file, "www-data"), frozenset({"trame"}))
    app = ServedAppThread().start()
    try:
        mine, paraview = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        frontend.rebuild([
            SessionRecord(id=mine, user=USER, state="ready", host="127.0.0.1", port=app.port, application="trame"),
            SessionRecord(id=paraview, user=USER, state="ready", host="127.0.0.1", port=app.port,
                          application="paraview"),
        ])
        assert ProxyMapFile(map_file).read()[f"{mine}.http"] == f"127.0.0.1:{app.port}|{USER}"
        port = free_port_block(1)
        apache = apache_factory(apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port,
                                                auth_include=apache_login)).start()
        bob = {"Authorization": "Basic " + base64.b64encode(b"bob:bobs-password").decode()}

        def get(path, headers, method="GET", data=None):
            return http_answer(apache.url + path, headers, method, data)

        status, body, _ = get(f"/session/{mine}/", BASIC)
        assert status == 200 and body == PAGE
        own_page = {"Origin": f"http://127.0.0.1:{port}"}   # as a browser sends a POST from the site's page
        status, body, headers = get(f"/session/{mine}/echo/a?x=1", {**BASIC, **own_page, "Cookie": "sso=login",
                                                                     "X-Remote-User": USER}, "POST", b"payload")
        seen = json.loads(body)
        assert status == 200 and seen["path"] == "/echo/a" and seen["query"] == "x=1" and seen["body"] == "payload"
        # Neither the user's password, nor the login's cookie, nor the identity header reach the app;
        # the app sets no cookie on the site's origin.
        assert not {"authorization", "cookie", "x-remote-user"} & set(seen["headers"]), seen["headers"]
        assert headers.get("Set-Cookie") is None
        assert get(f"/session/{mine}/echo/a", {**BASIC, "Origin": "http://evil.example"}, "POST", b"x")[0] == 403
        # pvhpc's one origin rule (web/origins.py), in Apache: without an Origin, the Referer decides; with
        # neither, a request that changes anything is refused. Reading is not concerned.
        evil_page = {"Referer": "http://evil.example/attack.html"}
        assert get(f"/session/{mine}/echo/a", {**BASIC, **evil_page}, "POST", b"x")[0] == 403
        lookalike = {"Referer": f"http://127.0.0.1:{port}.evil.example/"}
        assert get(f"/session/{mine}/echo/a", {**BASIC, **lookalike}, "DELETE")[0] == 403
        assert get(f"/session/{mine}/echo/a", BASIC, "PUT", b"x")[0] == 403
        assert get(f"/session/{mine}/echo/a", {**BASIC, "Referer": f"http://127.0.0.1:{port}/session/{mine}/"},
                   "POST", b"x")[0] == 200
        assert get(f"/session/{mine}/echo/a", {**BASIC, **evil_page})[0] == 200
        # Another user, no login, another application's session, an unknown id: all 404 (or Apache's 401).
        assert get(f"/session/{mine}/", bob)[0] == 404
        assert get(f"/session/{mine}/", {})[0] == 401
        assert get(f"/session/{paraview}/", BASIC)[0] == 404
        assert get(f"/session/{secrets.token_urlsafe(24)}/", BASIC)[0] == 404

        async def websocket(headers):
            conn = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{port}/session/{mine}/ws", headers=headers))
            await conn.write_message("through apache")
            answer = await conn.read_message()
            conn.close()
            return answer

        assert asyncio.run(websocket(BASIC)) == "through apache"
        assert asyncio.run(refused_status(f"ws://127.0.0.1:{port}/session/{mine}/ws", bob)) == 404
        # The session ends: its line leaves the map and Apache stops proxying it.
        frontend.update(SessionRecord(id=mine, user=USER, state="ended", host="127.0.0.1", port=app.port,
                                      application="trame"))
        time.sleep(1.1)   # Apache re-reads a txt map when its mtime changes (one-second resolution)
        assert get(f"/session/{mine}/", BASIC)[0] == 404
        access_log = apache.site.access_log.read_text()
        assert "/session/<id>/echo/a" in access_log and mine not in access_log
    finally:
        app.stop()


# -- Issue 22: a session's own content never runs with pvhpc's authority, through Apache -------------------

@pytest.mark.apache
def test_through_apache_a_sessions_content_never_runs_on_pvhpcs_origin(apache_factory, apache_dir, apache_login):
    """Bob's session reported a port of its node where his own HTTP server runs: Apache's /proxy once served his
    page on pvhpc's origin to alice (it forwarded any request there). Now /proxy carries websocket upgrades only,
    /session/<id>/ runs in a browser sandbox, and every path has framing and content-type headers."""
    from pvhpc.db.store import SessionRecord
    from pvhpc.frontends.apache import ApacheFrontEnd

    from tests.harness.served_app import PAGE, ServedAppThread

    map_file = apache_dir / "session-map.txt"
    frontend = ApacheFrontEnd("unused", ProxyMapFile(map_file, "www-data"), frozenset({"trame"}))
    clients = apache_dir / "client"
    clients.mkdir(mode=0o755)
    # Its page comes from pvhpc (none runs here: 503); its other files Apache serves itself.
    (clients / "client.js").write_text("// a web client")
    (clients / "client.js").chmod(0o644)
    bobs_server = ServedAppThread().start()
    try:
        bobs, mine = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        frontend.rebuild([
            SessionRecord(id=bobs, user="bob", state="ready", host="127.0.0.1", port=bobs_server.port,
                          application="paraview"),
            SessionRecord(id=mine, user=USER, state="ready", host="127.0.0.1", port=bobs_server.port,
                          application="trame")])
        port = free_port_block(1)
        apache = apache_factory(apacheconf.Site("localhost", map_file, "http://127.0.0.1:1", port=port,
                                                auth_include=apache_login, web_clients=(("viz", clients),))).start()

        def get(path, headers, method="GET", data=None):
            return http_answer(apache.url + path, headers, method, data)

        # Alice follows bob's link: his page is not served on pvhpc's origin.
        status, body, headers = get(f"/proxy?sessionId={bobs}&path=", BASIC)
        assert status == 400 and PAGE not in body, (status, body[:200])
        # Nor is alice joined to his server at all: /proxy is each session's owner's only (his server could feed
        # her client anything). Her own session's websocket goes through.
        async def echo(url, headers):
            conn = await websocket_connect(HTTPRequest(url, headers=headers))
            await conn.write_message("through /proxy")
            answer = await conn.read_message()
            conn.close()
            return answer
        assert asyncio.run(refused_status(f"ws://127.0.0.1:{port}/proxy?sessionId={bobs}&path=ws", BASIC)) == 404
        assert asyncio.run(echo(f"ws://127.0.0.1:{port}/proxy?sessionId={mine}&path=ws", BASIC)) == "through /proxy"
        assert asyncio.run(refused_status(f"ws://127.0.0.1:{port}/proxy?sessionId={mine}&path=ws", {})) == 401

        # A session's own pages run sandboxed: an opaque origin, no Referer with the id, no framing.
        status, body, headers = get(f"/session/{mine}/", BASIC)
        assert status == 200 and body == PAGE
        policies = headers.get_all("Content-Security-Policy")
        assert any(p.startswith("sandbox ") and "allow-same-origin" not in p for p in policies), policies
        assert headers["Referrer-Policy"] == "no-referrer"
        # The sandboxed page's own websocket says Origin: null and gets through; its other requests change nothing.
        assert asyncio.run(echo(f"ws://127.0.0.1:{port}/session/{mine}/ws", {**BASIC, "Origin": "null"})) == \
            "through /proxy"
        assert get(f"/session/{mine}/echo/a", {**BASIC, "Origin": "null"}, "POST", b"x")[0] == 403

        # Framing and content-type headers on every path: pvhpc's session content, Apache's files, its refusals.
        for path, expected in ((f"/session/{mine}/", 200), ("/apps/viz/client.js", 200),
                               (f"/proxy?sessionId={bobs}&path=", 400),
                               ("/proxy?sessionId=unknown&path=ws", 400), (f"/session/{secrets.token_urlsafe(24)}/", 404)):
            status, _, headers = get(path, BASIC)
            assert status == expected, (path, status)
            assert headers.get_all("X-Frame-Options") == ["SAMEORIGIN"], (path, headers.get_all("X-Frame-Options"))
            assert headers.get_all("X-Content-Type-Options") == ["nosniff"], path
            assert any("frame-ancestors 'self'" in p for p in headers.get_all("Content-Security-Policy") or []), path
        # The applications' own clients take their config from their URL: they may connect to this site only.
        assert "connect-src 'self';" in get("/apps/viz/client.js", BASIC)[2]["Content-Security-Policy"]
    finally:
        bobs_server.stop()


@pytest.mark.apache
def test_through_apache_sessions_content_can_have_an_origin_of_its_own(apache_factory, apache_dir, apache_login):
    """frontend.session_origin: a virtual host of its own serves /session/ and nothing of pvhpc's; pvhpc's host
    sends /session/ there. Here pvhpc's host is 127.0.0.1 and the sessions' is localhost, on one port."""
    import http.client

    from pvhpc.db.store import SessionRecord
    from pvhpc.frontends.apache import ApacheFrontEnd

    from tests.harness.served_app import PAGE, ServedAppThread

    map_file = apache_dir / "session-map.txt"
    frontend = ApacheFrontEnd("unused", ProxyMapFile(map_file, "www-data"), frozenset({"trame"}))
    app = ServedAppThread().start()
    try:
        mine = secrets.token_urlsafe(24)
        frontend.rebuild([SessionRecord(id=mine, user=USER, state="ready", host="127.0.0.1", port=app.port,
                                        application="trame")])
        port = free_port_block(1)
        there = f"http://localhost:{port}"
        apache_factory(apacheconf.Site("127.0.0.1", map_file, "http://127.0.0.1:1", port=port,
                                       auth_include=apache_login, session_origin=there)).start()

        def get(host, path, headers):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path, headers={"Host": f"{host}:{port}", **headers})
            answer = conn.getresponse()
            body = answer.read()
            conn.close()
            return answer.status, body, answer.headers

        status, _, headers = get("127.0.0.1", f"/session/{mine}/echo/x?y=1", BASIC)
        assert status == 302 and headers["Location"] == f"{there}/session/{mine}/echo/x?y=1"
        status, body, headers = get("localhost", f"/session/{mine}/", BASIC)
        assert status == 200 and body == PAGE
        assert not any(p.startswith("sandbox") for p in headers.get_all("Content-Security-Policy") or [])
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "SAMEORIGIN"
        assert get("localhost", f"/session/{mine}/", {})[0] == 401   # its owner logs in there too
        for path in ("/api/v1/sessions", "/paraview/", f"/proxy?sessionId={mine}&path=ws", "/"):
            assert get("localhost", path, BASIC)[0] == 404, path
    finally:
        app.stop()
