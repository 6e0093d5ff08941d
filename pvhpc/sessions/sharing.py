"""Sharing a session: who may share what with whom, and what a sharee gets.

An owner grants a named user (or, where staff allow, a Unix group) ``view`` (sees the picture: the session's
server lets nothing else of theirs through) or ``control`` (drives it too). The sharee opens the session with
their own login and a key of their own (pvhpc/node/share_keys.py), never with the owner's secret; the session's
server learns from its job's watchdog which grants stand (``grants_for_session``), so a revoke, sharing turned off,
or the session's end cuts the sharee off within seconds (pvhpc/node/share_gate.py). Every grant, revoke and
sharee's connection is a line in the session's history. docs/sharing.md says it for users and staff.
"""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from pvhpc.db.shares import ShareStore
from pvhpc.db.store import SessionRecord, ShareGrant
from pvhpc.errors import PvhpcError
from pvhpc.jobs.states import SessionState
from pvhpc.node import share_keys

ROLES = share_keys.ROLES
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")   # a Unix user or group name as pvhpc takes one


class SharingError(PvhpcError):
    status = 400


@dataclass(frozen=True)
class Sharee:
    """Who is named: a user or a group."""
    kind: str   # "user" or "group"
    name: str


class UnixDirectory:
    """Users and groups as the service host knows them (the same accounts the jobs run as)."""

    def user_exists(self, name: str) -> bool:
        try:
            pwd.getpwnam(name)
        except KeyError:
            return False
        return True

    def group_exists(self, name: str) -> bool:
        try:
            grp.getgrnam(name)
        except KeyError:
            return False
        return True

    def members_of(self, group: str) -> list[str]:
        """The group's listed members (its member list in /etc/group, LDAP's memberUid/member, ...). Not the users
        whose primary group it is without being listed: finding them means walking every account (getpwall),
        which a directory with enumeration off (sssd's default) answers with local accounts only, and one with
        it on answers slowly. Sharing names those as they are handed their key (Sharing.shared_with)."""
        try:
            return sorted(set(grp.getgrnam(group).gr_mem))
        except KeyError:
            return []

    def groups_of(self, user: str) -> list[str]:
        """The groups ``user`` is in, as the system's login would see them (getgrouplist: asked of every source
        NSS has, directories included, without enumerating them), their primary group too."""
        try:
            gid = pwd.getpwnam(user).pw_gid
            gids = os.getgrouplist(user, gid)
        except (KeyError, OSError):
            return []
        names = set()
        for g in gids:
            try:
                names.add(grp.getgrgid(g).gr_name)
            except KeyError:
                pass   # a gid with no name: nothing a grant can name
        return sorted(names)


def roles_of(app) -> tuple[str, ...]:
    """The roles a session of ``app`` may be shared with.

    Both for a ParaViewWeb server under pvhpc's own wrappers: pvhpc's server (``${server_script}``), and a
    ParaViewWeb server pvhpc gives its secret through its argv wrapper (``${pvpython}`` with ``${secret}``: the
    Visualizer). Its share gate checks the sharee's key and holds a view-only one to the picture, and it answers
    the quick view's calls (pvhpc/node/quickview_calls.py), where a sharee sees it. A control sharee of an
    application with its own web client (the Visualizer) may open that client too (its launcher attaches them,
    web/pvw_launcher.py); a view sharee only the quick view: the Visualizer's client cannot start without calls
    that change the view for everyone (sharing.md).

    None for the rest: a desktop session's bridge, trame's wslink 2.x and a site's own server check only the
    owner's secret."""
    if app is None or app.desktop or app.serves_own_client:
        return ()
    command = " ".join(app.command or ())
    if "${server_script}" in command:
        return ROLES
    if app.web_client is not None and "${secret}" in command and (app.command or [""])[0] == "${pvpython}":
        return ROLES
    return ()


def cannot_share_because(app) -> str:
    """Why sessions of ``app`` cannot be shared, in the page's words (docs/sharing.md has the long story)."""
    if app is not None and app.desktop:
        return "its sessions cannot be shared: ParaView's desktop client is the session's one client"
    if app is not None and app.serves_own_client:
        # trame: its client (served, or pvhpc's static copy on pvhpc's origin) builds its page from what the
        # session's server sends, and that server runs as the owner, who can change what it sends.
        return ("its sessions cannot be shared: its client builds its page from what the owner's server sends, "
                "which would run in a sharee's browser with the sharee's login")
    return ("its sessions cannot be shared: pvhpc cannot check a sharee's key or keep a view-only one from "
            "driving it in this application's server")


