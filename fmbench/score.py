"""Score: a case's metric values from its :class:`~fmbench.metrics.Scoring`, and the case's
long-format result rows (:mod:`fmbench.schema`).

Each metric is computed on its own: a failure fails that metric with its reason, never the case
or the run; a NaN or infinite value is ``failed``; only StorageError (the machine cannot write)
and interrupts propagate.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

from fmbench.artifacts import path_label
from fmbench.metrics import METRICS, NotApplicable, NotApplicableValue, Scoring, compute
from fmbench.plan import Case
from fmbench.schema import SCHEMA_VERSION
from fmbench.storage import StorageError, canonical_json, digest
from fmbench.validation import one_line

if TYPE_CHECKING:
    from fmbench.suite import Suite

Values = dict[str, tuple[float, str, str]]  # metric → (value, status, reason)


def describe(e: BaseException, limit: int = 500) -> str:
    """One line saying what went wrong (the reason stored on a failed row)."""
    return one_line(f"{type(e).__name__}: {e}", limit)


def evaluate(s: Scoring, names: tuple[str, ...], seconds: dict[str, float] | None = None
             ) -> Values:
    """The values of the metrics ``names`` (with their extra outputs, e.g. w2_floor); each
    metric's wall time is added to ``seconds[name]`` when given (references it computes first,
    such as a floor, count towards it)."""
    out: Values = {}
    for name in names:
        start = time.perf_counter()
        try:
            for k, v in compute(name, s).items():
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
        except Exception as e:  # noqa: BLE001 - see the module docstring
            out[name] = (float("nan"), "failed", describe(e))
        if seconds is not None:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
    return out


def failed(names: tuple[str, ...], reason: str) -> Values:
    return {n: (float("nan"), "failed", reason) for n in names}


def settings(suite: Suite, case: Case) -> dict:
    """What else defines a number: task options (as written), model, training, data seed. Rows
    from runs that differ here are 'not comparable' in compare/check (code version excluded);
    rows store them readably (``settings_json``) so check can name what differs."""
    return {"task_options": case.task.options, "model": asdict(suite.model),
            "training": asdict(suite.training), "data_seed": suite.data_seed}


def settings_digest(suite: Suite, case: Case) -> str:
    """The row's ``settings``: a digest of :func:`settings`."""
    return digest(settings(suite, case), 12)


def case_rows(suite: Suite, case: Case, draws: list[Values]) -> list[dict]:
    """Long-format rows for one case, one per evaluation draw and metric output (``draws[r]``:
    the values of draw r)."""
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
        "settings_json": canonical_json(settings(suite, case)),
        "model": canonical_json(asdict(suite.model)),
    }
    rows = []
    for draw, values in enumerate(draws):
        for name, (value, status, reason) in values.items():
            m = METRICS.get(name)
            params = {k: getattr(suite.metrics, k) for k in m.settings}
            rows.append({**base, "draw": draw, "metric": name, "value": value, "unit": m.unit,
                         "higher_is_better": m.higher_is_better, "metric_version": m.version,
                         "metric_params": json.dumps(params, sort_keys=True),
                         "status": status, "reason": reason})
    return rows
