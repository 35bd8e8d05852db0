"""Reports from a results directory: the papers' tables and figures, as Markdown or HTML.

Tables (fmbench.summary: mean ± 95% CI half-width over training seeds × evaluation draws with
S×R beside it; the best value per column in bold only when a paired test separates it, ties
marked ≈; floors as mean and sd over pairs of draws):
- every task × path × solver with every metric;
- Tong et al.'s 2D layout: W2 and NPE per task (columns) and path (rows), per solver;
- Lipman et al.'s Table 1 layout: per path, bits/dim (or NLL), FID and NFE, per solver.
Figures (:mod:`fmbench.figures`): solver MSE, FID and W2 against NFE per path and solver (log
axes), W2/NPE bars with error bars, training-loss curves, 2D samples with trajectories, image sample
grids.

Every input is optional and validated on its own: malformed results.csv rows, losses files, sample
files, image grids and run.json are left out of the tables and figures and listed under "Set aside".
Text from those files is escaped (Markdown: ``md_escape``; HTML: ``html.escape``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pandas as pd

from fmbench import report_html
from fmbench.compare import ResultsError, load_results, md_escape, read_run_json
from fmbench.document import (
    FAILED_TITLE,
    MACHINE_TITLE,
    NO_VALUES,
    SET_ASIDE_INTRO,
    SET_ASIDE_TITLE,
    TIME_CAPTION,
    TIME_TITLE,
    TITLE,
    Document,
    machine,
    seconds,
    split_bold,
    text,
    time_split,
)
from fmbench.figures import (
    Figure,
    figure_bars,
    figure_losses,
    figure_metric_vs_nfe,
    figure_samples_2d,
    image_grids,
    meta_value,
)
from fmbench.results import ResultStore, atomic_write_text
from fmbench.summary import ALPHA, TIE, best_marks, cell, headers, interval_note, summarize

INDEX_NAMES = {"path_label": "path", "solver_label": "solver"}  # rows' labels as tables say them


def _table(s: pd.DataFrame, index: list[str], columns: str, group_best: list[str] | None = None
           ) -> pd.DataFrame:
    """Pivot the summary's cells; the best value per column (within ``group_best`` groups) in
    bold when noise separates it, ties marked (fmbench.summary.best_marks)."""
    s = s.copy()
    marks = best_marks(s, [columns, *(group_best or [])])
    s["cell"] = [cell(r) for _, r in s.iterrows()]
    s.loc[marks == "best", "cell"] = "**" + s.loc[marks == "best", "cell"] + "**"
    s.loc[marks == "tie", "cell"] = TIE + s.loc[marks == "tie", "cell"]
    order_cols = list(dict.fromkeys(s[columns]))
    t = s.pivot_table(index=index, columns=columns, values="cell", aggfunc="first", sort=False)
    t = t[[c for c in order_cols if c in t.columns]].fillna("–")
    return t.rename_axis(index=[INDEX_NAMES.get(n, n) for n in t.index.names], columns=None)


SAMPLE_COUNTED = ("fid", "fid_floor", "kid", "kid_std")  # biased in n or defined at n


def _column_names(df: pd.DataFrame, s: pd.DataFrame) -> dict[str, str]:
    """Metric columns' headers (:func:`fmbench.summary.header`: unit and direction); FID/KID with
    the sample count behind them, e.g. ``fid (n=5000) ↓``."""
    heads = headers(s)
    names = {}
    for m, g in df.groupby("metric", sort=False):
        counts = sorted(g["n_eval"].unique().tolist())
        head = heads.get(m, m)
        names[m] = head.replace(m, f"{m} (n={'/'.join(map(str, counts))})", 1) \
            if m in SAMPLE_COUNTED else head
    return names


def tables(df: pd.DataFrame, s: pd.DataFrame | None = None,
           captions: dict[str, str] | None = None) -> dict[str, pd.DataFrame]:
    """Titled tables (``s``: the summary of ``df`` when the caller has it); with no ok row at
    all, only the table of failures. ``captions``, when given, receives what each table shows."""
    s = summarize(df) if s is None else s
    s = s.assign(column=s["metric"].map(_column_names(df, s)))
    captions = {} if captions is None else captions
    out = {}
    if len(s):
        out["All metrics"] = _table(
            s, ["task", "path_label", "solver_label"], "column", ["task"])
        captions["All metrics"] = (
            "Every task × path × solver with every metric; ↓ lower is better, ↑ higher is "
            "better; columns without an arrow are floors (not ranked).")
    for metric in ("w2", "npe"):
        sub = s[s["metric"] == metric]
        if len(sub):
            title = f"Tong et al. layout: {metric.upper()} per task"
            out[title] = _table(sub, ["solver_label", "path_label"], "task", ["solver_label"])
            way = "higher" if bool(sub["higher_is_better"].iloc[0]) else "lower"
            captions[title] = (f"{metric.upper()} ({way} is better) per task (columns) and path "
                               "(rows), per solver: the layout of Tong et al. (2024)'s 2D "
                               "comparison.")
    img = s[s["metric"].isin(["bpd", "nll", "fid", "nfe"])]
    if {"fid", "bpd"} & set(img["metric"]):
        title = "Lipman et al. Table 1 layout: bits/dim, FID, NFE per path"
        out[title] = _table(
            img, ["task", "solver_label", "path_label"], "column", ["task", "solver_label"])
        captions[title] = ("Per task and solver, each path's bits/dim (or NLL), FID and NFE: "
                           "the layout of Lipman et al. (2023)'s Table 1.")
    bad = df[df["status"] != "ok"]
    if len(bad):  # a dash in the tables above is explained here, never silently dropped
        out[FAILED_TITLE] = (
            bad.assign(seeds=bad["seed"].astype(str), draws=bad["draw"].astype(str))
            .groupby(["task", "path_label", "solver_label", "status", "reason"], sort=False)
            .agg(metrics=("metric", lambda m: ", ".join(dict.fromkeys(m))),
                 seeds=("seeds", lambda v: ", ".join(sorted(set(v), key=int))),
                 draws=("draws", lambda v: ", ".join(sorted(set(v), key=int))))
            .reset_index().set_index("task").rename(columns=INDEX_NAMES))
        captions[FAILED_TITLE] = ("Measurements whose status is failed or not_applicable, with "
                                  "the reason, the metrics and the seeds and evaluation draws "
                                  "concerned.")
    return out


def _markdown(t: pd.DataFrame, ranked: bool = True) -> str:
    """A Markdown table: every cell escaped first, then best values bolded."""
    n_index = t.index.nlevels
    t = t.reset_index()

    def cell(i: int, v: object) -> str:
        text, bold = split_bold(v, ranked and i >= n_index)
        return f"**{md_escape(text)}**" if bold else md_escape(text)

    head = "| " + " | ".join(md_escape(c) for c in t.columns) + " |"
    sep = "|" + "---|" * len(t.columns)
    body = ["| " + " | ".join(cell(i, v) for i, v in enumerate(row)) + " |"
            for row in t.itertuples(index=False)]
    return "\n".join([head, sep, *body])


# ------------------------------------------------------------------------------------ document
def _inputs(results: Path, problems: list[str]) -> tuple[pd.DataFrame, dict, list[dict]]:
    """The valid rows, run.json and loss records; what is unusable is described in ``problems``.
    Raises ResultsError only when there is no usable results table at all."""
    df = load_results(results, problems)
    if df.empty:
        raise ResultsError(f"{results}: no usable row in the results table"
                           + (": " + "; ".join(problems[:3]) if problems else ""))
    if not results.is_dir():
        return df, {}, []
    try:
        meta = read_run_json(results)
    except ResultsError as e:
        problems.append(f"{e} (skipped: no run metadata in the report)")
        meta = {}
    return df, meta, ResultStore(results).read_losses(problems)


def _figures(df: pd.DataFrame, meta: dict, losses: list[dict], run_dir: Path | None,
             folder: Path, problems: list[str]) -> list[Figure]:
    figs: list[Figure] = []
    for metric in ("solver_mse", "fid", "w2"):
        figs += figure_metric_vs_nfe(df, metric, meta, folder)
    figs += figure_bars(df, meta, folder)
    figs += figure_losses(losses, meta, df, folder)
    if run_dir is not None:
        figs += figure_samples_2d(run_dir, meta, df, folder, problems)
    return figs


def _header(meta: dict, df: pd.DataFrame, n_set_aside: int) -> dict:
    return {
        "suite": meta_value(meta, "suite") or df["suite"].iloc[0],
        "commit": meta_value(meta, "git", "commit") or "unknown",
        "dirty tree": meta_value(meta, "git", "dirty"), "started": meta_value(meta, "started"),
        "finished": meta_value(meta, "finished"), "seeds": sorted(df["seed"].unique().tolist()),
        "n_eval": sorted(df["n_eval"].unique().tolist()),
        "evaluation draws": int(df["draw"].nunique()) if "draw" in df.columns else 1,
        "torch": meta_value(meta, "environment", "versions", "torch"),
        "failed rows": int((df["status"] == "failed").sum()), "set aside": n_set_aside,
    }


def _reading(s: pd.DataFrame) -> list[str]:
    """How to read the tables (``s``: their summary): what ± and (S×R) are, when a value is
    bold, FID's bias in n."""
    if s.empty:
        return []
    lines = [interval_note(s) + ".",
             f"Bold: the best value of its column, separated from every other value of the column "
             f"by a paired test over the shared evaluation draws (alpha {ALPHA}); {TIE}: tied for "
             "best (the best and the values noise cannot separate from it)."]
    if {"fid", "fid_floor", "kid"} & set(s["metric"]):
        lines.append("FID is biased in the sample count n (it falls as n grows: 5k and 50k "
                     "samples differ by several points), so FIDs compare only at the same n_eval "
                     "(given in the header); fid_floor is the FID of n_eval real test images at "
                     "that n, what a perfect model would score. KID is unbiased in n.")
    return lines


