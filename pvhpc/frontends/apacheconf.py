"""Apache configuration for a site: rendered from the templates in apache/, checked with ``apache2 -t``.

``render_site`` makes the virtual host (for a Debian-style sites-available/);
``render_standalone`` a complete server around it (its own ServerRoot, modules,
Listen), which hosts without /etc/apache2 and pvhpc's tests run. ``check`` runs
Apache's own configuration test on either and returns what Apache said.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pvhpc.errors import PvhpcError
from pvhpc.jobs.ids import HOST
from pvhpc.paths import APACHE_TEMPLATES_DIR
from pvhpc.web import content

TEMPLATES = APACHE_TEMPLATES_DIR
MODULES_DIR = Path("/usr/lib/apache2/modules")   # Debian's; other systems: --modules-dir
BINARIES = ("apache2", "httpd")
# What the site file uses, in load order; ssl only with TLS.
MODULES = ("mpm_event", "authz_core", "authz_host", "authz_user", "authn_core", "authn_file", "auth_basic",
           "headers", "setenvif", "rewrite", "proxy", "proxy_http", "proxy_wstunnel", "alias", "dir", "mime")
TLS_MODULES = ("socache_shmcb", "ssl")

APP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")   # as config keys allow: safe in a URL path
PREFIX = re.compile(r"^(/[A-Za-z0-9_.~-]+)+$")
SERVICE_URL = re.compile(r"^https?://[A-Za-z0-9.:\[\]-]+(/[A-Za-z0-9_.~/-]*)?$")
# pvhpc's front-end socket (service.frontend_socket): the only channel its user header is believed on.
SERVICE_SOCKET = re.compile(r"^unix:(/[^\s\"\\|]+)$")
SAFE_PATH = re.compile(r'^/[^\s"\\]*$')   # a path Apache reads unquoted in "txt:PATH" and quoted elsewhere


class ApacheConfigError(PvhpcError, ValueError):
    """An option that cannot make a working configuration; ``field`` names the option.

    Still a ValueError: argparse turns one raised by an option's ``type=`` into a usage error.
    """


@dataclass(frozen=True)
class Site:
    server_name: str
    map_file: Path
    service_url: str
    port: int | None = None          # default: 443 with TLS, 80 without
    prefix: str = ""                 # e.g. /viz: everything pvhpc serves lives under it
    tls_cert: Path | None = None
    tls_key: Path | None = None
    auth_include: Path | None = None   # Apache directives that authenticate users (AuthType ... Require ...)
    ws_idle_timeout: int = 3600
    http_timeout: int = 300
    # This virtual host's own access log: it logs paths without query strings (session ids travel there).
    access_log: Path = Path("/var/log/apache2/pvhpc-access.log")
    # Applications' own web clients (name, directory), served by Apache itself at PREFIX/apps/<name>/.
    web_clients: tuple[tuple[str, Path], ...] = ()
    # Where sessions' own web content is served (frontend.session_origin): a virtual host of its own. Left out,
    # on this host in a browser sandbox (pvhpc/web/content.py).
    session_origin: str | None = None

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def listen_port(self) -> int:
        return self.port or (443 if self.tls else 80)

    @property
    def public_url(self) -> str:
        scheme, default = ("https", 443) if self.tls else ("http", 80)
        port = "" if self.listen_port == default else f":{self.listen_port}"
        return f"{scheme}://{self.server_name}{port}{self.prefix}"

    @property
    def session_url(self) -> str:
        # USE_HOST, not USE_HOSTNAME: the JS client puts the page's host *with* its port there.
        return f"{'wss' if self.tls else 'ws'}://USE_HOST{self.prefix}/proxy?sessionId={{id}}&path=ws"

    @property
    def service_target(self) -> str:
        """What ProxyPass names: mod_proxy's unix:SOCKET|http://localhost for pvhpc's socket, else the URL."""
        socket = SERVICE_SOCKET.match(self.service_url)
        return f"unix:{socket.group(1)}|http://localhost" if socket else self.service_url.rstrip("/")

    @property
    def service_back(self) -> str:
        """The URL the service's redirects name, for ProxyPassReverse."""
        return "http://localhost" if SERVICE_SOCKET.match(self.service_url) else self.service_url.rstrip("/")

    def validate(self) -> "Site":
        if not HOST.match(self.server_name):
            raise ApacheConfigError(f"{self.server_name!r} is not a host name", field="--server-name")
        if not SAFE_PATH.match(str(self.map_file)):
            raise ApacheConfigError(f"{self.map_file} must be an absolute path without spaces or quotes",
                                    field="--map-file")
        if not (SERVICE_URL.match(self.service_url) or SERVICE_SOCKET.match(self.service_url)):
            raise ApacheConfigError(f"{self.service_url!r} is neither pvhpc's front-end socket, such as "
                                    "unix:/run/pvhpc/frontend.sock, nor an http(s) URL", field="--service-url")
        if self.prefix and not PREFIX.match(self.prefix):
            raise ApacheConfigError(f"{self.prefix!r} must look like /viz (a leading slash, no trailing one)",
                                    field="--prefix")
        if not 0 < self.listen_port < 65536:
            raise ApacheConfigError(f"{self.listen_port} is not a port", field="--listen")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ApacheConfigError("--tls-cert and --tls-key go together")
        for option, path in (("--tls-cert", self.tls_cert), ("--tls-key", self.tls_key),
                             ("--auth-include", self.auth_include), ("--access-log", self.access_log)):
            if path is not None and not SAFE_PATH.match(str(path)):
                raise ApacheConfigError(f"{path} must be an absolute path without spaces or quotes", field=option)
        if self.session_origin is not None:
            scheme, _, host = self.session_origin.partition("://")
            if scheme != ("https" if self.tls else "http") or not HOST.match(host.split(":")[0]) or (
                    host.split(":")[0].lower() == self.server_name.lower()):
                raise ApacheConfigError(f"{self.session_origin!r} must be an origin of the same scheme on a host "
                                        f"name other than {self.server_name} (frontend.session_origin)",
                                        field="--session-origin")
        for name, directory in self.web_clients:
            if not APP_NAME.match(name):
                raise ApacheConfigError(f"application name {name!r} cannot be a URL path", field="--config")
            if not SAFE_PATH.match(str(directory)):
                raise ApacheConfigError(f"applications.{name}.web_client {directory} must be an absolute path "
                                        "without spaces or quotes", field="--config")
        return self


