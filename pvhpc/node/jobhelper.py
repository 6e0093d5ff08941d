"""Helper that a session's job script runs on the compute node (standard library only).

    python3 jobhelper.py wait-ready --file F --pid P --timeout T
        Wait until the server wrote its port to F; print it. Exit 1 if process P
        died first, 2 on timeout.
    python3 jobhelper.py report --url U --event ready --host H --port N
    python3 jobhelper.py report --url U --event failed --reason TEXT
    python3 jobhelper.py report --url U --event exited --code N [--cause client|idle]
    python3 jobhelper.py handover [--timeout T]
        A continued session's successor job (pvhpc/sessions/continuation.py): ask pvhpc, with the job's report
        token, until the job it takes over from has saved its ParaView state; print that state's path (an empty
        line: none). Exit 1 if pvhpc refuses (the session ended, a wrong token), 2 on timeout.
        Tell pvhpc about the session, authenticated by the per-session token in
        the environment variable PVHPC_REPORT_TOKEN. Retries with back-off, since
        pvhpc may be restarting. --url may hold several URLs separated by spaces
        (one per pvhpc instance sharing a database): each attempt tries them in
        order. Without --url they come from PVHPC_REPORT_URL, as the job script
        gives them: they name the session, and a command line is every user's
        to read. With neither it only prints the report line, which stays in the
        job's output as a record.

It runs under the node's own Python, not pvhpc's, so it imports nothing else.
"""

import argparse
import json
import os
import socket
import sys
import time

# urllib.request (with http.client, ssl and email under it) is most of this file's import time: it is imported
# when first needed (post, preload), so that the supervisor starts the server before paying for it.

READY_PREFIX = "PVHPC_READY"
REPORT_URL_ENV = "PVHPC_REPORT_URL"


