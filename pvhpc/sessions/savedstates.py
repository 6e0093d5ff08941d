"""Saved ParaView states: where a session's job saves its state, listing them, and checking one to start from.

A session's server saves its pipeline when its job is ended (walltime, cancel, idle: pvhpc/node/pvstate.py)
into the user's state directory, as ``<session id>-<UTC time>.pvsm``:

- jobs run as their users (``scheduler.submit_as: user``): ``~/.pvhpc/states`` in the user's home, 0700;
- jobs run as the service account: ``<service.job_output_dir>/states/<user>``, which only the service reads.

The list a user gets leaves out what a session that never reported ready saved (its server was stopped before
anyone used it: a start timeout, a refused report).

A new session may start from a state (request field ``saved_state``; ``state`` is its deprecated old name):
before any job is submitted the file is read (as the user, where jobs run as users), must lie in the user's state
directory or the application's data roots, be a ParaView state, and read no file outside the data roots. The
server checks the data paths again on the node before it loads the state.
"""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import replace
from pathlib import Path
from typing import Callable

from pvhpc.config import ApplicationConfig, SiteConfig
from pvhpc.db.store import SessionRecord, Store
from pvhpc.jobs.ids import SESSION_ID_TEXT
from pvhpc.node import pvstate   # the node's own rules (it imports nothing of pvhpc): judged alike on both sides
from pvhpc.scheduler.runners import CommandRunner, CommandUnavailable, UnreadableFile, read_tail
from pvhpc.sessions import joblogs
from pvhpc.sessions.outcomes import CannotReadNow, NotAllowed
from pvhpc.sessions.spec import RequestError, SessionSpec

USER_STATE_DIR = ".pvhpc/states"
MAX_STATE_BYTES = pvstate.MAX_STATE_BYTES
MAX_INDEX_BYTES = 256 * 1024   # the newest few thousand states
SAVED_NAME = re.compile(rf"^(?P<session>{SESSION_ID_TEXT})-(?P<at>\d{{8}}T\d{{6}}Z)\.pvsm$")


def saved_state_dir(config: SiteConfig, user: str) -> Path:
    if joblogs.per_user(config):
        try:
            return Path(pwd.getpwnam(user).pw_dir) / USER_STATE_DIR
        except KeyError:
            # The front end's login names someone this host has no account for: jobs run as users here.
            raise NotAllowed(f"{user!r} has no account on this host, and sessions here run as their users "
                             "(scheduler.submit_as: user)") from None
    return config.service.job_output_dir / "states" / user


def save_prefix(config: SiteConfig, user: str, session_id: str) -> str:
    """What the job's server saves to: the prefix of ``<session id>-<UTC time>.pvsm``."""
    return str(saved_state_dir(config, user) / session_id)


def _inside(path: str, roots) -> bool:
    return not pvstate.outside([path], [str(r) for r in roots])


def of_sessions_that_became_ready(states: list[dict], sessions: list[SessionRecord]) -> list[dict]:
    """``states`` without those saved by a session that never reported ready: its server was stopped before
    anyone could use it (a start timeout, a refused report), so what it saved is no work of the user's. A state
    of a session the store does not know is kept."""
    never_ready = {s.id for s in sessions if s.ready_at is None}
    return [state for state in states if state["session"] not in never_ready]


