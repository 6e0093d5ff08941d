"""Debian's apache2 in the foreground, configured by pvhpc's own Apache templates, and a login for it."""

from __future__ import annotations

import grp
import os
import subprocess
import tempfile
from pathlib import Path

from pvhpc.frontends import apacheconf

from tests.harness.daemon import Daemon
from tests.harness.ports import accepts_connections

APACHE_GROUP = "www-data"   # the group Debian's Apache workers run as; the files they read must be readable by it
APACHE_USER, APACHE_PASSWORD = "alice", "pvhpc-test-password"


def readable_directory(prefix: str) -> Path:
    """A new directory Apache's workers (group www-data) can read: pytest's tmp_path is private to root."""
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    os.chown(directory, -1, grp.getgrnam(APACHE_GROUP).gr_gid)
    directory.chmod(0o750)
    return directory


def write_login(directory: Path) -> Path:
    """Apache directives that make users log in (Basic, one user APACHE_USER), in a file Apache's workers read."""
    users = directory / "users"
    subprocess.run(["htpasswd", "-bc", str(users), APACHE_USER, APACHE_PASSWORD], check=True, capture_output=True)
    os.chown(users, -1, grp.getgrnam(APACHE_GROUP).gr_gid)
    users.chmod(0o640)
    auth = directory / "auth.conf"
    auth.write_text(f"AuthType Basic\nAuthName pvhpc\nAuthUserFile {users}\nRequire valid-user\n")
    return auth


class ApacheServer(Daemon):
    """apache2 with a standalone config rendered by pvhpc around one site file, both under ``root``.

    Ready when it accepts connections on the site's port.
    """

    name = "apache2"
    stop_grace = 15.0   # SIGTERM: the parent stops its workers, then exits

    def __init__(self, root: Path, site, binary: str = "/usr/sbin/apache2"):
        super().__init__(root / "stdout.log")
        self.root, self.site, self.binary = root, site, binary
        self.site_file = root / "pvhpc-site.conf"
        self.site_file.write_text(apacheconf.render_site(site))
        self.config = root / "httpd.conf"
        self.config.write_text(apacheconf.render_standalone(
            self.site_file, root, f"127.0.0.1:{site.listen_port}", tls=site.tls, group=APACHE_GROUP))
        scheme = "https" if site.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{site.listen_port}{site.prefix}"

    def command(self) -> list[str]:
        return [self.binary, "-f", str(self.config), "-DFOREGROUND"]

    def ready(self) -> bool:
        return accepts_connections(self.site.listen_port)

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no error.log)"

    def log_tail(self) -> str:
        return f"{super().log_tail()}\n{self.error_log()}"   # start-up errors go to stdout, the rest to error.log
