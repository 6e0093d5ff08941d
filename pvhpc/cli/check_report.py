"""The result of a staff check (config check, doctor): what was checked, how it went, how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"
LABELS = {OK: "ok  ", FAIL: "FAIL", WARN: "warn", SKIP: "skip"}


@dataclass(frozen=True)
class Check:
    name: str        # what was checked: a config key (partitions.gpu.gpu_type) or a part (slurmctld)
    status: str      # ok, fail, warn (works, but look at it), skip (could not be checked)
    detail: str
    fix: str = ""    # what to do, when it is not ok


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.status == FAIL]


def render(checks: list[Check]) -> str:
    lines = []
    for c in checks:
        lines.append(f"{LABELS[c.status]}  {c.name}: {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"      fix: {c.fix}")
    return "\n".join(lines)


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
