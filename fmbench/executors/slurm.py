"""The slurm executor (submitit): one job-array element per work unit.

Every pending unit becomes an element of one SLURM job array (``executor.map_array``); at most
``array_parallelism`` of them run at once. Each element runs :class:`SlurmUnit`, which calls the
:class:`~fmbench.work.UnitJob` on its unit: the job writes the unit's case files into the
results folder itself (the folder and the model cache must be on a file system the compute nodes
share), and the coordinator yields each unit's outcome as its job finishes.

Preemption and time limits: SLURM signals a job (USR2, ``signal_delay_s`` before its limit, or
when it is preempted); submitit then calls :meth:`SlurmUnit.checkpoint`, which resubmits the same
unit (``DelayedSubmission(self, unit)``) after clearing its in-flight marker (a requeue is not a
death of the unit), and requeues the job. The requeued unit keeps the cases it saved, takes its model
from the cache when training had finished, else resumes training from the last checkpoint in
``<cache>/checkpoints/`` (written every ``training.checkpoint_every`` steps: set it for long
training, otherwise a requeued unit trains from the start). A job may time out ``max_timeouts``
times; preemptions do not count.

Failures: a case that fails inside the job is a failed row, as everywhere. A job that ends
without a result (killed by the scheduler, out of memory, cancelled, an exception outside
fmbench's per-case handling) has its unit's cases recorded as failed with the reason and the
suite goes on (``--resume`` retries them). A StorageError inside a job stops the run.

``cluster = "local"`` runs each element as a process on this machine (all of them at once) and
``"debug"`` runs them one after another in this process: both try a suite without SLURM.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fmbench.executors import ExecutorDef, OnEvent, missing_extra
from fmbench.plan import WorkUnit
from fmbench.results import ResultStore, RunError
from fmbench.score import describe
from fmbench.storage import StorageError
from fmbench.validation import FieldError, Range, check_ranges, one_line
from fmbench.work import UnitEvent, UnitJob, UnitOutcome, run_keeping_warnings

NAME = "slurm"
CLUSTERS = ("slurm", "local", "debug")
log = logging.getLogger("fmbench")


@dataclass(frozen=True)
class SlurmOptions:
    partition: str = ""
    account: str = ""
    qos: str = ""
    constraint: str = ""
    gpus_per_node: int = 0  # GPUs per unit
    cpus_per_task: int = 2
    mem_gb: int = 0  # 0 = the partition's default
    timeout_min: int = 24 * 60
    array_parallelism: int = 32  # array elements running at once
    folder: str = ""  # submitit's logs and pickles ("" = <results folder>/slurm)
    cluster: str = "slurm"  # submitit's cluster: slurm, or local/debug to try a suite here
    max_timeouts: int = 3  # times a unit may reach its time limit and be requeued
    signal_delay_s: int = 120  # the requeue signal comes this long before the time limit
    poll_s: float = 0.0  # seconds between status checks (0 = 5 on SLURM, 0.2 locally)

    def __post_init__(self):
        if self.cluster not in CLUSTERS:
            raise FieldError("cluster", f"must be one of {', '.join(CLUSTERS)}, "
                                        f"got {self.cluster!r}")
        check_ranges(self, SLURM_RANGES)


SLURM_RANGES = {**{k: Range(1) for k in ("cpus_per_task", "timeout_min", "array_parallelism")},
                **{k: Range(0) for k in ("gpus_per_node", "mem_gb", "max_timeouts",
                                         "signal_delay_s", "poll_s")}}


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise missing_extra("submitit", "slurm") from None
    return submitit


@dataclass(frozen=True)
class _Stopped:
    """A job's StorageError, handed back as a value (submitit would flatten an exception into a
    traceback string) so that the coordinator can stop the run with it."""

    error: BaseException


@dataclass(frozen=True)
class _Failed:
    """An exception that escaped the unit's own failure handling (its cases fail with it)."""

    reason: str


class SlurmUnit:
    """What every array element runs: ``job(unit)``; requeued, not failed, when preempted or at
    its time limit (submitit's checkpointing protocol: :meth:`checkpoint`)."""

    def __init__(self, job: UnitJob):
        self.job = job

    def __call__(self, unit: WorkUnit) -> UnitOutcome | _Stopped | _Failed:
        in_job = bool(os.environ.get("SUBMITIT_EXECUTOR"))  # not "debug" (in this process)
        if in_job and any((Path(self.job.cache_dir) / "checkpoints").glob(f"{unit.key}*.pt")):
            _say(f"{unit.label}: a training checkpoint exists, training resumes from it")
        try:
            if not in_job:  # debug cluster: this process, whose warnings reach run.log as is
                return self.job(unit)
            return run_keeping_warnings(self.job, unit, _Reporter(unit))
        except StorageError as e:
            return _Stopped(e)
        except Exception as e:  # noqa: BLE001 - a value: the debug cluster would open pdb
            return _Failed(describe(e))

    def checkpoint(self, unit: WorkUnit):
        """Called by submitit on preemption or timeout: run the same unit again after the
        requeue; its training resumes from the model cache's checkpoint."""
        from submitit.helpers import DelayedSubmission

        _say(f"{unit.label}: preempted or at its time limit; submitted again for the requeue")
        ResultStore(self.job.out_dir).end_unit(unit.key)  # a requeue is not the unit's death
        return DelayedSubmission(self, unit)


