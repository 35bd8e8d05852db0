"""The Python API: ``fmbench.run`` (a suite) and ``fmbench.evaluate`` (a network you have).

Both return the long-format results table (a pandas DataFrame, the rows of ``results.csv``: one
per case × seed × evaluation draw × metric, with ``value``, ``unit``, ``status``, ``reason`` and
every case parameter) and raise :class:`fmbench.suite.SuiteError` for a bad suite, like the
command line (which is a thin layer over the same functions).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from torch import nn

from fmbench.checkpoints import keep_module, release_module


def _as_suite(suite, file: str = "<python>"):
    from fmbench.suite import Suite, load_suite, parse_suite

    if isinstance(suite, Suite):
        return suite
    if isinstance(suite, dict):
        return parse_suite(suite, file)
    return load_suite(suite)


def run(suite, out: str | Path | None = None, *, resume: bool = False, overwrite: bool = False,
        cache_dir: str | Path | None = None, workers: int | None = None,
        executor: str | None = None) -> pd.DataFrame:
    """Run a suite: a suite file's path, a parsed :class:`~fmbench.suite.Suite`, or a dict with
    the same tables as a suite file (``{"suite": {"name": …}, "task": [...], …}``).

    ``out``: the results folder (default ``results/<suite name>``); ``resume``, ``overwrite``,
    ``cache_dir``, ``workers`` and ``executor`` as the command line's ``--resume``,
    ``--overwrite``, ``--cache-dir``, ``--workers`` and ``--executor``. Unlike the command line,
    the local executor runs in this process unless ``workers`` (or the suite's ``[executor]``)
    asks for worker processes: those start by re-importing the main module, so a script that
    asks for them needs the ``if __name__ == "__main__":`` guard."""
    from fmbench.executors import make_executor
    from fmbench.preflight import check
    from fmbench.runner import run_suite

    s = _as_suite(suite)
    check(s)  # data, weights, files: before anything trains
    name = executor or s.executor.name
    options = s.executor.options if name == s.executor.name else None
    if name == "local" and workers is None and not getattr(options, "workers", 0):
        workers = 1
    ex = make_executor(name, options, workers=workers)
    return run_suite(s, Path(out) if out else Path("results") / s.name, resume=resume,
                     cache_dir=cache_dir, overwrite=overwrite, executor=ex)


def _solver_table(spec) -> dict:
    from fmbench.evalsuite import parse_solver

    return parse_solver(spec) if isinstance(spec, str) else dict(spec)


def evaluate(model: nn.Module | str | Path, task: str | dict, solvers=("dopri5",),
             metrics=("w2", "npe", "nfe"), *, path: str | dict = "icfm",
             n_eval: int | None = None, eval_draws: int | None = None,
             out: str | Path | None = None, name: str = "evaluate",
             model_options: dict | None = None, overwrite: bool = False,
             resume: bool = False) -> pd.DataFrame:
    """Score a network you have, like a model fmbench trained: same evaluation draws, solvers,
    NFE counting and metrics.

    ``model``: a torch module computing v(x, t) (x: (n, *data shape), t: (n,); fmbench's time
    convention: t = 0 source, t = 1 data), or a checkpoint file (``model_options``: the
    ``[model]`` keys of a checkpoint, e.g. ``{"format": "torchcfm"}``). ``task``: a target name
    or a ``[[task]]`` table (``{"source": "moons", "target": "8gaussians"}``, image options).
    ``solvers``: ``"euler:100"``, ``"dopri5"``, ``"dopri5:1e-5"`` or ``[[solver]]`` tables.
    ``metrics``: names, or a ``[metrics]`` table. ``path``: the path the model was trained on (a
    name or a ``[[path]]`` table). ``out``: keep the results folder there (``overwrite``,
    ``resume`` as for :func:`run`; default: a temporary folder, removed). A module is evaluated
    as a copy, in this process (no worker processes); its identity in the model key is a digest
    of its class and state dict."""
    held = keep_module(model) if isinstance(model, nn.Module) else None
    try:
        return _evaluate(model, held, task, solvers, metrics, path, n_eval, eval_draws, out,
                         name, model_options, overwrite, resume)
    finally:
        if held is not None:
            release_module(held)


def _evaluate(model, held, task, solvers, metrics, path, n_eval, eval_draws, out, name,
              model_options, overwrite, resume) -> pd.DataFrame:
    if held is not None:
        model_table = {"kind": "in-memory", "weights": held}
    else:
        model_table = {"kind": "checkpoint", "file": str(Path(model).expanduser().resolve()),
                       **(model_options or {})}
    metrics_table = dict(metrics) if isinstance(metrics, dict) else {"names": list(metrics)}
    metrics_table.update({k: v for k, v in (("n_eval", n_eval), ("eval_draws", eval_draws))
                          if v is not None})
    suite = {
        "suite": {"name": name, "seeds": [0]},
        "task": [{"target": task} if isinstance(task, str) else dict(task)],
        "model": model_table,
        "path": [{"name": path} if isinstance(path, str) else dict(path)],
        "solver": [_solver_table(s) for s in ([solvers] if isinstance(solvers, str | dict)
                                               else solvers)],
        "metrics": metrics_table,
    }
    s = _as_suite(suite, "fmbench.evaluate")  # the tables of a suite file, validated alike
    if out is not None:
        return run(s, out, overwrite=overwrite, resume=resume, workers=1)
    with tempfile.TemporaryDirectory(prefix="fmbench-evaluate-") as tmp:
        return run(s, Path(tmp) / "out", workers=1)
