"""Sharing's Unix directory (pvhpc/sessions/sharing.py UnixDirectory): users' groups and groups' members asked of
NSS by name, so a directory (sssd, LDAP) with enumeration off answers as fully as /etc/group."""

from __future__ import annotations

import collections

from pvhpc.sessions import sharing
from pvhpc.sessions.sharing import UnixDirectory

Pw = collections.namedtuple("Pw", "pw_name pw_gid")
Gr = collections.namedtuple("Gr", "gr_name gr_gid gr_mem")


def test_root_is_in_its_own_group_on_this_machine():
    assert "root" in UnixDirectory().groups_of("root")
    assert UnixDirectory().groups_of("no-such-user-pvhpc") == []
    assert UnixDirectory().members_of("no-such-group-pvhpc") == []


def test_a_directory_that_does_not_enumerate_still_answers(monkeypatch):
    """As sssd with enumeration off: getpwall/getgrall list local accounts only; by name and gid it knows all."""
    users = {"dave": Pw("dave", 5000)}
    groups = {5000: Gr("dave", 5000, []), 6000: Gr("vislab", 6000, ["dave", "erin"]), 7000: Gr("other", 7000, [])}

    def getpwnam(name):
        return users[name]

    def getgrnam(name):
        for group in groups.values():
            if group.gr_name == name:
                return group
        raise KeyError(name)

    monkeypatch.setattr(sharing.pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(sharing.pwd, "getpwall", lambda: [])
    monkeypatch.setattr(sharing.grp, "getgrall", lambda: [])
    monkeypatch.setattr(sharing.grp, "getgrnam", getgrnam)
    monkeypatch.setattr(sharing.grp, "getgrgid", lambda gid: groups[gid])
    monkeypatch.setattr(sharing.os, "getgrouplist", lambda user, gid: [gid, 6000] if user == "dave" else [gid])
    directory = UnixDirectory()
    assert directory.groups_of("dave") == ["dave", "vislab"]
    assert directory.members_of("vislab") == ["dave", "erin"]
