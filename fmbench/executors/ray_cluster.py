"""The ray executor: one Ray task per work unit.

With ``address`` it joins a running cluster (``"auto"`` on a cluster node, ``"ray://host:10001"``
through Ray Client); without, it starts a local Ray instance with ``local_cpus`` CPUs (0 = all)
and shuts it down when the run ends. When Ray is already initialised in this process it uses that
instance and leaves it running. Each unit is a task asking for ``num_cpus`` CPUs (its torch thread
count) and ``num_gpus`` GPUs; outcomes are yielded as tasks finish (``ray.wait``). The task
writes the unit's case files into the results folder itself, so the results folder and the model
cache must be on a file system every node sees.

Failures: a case that fails inside the task is a failed row, as everywhere. A task whose worker
dies (out of memory, a crash in native code, a lost node) is retried by Ray once; when it dies
again its unit's cases are recorded as failed with the reason and the suite goes on. A
StorageError inside a task stops the run; unfinished tasks are cancelled.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from fmbench.executors import ExecutorDef, OnEvent, missing_extra
from fmbench.plan import WorkUnit
from fmbench.results import MAX_DEATHS, RunError
from fmbench.score import describe
from fmbench.storage import StorageError
from fmbench.validation import Range, check_ranges, one_line
from fmbench.work import UnitEvent, UnitJob, UnitOutcome, run_keeping_warnings

NAME = "ray"


@dataclass(frozen=True)
class RayOptions:
    address: str = ""  # an existing cluster ("auto", "ray://host:10001"); "" = start a local one
    num_cpus: float = 1.0  # per unit
    num_gpus: float = 0.0  # per unit
    local_cpus: int = 0  # CPUs of a local instance (0 = all)

    def __post_init__(self):
        check_ranges(self, {"num_cpus": Range(0, lo_open=True), "num_gpus": Range(0),
                            "local_cpus": Range(0)})


def _import_ray():
    try:
        import ray
    except ImportError:
        raise missing_extra("ray", "ray") from None
    return ray


def run_unit_task(job: UnitJob, unit: WorkUnit, threads: int) -> UnitOutcome:
    """The body of a unit's Ray task (a Ray worker is reused by later tasks: set its threads)."""
    import torch

    torch.set_num_threads(threads)
    return run_keeping_warnings(job, unit)


class RayExecutor:
    def __init__(self, options: RayOptions):
        _import_ray()
        self.options = options

    def describe(self, suite=None) -> str:
        o = self.options
        where = (f"cluster {o.address}" if o.address else
                 f"a local instance ({o.local_cpus or 'all'} CPUs)")
        return f"ray on {where}: per unit {o.num_cpus:g} CPU(s), {o.num_gpus:g} GPU(s)"

    def _init(self, ray) -> bool:
        """Connect to (or start) Ray unless it is initialised; whether this call started it."""
        if ray.is_initialized():
            return False
        o = self.options
        kwargs: dict = {"include_dashboard": False, "log_to_driver": False,
                        "logging_level": logging.WARNING}
        if o.address:
            kwargs["address"] = o.address
        elif o.local_cpus:
            kwargs["num_cpus"] = o.local_cpus
        try:
            ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RunError(f"ray could not start or reach "
                           f"{o.address or 'a local instance'}: {describe(e)}") from None
        return True

    def run(self, job: UnitJob, units: list[WorkUnit], on_event: OnEvent
            ) -> Iterator[UnitOutcome]:
        if not units:
            return
        ray = _import_ray()
        o = self.options
        started = self._init(ray)
        pending: dict = {}
        try:
            task = ray.remote(num_cpus=o.num_cpus, num_gpus=o.num_gpus,
                              max_retries=MAX_DEATHS - 1)(run_unit_task)
            shared = ray.put(job)  # the suite is shipped once, not once per unit
            threads = max(1, int(o.num_cpus))
            for unit in units:
                ref = task.remote(shared, unit, threads)
                pending[ref] = unit
                on_event(UnitEvent(unit.key, "started", info=f"ray task {ref.task_id().hex()}"))
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    yield _outcome(ray, job, ref, pending.pop(ref))
        finally:
            for ref in pending:  # the run stopped (StorageError, Ctrl-C): no orphan tasks
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            if started:
                ray.shutdown()


def _outcome(ray, job: UnitJob, ref, unit: WorkUnit) -> UnitOutcome:
    """The finished task's outcome; its unit's cases failed when the task brought none back."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # raised inside the task
        cause = getattr(e, "cause", None) or e
        if isinstance(cause, StorageError):
            raise cause from None
        return job.fail(unit, f"its Ray task failed: {describe(cause, 300)}; --resume "
                              "retries it")
    except ray.exceptions.RayError as e:  # the worker died, the node was lost, out of memory
        lines = str(e).strip().splitlines()
        return job.fail(unit, f"its Ray task was lost ({type(e).__name__}"
                              + (f": {one_line(lines[0], 200)}" if lines else "")
                              + "; killed for memory? a crash in native code? a lost node?); "
                                "--resume retries it")


def _make(options: RayOptions) -> RayExecutor:
    return RayExecutor(options)


DEFINITION = ExecutorDef(RayOptions, _make, "ray", "Ray tasks on a cluster or a local instance")