def _link(p: Path, folder: Path) -> str:
    return quote((p.relative_to(folder) if p.is_relative_to(folder) else p).as_posix())


def _md_figures(doc: Document, grids: list[Figure], folder: Path) -> list[str]:
    """Figures linked from ``folder``; image grids (in the run's samples/) as ../samples/<name>."""
    parts = ["## Figures", ""] if doc.figures or grids else []
    for f in doc.figures:
        parts += [f"![{md_escape(f.path.stem)}]({_link(f.path, folder)})", "",
                  f"_{md_escape(f.caption)}_", ""]
    for g in grids:
        parts += [f"![{md_escape(g.path.stem)}](../samples/{quote(g.path.name)})", "",
                  f"_{md_escape(g.caption)}_", ""]
    return parts


def _render_md(doc: Document, grids: list[Figure], folder: Path) -> str:
    """report.md: the document, figures linked from ``folder`` (``_md_figures``)."""
    parts = [f"# {TITLE}{md_escape(doc.suite)}", "",
             " · ".join(f"**{md_escape(k)}** {md_escape(text(v))}"
                        for k, v in doc.header.items()), "",
             *[f"_{md_escape(line)}_" for line in doc.reading], ""]
    if not doc.has_values:
        parts += [NO_VALUES, ""]
    for title, t in doc.tables.items():
        parts += [f"## {md_escape(title)}", "", f"_{md_escape(doc.captions[title])}_", "",
                  _markdown(t, ranked=title != FAILED_TITLE), ""]
    parts += _md_figures(doc, grids, folder)
    if doc.machine:
        parts += [f"## {MACHINE_TITLE}", "",
                  *[f"- **{md_escape(k)}** {md_escape(text(v))}" for k, v in doc.machine.items()],
                  ""]
    if doc.time_split:
        parts += [f"## {TIME_TITLE}", "", f"_{TIME_CAPTION}_", "", "| stage | seconds | share |",
                  "|---|---|---|", *[f"| {md_escape(k)} | {seconds(v)} | {share:.1%} |"
                                     for k, v, share in doc.time_split], ""]
    if doc.problems:
        parts += [f"## {SET_ASIDE_TITLE}", "", SET_ASIDE_INTRO,
                  "", *[f"- {md_escape(p)}" for p in doc.problems], ""]
    return "\n".join(parts)


