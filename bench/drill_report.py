"""Run pvhpc's fault drills on the real local cluster and write their results into docs/.

    /opt/pvhpc/venv/bin/python bench/drill_report.py               # run every drill, then write the docs
    /opt/pvhpc/venv/bin/python bench/drill_report.py --no-run      # only write, from the last run's results
    /opt/pvhpc/venv/bin/python bench/drill_report.py -- -x -v      # arguments after -- go to pytest

The drills are tests: tests/test_fault_drills.py, and any other test that records
a row of the drill table through the drill_record fixture (all are marked
``drill``, so this runs ``pytest -m drill tests``). pytest writes the rows to
test-artifacts/drills/drills.json (tests/drill_report.py); this script turns that
into docs/drills.md (the table, then a paragraph per drill: what it does and what
"recovered" means) and docs/img/drills.png (time to recover per drill).
The docs are written even when a drill fails: the table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.drill_report import COLUMNS, REPORT_JSON, DrillRow, markdown_table  # noqa: E402

DOC = ROOT / "docs" / "drills.md"
PLOT = ROOT / "docs" / "img" / "drills.png"
POLL = 1            # the drills' services poll Slurm every second

INTRO = """\
# Fault drills

What happens to sessions when a part of the system fails, tried on the real local cluster (Slurm, ParaView
under Xvfb, PostgreSQL, SQLite) by the tests in `tests/test_fault_drills.py`, `tests/test_network_drills.py` and
`tests/test_scale_out.py`. The cluster's compute nodes are hosts of their own (a network namespace, address and
host name each; the login side apart), so the network drills cut what really joins them: a node's link, or one
path from it. Every drill runs its own pvhpc services polling Slurm every {poll} s; most use the Apache front end,
whose map file is read straight from disk, the scale-out drill two services with the built-in proxy on one
PostgreSQL. The network drills time how soon the user is told and how soon nothing of a session is left on its
node once the link is back: the node's watchdog (`runtime.watchdog_interval`, 15 s) ends a session's processes
when pvhpc says it has ended, before Slurm takes the node back.
Regenerate this page with `python bench/drill_report.py` (it runs `pytest -m drill tests`).

Last run: {when}, {system}, {cpus} cores (other work may have shared them): {summary}.
"""

LEGEND = """\
- **sessions involved**: the sessions the drill made or touched (for the service kill, also those its clients
  made while it died).
- **sessions lost**: sessions that vanished, ended when they should not have, ended with the wrong reason, or whose
  job is no longer in Slurm's queue.
- **jobs orphaned**: pvhpc jobs that Slurm still queues or runs without a live session in the store that names
  them (Slurm's queue compared with the database itself): a job submitted twice for one session counts here.
- **time to recover**: from the end of the fault (or, for a job that ends, from the moment Slurm shows it) to
  the state the drill calls recovered; each drill below says what that is. A session whose job ends must end
  within two poll cycles of Slurm knowing: the drills assert 2 x {poll} s + 1 s of slack for a loaded 2-core
  machine.
"""


def run_drills(extra: list[str]) -> int:
    argv = [sys.executable, "-m", "pytest", "-m", "drill", "tests", *extra]
    print("running:", " ".join(argv[2:]), flush=True)
    return subprocess.run(argv, cwd=ROOT).returncode


def every_drill() -> set[str]:
    """The node ids of every drill pytest would run: the page must not show a partial run as the whole."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "drill", "tests"],
                         cwd=ROOT, capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines() if "::" in line}


def load_rows() -> tuple[dict, list[DrillRow]]:
    data = json.loads(REPORT_JSON.read_text())
    known = set(DrillRow.__dataclass_fields__)
    return data, [DrillRow(**{k: v for k, v in row.items() if k in known}) for row in data["rows"]]


def system() -> str:
    try:
        release = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        name = release.get("PRETTY_NAME", "").strip('"')
    except OSError:
        name = ""
    return f"{name or os.uname().sysname} {os.uname().machine}"


def summary(rows: list[DrillRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.result] = counts.get(row.result, 0) + 1
    return ", ".join(f"{n} {result}" for result, n in sorted(counts.items()))


def markdown(data: dict, rows: list[DrillRow]) -> str:
    when = datetime.fromisoformat(data["generated"]).strftime("%Y-%m-%d %H:%M UTC")
    out = [INTRO.format(poll=POLL, when=when, system=system(), cpus=os.cpu_count(), summary=summary(rows)),
           markdown_table(rows), LEGEND.format(poll=POLL),
           "![Time to recover per drill](img/drills.png)\n"]
    for row in rows:
        out.append(f"## {row.drill or row.test}\n")
        text = row.about or "(no description)"
        if row.recovery:
            text += f" **Recovered** means: {row.recovery}."
        if row.result != "passed":
            text += f" **This run: {row.result}** (`{row.test}`)."
        out.append(text + "\n")
        for note in row.notes:
            out.append(f"- This run: {note}.")
        if row.notes:
            out.append("")
    return "\n".join(out)


def plot(rows: list[DrillRow], path: Path) -> None:
    from bench.report import pyplot, save

    plt = pyplot()

    names = [textwrap.fill(row.drill or row.test, 34) for row in rows]
    values = [row.recover_s or 0.0 for row in rows]
    colors = ["#74c476" if row.result == "passed" else "#de2d26" for row in rows]
    fig, ax = plt.subplots(figsize=(9, 1.4 + 0.6 * len(rows)))
    ax.barh(names, values, color=colors, label="time to recover (red: the drill failed)")
    bounded = [(y, row.bound_s) for y, row in enumerate(rows) if row.bound_s is not None]
    if bounded:
        ax.scatter([b for _, b in bounded], [y for y, _ in bounded], marker="|", s=300, color="black",
                   label="the bound the drill asserts (two poll cycles + slack)")
    for y, row in enumerate(rows):
        label = "n/a: nothing to recover" if row.recover_s is None else f"{row.recover_s:.1f} s"
        if row.result != "passed":
            label += f" ({row.result})"
        ax.text(values[y], y, f" {label}", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(values + [b for _, b in bounded]) * 1.3 + 0.5)
    ax.set_xlabel("seconds (each drill below says from when to what)")
    ax.set_title("pvhpc fault drills: time to recover")
    ax.legend(loc="lower right", fontsize=8)
    save(fig, path, tight=False)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-run", action="store_true", help="do not run the drills; use the last results")
    parser.add_argument("pytest_args", nargs="*", help="after --: more arguments for pytest")
    args = parser.parse_args()

    status = 0
    if not args.no_run:
        started = time.time()
        status = run_drills(args.pytest_args)
        if not REPORT_JSON.exists() or REPORT_JSON.stat().st_mtime < started:
            print(f"pytest (exit {status}) wrote no drill results to {REPORT_JSON}", file=sys.stderr)
            return status or 1
    elif not REPORT_JSON.exists():
        print(f"no drill results yet ({REPORT_JSON}): run without --no-run first", file=sys.stderr)
        return 2
    data, rows = load_rows()
    assert tuple(data["columns"]) == COLUMNS, data["columns"]
    missing = every_drill() - {row.test for row in rows}
    if missing:
        print(f"the last results cover {len(rows)} drills, not these: {', '.join(sorted(missing))}; "
              "docs/drills.md left as it was (run every drill, without -k or a file list)", file=sys.stderr)
        return status or 1
    DOC.write_text(markdown(data, rows))
    plot(rows, PLOT)
    print(f"wrote {DOC.relative_to(ROOT)} and {PLOT.relative_to(ROOT)} ({summary(rows)})")
    return status


if __name__ == "__main__":
    sys.exit(main())