def opens_own_client(app, role: str) -> bool:
    """Whether a sharee with ``role`` may open the session in the application's own web client: control only
    (the Visualizer's client changes the view's size, quality and picture observers as it starts)."""
    return role == "control" and app is not None and app.web_client is not None and bool(roles_of(app))


def off_because(config) -> str | None:
    """Why nothing can be shared at this site, or None."""
    if not config.sharing.enabled:
        return "sharing is turned off at this site (sharing.enabled)"
    if not config.runtime.watchdog_interval:
        # The grants reach a session's server only with its watchdog's asks (pvhpc/node/share_gate.py).
        return "sharing needs the jobs' watchdog, which this site turned off (runtime.watchdog_interval is 0)"
    return None


def application_sharing(app, config) -> dict:
    """What ``GET /api/v1/applications`` says of sharing its sessions (the page's Share dialog offers these)."""
    off = off_because(config)
    roles = roles_of(app) if off is None else ()
    if config.sharing.view_only:
        roles = tuple(r for r in roles if r == "view")
    if off is not None:
        why = off
    elif not roles_of(app):
        why = cannot_share_because(app)
    elif config.sharing.view_only:
        why = "this site allows view grants only (sharing.view_only)"
    elif app.web_client is not None:
        why = ("a view-only sharee sees it in pvhpc's quick view; with control they may also open it in its own "
               "client")
    else:
        why = None
    return {"share_roles": list(roles), "share_groups": bool(roles) and config.sharing.groups, "share_note": why}


def describe(grant: ShareGrant) -> dict:
    return {"kind": grant.kind, "name": grant.name, "role": grant.role,
            "granted_at": grant.created_at.isoformat() + "Z"}


CONNECTED_NOTE_SECONDS = 600   # a sharee's "connected" line in the history: at most this often per grant


