"""Ids and names as pvhpc accepts them, wherever one arrives: a URL, a job's report, the config, a file name."""

from __future__ import annotations

import re

# A session's id (secrets.token_urlsafe): safe in a URL path, a file name and Apache's map.
SESSION_ID_TEXT = r"[A-Za-z0-9_-]{1,128}"
SESSION_ID = re.compile(rf"^{SESSION_ID_TEXT}$")
# A host name or an IPv4 address, as a job reports it and a front end dials it.
HOST_TEXT = r"[A-Za-z0-9]([A-Za-z0-9.-]{0,253}[A-Za-z0-9])?"
HOST = re.compile(rf"^{HOST_TEXT}$")
# A name staff give in the config (a partition, an application) and a user's login name.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
