"""The node's side of a session's end: asks pvhpc whether the session is still live, and says when to stop.

pvhpc ends a session's job through Slurm. When Slurm cannot reach the node (its link was cut while pvhpc ended
the session as a node failure, say), the job's processes live on until Slurm takes the node back, which may be
minutes after the link returns. So the supervisor (supervisor.py; for a parallel session, parallel.py) runs this
beside the server: every ``runtime.watchdog_interval`` seconds it asks pvhpc, at the job's callback URLs in turn,
with the job's report token (``GET .../report``: pvhpc/web/api.py), and tells its caller to stop the server when

- pvhpc says the session has ended (or knows no such session: a refusal of the token is every instance's, as
  they share one database);
- no callback URL has answered for longer than ``runtime.watchdog_grace`` seconds (0: never for that): a node
  cut off from pvhpc that long has had its session ended by pvhpc already, as a node failure.

While the session is shared (share_gate.py) the answer also lists the grants that stand, which it writes to the
server's grants file; it then asks at once when the server asks it to (a sharee's hello), and every FAST_ASK
seconds while a sharee is connected, so a revoke reaches the sharee's connection within seconds.

A failed ask only counts towards the grace, so a short blip never ends a live session. Any answer from pvhpc
counts as reaching it, even one without a verdict (a busy database's 503, an older pvhpc's 404), except 502
and 504, which a gateway gives when it could not reach pvhpc. Standard library only, beside supervisor.py; it
imports nothing from pvhpc. What it prints goes to the job's log: no URL (they name the session), only hosts.
"""

import http.client
import json
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

WATCHDOG_ENV = "PVHPC_WATCHDOG"   # INTERVAL:GRACE in seconds, from the job script; empty: no watchdog
LIVE, ENDED, NO_VERDICT, UNREACHED = "live", "ended", "no verdict", "unreached"
GATEWAY_FAILURES = (502, 504)     # a proxy in front of pvhpc could not reach it: pvhpc did not answer
LONGEST_ASK = 10.0                # seconds one callback URL may take to answer
LONGEST_ANSWER = 65536            # bytes read of an answer: a verdict is a few dozen, a shared session's grants more
FAST_ASK = 2.0                    # seconds between asks while a sharee is connected (a revoke cuts within 5 s)
TICK = 0.25                       # seconds between looks at the server's ask file


class Answer:
    """What one round of asks found: ``kind`` (LIVE, ENDED, NO_VERDICT, UNREACHED) and words for the log."""

    def __init__(self, kind, words="", grants=None):
        self.kind, self.words, self.grants = kind, words, grants   # grants: {grant id: role}, None if not said

    def __repr__(self):
        return f"Answer({self.kind!r}, {self.words!r})"


def settings(text):
    """(interval, grace) from PVHPC_WATCHDOG's ``INTERVAL:GRACE``; None when empty, or the interval is 0."""
    if not text:
        return None
    interval, sep, grace = text.partition(":")
    try:
        interval, grace = float(interval), float(grace or 0)
    except ValueError:
        interval = grace = -1.0
    if not sep or interval < 0 or grace < 0:
        raise ValueError(f"{WATCHDOG_ENV}={text!r} is not INTERVAL:GRACE in seconds")
    return (interval, grace) if interval > 0 else None


def where(url):
    """The host and port of a callback URL: what the log may say of it (its path names the session, and a
    user:password before the host is a secret)."""
    return urllib.parse.urlsplit(url).netloc.rpartition("@")[2] or "(no host)"


def pvhpcs_error(answer):
    """Whether an error answer is pvhpc's own ({"error": ...}): a proxy or firewall before it may say 403 too, and
    that must not end every session behind it."""
    try:
        said = json.loads(answer.read(LONGEST_ANSWER))
    except (ValueError, OSError, http.client.HTTPException):
        return False
    return isinstance(said, dict) and isinstance(said.get("error"), str)


