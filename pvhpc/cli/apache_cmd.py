"""``pvhpc apache render|check``: the Apache front end's configuration for a site."""

from __future__ import annotations

import sys
from pathlib import Path

from pvhpc.errors import PvhpcError
from pvhpc.frontends import apacheconf


def register(sub) -> None:
    p = sub.add_parser(
        "apache",
        help="render or check the Apache front end's configuration",
        description=(
            "render writes the virtual host for a site from the templates in apache/ (with --standalone also a "
            "complete server config around it); check runs Apache's configuration test (apache2 -t) on a file "
            "and says what is wrong. See docs/apache.md."
        ),
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    r = actions.add_parser("render", help="write the Apache configuration for a site")
    r.add_argument("--server-name", required=True, help="the host name users type (ServerName)")
    r.add_argument("--map-file", required=True, type=Path,
                   help="the RewriteMap file pvhpc keeps (the same path as frontend.map_file)")
    r.add_argument("--service-url", required=True,
                   help="where Apache reaches the pvhpc service: unix:PATH, its front-end socket "
                        "(service.frontend_socket, e.g. unix:/run/pvhpc/frontend.sock), the only channel on which "
                        "pvhpc believes the user Apache names; an http:// URL only for a site without logins")
    r.add_argument("--listen", default=None,
                   help="[ADDRESS:]PORT Apache listens on (default 443 with TLS, 80 without)")
    r.add_argument("--prefix", default="", help="serve everything under this URL path, e.g. /viz")
    r.add_argument("--tls-cert", type=Path, help="certificate file: serve https:// and wss://")
    r.add_argument("--tls-key", type=Path, help="the certificate's private key file")
    r.add_argument("--auth-include", type=Path,
                   help="a file of Apache directives that authenticate users (Include'd for every URL)")
    r.add_argument("--access-log", type=Path, default=Path("/var/log/apache2/pvhpc-access.log"),
                   help="this virtual host's access log; it records paths only, never query strings, which carry "
                        "session ids (default: %(default)s)")
    r.add_argument("--config", type=Path, metavar="SITE.yaml",
                   help="pvhpc's site config: Apache then serves each application's web client (web_client) "
                        "itself at /apps/<name>/")
    r.add_argument("--session-origin", default=None, metavar="ORIGIN",
                   help="serve sessions' own web content (/session/<id>/: trame apps) on this origin, a host name "
                        "of its own, in a virtual host of its own (default: frontend.session_origin of --config; "
                        "without either, on this host in a browser sandbox)")
    r.add_argument("--output", "-o", type=Path, help="write the site file here (default: standard output)")
    r.add_argument("--standalone", type=Path, metavar="DIR",
                   help="also write DIR/httpd.conf: a complete server (ServerRoot DIR, modules, Listen) around "
                        "the site file, for hosts without /etc/apache2")
    r.add_argument("--modules-dir", type=Path, default=apacheconf.MODULES_DIR,
                   help=f"where Apache's modules are, for --standalone (default {apacheconf.MODULES_DIR})")
    r.add_argument("--run-as", default="www-data:www-data", metavar="USER:GROUP",
                   help="the user and group Apache's workers run as, for --standalone (default www-data:www-data)")
    r.set_defaults(func=render)

    c = actions.add_parser("check", help="run Apache's configuration test on a rendered file")
    c.add_argument("file", type=Path, help="a site file (tested inside a minimal server) or a standalone httpd.conf")
    c.add_argument("--apache", default=None, help="the Apache binary (default: apache2 or httpd on PATH)")
    c.add_argument("--modules-dir", type=Path, default=apacheconf.MODULES_DIR,
                   help="where Apache's modules are, for testing a site file")
    c.set_defaults(func=check)


def _listen(value: str | None) -> tuple[str | None, int | None]:
    if value is None:
        return None, None
    address, _, port = value.rpartition(":")
    if not port.isdigit():
        raise apacheconf.ApacheConfigError(f"{value!r} is not PORT or ADDRESS:PORT", field="--listen")
    return address or None, int(port)


def render(args) -> int:
    try:
        address, port = _listen(args.listen)
        web_clients, session_origin = (), args.session_origin
        if args.config:
            from pvhpc import config as site_config

            loaded = site_config.load(args.config)
            web_clients = apacheconf.site_web_clients(loaded)
            session_origin = session_origin or loaded.frontend.session_origin
        site = apacheconf.Site(
            server_name=args.server_name, map_file=args.map_file.absolute(), service_url=args.service_url,
            port=port, prefix=args.prefix, auth_include=args.auth_include and args.auth_include.absolute(),
            access_log=args.access_log.absolute(),
            tls_cert=args.tls_cert and args.tls_cert.absolute(), tls_key=args.tls_key and args.tls_key.absolute(),
            web_clients=web_clients, session_origin=session_origin,
        )
        text = apacheconf.render_site(site)
        site_file = args.output
        if args.standalone and site_file is None:
            site_file = args.standalone / "pvhpc-site.conf"
        if site_file is None:
            sys.stdout.write(text)
        else:
            site_file.parent.mkdir(parents=True, exist_ok=True)
            site_file.write_text(text)
            print(f"wrote {site_file}")
        if args.standalone:
            user, _, group = args.run_as.partition(":")
            root = args.standalone.absolute()
            root.mkdir(parents=True, exist_ok=True)
            main = root / "httpd.conf"
            main.write_text(apacheconf.render_standalone(
                site_file.absolute(), root, f"{address}:{site.listen_port}" if address else str(site.listen_port),
                server_name=site.server_name, tls=site.tls, modules_dir=args.modules_dir,
                user=user, group=group or user,
            ))
            print(f"wrote {main} (start: apache2 -f {main} -k start)")
    except PvhpcError as e:   # a wrong option, or a site config that does not load (it names its key)
        print(f"pvhpc apache render: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pvhpc apache render: cannot write {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    print(f"pvhpc's site config needs: frontend.kind apache, frontend.map_file {site.map_file}, "
          f"frontend.session_url \"{site.session_url}\", "
          + (f"frontend.session_origin {site.session_origin}, " if site.session_origin else "")
          + "auth.kind header, service.frontend_socket (the "
          "unix: path of --service-url), "
          f"service.public_url {site.public_url} (and service.callback_url: pvhpc's own address as compute "
          "nodes reach it, so job reports do not meet Apache's login)", file=sys.stderr)
    return 0


def check(args) -> int:
    try:
        result = apacheconf.check(args.file, args.apache, args.modules_dir)
    except FileNotFoundError as e:
        print(f"pvhpc apache check: {e.filename or e}: not found" if e.filename else f"pvhpc apache check: {e}",
              file=sys.stderr)
        return 2
    except OSError as e:
        print(f"pvhpc apache check: {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    if result.ok:
        print(f"{args.file}: Apache's configuration test passed ({' '.join(result.command)})")
        return 0
    print(f"pvhpc apache check: {args.file} FAILS Apache's configuration test ({' '.join(result.command)}):",
          file=sys.stderr)
    for line in result.output.splitlines():
        print(f"    {line}", file=sys.stderr)
    if result.hint:
        print(f"hint: {result.hint}", file=sys.stderr)
    return 1
