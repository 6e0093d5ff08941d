"""Small helpers for tests: reading a job's output, judging a rendered image, finding leftover processes."""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

from PIL import Image


def wait_for_line(path: Path, pattern: str, timeout: float = 90, explain=None) -> re.Match:
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        m = regex.search(text)
        if m:
            return m
        time.sleep(0.2)
    extra = f"\n{explain()}" if explain else ""
    raise AssertionError(f"{pattern!r} not in {path} within {timeout} s; it holds:\n{text[-2000:]}{extra}")


def foreground_fraction(jpeg: bytes) -> float:
    """Share of pixels that differ clearly from the corner pixel (the view's background)."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    background = image.getpixel((0, 0))
    pixels = image.tobytes()
    differ = 0
    for i in range(0, len(pixels), 3):
        if sum(abs(pixels[i + k] - background[k]) for k in range(3)) > 60:
            differ += 1
    return differ / (image.width * image.height)


def processes_of_job(job_id: str) -> list[str]:
    """Processes started inside a Slurm job, found by SLURM_JOB_ID in their environment."""
    marker = f"SLURM_JOB_ID={job_id}".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in env and cmd:
            found.append(f"{pid}: {cmd}")
    return found


def wait_until(predicate, timeout: float, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"{message} not met within {timeout} s")


async def render_async(url: str, secret: str, headers: dict | None = None, source: str = "Sphere",
                       size=(320, 240)) -> bytes:
    """Connect to a session as a ParaViewWeb client does, make a source, and return one rendered JPEG."""
    from pvhpc.wslink_client import WslinkClient

    client = await WslinkClient.connect(url, secret, headers=headers)
    try:
        await client.create_source(source)
        return await client.render(size)
    finally:
        client.close()


def render(url: str, secret: str, headers: dict | None = None, source: str = "Sphere") -> bytes:
    import asyncio

    return asyncio.run(render_async(url, secret, headers, source))