def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stderr, flush=True)


class _Reporter:
    """Progress into the job's log (the coordinator sees only the finished unit): training at
    every tenth of its steps, each saved case."""

    def __init__(self, unit: WorkUnit):
        self.unit, self.tenth = unit, 0

    def __call__(self, ev: UnitEvent) -> None:
        if ev.kind == "train":
            tenth = 10 * ev.done // max(ev.total, 1)
            if tenth > self.tenth:
                self.tenth = tenth
                _say(f"training {self.unit.label}: step {ev.done}/{ev.total}, {ev.info}")
        elif ev.kind == "case":
            _say(f"{self.unit.label}: case {ev.done}/{ev.total} ({ev.info}) saved")


def submitit_parameters(options: SlurmOptions, name: str = "fmbench") -> dict:
    """``AutoExecutor.update_parameters`` arguments: the shared ones and the ``slurm_`` ones
    (submitit ignores the latter on the local and debug clusters)."""
    params: dict = {"name": re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:64] or "fmbench",
                    "timeout_min": options.timeout_min, "cpus_per_task": options.cpus_per_task,
                    "slurm_array_parallelism": options.array_parallelism,
                    "slurm_signal_delay_s": options.signal_delay_s}
    for key in ("gpus_per_node", "mem_gb"):  # 0: left to the partition (some refuse --gpus 0)
        if getattr(options, key):
            params[key] = getattr(options, key)
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(options, key):
            params[f"slurm_{key}"] = getattr(options, key)
    return params


class SlurmExecutor:
    def __init__(self, options: SlurmOptions):
        _import_submitit()
        if options.cluster == "slurm" and shutil.which("srun") is None:
            raise RunError('the slurm executor found no SLURM here (no srun on PATH); '
                           'cluster = "local" (a process per unit) or "debug" (in this process) '
                           "tries a suite on this machine")
        self.options = options

    def describe(self, suite=None) -> str:
        o = self.options
        if o.cluster != "slurm":
            return (f"slurm executor on submitit's {o.cluster} cluster ("
                    + ("a process per unit" if o.cluster == "local" else "in this process") + ")")
        where = ", ".join(f"{k} {getattr(o, k)}" for k in ("partition", "account", "qos",
                                                           "constraint") if getattr(o, k))
        return (f"slurm job array{' (' + where + ')' if where else ''}: per unit "
                f"{o.cpus_per_task} CPU(s), {o.gpus_per_node} GPU(s)"
                + (f", {o.mem_gb} GB" if o.mem_gb else "")
                + f", {o.timeout_min} min; at most {o.array_parallelism} at once")

    def _executor(self, job: UnitJob):
        submitit = _import_submitit()
        o = self.options
        folder = Path(o.folder) if o.folder else Path(job.out_dir) / "slurm"
        _private_folder(folder, own=not o.folder)
        try:
            ex = submitit.AutoExecutor(folder=folder, cluster=o.cluster,
                                       slurm_max_num_timeout=o.max_timeouts,
                                       local_max_num_timeout=o.max_timeouts)
            ex.update_parameters(**submitit_parameters(o, f"fmbench-{job.suite.name}"))
        except (ValueError, NameError, AssertionError, RuntimeError) as e:
            raise RunError(f"submitit refused the slurm executor's settings: {one_line(e)}") \
                from None
        except OSError as e:
            raise StorageError(f"cannot use the submitit folder {folder}: {e}") from None
        return ex

    def run(self, job: UnitJob, units: list[WorkUnit], on_event: OnEvent
            ) -> Iterator[UnitOutcome]:
        if not units:
            return
        o = self.options
        if not job.suite.training.checkpoint_every and o.cluster == "slurm":
            log.info("training.checkpoint_every is 0: a preempted or timed-out unit restarts "
                     "its training from the first step when it is requeued")
        ex = self._executor(job)
        queue = deque(units)
        # SLURM throttles the array itself (%array_parallelism); submitit's local cluster starts
        # every element at once, so there the elements go in waves
        limit = len(units) if o.cluster == "slurm" else o.array_parallelism
        pending: dict = {}
        poll = o.poll_s or (5.0 if o.cluster == "slurm" else 0.2)
        try:
            while queue or pending:
                if queue and len(pending) < limit:
                    wave = [queue.popleft() for _ in range(min(limit - len(pending), len(queue)))]
                    for j, unit in self._submit(ex, job, wave):
                        pending[j] = unit
                        on_event(UnitEvent(unit.key, "started", info=f"slurm job {j.job_id}"))
                finished = [j for j in pending if _done(j)]
                for j in finished:
                    yield _outcome(job, j, pending.pop(j), o.cluster)
                if pending and not finished:
                    time.sleep(poll)
        finally:
            if pending:  # the run stopped (StorageError, Ctrl-C): no orphan jobs
                _cancel(list(pending), o.cluster)

    def _submit(self, ex, job: UnitJob, units: list[WorkUnit]) -> list[tuple]:
        """(job, unit) for each unit, submitted as one job array."""
        try:
            jobs = ex.map_array(SlurmUnit(job), units)
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - sbatch's refusal: one line, the run stops
            raise RunError(f"the job array was not submitted: {describe_job_error(e)}") \
                from None
        if self.options.cluster == "local":
            for j in jobs:  # no shared file system to wait on for a result that never comes
                j._results_timeout_s = 2
        return list(zip(jobs, units, strict=True))


