"""The applications' own web clients (``/apps/<name>/``) with pvhpc's reattachment: their page (index.html) is
served with ``static/reattach.js`` loaded first, which reopens the client attached to the same session when its
websocket drops (a continued session's successor took over: pvhpc/sessions/continuation.py). The client's files
are otherwise served as installed, unmodified."""

from __future__ import annotations

import re
from pathlib import Path

from pvhpc.web.errors import APIError

INDEX = "index.html"
_HEAD = re.compile(rb"<head[^>]*>", re.IGNORECASE)


def with_reattach(page: bytes, script_url: str) -> bytes:
    """``page`` with a script tag for ``script_url`` first in its head (first of all without one): before the
    client's own scripts, which open the websockets it watches."""
    tag = f'<script src="{script_url}"></script>'.encode()
    found = _HEAD.search(page)
    if found is None:
        return tag + page
    return page[:found.end()] + tag + page[found.end():]


def client_page(directory: Path, version: str) -> bytes:
    """The client's index.html as served: from two levels below pvhpc's base (``apps/<name>/``)."""
    try:
        page = (directory / INDEX).read_bytes()
    except FileNotFoundError:
        raise APIError(f"{directory / INDEX} is not installed: run 'pvhpc runtime install'", status=404) from None
    return with_reattach(page, f"../../static/reattach.js?v={version}")
