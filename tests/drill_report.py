"""A pytest plugin for fault drills: one row of results per drill, a table after the run, and files to keep.

A drill asks for the ``drill_record`` fixture and calls it with what it found,
as often as it learns more (later values replace earlier ones)::

    drill_record(drill="slurmctld down for 60 s", sessions=9, recovery="every session back to Slurm's state")
    ...
    drill_record(lost=0, orphaned=0, recover_s=4.2)

``sessions`` is how many sessions the drill involved, ``lost`` how many of them
ended wrongly or vanished, ``orphaned`` how many pvhpc jobs Slurm still runs or
queues without a live session, ``recover_s`` the seconds from the fault's end
(or from Slurm knowing) to the state the drill calls recovered,
``recovery`` says in words what that state is, and ``bound_s`` is the most
``recover_s`` may be when the drill asserts a bound. Values the drill did not reach
(it failed first) stay empty. The test's docstring says what the drill does.

At the end of the run the rows are printed in pytest's terminal summary and
written to ``test-artifacts/drills/`` as ``drills.md`` and ``drills.json``
(bench/drill_report.py turns the JSON into docs/drills.md and a plot). Tests
that use the fixture are marked ``drill``: ``pytest -m drill`` runs every drill.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pytest

REPORT_DIR = Path(__file__).resolve().parent.parent / "test-artifacts" / "drills"
REPORT_JSON = REPORT_DIR / "drills.json"
REPORT_MD = REPORT_DIR / "drills.md"
COLUMNS = ("drill", "sessions involved", "sessions lost", "jobs orphaned", "time to recover", "result")

_rows_key = pytest.StashKey[list]()
_reports_key = pytest.StashKey[dict]()


@dataclass
class DrillRow:
    test: str                         # the pytest node id
    drill: str = ""
    about: str = ""                   # what the drill does: the test's docstring
    sessions: int | None = None
    lost: int | None = None
    orphaned: int | None = None
    recover_s: float | None = None
    recovery: str = ""                # what "recovered" means for this drill
    bound_s: float | None = None      # the most recover_s may be, when the drill asserts a bound
    notes: list[str] = field(default_factory=list)
    result: str = "not run"           # passed, failed, xfailed, skipped
    seconds: float | None = None      # how long the whole test took

    def cells(self) -> list[str]:
        def number(value) -> str:
            return "?" if value is None else str(value)

        recover = "—" if self.recover_s is None else f"{self.recover_s:.1f} s"
        return [self.drill or self.test, number(self.sessions), number(self.lost), number(self.orphaned), recover,
                self.result]


def markdown_table(rows: list[DrillRow]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def text_table(rows: list[DrillRow]) -> list[str]:
    table = [list(COLUMNS)] + [row.cells() for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    out = []
    for n, r in enumerate(table):
        out.append("  ".join(c.ljust(w) if i == 0 or i == len(r) - 1 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


class DrillRecorder:
    """What ``drill_record`` gives a test: call it with any of DrillRow's fields; ``note`` adds a line."""

    def __init__(self, row: DrillRow):
        self.row = row

    def __call__(self, note: str | None = None, **values) -> DrillRow:
        for key, value in values.items():
            if key in ("test", "notes", "result", "seconds") or not hasattr(self.row, key):
                raise TypeError(f"drill_record: no field {key!r}")
            setattr(self.row, key, value)
        if note:
            self.row.notes.append(note)
        return self.row


def _result(reports: dict) -> str:
    for phase in ("setup", "call"):
        report = reports.get(phase)
        if report is None:
            continue
        if hasattr(report, "wasxfail"):
            return "xfailed" if report.skipped else "xpassed"
        if report.failed:
            return "failed"
        if report.skipped:
            return "skipped"
    return "passed" if "call" in reports else "not run"


@pytest.fixture
def drill_record(request) -> DrillRecorder:
    """Record this drill's row of the results table (see tests/drill_report.py)."""
    doc = " ".join((request.node.function.__doc__ or "").split())
    row = DrillRow(test=request.node.nodeid, about=doc)
    started = time.monotonic()
    yield DrillRecorder(row)
    row.seconds = round(time.monotonic() - started, 1)
    row.result = _result(request.node.stash.get(_reports_key, {}))
    request.config.stash[_rows_key].append(row)


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "drill: a fault drill that records a row of the drill table (drill_record)")
    config.stash[_rows_key] = []


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if "drill_record" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.drill)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    item.stash.setdefault(_reports_key, {})[report.when] = report


def report_dir() -> Path:
    """Where this run's table goes: a run on a Slurm chosen by name (tests/run.sh's second run, on 22.05) keeps
    its own, beside the default run's."""
    from tests.harness.cluster import SLURM_VARIABLE

    chosen = os.environ.get(SLURM_VARIABLE, "")
    return REPORT_DIR.with_name(f"drills-slurm-{re.sub(r'[^A-Za-z0-9.]+', '-', chosen).strip('-')}") if chosen \
        else REPORT_DIR


def pytest_sessionfinish(session) -> None:
    rows = session.config.stash.get(_rows_key, [])
    if not rows:
        return
    directory = report_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / REPORT_JSON.name).write_text(json.dumps({
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "slurm": _slurm_release(),
        "columns": list(COLUMNS),
        "rows": [asdict(r) for r in rows],
    }, indent=2) + "\n")
    (directory / REPORT_MD.name).write_text(f"# Fault drills (Slurm {_slurm_release()})\n\n" + markdown_table(rows))


def _slurm_release() -> str:
    from tests import backends

    try:
        return str(backends.cluster_slurm().version)
    except Exception as e:   # the report is still written without it
        return f"unknown ({e})"


def pytest_terminal_summary(terminalreporter, config) -> None:
    rows = config.stash.get(_rows_key, [])
    if not rows:
        return
    terminalreporter.section("fault drills")
    for line in text_table(rows):
        terminalreporter.write_line(line)
    for row in rows:
        for note in row.notes:
            terminalreporter.write_line(f"  {row.drill or row.test}: {note}")
    written = report_dir() / REPORT_MD.name
    terminalreporter.write_line(f"(written to {written.relative_to(REPORT_DIR.parent.parent)} and .json)")
