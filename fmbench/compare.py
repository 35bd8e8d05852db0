"""Compare two result sets: a pure classification, rendered separately.

Rows are matched on what defines a number, not on run-specific ids: task (source, target), path
and its parameters, objective, coupling, solver and its parameters, metric. For each match, over the
seeds of each side (status ``ok`` only):

- ``not comparable``: the definitions differ (metric version, unit, metric settings such as sample
  counts, n_eval) — never compared numerically;
- ``missing``: present (with ok values) on one side only;
- ``better`` / ``worse``: the change in the metric's good/bad direction exceeds the relative
  threshold AND is significant: with ≥ 3 seeds on both sides, a Welch t-test at ``alpha``; with fewer,
  the change must also exceed twice the larger seed standard deviation (when there is one);
- ``within noise``: otherwise.

Timing metrics (unit ``s``) are machine-dependent and skipped unless ``include_times``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from fmbench.results import SCHEMA_VERSION

KEY = ["task", "source", "target", "path", "path_params", "objective", "coupling", "solver",
       "solver_params", "metric"]
DEFINITION = ["metric_version", "unit", "metric_params", "n_eval", "settings",
              "higher_is_better"]
CLASSES = ("worse", "better", "within noise", "not comparable", "missing")


class ResultsError(ValueError):
    """Unusable result input (missing, wrong schema)."""


def load_results(path: str | Path) -> pd.DataFrame:
    """Rows from a results directory (its results.csv) or a CSV file; refuses other schemas."""
    p = Path(path)
    csv = p / "results.csv" if p.is_dir() else p
    if not csv.is_file():
        raise ResultsError(f"{path}: no results.csv (expected a results directory or CSV file)")
    try:
        df = pd.read_csv(csv, dtype={"path_params": str, "solver_params": str,
                                     "metric_params": str, "reason": str})
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as e:
        raise ResultsError(f"{csv}: not a results table ({e})") from None
    if "schema_version" not in df.columns:
        raise ResultsError(f"{csv}: no schema_version column: written by an fmbench before "
                           f"result schema {SCHEMA_VERSION}; re-run the suite")
    versions = set(df["schema_version"].dropna().astype(int))
    if versions != {SCHEMA_VERSION}:
        raise ResultsError(f"{csv}: result schema {sorted(versions)}, this fmbench reads "
                           f"{SCHEMA_VERSION}; re-run the suite or use a matching fmbench")
    missing = [c for c in KEY + DEFINITION + ["value", "status", "seed"] if c not in df.columns]
    if missing:
        raise ResultsError(f"{csv}: missing columns {missing}")
    for c in ("path_params", "solver_params", "metric_params"):
        df[c] = df[c].fillna("{}")
    df["settings"] = df["settings"].astype(object).where(df["settings"].notna(), "").astype(str)
    return df


@dataclass(frozen=True)
class Comparison:
    key: tuple
    label: str  # task / path / solver
    metric: str
    status: str
    a_mean: float = math.nan
    a_std: float = math.nan
    a_n: int = 0
    b_mean: float = math.nan
    b_std: float = math.nan
    b_n: int = 0
    rel_change: float = math.nan  # (b − a)/|a|
    p_value: float = math.nan
    threshold: float = math.nan
    note: str = ""
    missing_in: str = ""  # "A" or "B" for status "missing"

    @property
    def lost(self) -> bool:
        """Ok in the baseline (A) but absent or failed in the candidate (B): a regression."""
        return self.status == "missing" and self.missing_in == "B"


@dataclass
class CompareConfig:
    threshold: float = 0.10  # relative change that counts
    thresholds: dict[str, float] = field(default_factory=dict)  # per metric
    alpha: float = 0.05
    include_times: bool = False

    def for_metric(self, metric: str) -> float:
        return self.thresholds.get(metric, self.threshold)


def _label(key: tuple) -> str:
    d = dict(zip(KEY, key, strict=True))
    params = json.loads(d["path_params"]) if d["path_params"] else {}
    ps = ",".join(f"{k}={v}" for k, v in sorted(params.items())
                  if k not in ("coupling", "replace", "objective"))
    sparams = json.loads(d["solver_params"]) if d["solver_params"] else {}
    ss = ",".join(f"{k}={v}" for k, v in sorted(sparams.items()) if v is not None)
    return f"{d['task']} / {d['path']}({ps}) / {d['solver']}({ss})"


def _side(df: pd.DataFrame) -> dict[tuple, pd.DataFrame]:
    return {k: g for k, g in df.groupby(KEY, sort=False, dropna=False)}


def classify(a: pd.DataFrame, b: pd.DataFrame, config: CompareConfig | None = None
             ) -> list[Comparison]:
    """Classify every (case, metric) present in A or B. A is the baseline, B the candidate."""
    cfg = config or CompareConfig()
    sa, sb = _side(a), _side(b)
    out = []
    for key in list(dict.fromkeys([*sa, *sb])):
        metric = key[-1]
        ga, gb = sa.get(key), sb.get(key)
        unit = (ga if ga is not None else gb)["unit"].iloc[0]
        if unit == "s" and not cfg.include_times:
            continue
        label = _label(key)
        if ga is None or gb is None:
            out.append(Comparison(key, label, metric, "missing",
                                  note="only in " + ("B" if ga is None else "A"),
                                  missing_in="A" if ga is None else "B"))
            continue
        defs_a = ga[DEFINITION].astype(str).drop_duplicates()
        defs_b = gb[DEFINITION].astype(str).drop_duplicates()
        if len(defs_a) != 1 or len(defs_b) != 1 or not defs_a.iloc[0].equals(defs_b.iloc[0]):
            diff = [c for c in DEFINITION if set(ga[c].astype(str)) != set(gb[c].astype(str))]
            out.append(Comparison(key, label, metric, "not comparable",
                                  note="differs in " + ", ".join(diff or ["definition"])))
            continue
        va = ga[ga["status"] == "ok"]["value"].astype(float).to_numpy()
        vb = gb[gb["status"] == "ok"]["value"].astype(float).to_numpy()
        if len(va) == 0 or len(vb) == 0:
            side = "A" if len(va) == 0 else "B"
            reasons = (ga if len(va) == 0 else gb)["reason"].dropna().astype(str)
            out.append(Comparison(key, label, metric, "missing",
                                  note=f"no ok value in {side}" +
                                  (f": {reasons.iloc[0][:80]}" if len(reasons) else ""),
                                  missing_in=side if len(va) or len(vb) else "both"))
            continue
        out.append(_judge(key, label, metric, va, vb,
                          bool(str(ga["higher_is_better"].iloc[0]) == "True"), cfg))
    return out


def _judge(key, label, metric, va: np.ndarray, vb: np.ndarray, higher_better: bool,
           cfg: CompareConfig) -> Comparison:
    ma, mb = float(va.mean()), float(vb.mean())
    sa = float(va.std(ddof=1)) if len(va) > 1 else 0.0
    sb = float(vb.std(ddof=1)) if len(vb) > 1 else 0.0
    delta = mb - ma
    rel = delta / abs(ma) if ma != 0 else (0.0 if delta == 0 else math.copysign(math.inf, delta))
    thr = cfg.for_metric(metric)
    p = math.nan
    if len(va) >= 3 and len(vb) >= 3:
        if sa == 0 and sb == 0:
            significant = delta != 0
        else:
            p = float(stats.ttest_ind(va, vb, equal_var=False).pvalue)
            significant = p < cfg.alpha
        note = "Welch t-test"
    else:
        spread = max(sa, sb)
        significant = abs(delta) > 2 * spread if spread > 0 else True
        note = f"{min(len(va), len(vb))} seed(s): threshold" + (" and 2x seed std"
                                                                 if spread > 0 else "")
    if abs(rel) > thr and significant:
        good = (delta > 0) == higher_better
        status = "better" if good else "worse"
    else:
        status = "within noise"
    return Comparison(key, label, metric, status, ma, sa, len(va), mb, sb, len(vb), rel, p,
                      thr, note)


def to_frame(comparisons: list[Comparison]) -> pd.DataFrame:
    cols = ["label", "metric", "status", "a_mean", "a_std", "a_n", "b_mean", "b_std", "b_n",
            "rel_change", "p_value", "threshold", "note"]
    return pd.DataFrame([{c: getattr(x, c) for c in cols} for x in comparisons], columns=cols)


def _fmt(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "–"
    return f"{mean:.4g} ± {std:.2g} (n={n})"


def render_markdown(comparisons: list[Comparison]) -> str:
    """A Markdown table for PR comments, worst news first."""
    order = {c: i for i, c in enumerate(CLASSES)}
    rows = sorted(comparisons, key=lambda c: (order[c.status], c.label, c.metric))
    counts = {c: sum(x.status == c for x in comparisons) for c in CLASSES}
    lines = [" · ".join(f"**{v}** {k}" for k, v in counts.items() if v), "",
             "| case | metric | status | A | B | change | note |",
             "|---|---|---|---|---|---|---|"]
    for c in rows:
        change = "" if math.isnan(c.rel_change) else f"{c.rel_change:+.1%}"
        lines.append(f"| {c.label} | {c.metric} | {c.status} | {_fmt(c.a_mean, c.a_std, c.a_n)} "
                     f"| {_fmt(c.b_mean, c.b_std, c.b_n)} | {change} | {c.note} |")
    return "\n".join(lines) + "\n"


def render_rich(comparisons: list[Comparison], title: str = ""):
    from rich.table import Table

    style = {"worse": "red", "better": "green", "within noise": "", "not comparable": "yellow",
             "missing": "yellow"}
    order = {c: i for i, c in enumerate(CLASSES)}
    table = Table(title=title)
    for col in ("case", "metric", "status", "A", "B", "change", "note"):
        table.add_column(col, justify="right" if col in ("A", "B", "change") else "left")
    for c in sorted(comparisons, key=lambda c: (order[c.status], c.label, c.metric)):
        change = "" if math.isnan(c.rel_change) else f"{c.rel_change:+.1%}"
        st = style[c.status]
        table.add_row(c.label, c.metric, f"[{st}]{c.status}[/]" if st else c.status,
                      _fmt(c.a_mean, c.a_std, c.a_n), _fmt(c.b_mean, c.b_std, c.b_n), change,
                      c.note)
    return table


def merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One table from several runs of a suite (e.g. from several machines): rows de-duplicated on
    the case key and seed; where both have a row, an ok one wins over a failed one, then the later
    input wins."""
    df = pd.concat(frames, ignore_index=True)
    df["_ok"] = (df["status"] == "ok").astype(int)
    df["_order"] = range(len(df))
    df = df.sort_values(["_ok", "_order"], kind="stable")
    df = df.drop_duplicates(subset=[*KEY, *DEFINITION, "seed"], keep="last")
    return df.sort_values("_order").drop(columns=["_ok", "_order"]).reset_index(drop=True)


def check_config(results_path: str | Path, threshold: float | None = None,
                 alpha: float | None = None, include_times: bool = False) -> CompareConfig:
    """Settings for ``fmbench check``: command line first, then the run's suite [check] table."""
    cfg = CompareConfig(include_times=include_times)
    run = Path(results_path) / "run.json"
    if run.is_file():
        suite_check = json.loads(run.read_text()).get("resolved_suite", {}).get("check", {})
        cfg.threshold = float(suite_check.get("threshold", cfg.threshold))
        cfg.alpha = float(suite_check.get("alpha", cfg.alpha))
        cfg.thresholds = {k: float(v) for k, v in suite_check.get("thresholds", {}).items()}
    if threshold is not None:
        cfg.threshold, cfg.thresholds = threshold, {}
    if alpha is not None:
        cfg.alpha = alpha
    return cfg
