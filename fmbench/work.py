"""One work unit, start to finish, wherever an executor runs it: train (or take the model from the
cache) → for each case: generate → score → write the case file.

:class:`UnitJob` is the picklable callable that every executor ships (in process, to a local
worker, to a SLURM job, to a Ray task); it returns a :class:`UnitOutcome`. Workers write their
own case files (atomically) into the results folder, so a case is saved as soon as it is done,
whatever happens to the coordinator; the coordinator assembles the table. A failure in any stage
is a value: the affected cases' rows say ``failed`` with the reason. Only StorageError (the
machine cannot write) and interrupts propagate.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fmbench.artifacts import case_file_stem, path_label
from fmbench.cache import trained_model
from fmbench.generate import Generation, generate, velocity_field
from fmbench.metrics import METRICS, Scoring, uses_samples
from fmbench.models import MODELS
from fmbench.plan import Case, WorkUnit
from fmbench.results import MAX_DEATHS, ResultStore
from fmbench.score import Values, case_rows, describe, evaluate, failed
from fmbench.storage import StorageError
from fmbench.tasks import TaskData, load_task

log = logging.getLogger("fmbench")


@dataclass(frozen=True)
class UnitEvent:
    """Progress of a unit, sent to the coordinator while it runs (kind: ``train`` with
    done/total steps, ``case`` when a case is saved)."""

    key: str
    kind: str
    done: int = 0
    total: int = 0
    info: str = ""


@dataclass
class UnitOutcome:
    """What a finished unit hands back: its cases' rows (already written to case files), where it
    ran and how long it took."""

    key: str
    rows: dict[str, list[dict]] = field(default_factory=dict)
    device: str = "cpu"
    host: str = ""
    seconds: float = 0.0
    cached: bool = False  # the model came from the model cache
    failure: str = ""  # why every case failed ("" when the unit's model was available)
    # where the time went: "data", "train" (or "model: cache" / "model: file"), "generate",
    # "metric <name>" → seconds (the rest of ``seconds`` is writing files and the like)
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # logged where it ran (cluster jobs)


Report = Callable[[UnitEvent], None]


@dataclass(frozen=True)
class UnitJob:
    """Run a work unit of ``suite`` into the results folder ``out_dir`` with the model cache
    ``cache_dir``: ``job(unit, report) -> UnitOutcome``."""

    suite: object  # fmbench.suite.Suite (not imported: workers unpickle it)
    out_dir: str
    cache_dir: str

    def __call__(self, unit: WorkUnit, report: Report | None = None) -> UnitOutcome:
        return run_unit(self, unit, report or (lambda ev: None))

    def fail(self, unit: WorkUnit, reason: str) -> UnitOutcome:
        """Record every case of ``unit`` as failed with ``reason`` (an executor lost the unit:
        its worker or job died more often than allowed, or the cluster reported a failure)."""
        store = ResultStore(self.out_dir)
        out = UnitOutcome(unit.key, host=socket.gethostname(), failure=reason)
        out.rows, pending = _finished(store, unit, partial=True)
        for case in pending:
            out.rows[case.case_id] = _write(store, self.suite, case,
                                            [failed(self.suite.metrics.names, reason)])
        store.end_unit(unit.key)  # a retry starts with a clean count
        return out


def _finished(store: ResultStore, unit: WorkUnit, partial: bool = False
              ) -> tuple[dict[str, list[dict]], list[Case]]:
    """Rows of the unit's cases that an earlier attempt at it finished (its worker or job died
    after saving them, or a requeued job), and the cases still to do: a retry neither repeats
    nor overwrites a finished case. ``partial``: a case with some ok metric counts as finished
    (a lost unit must not overwrite its values and reasons with the loss)."""
    done, pending = {}, []
    for case in unit.cases:
        rows = store.finished_case(case.case_id, partial)
        if rows is None:
            pending.append(case)
        else:
            done[case.case_id] = rows
    return done, pending


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def run_keeping_warnings(job: UnitJob, unit: WorkUnit, report: Report | None = None):
    """``job(unit, report)`` with fmbench's warnings logged meanwhile carried back on the outcome
    (a cluster job's own log is a file the coordinator does not read; the coordinator logs them
    into run.log). Returns whatever the job returns (an outcome unless it raised)."""
    handler = _Collect()
    logger = logging.getLogger("fmbench")
    logger.addHandler(handler)
    try:
        out = job(unit, report)
    finally:
        logger.removeHandler(handler)
    if isinstance(out, UnitOutcome):
        out.warnings.extend(handler.messages)
    return out


def _write(store: ResultStore, suite, case: Case, values: list[Values]) -> list[dict]:
    rows = case_rows(suite, case, values)
    store.write_case(case.case_id, rows)
    return rows


def device_name(dev: torch.device) -> str:
    if dev.type == "cuda":  # the GPU as the machine names it (CUDA_VISIBLE_DEVICES), not cuda:0
        index = dev.index or 0
        visible = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
                   if d.strip()]
        return f"cuda:{visible[index] if index < len(visible) else index} " \
               f"({torch.cuda.get_device_name(dev)})"
    return "cpu"


def run_unit(job: UnitJob, unit: WorkUnit, report: Report) -> UnitOutcome:
    suite, first = job.suite, unit.first
    names = suite.metrics.names
    start = time.perf_counter()
    store = ResultStore(job.out_dir)
    out = UnitOutcome(unit.key, host=socket.gethostname())
    out.rows, pending = _finished(store, unit)
    if not pending:  # an earlier attempt saved every case, then died before it could say so
        store.end_unit(unit.key)
        out.device, out.seconds = "", time.perf_counter() - start
        return out
    deaths = store.begin_unit(unit.key)
    try:
        model = meta = data = None
        inputs: list = []
        if deaths >= MAX_DEATHS:
            out.failure = (f"a process died {deaths} times while working on this model (killed "
                           "for memory? a crash in native code?); --resume retries it")
        else:
            try:
                with _timed(out.timings, "data"):
                    data = load_task(first.task)
                out.device = device_name(data.device())

                def on_step(step, loss, rate):
                    if step % 50 == 0 or step == suite.training.steps:
                        report(UnitEvent(unit.key, "train", step, suite.training.steps,
                                         f"loss {loss:.4f} · {rate:,.0f} samples/s"))

                model, meta, out.cached = _model(job, unit, data, on_step, out.timings)
                with _timed(out.timings, "data"):
                    inputs = [data.eval_inputs(suite.metrics.n_eval, suite.data_seed,
                                               first.path, r)
                              for r in range(data.eval_draws(suite.metrics.eval_draws))]
            except StorageError:
                raise
            except Exception as e:  # noqa: BLE001 - fails this model's cases, the suite goes on
                out.failure = describe(e)
        if not out.failure and meta["losses"]:
            store.write_losses(unit.key, {"task": first.task.name,
                                          "path_label": path_label(first.path),
                                          "seed": first.seed, "losses": meta["losses"]})
        # per-model references, shared by the unit's cases: per draw, and draw-independent ones
        per_draw: list[dict] = [{} for _ in inputs]
        across_draws: dict = {}
        for i, case in enumerate(pending):
            values = ([failed(names, out.failure)] if out.failure else
                      score_case(job, case, model, meta, data, inputs, per_draw, across_draws,
                                 out.timings))
            out.rows[case.case_id] = _write(store, suite, case, values)
            report(UnitEvent(unit.key, "case", i + 1, len(pending), case.solver.label()))
    finally:
        store.end_unit(unit.key)
    out.seconds = time.perf_counter() - start
    return out


def _model(job: UnitJob, unit: WorkUnit, data: TaskData, on_step, timings: dict
           ) -> tuple[object, dict, bool]:
    """(network, record, from the cache): trained (or read from the model cache), or, for a
    model kind that reads its model from a file, loaded as is (no training, no cache); the
    time it took goes to ``timings`` as "train", "model: cache" or "model: file"."""
    suite, start = job.suite, time.perf_counter()
    kind = MODELS.get(suite.model.kind)
    if kind.load is None:
        model, meta, cached = trained_model(unit, suite, data, Path(job.cache_dir), on_step)
        timings["model: cache" if cached else "train"] = time.perf_counter() - start
        return model, meta, cached
    model = kind.load(suite.model.options, data.shape, data.device())
    timings["model: file"] = time.perf_counter() - start
    return model, {"losses": [], "train_time": math.nan, "coupling_time": math.nan}, False


@contextlib.contextmanager
def _timed(timings: dict[str, float], what: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[what] = timings.get(what, 0.0) + time.perf_counter() - start


def score_case(job: UnitJob, case: Case, model, meta: dict, data: TaskData, inputs: list,
               per_draw: list[dict], across_draws: dict,
               timings: dict[str, float] | None = None) -> list[Values]:
    """Generate (one solve per evaluation draw) and score one case: its values per draw (metrics
    that are not per draw, e.g. train_time, only in draw 0). Draw 0's samples are saved when its
    solve worked. ``per_draw[r]`` and ``across_draws`` memoise the unit's references
    (:class:`fmbench.metrics.Reference`)."""
    suite = job.suite
    field_ = velocity_field(model, case.path)
    out = []
    for r, draw_inputs in enumerate(inputs):
        names = tuple(n for n in suite.metrics.names if r == 0 or METRICS.get(n).per_draw)
        if uses_samples(names):
            with _timed(timings if timings is not None else {}, "generate"):
                gen = generate(field_, draw_inputs.x0, case.solver, case.path,
                               suite.metrics.eval_batch, data.keeps_trajectories if r == 0 else 0)
        else:
            gen = Generation(error=RuntimeError("no metric of this suite uses generated samples"))
        s = Scoring(case.path, case.solver, field_, gen, draw_inputs, suite.metrics,
                    case.task.gaussian_source, float(meta["train_time"]),
                    float(meta["coupling_time"]), data.device(), Path(job.cache_dir),
                    per_draw[r], across_draws)
        seconds: dict[str, float] = {}
        out.append(evaluate(s, names, seconds))
        if timings is not None:
            for name, sec in seconds.items():
                timings[f"metric {name}"] = timings.get(f"metric {name}", 0.0) + sec
        if r == 0 and gen.samples is not None:
            _save_samples(job, case, data, gen, draw_inputs)
    return out


def _save_samples(job: UnitJob, case: Case, data: TaskData, gen: Generation, inputs) -> None:
    try:
        data.save_samples(Path(job.out_dir) / "samples" / case_file_stem(case), gen, inputs)
    except StorageError:
        raise
    except Exception as e:  # noqa: BLE001 - the numbers stand; only the pictures are lost
        log.warning("samples of %s not saved: %s", case_file_stem(case), describe(e))
