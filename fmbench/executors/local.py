"""The local executor: work units in this process or on a pool of worker processes.

``workers = 1`` runs every unit in this process, one after another. More workers are persistent
``spawn``-ed processes (fresh interpreters: no forked CUDA or thread state), each taking the next
pending unit when it is done; the per-unit cost is pickling the unit through a pipe. Placement:

- with GPUs and a suite whose tasks use them (image tasks), one worker per GPU by default, pinned
  with ``CUDA_VISIBLE_DEVICES`` to one of the GPUs this process may use (a worker sees it as
  ``cuda:0``); ``workers`` above the GPU count share GPUs round-robin;
- otherwise (no GPU, or 2D tasks, which train on the CPU) one worker per available core; each
  worker's torch thread count is the cores divided by the workers (at least 1), so workers never
  oversubscribe the machine.

A worker that dies (out of memory, a crash in native code, kill -9) takes only its unit down: a
replacement starts and the unit is retried without the cases it had already saved; after it has
killed ``MAX_DEATHS`` workers its remaining cases are recorded as failed with the reason and the
suite goes on. Workers exit within a fraction of a second of the coordinator's death (a watcher
thread), so a killed run leaves no orphan processes nor in-flight markers; ``--resume``
continues.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait

from fmbench.executors import ExecutorDef, OnEvent
from fmbench.plan import WorkUnit
from fmbench.results import MAX_DEATHS, ResultStore, RunError
from fmbench.tasks import kind_of
from fmbench.validation import Range, check_ranges
from fmbench.work import UnitEvent, UnitJob, UnitOutcome

NAME = "local"
log = logging.getLogger("fmbench")


@dataclass(frozen=True)
class LocalOptions:
    workers: int = 0  # 0 = one per GPU, else one per available core; 1 = in this process
    threads: int = 0  # torch threads per worker; 0 = the free cores shared out (free_cores)

    def __post_init__(self):
        check_ranges(self, {"workers": Range(0), "threads": Range(0)})


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def gpu_ids() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them (indices, UUIDs or MIG
    names: a worker is pinned to one of these, never to a GPU outside the parent's set)."""
    try:
        import torch

        n = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - a broken CUDA set-up counts as no GPU
        return []
    visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
               if d.strip()]
    return visible[:n] if len(visible) >= n else [str(i) for i in range(n)]


def uses_gpu(suite) -> bool:
    """Whether the units of ``suite`` run on a GPU when there is one (image tasks; 2D tasks train
    on the CPU, so a 2D suite gets one worker per core even on a GPU machine)."""
    return suite is None or any(kind_of(t.target).uses_gpu for t in suite.tasks)


WORKERS_ENV = "FMBENCH_WORKERS"  # the default worker count where the suite and CLI give none


