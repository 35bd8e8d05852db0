"""The runner: suite → plan → (executor: train → generate → score per work unit) → record.

    plan (fmbench.plan)        the suite's cases grouped into work units, stable ids
    execute (fmbench.executors) where units run: this process, a local pool, SLURM, Ray
      train  (fmbench.cache)     the unit's model from the model cache, or trained into it
      generate (fmbench.generate) one solve per case
      score  (fmbench.score)     the metrics, typed inputs; the case file is written
    record (fmbench.session)   run.json, the table assembled from the case files

It owns the results folder and progress; the stages it calls hold no global state.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from rich.console import Console

from fmbench import plan
from fmbench.cache import CACHE_ORPHAN_AGE_S, default_cache_dir
from fmbench.executors import Executor, make_executor
from fmbench.metrics import METRICS
from fmbench.plan import cases, work_units
from fmbench.progress import RunProgress
from fmbench.results import RunError, environment, git_commit
from fmbench.session import ResultsSession
from fmbench.storage import StorageError, remove_orphans
from fmbench.tasks import kind_of
from fmbench.work import UnitJob

__all__ = ["RunError", "StorageError", "run_suite"]

log = logging.getLogger("fmbench")


def suite_definition(suite) -> dict:
    """Everything that defines the suite's numbers (compared when a run is resumed): name, seeds,
    tasks, model, training, paths, solvers, metric settings and the code versions behind them."""
    doc = {
        "suite": {"name": suite.name, "seeds": list(suite.seeds), "data_seed": suite.data_seed},
        "task": [{"name": t.name, "source": t.source, "target": t.target, **t.opts()}
                 for t in suite.tasks],
        "model": asdict(suite.model), "training": suite.training.definition(),
        "path": [{"name": p.name, **p.params()} for p in suite.paths],
        "solver": [s.label() for s in suite.solvers],
        "metrics": asdict(suite.metrics),
        "eval_draws": {t.name: kind_of(t.target).eval_draws(suite.metrics.eval_draws)
                       for t in suite.tasks},  # resolved: a changed default is a difference
        "code": {"training": plan.suite_training_code(suite),
                 "metrics": {n: METRICS.get(n).version for n in suite.metrics.names}},
    }
    return json.loads(json.dumps(doc, default=str))


def run_suite(suite, out_dir: str | Path, resume: bool = False,
              cache_dir: str | Path | None = None, console: Console | None = None,
              overwrite: bool = False, force: bool = False,
              executor: Executor | None = None) -> pd.DataFrame:
    """Run every case of ``suite`` into ``out_dir``; returns the results table.

    ``resume`` finishes a folder started by the same suite (``force``: by another suite or other
    settings, keeping both); ``overwrite`` replaces a previous run's files. ``executor`` places
    the work units (default: the suite's [executor] table, else local workers). A failure inside
    a case fails that case (recorded with its reason) and the suite goes on; RunError (unusable
    request) and StorageError (disk full, read-only, lock held) stop the run, with every
    finished case kept.
    """
    console = console or Console(stderr=True)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    executor = executor or make_executor(suite.executor.name, suite.executor.options)
    all_cases = cases(suite)
    definition = suite_definition(suite)
    meta = {"suite": suite.name, "suite_file": suite.file, "resolved_suite": definition,
            "check": suite.check.to_json(), "executor": executor.describe(suite),
            "seeds": list(suite.seeds),
            "data_seed": suite.data_seed, "git": git_commit(), "environment": environment()}
    with ResultsSession.open(out_dir, meta, definition, [c.case_id for c in all_cases],
                             resume=resume, overwrite=overwrite, force=force) as session:
        if remove_orphans(cache, legacy=True, min_age=CACHE_ORPHAN_AGE_S):
            log.info("removed orphan temporary files of interrupted runs in %s", cache)
        for s in suite.skipped():
            console.print(f"[yellow]skipped[/] {s}")
        done = session.done_ids()
        units = work_units(suite, done)
        job = UnitJob(suite, str(session.store.dir.resolve()), str(cache.resolve()))
        devices: set[str] = set()
        with RunProgress(console, session.store.dir, units, len(all_cases),
                         sum(c.case_id in done for c in all_cases), executor.describe(suite)) as bar:
            for outcome in executor.run(job, units, bar.event):
                for message in outcome.warnings:  # from a cluster job's own log
                    log.warning("%s (%s)", message, outcome.host or "a worker")
                for case_id, rows in outcome.rows.items():
                    session.record(case_id, rows)
                if not outcome.failure and outcome.device:
                    devices.add(f"{outcome.host}: {outcome.device}")
                    session.meta["devices"] = sorted(devices | set(session.meta.get("devices",
                                                                                     [])))
                bar.finished(outcome)
                _add_times(session.meta, outcome.timings)
        return session.table()


def _add_times(meta: dict, timings: dict[str, float]) -> None:
    """run.json's ``time_s``: seconds by stage (data, train, model: cache/file, generate,
    metric <name>) summed over every unit of every session of the run."""
    total = meta.setdefault("time_s", {})
    for what, sec in timings.items():
        total[what] = round(total.get(what, 0.0) + sec, 3)
