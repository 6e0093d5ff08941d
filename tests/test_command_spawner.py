"""The command spawner (pvhpc/scheduler/spawner.py) and the service's side of it (spawner_client.py), with real
processes: the spawner itself, and small commands of this machine (sh, sleep, cat) in place of Slurm's."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
from pathlib import Path

import pytest

from pvhpc.scheduler.runners import CommandTimedOut, CommandUnavailable, LocalRunner
from pvhpc.scheduler.spawner import MAX_REQUEST, frame, read_frame
from pvhpc.scheduler.spawner_client import SpawnerRunner


def run(coro):
    return asyncio.run(coro)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def gone_soon(pid: int, seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_commands_are_started_by_the_spawner_not_by_the_service():
    async def main():
        runner = SpawnerRunner()
        try:
            result = await runner.run(["sh", "-c", "echo $PPID"])
            return int(result.stdout), runner.pid
        finally:
            await runner.close()

    parent, spawner = run(main())
    assert spawner is not None and spawner != os.getpid()
    assert parent == spawner


def test_answers_are_the_same_as_a_local_runners():
    script = "echo out $EXTRA $LC_ALL; cat; echo complaint >&2; exit 3"

    async def both():
        spawned = SpawnerRunner({"EXTRA": "x1"})
        try:
            return (await spawned.run(["sh", "-c", script], input="the job script\n"),
                    await LocalRunner({"EXTRA": "x1"}).run(["sh", "-c", script], input="the job script\n"))
        finally:
            await spawned.close()

    spawned, local = run(both())
    assert (spawned.returncode, spawned.stdout, spawned.stderr, spawned.truncated) == \
        (local.returncode, local.stdout, local.stderr, local.truncated) == \
        (3, "out x1 C\nthe job script\n", "complaint\n", False)
    assert spawned.argv == ["sh", "-c", script] and not spawned.ok and spawned.seconds > 0


def test_a_sites_own_locale_reaches_the_command():
    async def main():
        runner = SpawnerRunner({"LC_ALL": "C.UTF-8"})
        try:
            return (await runner.run(["sh", "-c", "echo $LC_ALL"])).stdout
        finally:
            await runner.close()

    assert run(main()) == "C.UTF-8\n"


def test_output_past_what_is_wanted_is_cut_and_the_command_ended():
    async def main():
        runner = SpawnerRunner()
        try:
            return await runner.run(["seq", "1000000"], max_output=10)
        finally:
            await runner.close()

    result = run(main())
    assert result.truncated and result.stdout == "1\n2\n3\n4\n5\n"


def test_many_commands_at_once_each_get_their_own_answer():
    async def main():
        runner = SpawnerRunner()
        try:
            return await asyncio.gather(*(runner.run(["sh", "-c", f"sleep 0.0{i % 7}; echo {i}"], input=str(i))
                                          for i in range(100)))
        finally:
            await runner.close()

    assert [r.stdout for r in run(main())] == [f"{i}\n" for i in range(100)]


def test_a_command_that_cannot_run_is_unavailable_and_names_it():
    async def main():
        runner = SpawnerRunner()
        try:
            with pytest.raises(CommandUnavailable, match="cannot run /no/such/sbatch: No such file"):
                await runner.run(["/no/such/sbatch"])
            return (await runner.run(["true"])).returncode   # the spawner carries on
        finally:
            await runner.close()

    assert run(main()) == 0


def test_a_command_past_its_timeout_is_ended_with_what_it_started(tmp_path):
    pids = tmp_path / "pids"

    async def main():
        runner = SpawnerRunner()
        try:
            # 3 s: time enough on a busy machine for sh to start its child and say both pids before it is ended.
            with pytest.raises(CommandTimedOut, match="sh did not finish within 3 s"):
                await runner.run(["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"], timeout=3)
        finally:
            await runner.close()

    started = time.monotonic()
    run(main())
    assert time.monotonic() - started < 15
    said = pids.read_text().split()
    assert len(said) == 2, f"sh and its child did not both say their pids: {said}"   # all([]) would pass
    assert all(gone_soon(int(pid)) for pid in said)


def test_a_caller_that_gives_up_ends_its_command(tmp_path):
    pids = tmp_path / "pids"

    async def main():
        runner = SpawnerRunner()
        try:
            task = asyncio.ensure_future(runner.run(["sh", "-c", f"sleep 60 & echo $$ $! > {pids}; wait"]))
            while not pids.exists() or not pids.read_text().strip():
                await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            return (await runner.run(["echo", "next"])).stdout
        finally:
            await runner.close()

    assert run(main()) == "next\n"
    said = pids.read_text().split()
    assert len(said) == 2, said
    assert all(gone_soon(int(pid)) for pid in said)


def test_a_spawner_that_dies_is_could_not_ask_and_the_next_command_starts_another(tmp_path):
    started = tmp_path / "started"

    async def main():
        runner = SpawnerRunner()
        try:
            waiting = asyncio.ensure_future(runner.run(["sh", "-c", f"touch {started}; sleep 2"]))
            while not started.exists():
                await asyncio.sleep(0.02)
            first = runner.pid
            os.kill(first, signal.SIGKILL)
            with pytest.raises(CommandUnavailable, match="spawner ended before it answered"):
                await waiting
            again = await runner.run(["echo", "again"])
            return first, runner.pid, again.stdout
        finally:
            await runner.close()

    first, second, answer = run(main())
    assert answer == "again\n" and second not in (None, first)


def test_closing_lets_the_commands_under_way_answer_then_the_spawner_ends():
    async def main():
        runner = SpawnerRunner()
        under_way = asyncio.ensure_future(runner.run(["sh", "-c", "sleep 0.5; echo done"]))
        await asyncio.sleep(0.2)
        pid = runner.pid
        await runner.close()
        return pid, (await under_way).stdout

    pid, answer = run(main())
    assert answer == "done\n" and not alive(pid)


def test_commands_get_nothing_of_the_spawners_pipes_and_the_input_stays_off_command_lines():
    secret = "sbatch-script-secret-4f1c"

    async def main():
        runner = SpawnerRunner()
        try:
            # The command lists its open descriptors, then shows the spawner's own command line.
            result = await runner.run(["sh", "-c", "cat >/dev/null; ls /proc/self/fd; echo; cat /proc/$PPID/cmdline"],
                                      input=f"#!/bin/sh\nsecret={secret}\n")
            return result.stdout
        finally:
            await runner.close()

    fds, cmdline = run(main()).split("\n\n", 1)
    # 0-2, and ls's own handle on the directory: nothing the spawner listens on
    assert len(fds.split()) <= 4 and set(fds.split()) >= {"0", "1", "2"}
    assert "pvhpc.scheduler.spawner" in cmdline and secret not in cmdline


def test_frames_round_trip_and_an_oversized_one_is_refused():
    async def main():
        reader = asyncio.StreamReader()
        reader.feed_data(frame({"id": 1, "argv": ["sbatch"], "input": "é\n"}))
        reader.feed_data(b"\xff\xff\xff\xff")
        reader.feed_eof()
        first = await read_frame(reader, MAX_REQUEST)
        with pytest.raises(ValueError, match="a frame of 4294967295 bytes"):
            await read_frame(reader, MAX_REQUEST)
        empty = asyncio.StreamReader()
        empty.feed_eof()
        return first, await read_frame(empty)

    assert run(main()) == ({"id": 1, "argv": ["sbatch"], "input": "é\n"}, None)


# The first spawner's asyncio transport is collected after its loop has closed, and asyncio's own clean-up then
# complains of the closed loop (an exception it ignores): the pipe and the process are gone already.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_runner_used_again_from_another_event_loop_starts_a_spawner_there_and_lets_the_first_go():
    runner = SpawnerRunner()

    async def once():
        return (await runner.run(["echo", "hi"])).stdout, runner.pid

    first_answer, first = run(once())          # its loop is closed after this
    second_answer, second = run(once())
    assert first_answer == second_answer == "hi\n" and second != first
    assert gone_soon(first)

    async def close():
        await runner.close()

    run(close())   # the second spawner's loop is gone too: let go, not waited for
    assert gone_soon(second)
    del runner
    gc.collect()   # the transports' clean-up here, under this test's filter
