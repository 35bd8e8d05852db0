"""The runner: suite → cases → train (or reuse a cached model) → solve → metrics → rows.

It owns files, progress bars and the model cache; the math objects it calls hold no I/O.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
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
from fmbench.image_data import DataError
from fmbench.image_tasks import image_sampler, load_split
from fmbench.metrics import METRICS, EvalContext, NotApplicable, NotApplicableValue, compute
from fmbench.models import MLP
from fmbench.paths.couplings import CouplingError, make_coupling
from fmbench.paths.schedules import GaussianPath
from fmbench.results import (
    ROW_COLUMNS,
    SCHEMA_VERSION,
    ResultStore,
    environment,
    git_commit,
    now,
    summarize,
)
from fmbench.solvers import solve
from fmbench.suite import Case, Suite, Task
from fmbench.train import TrainingFailed, train
from fmbench.unet import UNet


class RunError(RuntimeError):
    """Unusable request (e.g. results exist and --resume not given)."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("FMBENCH_CACHE", Path.home() / ".cache" / "fmbench"))


def derived_seed(*parts) -> int:
    return int(hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:8], 16)


def path_label(path: GaussianPath) -> str:
    """``name`` plus the parameters that differ from the registered defaults."""
    defaults = type(path)()
    diff = {f.name: getattr(path, f.name) for f in fields(path)
            if getattr(path, f.name) != getattr(defaults, f.name)}
    return path.name + (f"({','.join(f'{k}={v}' for k, v in diff.items())})" if diff else "")


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


def case_file_stem(case: Case) -> str:
    return re.sub(r"[^A-Za-z0-9_.@=-]+", "_", f"{case.task.name}-{path_label(case.path)}-"
                  f"{case.solver.label()}-seed{case.seed}")


def save_samples(folder: Path, case: Case, ctx: EvalContext, samples: torch.Tensor) -> None:
    """Images: a PNG grid of 64 samples. 2D: samples and 64 trajectories (for report plots)."""
    stem = case_file_stem(case)
    if case.task.is_image:
        save_sample_grid(folder / f"{stem}.png", samples)
        return
    with torch.no_grad():
        traj = solve(ctx.velocity, ctx.x0_eval[:64], case.solver, ctx.path.t_min,
                     ctx.path.t_max, trajectory=True, n_saved=51).trajectory
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{stem}.{os.getpid()}.tmp.npz"
    np.savez(tmp, samples=samples[:2000].numpy(), trajectories=traj.numpy(),
             test=ctx.x1_test[:2000].numpy())
    os.replace(tmp, folder / f"{stem}.npz")


def save_sample_grid(file: Path, samples: torch.Tensor, n: int = 64) -> None:
    from torchvision.utils import save_image

    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.stem}.{os.getpid()}.tmp.png")
    grid = (samples[:n].detach().float().cpu().clamp(-1, 1) + 1) / 2
    save_image(grid, tmp, nrow=int(math.ceil(math.sqrt(min(n, len(grid))))))
    os.replace(tmp, file)


def save_model(file: Path, model: torch.nn.Module, meta: dict) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        torch.save({"state_dict": model.state_dict(), "meta": meta}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)


def load_model(file: Path, model: torch.nn.Module) -> dict | None:
    """Load a cached model; None (and the file removed) if it is unreadable, e.g. truncated."""
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["state_dict"])
    except Exception:  # noqa: BLE001 - any unreadable cache entry is retrained
        file.unlink(missing_ok=True)
        return None
    model.eval()
    return ckpt["meta"]


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


def evaluate(ctx: EvalContext, names: tuple[str, ...]) -> dict[str, tuple[float, str, str]]:
    out: dict[str, tuple[float, str, str]] = {}
    for name in names:
        try:
            for k, v in compute(name, ctx).items():
                if isinstance(v, NotApplicableValue):
                    out[k] = (float("nan"), "not_applicable", v.reason)
                else:
                    out[k] = (float(v), "ok", "")
        except NotApplicable as e:
            out[name] = (float("nan"), "not_applicable", str(e))
        except (FloatingPointError, CouplingError, RuntimeError, ValueError, AssertionError,
                OSError) as e:
            # AssertionError: torchdiffeq reports step-size underflow with assert
            out[name] = (float("nan"), "failed", f"{type(e).__name__}: {e}")
    return out


def _progress(console: Console) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False, disable=not console.is_terminal)


