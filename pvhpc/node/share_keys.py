"""A sharee's key to a session's server: made by pvhpc, checked by the server, both from the session's secret.

Standard library only: pvhpc's service (pvhpc/sessions/sharing.py) makes keys with it, and the session's server
(share_gate.py, under pvpython on the node) checks them with it, so the two can never disagree on the format.

A key is ``pvhpc-share.<grant id>.<role>.<mac>``, the mac an HMAC-SHA256 of the grant id and role keyed with the
session's own secret. So

- nothing secret is stored for a grant (its key is made again whenever its sharee asks, and is worth nothing
  without the session's secret, which only pvhpc and the owner's job hold);
- the server knows the key's grant and role from the key itself, and a sharee cannot turn ``view`` into
  ``control`` (the mac would not match);
- the owner's secret cannot be worked back from a key (HMAC), so a sharee never holds it.

Whether the grant still stands (not revoked) the server learns from pvhpc (share_gate.py): the key alone is not
enough.
"""

import hashlib
import hmac
import re

PREFIX = "pvhpc-share"
ROLES = ("view", "control")
GRANT_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")   # secrets.token_urlsafe: no dots, which separate the parts


def _mac(secret, grant_id, role):
    message = f"{PREFIX}|{grant_id}|{role}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def key_for(secret, grant_id, role):
    """The key of grant ``grant_id`` (role ``role``) to the session whose secret is ``secret``."""
    if not secret:
        raise ValueError("a session without a secret has no share keys")
    if not GRANT_ID.match(grant_id) or role not in ROLES:
        raise ValueError(f"not a grant id and role: {grant_id!r}, {role!r}")
    return f"{PREFIX}.{grant_id}.{role}.{_mac(secret, grant_id, role)}"


def is_share_key(token):
    return isinstance(token, str) and token.startswith(PREFIX + ".")


def read(secret, key):
    """(grant id, role) of a key made with ``secret``; None for anything else (another session's key, a forged
    role, a malformed string)."""
    if not secret or not is_share_key(key) or len(key) > 256:
        return None
    parts = key.split(".")
    if len(parts) != 4:
        return None
    _, grant_id, role, mac = parts
    if not GRANT_ID.match(grant_id) or role not in ROLES:
        return None
    if not hmac.compare_digest(mac, _mac(secret, grant_id, role)):
        return None
    return grant_id, role
