"""Walltimes as Slurm writes them, to and from whole minutes."""

from __future__ import annotations

import re

_SLURM_TIME = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?$")


def parse_minutes(text: str | int) -> int | None:
    """Slurm's time formats to minutes (seconds round up). None for UNLIMITED.

    'MM', 'MM:SS', 'HH:MM:SS', 'D-HH', 'D-HH:MM', 'D-HH:MM:SS'. Raises ValueError otherwise.
    """
    if isinstance(text, bool):
        raise ValueError("a walltime, not true/false")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a negative walltime")
        return text
    text = str(text).strip()
    if text.upper() in ("UNLIMITED", "INFINITE"):
        return None
    m = _SLURM_TIME.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a walltime (minutes, HH:MM:SS or D-HH:MM:SS)")
    days, a, b, c = m.groups()
    a, b, c = int(a), int(b or 0), int(c or 0)
    if days is not None:
        hours, minutes, seconds = a, b, c
    elif m.group(4) is not None:
        hours, minutes, seconds = a, b, c
    elif m.group(3) is not None:
        hours, minutes, seconds = 0, a, b
    else:
        hours, minutes, seconds = 0, a, 0
    if minutes >= 60 and (days is not None or m.group(4) is not None) or seconds >= 60:
        raise ValueError(f"{text!r} is not a walltime: minutes and seconds must be under 60")
    return int(days or 0) * 1440 + hours * 60 + minutes + (1 if seconds else 0)


def format_minutes(minutes: int) -> str:
    days, rest = divmod(minutes, 1440)
    hours, mins = divmod(rest, 60)
    return f"{days}-{hours:02d}:{mins:02d}:00" if days else f"{hours:02d}:{mins:02d}:00"