def ask(urls, token, timeout):
    """Whether pvhpc holds the session live, asked at each URL in order until one answers."""
    unreached = []
    for url in urls:
        request = urllib.request.Request(url, method="GET", headers={"Authorization": f"token {token}",
                                                                     "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body = response.read(LONGEST_ANSWER)
        except urllib.error.HTTPError as e:
            if e.code == 403 and pvhpcs_error(e):
                return Answer(ENDED, "pvhpc knows no session with this job's token (HTTP 403)")
            if e.code in GATEWAY_FAILURES:
                unreached.append(f"{where(url)}: HTTP {e.code}")
                continue
            return Answer(NO_VERDICT, f"{where(url)} answered HTTP {e.code}")
        except (OSError, http.client.HTTPException) as e:
            # Not HTTP at all (something else on that port, a connection cut mid-answer) is no answer from pvhpc
            # either; an exception let out here would end the watchdog's thread, and the watch with it.
            why = getattr(e, "reason", e)
            unreached.append(f"{where(url)}: {str(why) or type(why).__name__}")
            continue
        try:
            verdict = json.loads(body)
        except ValueError:
            verdict = None
        live = verdict.get("live") if isinstance(verdict, dict) else None
        if live is True:
            grants = verdict.get("grants")
            return Answer(LIVE, grants={str(k): str(v) for k, v in grants.items()} if isinstance(grants, dict)
                          else None)
        if live is False:
            reason = str(verdict.get("end_reason") or "no reason given")[:100]
            return Answer(ENDED, f"pvhpc says this session has ended ({reason})")
        return Answer(NO_VERDICT, f"{where(url)} answered without saying whether the session is live")
    return Answer(UNREACHED, "; ".join(unreached) or "no callback URL")


class Watch:
    """What the answers so far mean (no clock or network of its own: the caller gives both).

    ``judge`` returns whether to stop the server and what to say in the job's log ("" for nothing): once when
    pvhpc stops answering, once when it answers again, once for each new kind of answer without a verdict.
    """

    def __init__(self, grace, now):
        self.grace = grace
        self.last_answered = now   # the job got its URLs from a pvhpc that ran: silence counts from the start
        self.silent = False
        self.unclear = ""

    def judge(self, answer, now):
        if answer.kind == ENDED:
            return True, f"{answer.words}: stopping the session's server"
        if answer.kind == UNREACHED:
            silence = now - self.last_answered
            if self.grace and silence > self.grace:
                return True, (f"pvhpc has not answered for {math.ceil(silence)} s ({answer.words}), longer than "
                              f"runtime.watchdog_grace ({self.grace:g} s): stopping the session's server")
            if self.silent:
                return False, ""
            self.silent = True
            return False, f"cannot reach pvhpc ({answer.words}); " + (
                f"the session's server is stopped if this lasts {self.grace:g} s (runtime.watchdog_grace)"
                if self.grace else "the session's server is kept however long this lasts (runtime.watchdog_grace "
                                   "is 0)")
        said = []
        if self.silent:
            said.append(f"pvhpc answers again, after {now - self.last_answered:.0f} s")
        self.last_answered, self.silent = now, False
        if answer.kind == NO_VERDICT and answer.words != self.unclear:
            said.append(f"{answer.words}; the watchdog keeps asking")
        self.unclear = answer.words if answer.kind == NO_VERDICT else ""
        return False, "; ".join(said)


class Watchdog(threading.Thread):
    """Asks every ``interval`` seconds until ``close`` or a reason to stop, which it gives to ``on_end`` (from
    this thread): the caller stops the server as it would on SIGTERM. ``ask``, ``clock`` and ``say`` are the
    network, the clock and the job's log; tests give their own."""

    def __init__(self, urls, token, interval, grace, on_end, ask=ask, clock=time.monotonic, say=None,
                 shares=None, wall=time.time):
        super().__init__(name="pvhpc-watchdog", daemon=True)
        self.urls, self.token, self.interval = list(urls), token, interval
        self.on_end, self.ask, self.clock, self.wall = on_end, ask, clock, wall
        self.say = say or (lambda line: print(f"pvhpc: {line}", flush=True))
        self.timeout = min(LONGEST_ASK, max(1.0, interval))
        self.watch = Watch(grace, clock())
        self.closed = threading.Event()
        self.shares = shares   # (grants file, ask file) of the server's share gate, or None
        self.last_ask = clock()
        self.answered_ask = 0.0   # the server's latest ask (its wall clock) that an ask of ours followed

    def due(self):
        """Whether to ask now: the interval is up, the server asked, or a sharee is connected and FAST_ASK is up."""
        since = self.clock() - self.last_ask
        if since >= self.interval:
            return True
        if self.shares is None:
            return False
        said = read_json(self.shares[1])
        asked = said.get("ask", 0) if isinstance(said.get("ask"), (int, float)) else 0
        if asked > self.answered_ask:
            return True
        return bool(said.get("connected")) and since >= FAST_ASK

    def asked_urls(self):
        """The URLs to ask, with the grants of the sharees connected now (ids only: nothing a key is made from) for
        the session's history; as they are without a share gate, or with nobody connected."""
        if self.shares is None:
            return self.urls
        grants = read_json(self.shares[1]).get("grants")
        if not isinstance(grants, list) or not grants:
            return self.urls
        query = urllib.parse.urlencode({"connected": ",".join(str(g) for g in grants[:50])})
        return [f"{url}{'&' if '?' in url else '?'}{query}" for url in self.urls]

    def run(self):
        # Without a share gate to serve: one ask every interval. With one: a look at its ask file every TICK.
        tick = self.interval if self.shares is None else min(TICK, self.interval)
        while not self.closed.wait(tick):
            if self.shares is not None and not self.due():
                continue
            # The gate's ask is read before this ask is stamped: an ask it writes in between is then newer than
            # what it is marked answered by (and is asked again at once), and the word written stands for every
            # ask marked answered (its asked_at is no older than any of them).
            if self.shares is not None:
                said = read_json(self.shares[1]).get("ask", 0)
                self.answered_ask = max(self.answered_ask, said if isinstance(said, (int, float)) else 0)
            self.last_ask, started = self.clock(), self.wall()
            answer = self.ask(self.asked_urls(), self.token, self.timeout)
            if answer.kind == LIVE and self.shares is not None:
                write_grants(self.shares[0], started, answer.grants or {})
            stop, said = self.watch.judge(answer, self.clock())
            if said:
                self.say(said)
            if stop and not self.closed.is_set():
                self.on_end(said)
                return

    def close(self):
        self.closed.set()


def read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_grants(path, asked_at, grants):
    """pvhpc's word on the session's grants, for the server's share gate (share_gate.py): written whole (a rename),
    0600 in the job's work directory, with when the ask began (an answer is as fresh as its question)."""
    tmp = f"{path}.part"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"asked_at": asked_at, "grants": grants}, f)
        os.replace(tmp, path)
    except OSError:
        pass


def start(url_text, token, setting, on_end, shares=None):
    """The watchdog for a job given ``url_text`` (PVHPC_REPORT_URL: space-separated) and ``setting``
    (PVHPC_WATCHDOG), started; None where there is nothing to ask (pvhpc's probe job) or it is off. ``shares``:
    the server's share gate's (grants file, ask file), where it has one."""
    urls = url_text.split()
    try:
        found = settings(setting)
    except ValueError as e:
        print(f"pvhpc: {e}; no watchdog runs", flush=True)
        return None
    if not urls or not token or found is None:
        return None
    dog = Watchdog(urls, token, found[0], found[1], on_end, shares=shares)
    dog.start()
    return dog