def build(results: str | Path, fmt: str = "md", out: str | Path | None = None,
          problems: list[str] | None = None) -> Path:
    """Write report.md or report.html (and figures) into ``out`` (default RESULTS/report).

    Unusable inputs (malformed rows, losses, samples, image grids, run.json) are left out, listed
    in the report's "Set aside" section and appended to ``problems`` when given. Raises
    ResultsError when there is no usable results table at all."""
    if fmt not in ("md", "html"):
        raise ValueError(f"format must be 'md' or 'html', got {fmt!r}")
    import matplotlib

    matplotlib.use("Agg")
    problems = [] if problems is None else problems
    results = Path(results)
    df, meta, losses = _inputs(results, problems)
    run_dir = results if results.is_dir() else None
    folder = Path(out) if out else (run_dir or results.parent) / "report"
    figs = _figures(df, meta, losses, run_dir, folder, problems)
    grids = image_grids(run_dir, df, problems) if run_dir is not None else []
    summary = summarize(df)
    captions: dict[str, str] = {}
    tabs = tables(df, summary, captions)
    header = _header(meta, df, len(problems))
    doc = Document(header=header, reading=_reading(summary),
                   tables=tabs, captions=captions, figures=figs, machine=machine(meta),
                   time_split=time_split(meta), problems=problems)
    if fmt == "md":
        linked = grids if run_dir is not None and folder == run_dir / "report" else []
        path, text_ = folder / "report.md", _render_md(doc, linked, folder)
    else:
        doc.figures = figs + grids
        path, text_ = folder / "report.html", report_html.render(doc)
    atomic_write_text(path, text_)
    return path
