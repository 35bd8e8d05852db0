"""Compare two result sets: a pure classification, rendered separately.

Rows are matched on what defines a number, not on run-specific ids: task (source, target), path
and its parameters, objective, coupling, solver and its parameters, metric. For each match, over the
seeds × evaluation draws of each side (status ``ok`` only):

- ``not comparable``: the definitions differ (metric version, unit, metric settings such as sample
  counts, n_eval) — never compared numerically;
- ``missing``: present (with ok values) on one side only;
- ``better`` / ``worse``: the change in the metric's good/bad direction exceeds the relative
  threshold AND is significant at ``alpha``: a t-test of the difference B − A paired over the
  evaluation draws both sides share (draw r is the same inputs on both sides: same task and
  data_seed), its standard error combining both sides' seed noise and the draw noise that does
  not cancel (:func:`fmbench.uncertainty.paired_difference`; one draw: Welch over seeds; one seed
  a side: a paired t-test over draws). With one seed and one draw a side there is no noise
  estimate: the threshold alone decides, and the note says so;
- ``within noise``: otherwise. A false-positive rate at alpha 0.05 under no true difference and
  the power against a known shift are measured in tests/test_compare_noise.py.

Timing metrics (unit ``s``) are machine-dependent and skipped unless ``include_times``.
"""

from __future__ import annotations

import csv as _csv
import io
import json
import math
import re
from dataclasses import asdict, dataclass, field, replace
from dataclasses import fields as dataclass_fields
from pathlib import Path

import pandas as pd

from fmbench.metrics import metric_role
from fmbench.schema import SCHEMA_VERSION, BadRow, parse_row
from fmbench.summary import LEVEL, cell, header, value_table
from fmbench.uncertainty import crossed_mean, paired_difference
from fmbench.validation import FieldError, short_repr

KEY = ["task", "source", "target", "path", "path_params", "objective", "coupling", "solver",
       "solver_params", "metric"]
DEFINITION = ["metric_version", "unit", "metric_params", "n_eval", "settings",
              "higher_is_better"]
CLASSES = ("worse", "better", "within noise", "not comparable", "missing")


class ResultsError(ValueError):
    """Unusable result input (missing, wrong schema, malformed rows)."""


REQUIRED_COLUMNS = list(dict.fromkeys([*KEY, *DEFINITION, "value", "status", "seed", "draw",
                                       "schema_version",
                                       "suite", "path_label", "solver_label", "reason"]))
STRICT_SHOWN = 5  # problems listed in a strict-mode error


def _parse_row(header: list[str], fields: list[str], complete: bool) -> dict:
    """One CSV record as typed values, or BadRow naming the column and what is wrong."""
    if len(fields) != len(header):
        raise BadRow(f"{len(fields)} fields where the header has {len(header)} (cut short?)")
    if not complete:  # before parsing: a cut row fails in whichever cell the cut fell
        raise BadRow("the last line has no line end (file cut short?)")
    return parse_row(dict(zip(header, fields, strict=True)))


def _csv_file(path: str | Path) -> Path:
    p = Path(path)
    csv_path = p / "results.csv" if p.is_dir() else p
    if not csv_path.is_file():
        raise ResultsError(f"{path}: no results.csv (expected a results directory or CSV file)")
    return csv_path


def _read_text(csv_path: Path) -> str:
    try:
        text = csv_path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ResultsError(f"{csv_path}: not a text file (not UTF-8): not a results table") from None
    except OSError as e:
        raise ResultsError(f"{csv_path}: cannot be read ({e.strerror or e})") from None
    if "\x00" in text:
        raise ResultsError(f"{csv_path}: binary data (NUL bytes): not a results table")
    if not text.strip():
        raise ResultsError(f"{csv_path}: empty file: not a results table")
    return text


def _records(csv_path: Path, text: str):
    """(first line number, fields) per non-blank CSV record."""
    reader = _csv.reader(io.StringIO(text, newline=""))
    line = 1
    try:
        for fields in reader:
            if fields:
                yield line, fields
            line = reader.line_num + 1
    except _csv.Error as e:
        raise ResultsError(f"{csv_path} line {line}: {e}: not a readable CSV table") from None


