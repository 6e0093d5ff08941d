"""Who is asking: one small interface, chosen by config (auth.kind).

An authenticator looks at a request and returns a user name or None. It never
raises: a request it cannot place is simply not logged in.
"""

from __future__ import annotations

from pvhpc import plugins
from pvhpc.config import NAME, AuthConfig


class Authenticator:
    def __init__(self, config: AuthConfig):
        self.config = config

    def user(self, request) -> str | None:
        raise NotImplementedError

    def is_staff(self, user: str) -> bool:
        return user in self.config.staff


class LocalAuthenticator(Authenticator):
    """Everybody is one configured user: the embedded default, and single-user installs."""

    def user(self, request) -> str | None:
        return self.config.user


class HeaderAuthenticator(Authenticator):
    """The front end (Apache) authenticated the user and says who in a header.

    The header is believed only on requests from the configured front-end
    addresses; from anywhere else it is ignored, so it cannot be forged.
    """

    def user(self, request) -> str | None:
        if request.remote_ip not in self.config.trusted_proxies:
            return None
        value = request.headers.get(self.config.header, "")
        return value if NAME.match(value) else None


class WithTokens(Authenticator):
    """Personal API tokens first (scripts), then the site's own way (browsers through the front end).

    A request that presents a token is that token's user or nobody: a bad token is
    never quietly replaced by another identity the request might also carry.
    """

    def __init__(self, inner: Authenticator, tokens):
        super().__init__(inner.config)
        self.inner = inner
        self.tokens = tokens

    def user(self, request) -> str | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("token "):
            return self.tokens.user_for(header[len("token "):].strip())
        return self.inner.user(request)


def make_authenticator(config: AuthConfig, tokens=None) -> Authenticator:
    """The site's authenticator (``auth.kind``, an entry point in pvhpc.authenticators), behind personal tokens."""
    inner = plugins.load(plugins.AUTHENTICATORS, config.kind)(config)
    return WithTokens(inner, tokens) if tokens is not None else inner