class SavedStates:
    def __init__(self, config: SiteConfig, runner: CommandRunner,
                 runner_for_user: Callable[[str], CommandRunner] | None = None, store: Store | None = None):
        """``store``: the sessions, to list only the states of those that became ready (None: every state)."""
        self.config = config
        self.runner = runner
        self.runner_for_user = runner_for_user
        self.store = store

    def _runner(self, user: str) -> CommandRunner:
        if joblogs.per_user(self.config) and self.runner_for_user:
            return self.runner_for_user(user)
        return self.runner

    async def list(self, user: str) -> list[dict]:
        """The user's saved states, newest first: name, path, the session that saved it, when, size."""
        where = saved_state_dir(self.config, user)
        try:
            # The index the servers append to (pvhpc/node/pvstate.py), read as the user where jobs run as users; one
            # that is not a regular file (a FIFO, a directory) raises UnreadableFile, a 4xx naming it.
            found = await read_tail(self._runner(user), where / pvstate.INDEX, MAX_INDEX_BYTES)
        except CommandUnavailable:
            return []
        states, seen = [], set()
        for line in (found or "").splitlines():
            name, _, size = line.partition("\t")
            m = SAVED_NAME.match(name)
            if m is None or not size.isdigit() or name in seen:
                continue
            seen.add(name)
            at = m["at"]
            states.append({"name": name, "path": str(where / name), "session": m["session"],
                           "saved_at": f"{at[0:4]}-{at[4:6]}-{at[6:8]}T{at[9:11]}:{at[11:13]}:{at[13:15]}Z",
                           "bytes": int(size)})
        if self.store is not None and states:
            # Decided here, where whether a session became ready is known for sure, rather than on the node:
            # there a ready report taken by pvhpc whose answer was lost looks like one refused.
            sessions = await self.store.off_loop.get_many(sorted({s["session"] for s in states}))
            states = of_sessions_that_became_ready(states, [s for s in sessions if s.user == user])
        return sorted(states, key=lambda s: s["saved_at"], reverse=True)

    async def check(self, user: str, app: ApplicationConfig, value: str) -> str:
        """The real path of a state the user may start ``app`` from; RequestError, NotAllowed, UnreadableFile or
        CannotReadNow (field ``saved_state``) if not."""
        if not app.saved_states:
            raise RequestError(f"application {app.name} cannot start from a saved state (its server is not one "
                               "pvhpc loads states into: saved_states is false); start it without one",
                               field="saved_state")
        own = saved_state_dir(self.config, user)
        real = os.path.realpath(value)
        if not (_inside(real, [own]) or _inside(real, app.data_roots)):
            roots = ", ".join(str(r) for r in app.data_roots)
            raise RequestError(f"{value!r} is neither in your saved states ({own}) nor in application "
                               f"{app.name}'s data roots ({roots})", field="saved_state")
        self._refuse_others_code(user, real)
        try:
            # At most one byte more than a state may hold, within runners.READ_TIMEOUT (a FIFO, a device or a
            # directory is refused, naming it), as the user where jobs run as users.
            text = await read_tail(self._runner(user), real, MAX_STATE_BYTES + 1)
        except UnreadableFile as e:
            raise UnreadableFile(e.message, field="saved_state", status=e.status) from None   # the runner's kind
        except CommandUnavailable as e:
            raise CannotReadNow(f"{value!r} could not be read: {e}", field="saved_state") from None
        if text is None:
            raise RequestError(f"{value!r} cannot be read: no such file", field="saved_state")
        if len(text.encode()) > MAX_STATE_BYTES:
            raise RequestError(f"{value!r} is over {MAX_STATE_BYTES // (1024 * 1024)} MB: not a saved state",
                               field="saved_state")
        try:
            names = pvstate.files_named(text, value)
        except pvstate.StateRefused as e:
            raise RequestError(str(e), field="saved_state") from None
        bad = pvstate.outside(names, [str(r) for r in app.data_roots])
        if bad:
            roots = ", ".join(str(r) for r in app.data_roots)
            raise RequestError(f"the state reads {bad[0]}, outside application {app.name}'s data roots ({roots})",
                               field="saved_state")
        return real

    def _refuse_others_code(self, user: str, real: str) -> None:
        """A state runs the Python it holds: only one its loader owns and nobody else could have written
        (pvstate.untrusted). Where the service cannot look (a home it may not enter) the node judges alone, as it
        does anyway before it loads the state."""
        uid = pwd.getpwnam(user).pw_uid if joblogs.per_user(self.config) else os.getuid()
        try:
            why = pvstate.untrusted(real, uid)
        except OSError:
            return
        if why:
            raise NotAllowed(why, field="saved_state")

    async def checked(self, user: str, spec: SessionSpec) -> SessionSpec:
        """The spec with its state (if any) checked and made a real path: what the job loads."""
        if spec.saved_state_file is None:
            return spec
        app = self.config.applications[spec.application]
        return replace(spec, saved_state_file=await self.check(user, app, spec.saved_state_file))