def _fill(template: str, values: dict[str, str]) -> str:
    text = (TEMPLATES / template).read_text()
    for key, value in values.items():
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError(f"apache/{template}: no value for {', '.join(sorted(set(left)))}")
    return text


def site_web_clients(config) -> tuple[tuple[str, Path], ...]:
    """The web clients a pvhpc site config names (applications.<name>.web_client), for ``Site.web_clients``."""
    return tuple(sorted(config.web_clients().items()))


def _web_client_blocks(site: Site) -> str:
    if not site.web_clients:
        return "    # (No application has a web_client: render with --config SITE.yaml to serve them here.)\n"
    policy = content.web_client_policy(proxied=True)
    return "".join(_fill("webclient.conf.in", {"PREFIX": site.prefix, "NAME": name, "DIR": str(directory).rstrip("/"),
                                               "POLICY": policy, "PREFIX_RE": re.escape(site.prefix),
                                               "NAME_RE": re.escape(name), "SERVICE_URL": site.service_target,
                                               "HTTP_TIMEOUT": str(site.http_timeout)})
                   for name, directory in site.web_clients)


def _part(template: str, values: dict[str, str]) -> str:
    """A template that is part of another, without the comment lines that say so."""
    lines = _fill(template, values).splitlines(keepends=True)
    while lines and lines[0].startswith("# "):
        lines.pop(0)
    return "".join(lines).rstrip("\n")