def _private_folder(folder: Path, own: bool) -> None:
    """The coordinator unpickles the jobs' results from ``folder``: no one else may write there.
    fmbench's own folder (``own``) and a folder it creates are made private (mode 700); a
    folder you named that others can write to gets a warning (it is left as it is)."""
    if "%" in str(folder):  # submitit's %j placeholders: a folder per job, made by submitit
        return
    try:
        if own or not folder.exists():
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
        elif folder.stat().st_mode & 0o022:
            log.warning("the submitit folder %s is writable by others; the coordinator "
                        "unpickles job results from it: make it private (chmod 700)", folder)
    except OSError as e:
        raise StorageError(f"cannot use the submitit folder {folder}: {e}") from None


def _cancel(jobs: list, cluster: str) -> None:
    """Best effort: one scancel for every element on SLURM, else each job's own cancel (SIGINT
    to a local job's controller)."""
    try:
        if cluster == "slurm":
            subprocess.run(["scancel", *(j.job_id for j in jobs)], capture_output=True,
                           check=False, timeout=60)
            return
        for j in jobs:
            j.cancel(check=False)
    except Exception as e:  # noqa: BLE001 - the run is stopping for another reason already
        log.warning("could not cancel %d unfinished job(s): %s", len(jobs), one_line(e))


def _done(j) -> bool:
    try:
        return j.done()
    except Exception:  # noqa: BLE001 - the debug cluster runs the job here; its error shows later
        return True


def describe_job_error(e: BaseException) -> str:
    """One line from a submitit error: the last line of a job's traceback, else the message."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and set(ln.strip()) != {"-"}]
    trace_end = [ln for ln in lines if re.match(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|"
                                                r"Interrupt)\b", ln)]
    text = trace_end[-1] if trace_end else (lines[0] if lines else type(e).__name__)
    return one_line(text, 300)


def _outcome(job: UnitJob, j, unit: WorkUnit, cluster: str) -> UnitOutcome:
    """The finished job's outcome; its unit's cases failed when the job brought none back."""
    submitit = _import_submitit()
    try:
        result = j.result()
    except submitit.core.utils.FailedJobError as e:  # raised in the job, outside run_unit's care
        return job.fail(unit, f"slurm job {j.job_id} failed: {describe_job_error(e)}; "
                              f"log: {j.paths.stderr}; --resume retries it")
    except submitit.core.utils.UncompletedJobError:
        state = f"SLURM state {_state(j)}: " if cluster == "slurm" else ""
        return job.fail(unit, f"slurm job {j.job_id} ended without a result ({state}killed by "
                              "the scheduler, out of memory, cancelled or past its time limit?); "
                              f"log: {j.paths.stderr}; --resume retries it")
    except StorageError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever else submitit raises for a lost job
        return job.fail(unit, f"slurm job {j.job_id} failed: {describe(e, 300)}; "
                              "--resume retries it")
    if isinstance(result, _Stopped):
        raise result.error
    if isinstance(result, _Failed):
        return job.fail(unit, f"slurm job {j.job_id} failed: {result.reason}; --resume retries it")
    if not isinstance(result, UnitOutcome):
        return job.fail(unit, f"slurm job {j.job_id} returned {type(result).__name__}, not a "
                              "unit's outcome")
    return result


def _state(j) -> str:
    try:
        return str(j.state)
    except Exception:  # noqa: BLE001 - sacct unreachable
        return "unknown"


def _make(options: SlurmOptions) -> SlurmExecutor:
    return SlurmExecutor(options)


DEFINITION = ExecutorDef(SlurmOptions, _make, "slurm",
                         "a SLURM job array through submitit")