def _check_header(csv_path: Path, header: list[str]) -> None:
    if "schema_version" not in header:
        raise ResultsError(f"{csv_path}: no schema_version column: not a results table, or written "
                           f"by an fmbench before result schema {SCHEMA_VERSION}; re-run the suite")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise ResultsError(f"{csv_path}: missing columns {missing}: not a results table")
    if len(set(header)) != len(header):
        raise ResultsError(f"{csv_path}: repeated column names in the header")


def _check_versions(csv_path: Path, rows: list[dict]) -> None:
    versions = {r["schema_version"] for r in rows}
    if versions and versions != {SCHEMA_VERSION}:
        raise ResultsError(f"{csv_path}: result schema {sorted(versions)}, this fmbench reads "
                           f"{SCHEMA_VERSION}; re-run the suite or use a matching fmbench")


def load_results(path: str | Path, problems: list[str] | None = None) -> pd.DataFrame:
    """Validated rows from a results directory (its results.csv) or a CSV file.

    Strict without ``problems`` (compare, check, merge): any malformed row raises ResultsError
    naming the file, line and what is wrong. Lenient with a ``problems`` list (report): malformed
    rows are set aside and described there. A file that is not a results table at all (unreadable,
    binary, empty, no header, another schema) raises in both modes."""
    csv_path = _csv_file(path)
    text = _read_text(csv_path)
    (_, header), *records = list(_records(csv_path, text))
    _check_header(csv_path, header)
    cut = not text.endswith(("\n", "\r"))
    rows, bad = [], []
    for i, (line, fields) in enumerate(records):
        try:
            rows.append(_parse_row(header, fields, complete=not (cut and i == len(records) - 1)))
        except BadRow as e:
            bad.append(f"line {line}: {e}")
    _check_versions(csv_path, rows)
    if bad and problems is None:
        more = f"; … and {len(bad) - STRICT_SHOWN} more" if len(bad) > STRICT_SHOWN else ""
        head = f"{csv_path} " if len(bad) == 1 else f"{csv_path}: {len(bad)} malformed rows: "
        raise ResultsError(head + "; ".join(bad[:STRICT_SHOWN]) + more)
    if problems is not None:
        problems += [f"{csv_path} {b} (row set aside)" for b in bad]
    return pd.DataFrame(rows, columns=header)


@dataclass(frozen=True)
class Comparison:
    key: tuple
    label: str  # task / path / solver
    metric: str
    status: str
    a_mean: float = math.nan
    a_half: float = math.nan  # 95% CI half-width (fmbench.summary)
    a_n: int = 0  # seeds
    b_mean: float = math.nan
    b_half: float = math.nan
    b_n: int = 0
    draws: int = 0  # evaluation draws shared by both sides (what the test pairs over)
    rel_change: float = math.nan  # (b − a)/|a|
    p_value: float = math.nan
    threshold: float = math.nan
    note: str = ""
    missing_in: str = ""  # "A" or "B" for status "missing"
    head: str = ""  # the metric as every table heads it: unit and direction (summary.header)

    @property
    def metric_head(self) -> str:
        return self.head or self.metric

    @property
    def lost(self) -> bool:
        """Ok in the baseline (A) but absent or failed in the candidate (B): a regression."""
        return self.status == "missing" and self.missing_in == "B"