def run_suite(suite: Suite, out_dir: str | Path, resume: bool = False,
              cache_dir: str | Path | None = None, console: Console | None = None,
              overwrite: bool = False) -> pd.DataFrame:
    console = console or Console(stderr=True)
    store = ResultStore(out_dir)
    if resume and overwrite:
        raise RunError("--resume and --overwrite exclude each other")
    if store.has_results() and overwrite:
        store.clear()
    if store.has_results() and not resume:
        raise RunError(f"{out_dir} already holds results; pass --resume to finish that run, "
                       "--overwrite to replace it, or --out to write elsewhere")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cases = suite.cases()
    done = store.done_ids()
    meta = store.read_meta() if resume else {}
    meta.setdefault("schema_version", 1)
    meta.update({"suite": suite.name, "suite_file": suite.file, "resolved_suite": suite.raw,
                 "seeds": list(suite.seeds), "data_seed": suite.data_seed, "git": git_commit(),
                 "environment": environment(), "n_cases": len(cases), "status": "running"})
    meta.setdefault("started", now())
    meta.setdefault("sessions", []).append({"started": now(), "resumed": resume,
                                            "cases_already_done": len(done & {c.case_id
                                                                             for c in cases})})
    store.write_meta(meta)

    # rows of this suite's cases, read from disk once and kept current as cases finish
    rows_by_case: dict[str, list[dict]] = {
        cid: grp.to_dict("records")
        for cid, grp in store.read_rows({c.case_id for c in cases}).groupby("case_id")}
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
        for mkey, mcases in by_model.items():
            pending = [c for c in mcases if c.case_id not in done]
            if not pending:
                continue
            first = pending[0]
            label = f"{first.task.name} {path_label(first.path)} seed {first.seed}"
            failure = None
            try:
                if first.task.name not in task_cache:
                    task_cache[first.task.name] = TaskData.load(first.task)
                td = task_cache[first.task.name]
            except (DataError, OSError) as e:
                td, failure = None, f"data: {e}"
                console.print(f"[red]failed[/] {label}: {failure}")
            dev = device_for(first.task)
            model = None
            if td is not None:
                try:
                    model = build_model(suite, first.seed, td.shape).to(dev)
                except ValueError as e:
                    failure = f"model: {e}"
                    console.print(f"[red]failed[/] {label}: {failure}")
            file = cache / "models" / f"{mkey}.pt"
            train_meta = load_model(file, model) if file.exists() and model is not None else None
            if train_meta is None and failure is None:
                ckpt = cache / "checkpoints" / f"{mkey}.pt"
                bar = progress.add_task(f"train {label}", total=suite.training.steps, info="")

                def on_step(step, loss, rate, bar=bar):
                    if step % 50 == 0 or step == suite.training.steps:
                        progress.update(bar, completed=step,
                                        info=f"loss {loss:.4f} · {rate:,.0f} samples/s")

                try:
                    train_meta = train(
                        model, first.path, make_coupling(first.path.coupling,
                                                         **first.path.coupling_params()),
                        td.source(first.path), td.target(), suite.training, first.seed, on_step,
                        checkpoint=ckpt if suite.training.checkpoint_every else None, device=dev)
                    save_model(file, model, train_meta)
                    ckpt.unlink(missing_ok=True)
                except (TrainingFailed, CouplingError) as e:
                    failure = f"training failed: {type(e).__name__}: {e}"
                    console.print(f"[red]failed[/] {label}: {failure}")
                progress.remove_task(bar)
            if train_meta is not None:
                store.write_losses(mkey, {"task": first.task.name,
                                          "path_label": path_label(first.path),
                                          "seed": first.seed, "losses": train_meta["losses"]})
            sets = eval_sets(suite, td, first.path) if failure is None else {}
            extras = {"is_image": first.task.is_image, "task": first.task, "device": dev,
                      "metrics": suite.metrics, "cache_dir": cache}
            if td is not None and first.task.is_image:
                extras.update(train_images=td.train_images, test_images_fid=td.test_images)
            model_cache: dict = {}
            for case in pending:
                progress.update(overall, info=f"{label} {case.solver.label()}")
                if failure is not None:
                    values = {n: (float("nan"), "failed", failure) for n in suite.metrics.names}
                else:
                    ctx = EvalContext(case.path, model, case.solver, gaussian_source=case.task
                                      .gaussian_source, train_meta=train_meta,
                                      reference_steps=suite.metrics.reference_steps,
                                      solver_mse_n=suite.metrics.solver_mse_n,
                                      eval_batch=suite.metrics.eval_batch,
                                      cache=model_cache, extras=extras, **sets)
                    values = evaluate(ctx, suite.metrics.names)
                    gen = ctx.local.get("gen")
                    if isinstance(gen, tuple):
                        save_samples(store.dir / "samples", case, ctx, gen[0].y)
                rows_by_case[case.case_id] = case_rows(suite, case, values)
                store.write_case(case.case_id, rows_by_case[case.case_id])
                progress.advance(overall)
                store.write_table(_table(rows_by_case, cases))

    df = _table(rows_by_case, cases)
    store.write_table(df)
    meta["sessions"][-1]["finished"] = now()
    meta.update({"finished": now(), "status": "complete"})
    store.write_meta(meta)
    return df


def _table(rows_by_case: dict[str, list[dict]], cases: list[Case]) -> pd.DataFrame:
    """All rows of the suite's finished cases, in suite order."""
    rows = [r for c in cases for r in rows_by_case.get(c.case_id, [])]
    return pd.DataFrame(rows, columns=ROW_COLUMNS)


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