def pid_alive(pid):
    """Whether ``pid`` runs: a zombie still answers kill(0), so its state is read too. (The local cluster
    uses this one as well: this module imports nothing, so the service may import it.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_ready(path, pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                port = f.read().strip()
            if port.isdigit():
                print(port)
                return 0
        except FileNotFoundError:
            pass
        if not pid_alive(pid):
            return 1
        time.sleep(0.05)
    return 2


def preload():
    """Import what a report needs now, ahead of the first one (the supervisor does, while the server starts)."""
    import urllib.error    # noqa: F401
    import urllib.request  # noqa: F401


def post(url, body, token):
    """POST one report; None when taken, else why not and whether another try could help."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"token {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
        return None
    except urllib.error.HTTPError as e:
        # 4xx: pvhpc refused this report (wrong token, session over); retrying will not help.
        final = 400 <= e.code < 500
        return (f"HTTP {e.code} {e.read()[:200]!r}" if final else f"HTTP {e.code}"), final
    except (urllib.error.URLError, OSError) as e:
        return str(e), False


def report(urls, payload, token, give_up_after):
    body = json.dumps(payload).encode()
    delay = 0.2
    deadline = time.monotonic() + give_up_after
    error = "no attempt made"
    while True:
        for url in urls:
            if time.monotonic() > deadline:
                break
            failure = post(url, body, token)
            if failure is None:
                return 0
            error, final = failure
            if final:
                # Every instance reads the same database: one refusal is everyone's.
                print(f"pvhpc refused the report: {error}", file=sys.stderr)
                return 1
        if time.monotonic() + delay > deadline:
            print(f"could not report to pvhpc: {error}", file=sys.stderr)
            return 1
        time.sleep(delay)
        delay = min(delay * 2, 5.0)


# Why a server stopped by itself: its client asked, none came for its timeout, or nobody used it (input_idle.py).
EXIT_CAUSES = ("client", "idle", "input_idle")


def send(url, event, give_up_after, *, code=0, cause="", host="", port=0, reason="", seconds_left=0):
    """Print the report line (it stays in the job's output as a record) and send it to pvhpc (without url, only print)."""
    payload = {
        "event": event,
        "job_id": os.environ.get("SLURM_JOB_ID", ""),
        "node": os.environ.get("SLURMD_NODENAME", ""),
    }
    if event == "ready":
        payload.update(host=host or socket.gethostname(), port=port)
        # at=: when the report leaves the node, so the delay to "client told ready" can be measured.
        print(f"{READY_PREFIX} host={payload['host']} port={port} node={payload['node']} at={time.time():.3f}",
              flush=True)
    elif event == "exited":
        payload["code"] = code
        if cause:
            payload["cause"] = cause
        print(f"PVHPC_EXITED code={code}" + (f" cause={cause}" if cause else ""), flush=True)
    elif event == "idle_warning":
        payload["seconds_left"] = int(seconds_left)
        print(f"PVHPC_IDLE_WARNING seconds_left={int(seconds_left)}", flush=True)
    else:
        payload["reason"] = reason[:2000]
        print(f"PVHPC_FAILED {payload['reason']}", flush=True)
    if not url:
        return 0
    token = os.environ.get("PVHPC_REPORT_TOKEN", "")
    return report(url.split(), payload, token, give_up_after)


def handover_urls(report_urls):
    """The handover URL beside each report URL (``.../sessions/<id>/report`` -> ``.../sessions/<id>/handover``)."""
    return [u[: -len("/report")] + "/handover" if u.endswith("/report") else u for u in report_urls.split()]


def get_json(url, token):
    """GET ``url`` with the report token: (answer, None), or (None, (why, final))."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}"), None
    except urllib.error.HTTPError as e:
        return None, (f"HTTP {e.code} {e.read()[:200]!r}", 400 <= e.code < 500)
    except (urllib.error.URLError, OSError, ValueError) as e:
        return None, (str(e), False)


def handover(report_urls, timeout, interval=1.0):
    """Wait for the handover (see the module's help); print the state's path."""
    token = os.environ.get("PVHPC_REPORT_TOKEN", "")
    urls = handover_urls(report_urls)
    deadline = time.monotonic() + timeout
    error = "no attempt made"
    while time.monotonic() < deadline:
        for url in urls:
            answer, failure = get_json(url, token)
            if failure is not None:
                error, final = failure
                if final:
                    print(f"pvhpc refused the handover: {error}", file=sys.stderr)
                    return 1
                continue
            if isinstance(answer, dict) and not answer.get("wait") and "state" in answer:
                print(answer["state"] or "")
                return 0
            break   # told to wait: the other instances would say the same
        time.sleep(interval)
    print(f"no handover within {timeout:.0f} s: {error}", file=sys.stderr)
    return 2


def main(argv=None):
    parser = argparse.ArgumentParser(prog="jobhelper")
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("wait-ready")
    w.add_argument("--file", required=True)
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--timeout", type=float, default=300)
    r = sub.add_parser("report")
    r.add_argument("--url", default=os.environ.get(REPORT_URL_ENV, ""))
    r.add_argument("--event", choices=("ready", "failed", "exited"), required=True)
    r.add_argument("--code", type=int, default=0, help="with exited: the server's exit status")
    r.add_argument("--cause", choices=EXIT_CAUSES, default="", help="with exited: why the server stopped by itself")
    r.add_argument("--host", default="")
    r.add_argument("--port", type=int, default=0)
    r.add_argument("--reason", default="")
    r.add_argument("--give-up-after", type=float, default=300)
    h = sub.add_parser("handover")
    h.add_argument("--url", default=os.environ.get(REPORT_URL_ENV, ""))
    h.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)

    if args.command == "handover":
        return handover(args.url, args.timeout)

    if args.command == "wait-ready":
        return wait_ready(args.file, args.pid, args.timeout)
    return send(args.url, args.event, args.give_up_after, code=args.code, cause=args.cause, host=args.host,
                port=args.port, reason=args.reason)


if __name__ == "__main__":
    sys.exit(main())