def _setting(value: object, *, probability: bool = False) -> float:
    """A threshold (finite, >= 0) or, with ``probability``, an alpha in (0, 1); ValueError
    saying what is allowed otherwise. The one rule for these settings, wherever they come from:
    a suite's [check] table, run.json, the command line."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    try:
        x = float(value) if number else math.nan
    except OverflowError:
        x = math.nan
    if not (math.isfinite(x) and (0 < x < 1 if probability else x >= 0)):
        want = "a number in (0, 1)" if probability else "a finite number >= 0"
        raise ValueError(f"must be {want}, got {short_repr(value)}")
    return x


@dataclass(frozen=True)
class CheckSettings:
    """What ``fmbench check`` counts as a regression: the suite's ``[check]`` table, resolved
    (defaults included). run.json stores :meth:`to_json` of it as ``check``; ``check`` reads it
    back (:func:`check_config`). Checked when made (FieldError naming the setting)."""

    threshold: float = 0.10  # relative change that counts
    alpha: float = 0.05  # significance level of the paired test (see the module docstring)
    thresholds: dict[str, float] = field(  # per metric, instead of threshold
        default_factory=dict, metadata={"entries": "metric = relative threshold"})

    def __post_init__(self) -> None:
        for name, probability in (("threshold", False), ("alpha", True)):
            try:
                object.__setattr__(self, name, _setting(getattr(self, name),
                                                        probability=probability))
            except ValueError as e:
                raise FieldError(name, str(e)) from None
        if not isinstance(self.thresholds, dict):
            raise FieldError("thresholds", f"must map metric names to thresholds, got "
                                           f"{short_repr(self.thresholds)}")
        out = {}
        for k, v in self.thresholds.items():
            try:
                out[str(k)] = _setting(v)
            except ValueError as e:
                raise FieldError(("thresholds", k), str(e)) from None
        object.__setattr__(self, "thresholds", out)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict) -> CheckSettings:
        """From run.json's ``check`` (keys it does not know are ignored; missing ones default)."""
        return cls(**{f.name: obj[f.name] for f in dataclass_fields(cls) if f.name in obj})


@dataclass
class CompareConfig:
    threshold: float = CheckSettings.threshold  # relative change that counts
    thresholds: dict[str, float] = field(default_factory=dict)  # per metric
    alpha: float = CheckSettings.alpha
    include_times: bool = False

    def for_metric(self, metric: str) -> float:
        return self.thresholds.get(metric, self.threshold)


def _label(rows: pd.DataFrame) -> str:
    """``task / path / solver`` with the labels the rows carry: the same as ``fmbench run``'s
    table and the report show (``euler@nfe20``, not the solver's parameters)."""
    first = rows.iloc[0]
    return f"{first['task']} / {first['path_label']} / {first['solver_label']}"


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
        label = _label(ga if ga is not None else gb)
        if ga is None or gb is None:
            out.append(Comparison(key, label, metric, "missing",
                                  note="only in " + ("B" if ga is None else "A"),
                                  missing_in="A" if ga is None else "B"))
            continue
        defs_a = ga[DEFINITION].astype(str).drop_duplicates()
        defs_b = gb[DEFINITION].astype(str).drop_duplicates()
        if len(defs_a) != 1 or len(defs_b) != 1 or not defs_a.iloc[0].equals(defs_b.iloc[0]):
            diff = [_definition_diff(c, ga, gb) for c in DEFINITION
                    if set(ga[c].astype(str)) != set(gb[c].astype(str))]
            out.append(Comparison(key, label, metric, "not comparable",
                                  note="differs in " + "; ".join(diff or ["definition"])))
            continue
        ta, tb = _values(ga), _values(gb)
        if ta.size == 0 or tb.size == 0:
            side = "A" if ta.size == 0 else "B"
            reasons = (ga if ta.size == 0 else gb)["reason"].dropna().astype(str)
            reasons = reasons[reasons != ""]
            out.append(Comparison(key, label, metric, "missing",
                                  note=f"no ok value in {side}" +
                                  (f": {reasons.iloc[0][:80]}" if len(reasons) else ""),
                                  missing_in=side if ta.size or tb.size else "both"))
            continue
        common = [c for c in ta.columns if c in tb.columns]
        if not common:
            out.append(Comparison(key, label, metric, "not comparable",
                                  note="no evaluation draw in common"))
            continue
        out.append(_judge(key, label, metric, ta[common], tb[common],
                          bool(str(ga["higher_is_better"].iloc[0]) == "True"), cfg))
    return [replace(c, head=_head(c.metric, sa.get(c.key), sb.get(c.key))) for c in out]