def default_workers() -> int:
    """$FMBENCH_WORKERS when set (a positive integer), else 0 (automatic)."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit() or int(raw) < 1:
        raise RunError(f"${WORKERS_ENV} must be a positive integer, got {raw!r}")
    return int(raw)


def free_cores() -> int:
    """The cores not already busy: the available cores less the 1-minute load average of the
    machine (other jobs), at least 1. Threads beyond the free cores do not add speed, they
    collapse it: on 2 cores beside two busy processes a 2D training step took 6.0 ms with 2
    threads and 1.87 ms with 1 (alone: 1.80 and 1.86 ms; README "Running at scale")."""
    cores = available_cores()
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except (AttributeError, OSError):  # no load average (Windows)
        busy = 0
    return max(1, cores - busy)


def placement(workers: int, n_units: int, gpu: bool = True, threads: int = 0) -> list[dict]:
    """Each worker's environment and torch thread count: [{"env": {...}, "threads": k}].
    ``gpu``: the units use a GPU when there is one (then one worker per GPU by default);
    ``threads``: per worker (0: the free cores shared out among the workers)."""
    gpus, cores = (gpu_ids() if gpu else []), available_cores()
    n = workers or default_workers() or (len(gpus) or cores)
    n = max(1, min(n, n_units))
    per = threads or max(1, min(cores, free_cores()) // n)
    return [{"env": {"CUDA_VISIBLE_DEVICES": gpus[i % len(gpus)]} if gpus else {},
             "threads": per} for i in range(n)]


class LocalExecutor:
    def __init__(self, options: LocalOptions):
        self.options = options

    def _in_process(self, slots: list[dict]) -> bool:
        """One worker asked for, or one slot needing no GPU pinning (one core): no pool. A
        single GPU still gets a worker process (a crash takes only its unit down)."""
        return (self.options.workers or default_workers()) == 1 or \
            (len(slots) == 1 and not slots[0]["env"])

    def describe(self, suite=None) -> str:
        w = self.options.workers or default_workers()
        slots = placement(w, 10**6, uses_gpu(suite), self.options.threads)
        if self._in_process(slots):
            return f"local, in this process, {slots[0]['threads']} torch thread(s)"
        how = "" if w else " (one per GPU)" if slots[0]["env"] else " (one per core)"
        return f"local, {len(slots)} worker process(es){how}, {slots[0]['threads']} torch " \
               "thread(s) each"

    def run(self, job: UnitJob, units: list[WorkUnit], on_event: OnEvent
            ) -> Iterator[UnitOutcome]:
        slots = placement(self.options.workers, len(units), uses_gpu(job.suite),
                          self.options.threads)
        if self._in_process(slots):
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(slots[0]["threads"])  # restored for the caller afterwards
            try:
                for unit in units:  # in process, exactly as a plain loop
                    on_event(UnitEvent(unit.key, "started", info="in process"))
                    yield job(unit, on_event)
            finally:
                torch.set_num_threads(before)
            return
        yield from _Pool(job, slots, on_event).run(units)


def _exit_with_parent(parent: int, out_dir: str, current: dict) -> None:
    """A thread that ends this worker (``os._exit``) within a fraction of a second of the
    death of its coordinator, pid ``parent`` (kill -9, the OOM killer, a closed terminal),
    first clearing the in-flight marker of the unit it was on: stopped with its run, the unit
    did not die."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        try:
            if current.get("key"):
                ResultStore(out_dir).end_unit(current["key"])
        finally:
            os._exit(1)

    threading.Thread(target=watch, daemon=True, name="fmbench-exit-with-parent").start()


def _worker(conn, job: UnitJob, env: dict, threads: int, parent: int) -> None:
    os.environ.update(env)
    current: dict = {}  # the unit being worked on
    # the coordinator's pid taken before the spawn: one that dies while this worker starts up
    _exit_with_parent(parent, job.out_dir, current)  # is seen as dead, not as init's child
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the coordinator's to handle
    import torch

    torch.set_num_threads(threads)
    logger = logging.getLogger("fmbench")  # warnings (files set aside, …) go to the coordinator
    logger.addHandler(_Forward(conn))
    logger.setLevel(logging.INFO)
    logger.propagate = False
    while True:
        try:
            unit = conn.recv()
        except (EOFError, OSError):
            return
        if unit is None:
            return
        current["key"] = unit.key
        try:
            out = job(unit, lambda ev: conn.send(("event", ev)))
            current.clear()
            conn.send(("done", out))
        except BaseException as e:  # noqa: BLE001 - StorageError and the like stop the run
            try:
                conn.send(("error", e))
            except Exception:  # noqa: BLE001 - an unpicklable exception: its text then
                conn.send(("error", RuntimeError(f"{type(e).__name__}: {e}")))


class _Forward(logging.Handler):
    """A worker's log records, sent to the coordinator, which logs them as its own."""

    def __init__(self, conn):
        super().__init__()
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.conn.send(("log", (record.levelno, record.getMessage())))
        except Exception:  # noqa: BLE001 - a log line must never fail the work
            pass


@dataclass
class _Slot:
    proc: mp.process.BaseProcess
    conn: object
    spec: dict
    unit: WorkUnit | None = None
    since: float = 0.0


