"""A crowd's connections wait for a busy service instead of being dropped.

The kernel holds a listening socket's connections until the service accepts them, up to its backlog. At Tornado's
default of 128, a class of 200 asking at once lost connections: past the backlog a TCP SYN is dropped (the client
waits out TCP's 1 s retry) and a connect to the front end's Unix socket fails with EAGAIN (Apache answers 503).
The service listens with a backlog of 1024 on both (pvhpc/app.py's LISTEN_BACKLOG).
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket

import pytest

CROWD = 300   # more than the 128 (+1) a default backlog holds
HEADER_AUTH = {"kind": "header", "staff": ["carol"]}


@pytest.mark.cluster
def test_a_crowd_connecting_to_a_busy_service_is_held_not_dropped(service_factory):
    svc = service_factory(auth=HEADER_AUTH).start()
    unix, tcp = [], []
    os.kill(svc.proc.pid, signal.SIGSTOP)   # busy: it accepts nothing while the crowd connects
    try:
        for _ in range(CROWD):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            unix.append(s)
            s.setblocking(False)
            s.connect(str(svc.frontend_socket))   # BlockingIOError (EAGAIN) once the socket's backlog is full
        for _ in range(CROWD):
            s = socket.socket()
            tcp.append(s)
            s.setblocking(False)
            assert s.connect_ex(("127.0.0.1", svc.port)) in (0, errno.EINPROGRESS)
        # A connection the kernel holds has its handshake done: writable, with no error. Past the backlog its SYN
        # was dropped: not writable yet. (A selector, not select(): these descriptors may be past 1024.)
        held = set()
        with selectors.DefaultSelector() as selector:
            for s in tcp:
                selector.register(s, selectors.EVENT_WRITE)
            for _ in range(20):
                for key, _ in selector.select(0.1):
                    assert key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                    held.add(key.fileobj)
                    selector.unregister(key.fileobj)
                if len(held) == CROWD:
                    break
        assert len(held) == CROWD, f"{CROWD - len(held)} of {CROWD} TCP connections were not taken in"
    finally:
        os.kill(svc.proc.pid, signal.SIGCONT)
        for s in unix + tcp:
            s.close()
    # Once it runs again, it answers as ever.
    assert svc.user_client("alice").list() == []