def _session_content(site: Site, sandboxed: bool) -> str:
    # The sandboxed page's own websocket says Origin: null; another site's sandboxed page says the same, but
    # gets only as far as the session's server, which wants the session's secret.
    null_origin = '    RewriteCond "%{HTTP:Origin}|%{HTTP:Upgrade}" !^null\\|websocket$ [NC]\n' if sandboxed else ""
    sandbox = (f'        Header always add Content-Security-Policy "{content.SANDBOX}; {content.FRAMING}"\n'
               if sandboxed else "")
    return _part("session.conf.in", {"PREFIX": site.prefix, "NULL_ORIGIN": null_origin, "SANDBOX": sandbox})


def render_site(site: Site) -> str:
    site.validate()
    tls = _fill("tls.conf.in", {"TLS_CERT": str(site.tls_cert), "TLS_KEY": str(site.tls_key)}) if site.tls else ""
    if site.auth_include:
        auth = f'        Include "{site.auth_include}"'
    else:
        auth = ("        # No authentication here: with auth.kind header pvhpc then refuses every request (401).\n"
                "        # Put the site's directives in a file and render with --auth-include FILE, e.g.\n"
                "        #   AuthType Basic / AuthName pvhpc / AuthUserFile ... / Require valid-user")
    if site.auth_include:
        # A session's websocket is its owner's only: another user's server could feed the client anything.
        # (Not logged in: the 404 waits for the login, which answers 401 first.)
        proxy_owner = ('    RewriteCond "${session-to-port:%1}|%2|%{LA-U:REMOTE_USER}" '
                       '^([A-Za-z0-9.-]+:[0-9]+)\\|([^|]+)\\|([^|]*)\\|\\2$')
        # A user the owner shared the session with (docs/sharing.md): the map's "<id>.as.<user>" line, looked up
        # with the user Apache logged in, so nobody else's name can be put in the key.
        proxy_unknown = ("    RewriteCond %{QUERY_STRING} ^sessionId=([A-Za-z0-9_-]+)&path=([A-Za-z0-9_/-]*)$ [NC]\n"
                         '    RewriteCond "${session-to-port:%1.as.%{LA-U:REMOTE_USER}}|%2|%{LA-U:REMOTE_USER}" '
                         '^([A-Za-z0-9.-]+:[0-9]+)\\|([^|]+)\\|([^|]*)\\|\\2$\n'
                         f"    RewriteRule ^{site.prefix}/proxy$ ws://%1/%3 [P,L,QSD]\n"
                         f"    RewriteCond %{{LA-U:REMOTE_USER}} .\n    RewriteRule ^{site.prefix}/proxy$ - [R=404,L]")
    else:
        # Without a login there is nobody to tell apart (a site of one user, docs/apache.md).
        proxy_owner = ('    RewriteCond "${session-to-port:%1}|%2" ^([A-Za-z0-9.-]+:[0-9]+)\\|([^|]+)\\|(.*)$')
        proxy_unknown = f"    RewriteRule ^{site.prefix}/proxy$ - [R=404,L]"
    logs = _part("logs.conf.in", {"ACCESS_LOG": str(site.access_log)})
    headers = _part("headers.conf.in", {})
    if site.session_origin is None:
        session_content, session_host = _session_content(site, sandboxed=True), ""
    else:
        session_content = ("    # Sessions' own web content is served on a host of its own (frontend.session_origin).\n"
                           f"    RewriteRule ^{site.prefix}/session/(.*)$ {site.session_origin}{site.prefix}/session/$1"
                           " [R=302,L]")
        session_host = "\n" + _fill("session-host.conf.in", {
            "PORT": str(site.listen_port), "SESSION_HOST": site.session_origin.partition("://")[2].split(":")[0],
            "LOGS": logs, "TLS": tls, "HEADERS": headers, "AUTH": auth, "PREFIX": site.prefix,
            "MAP_FILE": str(site.map_file), "SESSION_CONTENT": _session_content(site, sandboxed=False),
            "WS_IDLE_TIMEOUT": str(site.ws_idle_timeout)})
    return _fill("site.conf.in", {
        "SERVER_NAME": site.server_name, "PORT": str(site.listen_port), "PREFIX": site.prefix,
        "MAP_FILE": str(site.map_file), "SERVICE_URL": site.service_target, "SERVICE_BACK": site.service_back,
        "SESSION_URL": site.session_url, "PUBLIC_URL": site.public_url, "TLS": tls, "AUTH": auth,
        "SSL_MODULE": " ssl" if site.tls else "", "LOGS": logs, "HEADERS": headers,
        "SESSION_CONTENT": session_content, "SESSION_HOST_BLOCK": session_host,
        "PROXY_OWNER": proxy_owner, "PROXY_UNKNOWN": proxy_unknown,
        "WS_IDLE_TIMEOUT": str(site.ws_idle_timeout), "HTTP_TIMEOUT": str(site.http_timeout),
        "WEB_CLIENTS": _web_client_blocks(site),
    })