def _head(metric: str, ga: pd.DataFrame | None, gb: pd.DataFrame | None) -> str:
    """The metric's header from its rows (B's where both have them: the candidate's unit)."""
    g = gb if gb is not None else ga
    unit = g["unit"].iloc[0]
    return header(metric, "" if pd.isna(unit) else str(unit),
                  str(g["higher_is_better"].iloc[0]) == "True", metric_role(metric))


def _flat(obj: object, prefix: str = "") -> dict[str, object]:
    """A JSON object as dotted keys: {"training": {"steps": 600}} → {"training.steps": 600}; an
    empty object below the top contributes no key (so {} against {"k": 1} is one key, k)."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items()
                for k, v in _flat(val, f"{prefix}{key}.").items()}
    return {prefix[:-1]: obj}


def _definition_diff(column: str, ga: pd.DataFrame, gb: pd.DataFrame) -> str:
    """What differs in one definition column between A and B, readably: for ``settings`` the
    keys that differ with A's and B's value (from ``settings_json``; rows written before it was
    stored show only the digests), for the other columns both values."""
    def values(g: pd.DataFrame, c: str) -> list[str]:
        return sorted({str(v) for v in g[c] if not pd.isna(v)}) if c in g.columns else []

    va, vb = values(ga, column), values(gb, column)
    if column != "settings":
        return f"{column} {'/'.join(va)} → {'/'.join(vb)}"
    digests = f"digest {'/'.join(va)} → {'/'.join(vb)}"
    ja, jb = ([_stored(t) for t in values(g, "settings_json")] for g in (ga, gb))
    if not (ja and jb and all(ja) and all(jb)):  # a side without stored settings
        return (f"settings ({digests}; rows written before the settings_json column hold only "
                "the digest: rerun to see which keys)")
    if len(ja) > 1 or len(jb) > 1:
        return f"settings ({digests}: more than one setting within a side)"
    fa, fb = _flat(ja[0]), _flat(jb[0])
    keys = [k for k in dict.fromkeys([*fa, *fb]) if fa.get(k) != fb.get(k)]
    if not keys:
        return f"settings ({digests}; the stored settings agree)"
    return "settings: " + ", ".join(
        f"{k} {_show(fa.get(k, '(unset)'))} → {_show(fb.get(k, '(unset)'))}" for k in keys)


def _stored(text: str) -> dict | None:
    """A stored settings_json as an object; None for rows written before it (``{}``)."""
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc else None


def _show(v: object) -> str:
    return json.dumps(v, default=str) if not isinstance(v, str) else v


def _values(g: pd.DataFrame) -> pd.DataFrame:
    """A side's ok values as a (seed × draw) table (fmbench.summary.value_table)."""
    ok = g[g["status"] == "ok"]
    return value_table(ok.assign(value=ok["value"].astype(float))) if len(ok) else \
        pd.DataFrame()


def _judge(key, label, metric, ta: pd.DataFrame, tb: pd.DataFrame, higher_better: bool,
           cfg: CompareConfig) -> Comparison:
    """Classify B against A from their (seed × draw) tables over the same draws."""
    ea, eb = crossed_mean(ta.to_numpy(float)), crossed_mean(tb.to_numpy(float))
    d = paired_difference(tb.to_numpy(float), ta.to_numpy(float))  # B − A
    delta, ma = d.mean, ea.mean
    rel = delta / abs(ma) if ma != 0 else (0.0 if delta == 0 else math.copysign(math.inf, delta))
    thr = cfg.for_metric(metric)
    p = d.p_value()
    r = ta.shape[1]
    if math.isfinite(p):
        significant = p < cfg.alpha
        note = (f"paired over {r} draw(s); covers {d.covers}" if r > 1 else
                "Welch over seeds (1 draw); covers seeds")
    else:
        significant = True
        note = f"{ea.n_seeds}×{r} vs {eb.n_seeds}×{r}: no noise estimate, threshold only"
    if abs(rel) > thr and significant:
        status = "better" if (delta > 0) == higher_better else "worse"
    else:
        status = "within noise"
    return Comparison(key, label, metric, status, ma, ea.half_width(LEVEL), ea.n_seeds, eb.mean,
                      eb.half_width(LEVEL), eb.n_seeds, r, rel, p, thr, note)


