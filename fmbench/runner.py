"""The runner: suite → cases → train (or reuse a cached model) → solve → metrics → rows.

It owns files, progress bars and the model cache; the math objects it calls hold no I/O.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from fmbench import data as D
from fmbench.artifacts import case_file_stem, load_model, path_label, save_model, save_samples
from fmbench.image_tasks import image_sampler, load_split
from fmbench.metrics import METRICS, EvalContext, NotApplicable, NotApplicableValue, compute
from fmbench.models import MLP
from fmbench.paths.couplings import make_coupling
from fmbench.paths.schedules import GaussianPath
from fmbench.results import SCHEMA_VERSION, RunError, environment, git_commit, summarize
from fmbench.session import MAX_DEATHS, ResultsSession
from fmbench.storage import StorageError, remove_orphans, set_aside
from fmbench.suite import TRAIN_CODE_VERSION, Case, Suite, Task
from fmbench.train import CorruptCheckpoint, TrainingFailed, train
from fmbench.unet import UNet
from fmbench.validation import one_line

__all__ = ["RunError", "StorageError", "run_suite", "summary_table"]

log = logging.getLogger("fmbench")


def default_cache_dir() -> Path:
    return Path(os.environ.get("FMBENCH_CACHE", Path.home() / ".cache" / "fmbench"))


def derived_seed(*parts) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16)


@dataclass
class TaskData:
    """A task's data: 2D samplers, or an image dataset's train and test splits (uint8)."""

    task: Task
    shape: tuple[int, ...]
    train_images: torch.Tensor | None = None
    test_images: torch.Tensor | None = None

    @classmethod
    def load(cls, task: Task) -> TaskData:
        if not task.is_image:
            return cls(task, (2,))
        opts = task.opts()
        train = load_split(task.target, opts, "train").images
        test = load_split(task.target, opts, "test").images
        return cls(task, tuple(train.shape[1:]), train, test)

    def source(self, path: GaussianPath):
        if self.task.gaussian_source:
            scale, shape = path.source_scale, self.shape
            return lambda n, g: scale * torch.randn(n, *shape, generator=g)
        return D.DATASETS.get(self.task.source)

    def target(self):
        if self.task.is_image:
            return image_sampler(self.train_images, bool(self.task.opts().get("hflip", True)))
        return D.DATASETS.get(self.task.target)


def device_for(task: Task) -> torch.device:
    """Image tasks use the GPU when there is one; 2D tasks always run on the CPU."""
    return torch.device("cuda" if task.is_image and torch.cuda.is_available() else "cpu")


def eval_sets(suite: Suite, td: TaskData, path: GaussianPath) -> dict[str, torch.Tensor]:
    """Fixed per task (common random numbers across paths, solvers and training seeds)."""
    n = suite.metrics.n_eval
    task = td.task

    def g(role):
        return torch.Generator().manual_seed(derived_seed(suite.data_seed, task.name, role))

    dev = device_for(task)
    if task.is_image:
        empty = torch.empty(0)
        return {"x0_eval": td.source(path)(n, g("source")).to(dev), "x1_test": empty,
                "x1_floor": empty}
    return {
        "x0_eval": td.source(path)(n, g("source")),
        "x1_test": D.DATASETS.get(task.target)(n, g("test")),
        "x1_floor": D.DATASETS.get(task.target)(n, g("floor")),
    }


def build_model(suite: Suite, seed: int, shape: tuple[int, ...]) -> torch.nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(derived_seed(seed, "init"))  # a stream apart from the data generator
        if suite.model.kind == "unet":
            return UNet(shape[0], (shape[1], shape[2]), suite.model.unet)
        return MLP(2, suite.model.width, suite.model.depth, suite.model.activation)


CACHE_ORPHAN_AGE_S = 3600  # the model cache is shared: only temp files older than this go
def settings_digest(suite: Suite, case: Case) -> str:
    """What else defines a number: task options (as written), model, training, data seed. Rows
    from runs that differ here are 'not comparable' in compare/check (code version excluded)."""
    doc = {"task_options": case.task.options, "model": suite.model.__dict__,
           "training": suite.training.__dict__, "data_seed": suite.data_seed}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def case_rows(suite: Suite, case: Case, values: dict[str, tuple[float, str, str]]) -> list[dict]:
    """Long-format rows for one case: values maps metric → (value, status, reason)."""
    base = {
        "schema_version": SCHEMA_VERSION, "suite": suite.name, "case_id": case.case_id,
        "model_key": case.model_key,
        "task": case.task.name, "source": case.task.source, "target": case.task.target,
        "path": case.path.name, "path_label": path_label(case.path),
        "path_params": json.dumps(case.path.params(), sort_keys=True),
        "coupling": case.path.coupling, "objective": case.path.objective,
        "solver": case.solver.method, "solver_label": case.solver.label(),
        "solver_params": json.dumps(case.solver.params(), sort_keys=True), "seed": case.seed,
        "n_eval": suite.metrics.n_eval, "settings": settings_digest(suite, case),
    }
    rows = []
    for name, (value, status, reason) in values.items():
        m = METRICS.get(name)
        params = {k: getattr(suite.metrics, k) for k in m.settings}
        rows.append({**base, "metric": name, "value": value, "unit": m.unit,
                     "higher_is_better": m.higher_is_better, "metric_version": m.version,
                     "metric_params": json.dumps(params, sort_keys=True),
                     "status": status, "reason": reason})
    return rows


def describe(e: BaseException, limit: int = 500) -> str:
    """One line saying what went wrong (the reason stored on a failed row)."""
    return one_line(f"{type(e).__name__}: {e}", limit)


def evaluate(ctx: EvalContext, names: tuple[str, ...]) -> dict[str, tuple[float, str, str]]:
    """Each metric on its own: a failure fails that metric (with its reason), never the run;
    only StorageError (the machine cannot write) and interrupts propagate."""
    out: dict[str, tuple[float, str, str]] = {}
    for name in names:
        try:
            for k, v in compute(name, ctx).items():
                if isinstance(v, NotApplicableValue):
                    out[k] = (float("nan"), "not_applicable", v.reason)
                elif not math.isfinite(float(v)):
                    out[k] = (float("nan"), "failed", f"the metric's value is {float(v)}")
                else:
                    out[k] = (float(v), "ok", "")
        except NotApplicable as e:
            out[name] = (float("nan"), "not_applicable", str(e))
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - see docstring
            out[name] = (float("nan"), "failed", describe(e))
    return out


def suite_definition(suite: Suite) -> dict:
    """Everything that defines the suite's numbers (compared when a run is resumed): name, seeds,
    tasks, model, training, paths, solvers, metric settings and the code versions behind them."""
    from dataclasses import asdict

    doc = {
        "suite": {"name": suite.name, "seeds": list(suite.seeds), "data_seed": suite.data_seed},
        "task": [{"name": t.name, "source": t.source, "target": t.target, **t.opts()}
                 for t in suite.tasks],
        "model": asdict(suite.model), "training": asdict(suite.training),
        "path": [{"name": p.name, **p.params()} for p in suite.paths],
        "solver": [s.label() for s in suite.solvers],
        "metrics": asdict(suite.metrics),
        "code": {"training": TRAIN_CODE_VERSION,
                 "metrics": {n: METRICS.get(n).version for n in suite.metrics.names}},
    }
    return json.loads(json.dumps(doc, default=str))


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False, disable=not console.is_terminal)


def run_suite(suite: Suite, out_dir: str | Path, resume: bool = False,
              cache_dir: str | Path | None = None, console: Console | None = None,
              overwrite: bool = False, force: bool = False) -> pd.DataFrame:
    """Run every case of ``suite`` into ``out_dir``; returns the results table.

    ``resume`` finishes a folder started by the same suite (``force``: by another suite or other
    settings, keeping both); ``overwrite`` replaces a previous run's files. A failure inside a
    case fails that case (recorded with its reason) and the suite goes on; RunError (unusable
    request) and StorageError (disk full, read-only, lock held) stop the run before or between
    cases, with every finished case kept.
    """
    console = console or Console(stderr=True)
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cases = suite.cases()
    meta = {"suite": suite.name, "suite_file": suite.file, "resolved_suite": suite.raw,
            "check": suite.check, "seeds": list(suite.seeds), "data_seed": suite.data_seed,
            "git": git_commit(), "environment": environment()}
    with ResultsSession.open(out_dir, meta, suite_definition(suite),
                             [c.case_id for c in cases], resume=resume, overwrite=overwrite,
                             force=force) as session:
        if remove_orphans(cache, legacy=True, min_age=CACHE_ORPHAN_AGE_S):
            log.info("removed orphan temporary files of interrupted runs in %s", cache)
        _run_cases(suite, cases, session, cache, console)
        return session.table()


def _run_cases(suite: Suite, cases: list[Case], session: ResultsSession, cache: Path,
               console: Console) -> None:
    done = session.done_ids()
    task_cache: dict[str, TaskData] = {}
    by_model: dict[str, list[Case]] = defaultdict(list)
    for c in cases:
        by_model[c.model_key].append(c)
    todo = sum(c.case_id not in done for c in cases)
    for s in suite.skipped():
        console.print(f"[yellow]skipped[/] {s}")
    with _progress(console) as progress:
        overall = progress.add_task("cases", total=len(cases), completed=len(cases) - todo,
                                    info="")
        for mcases in by_model.values():
            pending = [c for c in mcases if c.case_id not in done]
            if pending:
                _run_unit(suite, pending, session, cache, task_cache, progress, overall, console)


def _run_unit(suite: Suite, pending: list[Case], session: ResultsSession, cache: Path,
              task_cache: dict, progress: Progress, overall, console: Console) -> None:
    """One work unit: a trained model and its pending cases. Any failure fails these cases
    (recorded with the reason); StorageError and interrupts propagate."""
    first = pending[0]
    label = f"{first.task.name} {path_label(first.path)} seed {first.seed}"
    deaths = session.begin_unit(first.model_key)
    try:
        failure = None
        if deaths >= MAX_DEATHS:
            failure = (f"the fmbench process died {deaths} times while working on this model "
                       "(killed for memory? a crash in native code?); --resume retries it")
        else:
            try:
                td = task_cache.get(first.task.name) or TaskData.load(first.task)
                task_cache[first.task.name] = td
                model, train_meta = _trained_model(suite, first, td, cache, progress, label)
                sets = eval_sets(suite, td, first.path)
            except StorageError:
                raise
            except Exception as e:  # noqa: BLE001 - fails this model's cases, the suite goes on
                failure = describe(e)
        if failure is not None:
            console.print(f"[red]failed[/] {label}: {failure}", highlight=False)
        else:
            session.store.write_losses(first.model_key, {
                "task": first.task.name, "path_label": path_label(first.path),
                "seed": first.seed, "losses": train_meta["losses"]})
        model_cache: dict = {}
        for case in pending:
            progress.update(overall, info=f"{label} {case.solver.label()}")
            if failure is not None:
                values = {n: (float("nan"), "failed", failure) for n in suite.metrics.names}
            else:
                values = _evaluate_case(suite, case, model, train_meta, td, sets, cache,
                                        model_cache, session.store.dir / "samples")
            session.record(case.case_id, case_rows(suite, case, values))
            progress.advance(overall)
    finally:
        session.end_unit(first.model_key)


def _trained_model(suite: Suite, first: Case, td: TaskData, cache: Path, progress: Progress,
                   label: str) -> tuple[torch.nn.Module, dict]:
    """The case's model from the model cache, or trained (resuming a checkpoint if there is
    one; a corrupt checkpoint is set aside and training starts over)."""
    dev = device_for(first.task)
    try:
        model = build_model(suite, first.seed, td.shape).to(dev)
    except ValueError as e:
        raise ValueError(f"model: {e}") from None
    file = cache / "models" / f"{first.model_key}.pt"
    meta = load_model(file, model) if file.exists() else None
    if meta is not None:
        return model, meta
    ckpt = cache / "checkpoints" / f"{first.model_key}.pt"
    steps = suite.training.steps
    bar = progress.add_task(f"train {label}", total=steps, info="")

    def on_step(step, loss, rate):
        if step % 50 == 0 or step == steps:
            progress.update(bar, completed=step, info=f"loss {loss:.4f} · {rate:,.0f} samples/s")

    def fit(m):
        return train(m, first.path, make_coupling(first.path.coupling,
                                                  **first.path.coupling_params()),
                     td.source(first.path), td.target(), suite.training, first.seed, on_step,
                     checkpoint=ckpt if suite.training.checkpoint_every else None, device=dev)

    try:
        try:
            meta = fit(model)
        except CorruptCheckpoint as e:
            set_aside(e.file, e.reason)
            model = build_model(suite, first.seed, td.shape).to(dev)
            meta = fit(model)
        save_model(file, model, meta)
        ckpt.unlink(missing_ok=True)
    except TrainingFailed as e:
        raise TrainingFailed(f"training failed: {e}") from None
    finally:
        progress.remove_task(bar)
    return model, meta


def _evaluate_case(suite: Suite, case: Case, model, train_meta: dict, td: TaskData, sets: dict,
                   cache: Path, model_cache: dict, samples_dir: Path
                   ) -> dict[str, tuple[float, str, str]]:
    """The case's metric values; its samples are saved when generation succeeded."""
    task = case.task
    extras = {"is_image": task.is_image, "task": task, "device": device_for(task),
              "metrics": suite.metrics, "cache_dir": cache}
    if task.is_image:
        extras.update(train_images=td.train_images, test_images_fid=td.test_images)
    ctx = EvalContext(case.path, model, case.solver, gaussian_source=task.gaussian_source,
                      train_meta=train_meta, reference_steps=suite.metrics.reference_steps,
                      solver_mse_n=suite.metrics.solver_mse_n,
                      eval_batch=suite.metrics.eval_batch, cache=model_cache, extras=extras,
                      **sets)
    values = evaluate(ctx, suite.metrics.names)
    gen = ctx.local.get("gen")
    if isinstance(gen, tuple):
        try:
            save_samples(samples_dir, case, ctx, gen[0].y)
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - the numbers stand; only the pictures are lost
            log.warning("samples of %s not saved: %s", case_file_stem(case), describe(e))
    return values


def summary_table(df: pd.DataFrame, title: str = "") -> Table:
    """Rich table: one row per task × path × solver, mean ± std over seeds per metric."""
    s = summarize(df)
    metrics = list(dict.fromkeys(s["metric"]))
    table = Table(title=title)
    for col in ("task", "path", "solver"):
        table.add_column(col)
    for m in metrics:
        table.add_column(m, justify="right")
    failed = df[df["status"] == "failed"]
    for (task, path, solver), grp in s.groupby(["task", "path_label", "solver_label"], sort=False):
        cells = []
        by = grp.set_index("metric")
        for m in metrics:
            if m in by.index:
                r = by.loc[m]
                n_note = f" (n={int(r['n'])})" if r["n"] < df["seed"].nunique() else ""
                cells.append(f"{r['mean']:.3g} ± {r['std']:.1g}{n_note}")
            else:
                cells.append("–")
        table.add_row(task, path, solver, *cells)
    if len(failed):
        table.caption = f"{failed['case_id'].nunique()} case(s) with failed metrics; see results"
    return table