class _Pool:
    def __init__(self, job: UnitJob, slots: list[dict], on_event: OnEvent):
        self.job, self.specs, self.on_event = job, slots, on_event
        self.ctx = mp.get_context("spawn")
        self.deaths: dict[str, int] = {}

    def _start(self, spec: dict) -> _Slot:
        parent, child = self.ctx.Pipe()
        # not daemonic: a unit starts coupling workers of its own (fmbench.batches); the pool
        # joins or kills its workers itself, and they exit with the coordinator
        p = self.ctx.Process(target=_worker, args=(child, self.job, spec["env"], spec["threads"],
                                                   os.getpid()), daemon=False, name="fmbench-worker")
        p.start()
        child.close()
        return _Slot(p, parent, spec)

    def _assign(self, slot: _Slot, queue: deque) -> None:
        if not queue:
            slot.unit = None
            return
        slot.unit, slot.since = queue.popleft(), time.perf_counter()
        try:
            slot.conn.send(slot.unit)
        except OSError:  # the worker is gone: the next wait() sees it and retries the unit
            pass
        where = slot.spec["env"].get("CUDA_VISIBLE_DEVICES")
        self.on_event(UnitEvent(slot.unit.key, "started", info=f"worker pid {slot.proc.pid}"
                                + (f", GPU {where}" if where else "")))

    def run(self, units: list[WorkUnit]) -> Iterator[UnitOutcome]:
        queue = deque(units)
        slots = [self._start(spec) for spec in self.specs]
        for slot in slots:
            self._assign(slot, queue)
        try:
            while any(s.unit is not None for s in slots):
                busy = [s for s in slots if s.unit is not None]
                ready = wait([s.conn for s in busy] + [s.proc.sentinel for s in busy])
                for slot in busy:
                    kind, payload = self._receive(slot, ready)
                    if kind == "event":
                        self.on_event(payload)
                        continue
                    if kind == "log":
                        log.log(*payload)
                        continue
                    if kind == "error":
                        raise payload
                    if kind == "done":
                        yield payload
                    elif kind == "died":
                        yield from self._died(slot, queue)
                        slot = self._replace(slot, slots)
                    else:
                        continue
                    self._assign(slot, queue)
        finally:
            self._stop(slots)

    @staticmethod
    def _receive(slot: _Slot, ready: list) -> tuple[str, object]:
        """The worker's next message, ("died", None) when it is gone, ("", None) if nothing."""
        if slot.conn in ready or slot.conn.poll():
            try:
                return slot.conn.recv()
            except (EOFError, OSError):
                return "died", None
        if slot.proc.sentinel in ready:
            return "died", None
        return "", None

    def _stop(self, slots: list[_Slot]) -> None:
        for s in slots:
            try:
                s.conn.send(None)
            except (OSError, ValueError):
                pass
        for s in slots:
            s.proc.join(timeout=5)
            if s.proc.is_alive():
                s.proc.kill()
                s.proc.join()
            if s.unit is not None and s.proc.exitcode != 0:  # stopped by us (Ctrl-C, an error
                ResultStore(self.job.out_dir).end_unit(s.unit.key)  # elsewhere): not its death

    def _died(self, slot: _Slot, queue: deque) -> Iterator[UnitOutcome]:
        unit = slot.unit
        slot.proc.join(timeout=1)
        code = slot.proc.exitcode
        n = self.deaths[unit.key] = self.deaths.get(unit.key, 0) + 1
        log.warning("worker pid %s died (exit code %s) while working on %s; %s", slot.proc.pid,
                    code, unit.label, "retrying it" if n < MAX_DEATHS else "its cases fail")
        if n < MAX_DEATHS:
            queue.appendleft(unit)
        else:
            yield self.job.fail(unit, f"its worker process died {n} times (exit code {code}: "
                                      "killed for memory? a crash in native code?); --resume "
                                      "retries it")
        slot.unit = None

    def _replace(self, slot: _Slot, slots: list[_Slot]) -> _Slot:
        new = self._start(slot.spec)
        slots[slots.index(slot)] = new
        return new


DEFINITION = ExecutorDef(LocalOptions, LocalExecutor, "",
                         "this machine: in process (workers = 1) or a pool of worker processes")