def module_lines(tls: bool, modules_dir: Path = MODULES_DIR) -> str:
    names = MODULES + (TLS_MODULES if tls else ())
    return "\n".join(f"LoadModule {name}_module {modules_dir / f'mod_{name}.so'}" for name in names)


def render_standalone(site_file: Path, server_root: Path, listen: str, server_name: str = "localhost",
                      tls: bool = False, modules_dir: Path = MODULES_DIR,
                      user: str = "www-data", group: str = "www-data") -> str:
    for option, path in (("--standalone", server_root), ("site file", site_file)):
        if not SAFE_PATH.match(str(path)):
            raise ApacheConfigError(f"{path} must be an absolute path without spaces or quotes", field=option)
    return _fill("standalone.conf.in", {
        "SERVER_ROOT": str(server_root), "SITE_FILE": str(site_file), "LISTEN": listen,
        "SERVER_NAME": server_name, "MODULES": module_lines(tls, modules_dir), "RUN_USER": user, "RUN_GROUP": group,
    })


def apache_binary(explicit: str | None = None) -> str:
    if explicit:
        return explicit
    for name in BINARIES:
        found = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        if found:
            return found
    raise FileNotFoundError("no Apache httpd found (looked for apache2 and httpd); install apache2 or pass --apache")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    command: list[str]
    output: str          # what Apache printed
    hint: str = ""       # what to do about a failure pvhpc recognises


def is_standalone(text: str) -> bool:
    return re.search(r"^\s*ServerRoot\s", text, re.MULTILINE) is not None


def check(config_file: Path, binary: str | None = None, modules_dir: Path = MODULES_DIR) -> CheckResult:
    """Apache's configuration test on a standalone config, or on a site file inside a minimal server."""
    config_file = Path(config_file).resolve()
    text = config_file.read_text()
    exe = apache_binary(binary)
    with tempfile.TemporaryDirectory(prefix="pvhpc-apache-check-") as tmp:
        target = config_file
        if not is_standalone(text):
            target = Path(tmp) / "httpd.conf"
            target.write_text(render_standalone(config_file, Path(tmp), "127.0.0.1:80",
                                                tls="SSLEngine" in text, modules_dir=modules_dir))
        command = [exe, "-t", "-f", str(target)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    output = (done.stdout + done.stderr).strip()
    ok = done.returncode == 0
    return CheckResult(ok, command, output, "" if ok else _hint(output))


def _hint(output: str) -> str:
    if re.search(r"file for map \S* ?not found", output):
        return ("the map file does not exist yet: start pvhpc first (it writes the map at start), "
                "or create an empty one with the mode and group from docs/apache.md")
    if "Invalid command" in output:
        return "a module the configuration needs is not loaded (Debian: a2enmod rewrite proxy proxy_http " \
               "proxy_wstunnel headers, and ssl for TLS)"
    return ""
