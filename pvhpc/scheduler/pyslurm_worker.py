"""The process that holds pyslurm for the pyslurm backend (pyslurm_backend.py), one request at a time.

Why a process of its own, not a thread of the service: pyslurm's calls into
libslurm hold Python's GIL for as long as slurmctld takes to answer (10 s and
more when it hangs), so a worker thread would stall the service's event loop
with it; and ``import pyslurm`` ends the whole process (libslurm's "fatal")
when its slurm.conf cannot be found. Here both cost only this process.

Protocol: one JSON object per line. The worker says ``{"ok": true, "version": ...}`` once it has
imported pyslurm, then answers each request ``{"op": ..., "args": {...}}`` with ``{"ok": true,
"result": ...}`` or ``{"ok": false, "error": "what libslurm said", "kind": "rpc" | "value" | ...}``.
It exits at the end of its input, so it never outlives the service.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile


def _job(job) -> dict:
    return {
        "id": str(job.id), "state": job.state or "", "reason": job.state_reason or "", "name": job.name or "",
        "nodes": job.allocated_nodes or "", "start": job.start_time or None,
    }


def gres_strings(values: dict | None) -> list[str]:
    """pyslurm's GRES dicts as sinfo's strings: {'gpu:a100': 2} or {'gpu:a100': {'count': 2, ...}} -> ['gpu:a100:2']."""
    return [f"{name}:{v['count'] if isinstance(v, dict) else v}" for name, v in (values or {}).items()]


# Job states (as pyslurm words them) in which a job holds its nodes' GRES, as slurmctld counts them in use.
HOLDING = frozenset({"RUNNING", "COMPLETING", "SUSPENDED", "CONFIGURING"})


class Ops:
    def __init__(self, pyslurm):
        self.slurm = pyslurm
        self._accounting = None

    def submit(self, description: dict) -> str:
        # pyslurm takes ``script`` for a path when a file of that name exists, and stats it first: a script's
        # text (longer than a file name may be) fails there with ENAMETOOLONG and the whole script, secrets
        # included, in the message. A private file of its own is read back unambiguously.
        fd, path = tempfile.mkstemp(prefix="pvhpc-job-", suffix=".sh")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(description.pop("script"))
            return str(self.slurm.JobSubmitDescription(script=path, **description).submit())
        finally:
            os.unlink(path)

    def jobs(self, ids: list[str] | None = None, names: list[str] | None = None) -> list[dict]:
        # One RPC (slurm_load_jobs) whatever the number of sessions; the filtering is done here, so only
        # the sessions' jobs cross the pipe, not a whole cluster's queue.
        wanted_ids, wanted_names = set(ids or ()), set(names or ())
        out = []
        for job in self.slurm.Jobs.load().values():
            if str(job.id) in wanted_ids or (wanted_names and job.name in wanted_names):
                out.append(_job(job))
        return out

    def cancel(self, job_id: str) -> None:
        # Job.cancel() reads libslurm's errno after the call without resetting it first, so an error left
        # by an earlier call in this process would be reported again: clear it.
        if hasattr(self.slurm, "slurm_seterrno"):
            self.slurm.slurm_seterrno(0)
        self.slurm.Job(int(job_id)).cancel()

    def set_time_limit(self, job_id: str, minutes: int) -> None:
        # The slurm_update_job RPC with only a time limit set: as scontrol update JobId=.. TimeLimit=.. does.
        # An int: pyslurm passes a string of digits through unconverted, which its C field then refuses.
        changes = self.slurm.JobSubmitDescription(time_limit=int(minutes))
        self.slurm.Job(int(job_id)).modify(changes)

    def finished(self, job_id: str) -> dict | None:
        # Asked first, once: without an accounting database there is no second record (as sacct says), and
        # pyslurm 25.11's database calls would go looking for a slurmdbd that is not there.
        if self._accounting is None:
            self._accounting = self._accounting_type()
        if self._accounting in ("", "accounting_storage/none"):
            return None
        job = self.slurm.db.Job.load(int(job_id))
        # Not tried here: this project's test cluster has no slurmdbd.
        code, signal = getattr(job, "exit_code", None), getattr(job, "exit_code_signal", None)
        return {"id": str(job_id), "state": getattr(job, "state", "") or "", "reason": "",
                "name": getattr(job, "name", "") or "", "nodes": getattr(job, "nodes", "") or "", "start": None,
                "exit_code": "" if code is None else f"{code}:{signal or 0}"}

    def _accounting_type(self) -> str:
        if hasattr(self.slurm, "config"):   # pyslurm 22.5: its older interface has it (its slurmctld.Config not)
            return self.slurm.config().get().get("accounting_storage_type") or ""
        return self.slurm.slurmctld.Config.load().accounting_storage_type or ""   # pyslurm 25.11 has no config()

    def nodes(self, gres_in_use: bool = False) -> list[dict]:
        """Every node with its partitions, addresses, state, configured GRES and, with ``gres_in_use``, the GRES
        in use, as strings like sinfo's ('gpu:a100:2', 'gpu:a100:1(IDX:0)'). On 25.11 that costs one more RPC
        over every job: only the partitions' view needs it, not a report's check of its node's addresses."""
        legacy = getattr(self.slurm, "node", None)
        if legacy is not None:
            # pyslurm 22.5's Nodes.load() asks without SHOW_DETAIL, so its allocated_gres is always empty;
            # the older interface asks with it and gives the GRES in use as sinfo shows them.
            return [{"name": name, "state": n.get("state") or "", "partitions": list(n.get("partitions") or ()),
                     "address": n.get("node_addr") or "", "hostname": n.get("node_hostname") or "",
                     "gres": list(n.get("gres") or ()), "gres_used": list(n.get("gres_used") or ())}
                    for name, n in legacy().get().items()]

        used = self._gres_in_use() if gres_in_use else {}
        return [{"name": n.name, "state": n.state or "", "partitions": list(n.partitions or ()),
                 "address": n.address or "", "hostname": n.hostname or "",
                 "gres": gres_strings(n.configured_gres), "gres_used": gres_strings(used.get(n.name))}
                for n in self.slurm.Nodes.load().values()]

    def _gres_in_use(self) -> dict[str, dict[str, int]]:
        """GRES in use per node, summed over the jobs holding them (one more RPC). pyslurm 25.11's nodes do not say:
        their allocated_gres come from the node's TRES, which count GPUs only where slurm.conf's
        AccountingStorageTRES tracks gres/gpu (not Slurm's default); a job's layout names its GRES on each node."""
        used: dict[str, dict[str, int]] = {}
        for job in self.slurm.Jobs.load().values():
            if job.state not in HOLDING:
                continue
            for node, layout in job.get_resource_layout_per_node().items():
                for name, value in (layout.get("gres") or {}).items():
                    count = value["count"] if isinstance(value, dict) else value
                    used.setdefault(node, {})[name] = used.get(node, {}).get(name, 0) + int(count)
        return used

    def partitions(self) -> dict:
        parts = [{"name": p.name, "state": p.state or "", "max_time": p.max_time, "default_time": p.default_time}
                 for p in self.slurm.Partitions.load().values()]
        return {"partitions": parts, "nodes": self.nodes(gres_in_use=True)}


def main() -> int:
    # The protocol gets stdout to itself: anything else printing there (libslurm included) goes to stderr.
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)

    def say(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    try:
        import pyslurm
    except ImportError as e:
        say({"ok": False, "kind": "import", "error": str(e)})
        return 3
    say({"ok": True, "version": getattr(pyslurm, "__version__", "?")})
    ops = Ops(pyslurm)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            result = getattr(ops, request["op"])(**request.get("args", {}))
        except pyslurm.RPCError as e:
            say({"ok": False, "kind": "rpc", "error": str(e)})
        except (ValueError, TypeError) as e:
            say({"ok": False, "kind": "value", "error": str(e)})
        except Exception as e:   # any other failure is reported, and the worker stays
            say({"ok": False, "kind": type(e).__name__, "error": str(e)})
        else:
            say({"ok": True, "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