class Sharing:
    """``on_sharees(session_id, users)``: told the users each session is shared with whenever that changes (the
    front end's set_sharees: Apache's map lets them through /proxy)."""

    def __init__(self, config, store, directory: UnixDirectory | None = None, on_sharees=None):
        self.config = config
        self.shares = ShareStore(store)
        self.db = store.off_loop
        self.directory = directory or UnixDirectory()
        self.on_sharees = on_sharees
        self._connected: dict[str, set[str]] = {}   # session id -> grants whose sharees its server said are connected
        self._noted: dict[tuple[str, str, str], float] = {}   # (session, grant, user) -> when "connected" was written
        # Users' groups and groups' members come from NSS, which may ask a directory server over the network: off the
        # event loop, and off asyncio's default pool too, where a slow directory would hold up name lookups (dials).
        self._nss = ThreadPoolExecutor(2, thread_name_prefix="pvhpc-nss")
        self._publishing: dict[str, asyncio.Lock] = {}   # session id -> its publishes, one at a time
        # session id -> users handed a key to it through a group grant. A group's member list leaves out those
        # whose primary group it is; these are named to the front end all the same while they are in the group.
        self._through_groups: dict[str, set[str]] = {}
        self._named: dict[str, frozenset[str]] = {}   # session id -> the users the front end was last told

    def users_of(self, grants, through_groups: set[str] = frozenset()) -> frozenset[str]:
        """The users ``grants`` (of one session) let in: named ones, the listed members of named groups, and those
        of ``through_groups`` whose login gets a named group now."""
        users, groups = set(), set()
        for grant in grants:
            if not self.allowed(grant):
                continue
            if grant.kind == "user":
                users.add(grant.name)
            else:
                groups.add(grant.name)
                users.update(self.directory.members_of(grant.name))
        if groups:
            users.update(u for u in through_groups - users if groups.intersection(self.directory.groups_of(u)))
        return frozenset(users)

    def session_changed(self, record: SessionRecord) -> None:
        """From the event bus: what was kept of an ended session is let go."""
        if record.session_state is SessionState.ENDED:
            for kept in (self._through_groups, self._named, self._connected, self._publishing):
                kept.pop(record.id, None)

    def close(self) -> None:
        """At the service's stop: lookups not begun are dropped, and the threads end once any under way returns
        (nothing waits for it here; Python's exit does)."""
        self._nss.shutdown(wait=False, cancel_futures=True)

    def publish_all(self) -> None:
        """Every live session's sharees to ``on_sharees``, at start (the front end's map is rebuilt then)."""
        if self.on_sharees is None:
            return
        by_session: dict[str, list[ShareGrant]] = {}
        for grant in self.shares.all_live():
            by_session.setdefault(grant.session_id, []).append(grant)
        for session_id, grants in by_session.items():
            self._tell(session_id, self.users_of(grants))

    async def _publish(self, session_id: str) -> None:
        """Tell the front end whom the session's grants let in now. One publish of a session at a time, each
        reading the grants once the one before has told its list: the list told last is the newest (a share and
        its revoke at once cannot end the other way round), and a publish returns once a list read after the
        caller's change has been told."""
        if self.on_sharees is None:
            return
        async with self._publishing.setdefault(session_id, asyncio.Lock()):
            grants = await self.db.read(self.shares.live_of, session_id)
            through_groups = set(self._through_groups.get(session_id, ()))   # a copy for the lookup's thread
            self._tell(session_id, await asyncio.get_running_loop().run_in_executor(
                self._nss, self.users_of, grants, through_groups))

    def _tell(self, session_id: str, users: frozenset[str]) -> None:
        self._named[session_id] = users
        self.on_sharees(session_id, users)

    # -- the owner's --------------------------------------------------------------------------------------
    def check_request(self, record: SessionRecord, actor: str, body) -> tuple[Sharee, str]:
        """The sharee and role a share request names, or a SharingError naming the field at fault."""
        sharing = self.config.sharing
        off = off_because(self.config)
        if off is not None:
            raise SharingError(off, status=403)
        self.check_owner(record, actor)
        if not isinstance(body, dict):
            raise SharingError("the request body must be a JSON object")
        unknown = sorted(set(body) - {"user", "group", "role"})
        if unknown:
            raise SharingError("unknown field (known: user, group, role)", field=unknown[0])
        if ("user" in body) == ("group" in body):
            raise SharingError("name one user or one group to share with", field="user")
        kind = "user" if "user" in body else "group"
        name = body[kind]
        if not isinstance(name, str) or not NAME.match(name):
            raise SharingError(f"{name!r} is not a {kind} name", field=kind)
        role = body.get("role")
        if role not in ROLES:
            raise SharingError(f"{role!r} is not a role: view (sees the picture) or control (drives it too)",
                               field="role")
        if kind == "group" and not sharing.groups:
            raise SharingError("this site does not let sessions be shared with groups (sharing.groups): name "
                               "users", field="group", status=403)
        if role == "control" and sharing.view_only:
            raise SharingError("this site allows view grants only (sharing.view_only)", field="role", status=403)
        if record.session_state is SessionState.ENDED:
            raise SharingError("the session has ended: there is nothing to share", status=409)
        if record.ranks:
            raise SharingError("a parallel session cannot be shared (its servers are out of the share gate's "
                               "reach)", status=409)
        app = self.config.applications.get(record.application)
        offered = roles_of(app)
        if role not in offered:
            raise SharingError(
                f"sessions of {record.application} cannot be shared" if not offered else
                f"sessions of {record.application} can be shared as {' or '.join(offered)} only", field="role")
        if kind == "user":
            if name == record.user:
                raise SharingError("that is the session's owner: an owner needs no share", field="user")
            if not self.directory.user_exists(name):
                raise SharingError(f"no user {name!r} on this site", field="user")
        elif not self.directory.group_exists(name):
            raise SharingError(f"no group {name!r} on this site", field="group")
        return Sharee(kind, name), role

    def check_owner(self, record: SessionRecord, actor: str) -> None:
        if record.user != actor:
            # Staff too: a grant hands out a key to the session, and staff never get one of another's.
            raise SharingError(f"only the session's owner ({record.user}) shares it or ends a share", status=403)

    async def share(self, record: SessionRecord, actor: str, body) -> ShareGrant:
        # Off the loop, as every NSS lookup here: whether the user or group exists may ask a directory server.
        sharee, role = await asyncio.get_running_loop().run_in_executor(self._nss, self.check_request, record,
                                                                       actor, body)
        detail = f"shared with {sharee.kind} {sharee.name} ({role})"
        made = await self.db.write(self.shares.grant, record.id, sharee.kind, sharee.name, role, detail)
        if made is None:
            raise SharingError("the session has ended: there is nothing to share", status=409)
        await self._publish(record.id)
        return made

    async def unshare(self, record: SessionRecord, actor: str, name: str, kind: str = "user") -> list[ShareGrant]:
        self.check_owner(record, actor)
        if kind not in ("user", "group"):
            raise SharingError(f"{kind!r} is not user or group", field="kind")
        gone = await self.db.write(self.shares.revoke, record.id, kind, name, f"share with {kind} {name} revoked")
        if not gone:
            raise SharingError(f"the session is not shared with {kind} {name}", field=kind, status=404)
        await self._publish(record.id)
        return gone

    async def grants(self, record: SessionRecord) -> list[ShareGrant]:
        return await self.db.read(self.shares.live_of, record.id)

    # -- the sharee's ---------------------------------------------------------------------------------------
    async def shared_with(self, user: str) -> list[tuple[SessionRecord, ShareGrant]]:
        """The live sessions shared with ``user`` (by name or a group of theirs), one grant each, control first."""
        if not self.config.sharing.enabled:
            return []
        # Off the loop (every list of sessions asks this): getgrouplist may ask a directory server over the network.
        groups = (await asyncio.get_running_loop().run_in_executor(self._nss, self.directory.groups_of, user)
                  if self.config.sharing.groups else [])
        found = await self.db.read(self.shares.shared_with, user, groups)
        best: dict[str, tuple[SessionRecord, ShareGrant]] = {}
        for record, grant in found:
            if not self.allowed(grant) or record.user == user:
                continue
            if record.id not in best or (grant.role == "control" and best[record.id][1].role != "control"):
                best[record.id] = (record, grant)
        for record, grant in best.values():
            if grant.kind == "group":
                await self._name_through_group(record.id, user)
        return list(best.values())

    async def _name_through_group(self, session_id: str, user: str) -> None:
        """``user`` is let into the session by a group of theirs: the front end's list must name them before they
        connect with the key they are being handed, whether or not the group lists them (it need not list those
        whose primary group it is, which their login gets all the same). Nothing to do where the last list told
        named them and no publish under way may have read the grants or users before this one."""
        self._through_groups.setdefault(session_id, set()).add(user)
        publishing = self._publishing.get(session_id)
        if user not in self._named.get(session_id, ()) or (publishing is not None and publishing.locked()):
            await self._publish(session_id)

    async def grant_of(self, session_id: str, user: str) -> ShareGrant | None:
        """The grant that lets ``user`` into the session, or None."""
        for record, grant in await self.shared_with(user):
            if record.id == session_id:
                return grant
        return None

    def allowed(self, grant: ShareGrant) -> bool:
        """Whether the site's rules still allow this grant (staff may have narrowed them since it was made)."""
        sharing = self.config.sharing
        return (sharing.enabled and (grant.kind == "user" or sharing.groups)
                and (grant.role == "view" or not sharing.view_only))

    @staticmethod
    def key(record: SessionRecord, grant: ShareGrant) -> str:
        return share_keys.key_for(record.secret, grant.id, grant.role)

    def view_for_sharee(self, data: dict, record: SessionRecord, grant: ShareGrant) -> dict:
        """A session as its sharee sees it: whose it is and their role, and their own key as its ``secret``
        (clients connect with it exactly as with an owner's secret)."""
        data = {k: v for k, v in data.items() if k not in ("secret", "host", "port", "data")}
        data["shared"] = {"by": record.user, "role": grant.role}
        if record.session_state is not SessionState.ENDED:
            data["secret"] = self.key(record, grant)
        return data

    async def connected(self, session_id: str, user: str, grant: ShareGrant, now: float | None = None) -> None:
        """A sharee's connection through the front end, in the session's history: at most once per grant (and user,
        a group's grant letting in several) per CONNECTED_NOTE_SECONDS, since a view reconnects by itself after
        each drop and every attempt is a connection."""
        now = time.monotonic() if now is None else now
        key = (session_id, grant.id, user)
        if now - self._noted.get(key, -CONNECTED_NOTE_SECONDS) < CONNECTED_NOTE_SECONDS:
            return
        self._noted = {k: t for k, t in self._noted.items() if now - t < CONNECTED_NOTE_SECONDS}   # stays small
        self._noted[key] = now
        await self.db.write(self.shares.note, session_id, f"{user} connected ({grant.role}, shared)")

    async def seen_connected(self, session_id: str, grant_ids: list[str]) -> None:
        """The session's server says sharees of these grants are connected (through its watchdog's ask): each grant
        newly connected is a line in the history. The built-in front end writes who connected itself (it knows
        the user, where a group's grant does not), so this is for the others (Apache), which tell pvhpc nothing."""
        if self.config.frontend.kind == "builtin":
            return
        seen = self._connected.setdefault(session_id, set())
        new = set(grant_ids) - seen
        seen.intersection_update(grant_ids)   # one who left and comes back is a new connection
        if not new:
            return
        seen.update(new)
        for grant in await self.db.read(self.shares.live_of, session_id):
            if grant.id in new:
                who = grant.name if grant.kind == "user" else f"a member of group {grant.name}"
                await self.db.write(self.shares.note, session_id, f"{who} connected ({grant.role}, shared)")

    # -- the node's -------------------------------------------------------------------------------------------
    async def grants_for_session(self, session_id: str) -> dict[str, str]:
        """{grant id: role} of a live session's grants that stand, for its server (through its watchdog)."""
        return {g.id: g.role for g in await self.db.read(self.shares.live_of, session_id) if self.allowed(g)}
