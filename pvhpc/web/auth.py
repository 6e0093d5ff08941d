"""Who is asking: one small interface, chosen by config (auth.kind).

An authenticator looks at a request and returns a user name or None. It never
raises: a request it cannot place is simply not logged in.
"""

from __future__ import annotations

import socket

from pvhpc import plugins
from pvhpc.config import AuthConfig
from pvhpc.jobs.ids import NAME


def over_frontend_socket(request) -> bool:
    """Whether the request came over the front end's Unix socket (service.frontend_socket).

    That socket is the service's only Unix listener, and only the front end's group may open it;
    every TCP listener is open to any local account, so nothing a TCP request says about its user
    is believed.
    """
    stream = getattr(request.connection, "stream", None)
    sock = getattr(stream, "socket", None)
    return sock is not None and sock.family == socket.AF_UNIX


class Authenticator:
    # Whether the user is proven by something a browser sends by itself (a front end's login, a cookie):
    # then a request that changes state must come from the site's own pages (pvhpc.web.base checks Origin).
    browser_credentials = True

    def __init__(self, config: AuthConfig):
        self.config = config

    def user(self, request) -> str | None:
        raise NotImplementedError

    async def user_off_loop(self, request) -> str | None:
        """``user``, for handlers on the event loop: what needs the database is looked up off the loop."""
        return self.user(request)

    def by_token(self, request) -> bool:
        """Whether the request presents a personal API token (a script's, never sent by a browser on its own)."""
        return False

    def is_staff(self, user: str) -> bool:
        return user in self.config.staff


class LocalAuthenticator(Authenticator):
    """Everybody is one configured user: the embedded default, and single-user installs.

    There is no credential at all, so a request with neither Origin nor Referer is a script's (the CLI),
    not a browser's; one that names a foreign page is still refused (pvhpc.web.base).
    """

    browser_credentials = False

    def user(self, request) -> str | None:
        return self.config.user


class HeaderAuthenticator(Authenticator):
    """The front end (Apache) authenticated the user and says who in a header.

    The header is believed only on requests that came over the front end's Unix socket, which
    only the front end's group may open. On TCP (what jobs report to and scripts with tokens use)
    it is ignored: on a login node any local account can connect to 127.0.0.1.
    """

    def user(self, request) -> str | None:
        if not over_frontend_socket(request):
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
        self.browser_credentials = inner.browser_credentials

    def by_token(self, request) -> bool:
        return request.headers.get("Authorization", "").startswith("token ")

    def user(self, request) -> str | None:
        if self.by_token(request):
            return self.tokens.user_for(self._token(request))
        return self.inner.user(request)

    async def user_off_loop(self, request) -> str | None:
        if self.by_token(request):
            return await self.tokens.user_off_loop(self._token(request))
        return self.inner.user(request)

    @staticmethod
    def _token(request) -> str:
        return request.headers["Authorization"][len("token "):].strip()


def make_authenticator(config: AuthConfig, tokens=None) -> Authenticator:
    """The site's authenticator (``auth.kind``, an entry point in pvhpc.authenticators), behind personal tokens."""
    inner = plugins.load(plugins.AUTHENTICATORS, config.kind)(config)
    return WithTokens(inner, tokens) if tokens is not None else inner