def to_frame(comparisons: list[Comparison]) -> pd.DataFrame:
    cols = ["label", "metric", "status", "a_mean", "a_half", "a_n", "b_mean", "b_half", "b_n",
            "draws", "rel_change", "p_value", "threshold", "note"]
    return pd.DataFrame([{c: getattr(x, c) for c in cols} for x in comparisons], columns=cols)


def _fmt(mean: float, half: float, n: int, draws: int) -> str:
    """A side's mean ± 95% CI half-width (seeds × draws), digits following the uncertainty."""
    if n == 0 or math.isnan(mean):
        return "–"
    return cell({"mean": mean, "half": half, "n_seeds": n, "n_draws": draws, "role": "score"})


_MD_SPECIAL = re.compile(r"[\\`*\[\]~|]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")


def md_escape(text: object) -> str:
    """Untrusted text made inert for a Markdown line or table cell: one line, HTML characters as
    entities, ``|`` and formatting characters backslash-escaped (``_`` only where it could format,
    so ``w2_floor`` stays readable)."""
    s = " ".join(str(text).splitlines())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), s)


def _change(c: Comparison) -> str:
    """The relative change; identical means (not merely within noise) say so."""
    if math.isnan(c.rel_change):
        return ""
    if c.a_mean == c.b_mean:
        return "identical"
    return f"{c.rel_change:+.1%}"


def summary_line(comparisons: list[Comparison], bold: str = "**") -> str:
    """``3 worse · 1 better · …`` over the classes present, worst first."""
    counts = {c: sum(x.status == c for x in comparisons) for c in CLASSES}
    return " · ".join(f"{bold}{v}{bold} {k}" for k, v in counts.items() if v)


def render_markdown(comparisons: list[Comparison]) -> str:
    """A Markdown table for PR comments, worst news first; labels and notes escaped."""
    order = {c: i for i, c in enumerate(CLASSES)}
    rows = sorted(comparisons, key=lambda c: (order[c.status], c.label, c.metric))
    lines = [summary_line(comparisons), "",
             "| case | metric | status | A | B | change | note |",
             "|---|---|---|---|---|---|---|"]
    for c in rows:
        change = _change(c)
        lines.append(f"| {md_escape(c.label)} | {md_escape(c.metric_head)} | {c.status} "
                     f"| {_fmt(c.a_mean, c.a_half, c.a_n, c.draws)} "
                     f"| {_fmt(c.b_mean, c.b_half, c.b_n, c.draws)} "
                     f"| {change} | {md_escape(c.note)} |")
    return "\n".join(lines) + "\n"


def render_rich(comparisons: list[Comparison], title: str = ""):
    """A rich table; ``title`` is rich markup, labels and notes are shown literally."""
    from rich.markup import escape
    from rich.table import Table

    style = {"worse": "red", "better": "green", "within noise": "", "not comparable": "yellow",
             "missing": "yellow"}
    order = {c: i for i, c in enumerate(CLASSES)}
    table = Table(title=title)
    for col in ("case", "metric", "status", "A", "B", "change", "note"):
        table.add_column(col, justify="right" if col in ("A", "B", "change") else "left")
    table.caption = summary_line(comparisons, bold="") + " (worst first)"
    for c in sorted(comparisons, key=lambda c: (order[c.status], c.label, c.metric)):
        change = _change(c)
        st = style[c.status]
        table.add_row(escape(c.label), escape(c.metric_head),
                      f"[{st}]{c.status}[/]" if st else c.status,
                      _fmt(c.a_mean, c.a_half, c.a_n, c.draws),
                      _fmt(c.b_mean, c.b_half, c.b_n, c.draws), change,
                      escape(c.note))
    return table


def merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """One table from several runs of a suite (e.g. from several machines): rows de-duplicated on
    the case key and seed; where both have a row, an ok one wins over a failed one, then the later
    input wins."""
    df = pd.concat(frames, ignore_index=True)
    df["_ok"] = (df["status"] == "ok").astype(int)
    df["_order"] = range(len(df))
    df = df.sort_values(["_ok", "_order"], kind="stable")
    df = df.drop_duplicates(subset=[*KEY, *DEFINITION, "seed", "draw"], keep="last")
    return df.sort_values("_order").drop(columns=["_ok", "_order"]).reset_index(drop=True)


def merged_meta(paths: list[str | Path]) -> dict:
    """run.json of a merged folder: where its rows came from (each input's suite, commit, status,
    executor and devices), and the inputs' ``check`` settings when they agree (so ``fmbench
    check`` on the merged folder uses them); inputs given as CSV files carry no metadata."""
    from fmbench.results import SCHEMA_VERSION, now

    sources, checks = [], []
    for p in paths:
        meta = read_run_json(p) if Path(p).is_dir() else {}
        sources.append({"path": str(p), **{k: meta.get(k) for k in
                                           ("suite", "git", "status", "executor", "devices")}})
        if isinstance(meta.get("check"), dict):
            checks.append(CheckSettings.from_json(meta["check"]).to_json())
    suites = sorted({s["suite"] for s in sources if isinstance(s["suite"], str)})
    out = {"schema_version": SCHEMA_VERSION, "status": "merged", "merged": now(),
           "sources": sources}
    if len(suites) == 1:
        out["suite"] = suites[0]
    if checks and all(c == checks[0] for c in checks):
        out["check"] = checks[0]
    return out


def read_run_json(folder: str | Path) -> dict:
    """The run.json of a results directory as an object; {} when there is none."""
    from fmbench.results import CorruptFile, ResultStore

    try:
        return ResultStore(folder).read_meta()
    except (CorruptFile, OSError) as e:
        raise ResultsError(f"{Path(folder) / 'run.json'}: {e}") from None


def _suite_check(results_path: str | Path) -> CheckSettings:
    """The run's check settings: run.json's ``check``, else ``resolved_suite.check`` (runs
    written before run.json carried ``check``); the defaults when there is neither."""
    folder = Path(results_path)
    meta = read_run_json(folder) if folder.is_dir() else {}
    where = f"{folder / 'run.json'}: "
    if "check" in meta:
        table, where = meta["check"], where + "check"
    else:
        suite = meta.get("resolved_suite", {})
        if not isinstance(suite, dict):
            raise ResultsError(f"{where}resolved_suite is not a JSON object")
        table, where = suite.get("check", {}), where + "resolved_suite.check"
    if not isinstance(table, dict | None):
        raise ResultsError(f"{where} must be a JSON object, got {short_repr(table)}")
    thresholds = (table or {}).get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise ResultsError(f"{where}.thresholds must be a JSON object of metric: threshold, got "
                           f"{short_repr(thresholds)}")
    try:
        return CheckSettings.from_json(table or {})
    except FieldError as e:
        raise ResultsError(f"{where}.{'.'.join(map(str, e.path))} {e.message}") from None


def check_config(results_path: str | Path | None, threshold: float | None = None,
                 alpha: float | None = None, include_times: bool = False) -> CompareConfig:
    """Validated settings for ``fmbench check`` / ``compare``: command line first, then the
    run's check settings (the defaults when ``results_path`` is None)."""
    run = _suite_check(results_path) if results_path is not None else CheckSettings()
    try:
        if threshold is not None:
            run = replace(run, threshold=threshold, thresholds={})
        if alpha is not None:
            run = replace(run, alpha=alpha)
    except FieldError as e:
        raise ResultsError(f"--{e.path[0]} {e.message}") from None
    return CompareConfig(threshold=run.threshold, thresholds=dict(run.thresholds), alpha=run.alpha,
                         include_times=include_times)
