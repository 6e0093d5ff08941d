"""The scheduler backends against the real cluster, and the pieces of their parsing."""

from __future__ import annotations

import pytest

from pvhpc.scheduler import JobRequest, SchedulerUnavailable, make_scheduler
from pvhpc.scheduler.slurm_cli import _gres_gpus, comma_lists, parse_squeue

from tests.helpers import run


def test_parse_squeue_and_gres():
    jobs = parse_squeue("12|PENDING|Resources||2026-11-25T21:00:00|pvhpc-a\n13|RUNNING|None|gpu01|2026-11-25T20:00:00|x\n")
    assert jobs[0].expected_start is not None and jobs[0].reason == "Resources" and jobs[0].is_pending
    assert jobs[1].expected_start is None and jobs[1].reason == "" and jobs[1].is_running
    assert _gres_gpus("gpu:a100:2,foo:1") == [("a100", 2)]
    assert _gres_gpus("gpu:a100:1(IDX:0),gpu:v100:2(IDX:0-1)") == [("a100", 1), ("v100", 2)]
    assert _gres_gpus("(null)") == []


def test_comma_lists_stay_under_the_argument_limit_and_keep_every_item():
    items = [str(1_000_000 + i) for i in range(40_000)]
    lists = comma_lists(items)
    assert len(lists) == 4 and all(len(part) <= 100_000 for part in lists)
    assert ",".join(lists).split(",") == items
    assert comma_lists([]) == [] and comma_lists(["7"]) == ["7"]


def test_pyslurm_backend_where_pyslurm_imports():
    try:
        import pyslurm  # noqa: F401
    except ImportError as e:
        pytest.skip(f"pyslurm cannot be imported here ({e}); it builds only against its own Slurm release, "
                    "and PyPI has none for Slurm 22.05")
    scheduler = make_scheduler("pyslurm", None)
    assert scheduler.name == "pyslurm"


def test_choosing_pyslurm_without_it_is_a_clear_error():
    try:
        import pyslurm  # noqa: F401
        pytest.skip("pyslurm is importable here")
    except ImportError:
        pass
    from pvhpc.scheduler.pyslurm_backend import PySlurmUnavailable

    with pytest.raises(PySlurmUnavailable, match="scheduler.backend 'pyslurm' needs the pyslurm module"):
        make_scheduler("pyslurm", None)


@pytest.mark.cluster
def test_slurm_cli_against_the_real_cluster(slurm, tmp_path):
    parts = {p.name: p for p in run(slurm.partitions())}
    assert parts["gpu"].gpu_types == {"a100": 2} and parts["gpu"].gpus_total == 4
    assert parts["gpu"].max_time_minutes == 480 and parts["cpu"].gpus_total == 0
    job_id = run(slurm.submit(JobRequest(script="#!/bin/bash\nsleep 60\n", name="pvhpc-backend-test",
                                         partition="cpu", time_limit_minutes=5, output=str(tmp_path / "o"))))
    before = dict(slurm.calls)
    # One squeue for any number of ids, unknown ones silently left out; a lone unknown id is "not there".
    assert set(run(slurm.query([job_id, "999999"]))) == {job_id}
    assert run(slurm.query(["999999"])) == {}
    assert slurm.calls["squeue"] - before.get("squeue", 0) == 2
    # 30,000 ids do not fit one argument (Linux's 128 KiB): they go in parts, and the job is still found.
    many = [str(10_000_000 + i) for i in range(30_000)] + [job_id]
    assert set(run(slurm.query(many))) == {job_id}
    assert slurm.calls["squeue"] - before.get("squeue", 0) == 2 + len(comma_lists(many)) == 5
    assert run(slurm.find_by_name(["pvhpc-backend-test"]))["pvhpc-backend-test"].job_id == job_id
    assert run(slurm.lookup_finished(job_id)) is None   # no accounting on this cluster: no second record
    run(slurm.cancel(job_id))
    run(slurm.cancel(job_id))   # again: still fine
    from pvhpc.scheduler import SubmitRefused

    with pytest.raises(SubmitRefused, match="invalid partition"):
        run(slurm.submit(JobRequest(script="#!/bin/bash\n", name="x", partition="nope", time_limit_minutes=1,
                                    output=str(tmp_path / "o"))))


def test_unreachable_controller_is_unavailable_not_gone(tmp_path):
    from pvhpc.scheduler.runners import LocalRunner
    from pvhpc.scheduler.slurm_cli import SlurmCLI

    # A slurm.conf naming a controller nobody runs: the tools fail to connect.
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=x\nSlurmctldHost=localhost\nSlurmctldPort=1\nAuthType=auth/none\n"
                    "CredType=cred/none\nMessageTimeout=2\nNodeName=n1 State=UNKNOWN\nPartitionName=p Nodes=n1\n")
    slurm = SlurmCLI(LocalRunner({"SLURM_CONF": str(conf)}), timeout=30)
    with pytest.raises(SchedulerUnavailable):
        run(slurm.query(["1", "2"]))
    # sbatch that never connected: certainly nothing queued, so the service can answer at once.
    from pvhpc.scheduler import ControllerDown

    with pytest.raises(ControllerDown, match="connect failure"):
        run(slurm.submit(JobRequest(script="#!/bin/bash\n", name="x", partition="p", time_limit_minutes=1,
                                    output=str(tmp_path / "o"))))
