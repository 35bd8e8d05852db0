"""Reports from a results directory: the papers' tables and figures, as Markdown or HTML.

Tables (mean ± std over seeds, best value per column in bold, direction-aware):
- every task × path × solver with every metric;
- Tong et al.'s 2D layout: W2 and NPE per task (columns) and path (rows), per solver;
- Lipman et al.'s Table 1 layout: per path, bits/dim (or NLL), FID and NFE, per solver.
Figures (matplotlib): solver MSE, FID and W2 against NFE per path and solver (log axes), W2/NPE
bars with error bars, training-loss curves, 2D samples with trajectories, image sample grids. Each
figure carries a footer naming the suite, commit, seeds and sample counts that produced it.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from fmbench.compare import load_results
from fmbench.results import ResultStore, atomic_write_text, summarize

NOT_RANKED = {"w2_floor", "fid_floor", "kid_std", "nfe", "train_time", "sample_time",
              "coupling_time"}


def _cell(mean: float, std: float) -> str:
    return f"{mean:.4g} ± {std:.2g}"


def _table(s: pd.DataFrame, index: list[str], columns: str, group_best: list[str] | None = None
           ) -> pd.DataFrame:
    """Pivot mean ± std, marking the best mean per column (within ``group_best`` groups)."""
    s = s.copy()
    s["cell"] = [_cell(m, d) for m, d in zip(s["mean"], s["std"], strict=True)]
    best = pd.Series(False, index=s.index)
    for _, grp in s.groupby([columns, *(group_best or [])], sort=False):
        metric = grp["metric"].iloc[0]
        if metric in NOT_RANKED or len(grp) < 2:
            continue
        idx = grp["mean"].idxmax() if bool(grp["higher_is_better"].iloc[0]) else \
            grp["mean"].idxmin()
        best.loc[idx] = True
    s.loc[best, "cell"] = "**" + s.loc[best, "cell"] + "**"
    order_cols = list(dict.fromkeys(s[columns]))
    t = s.pivot_table(index=index, columns=columns, values="cell", aggfunc="first", sort=False)
    return t[[c for c in order_cols if c in t.columns]].fillna("–")


def tables(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    s = summarize(df)
    out = {"All metrics (mean ± std over seeds; best per column in bold)":
           _table(s.assign(col=s["metric"]), ["task", "path_label", "solver_label"], "metric",
                  ["task"])}
    if {"w2", "npe"} & set(s["metric"]):
        for metric in ("w2", "npe"):
            sub = s[s["metric"] == metric]
            if len(sub):
                out[f"Tong et al. layout: {metric.upper()} per task"] = _table(
                    sub, ["solver_label", "path_label"], "task", ["solver_label"])
    img = s[s["metric"].isin(["bpd", "nll", "fid", "nfe"])]
    if {"fid", "bpd"} & set(img["metric"]):
        out["Lipman et al. Table 1 layout: bits/dim, FID, NFE per path"] = _table(
            img, ["task", "solver_label", "path_label"], "metric", ["task", "solver_label"])
    bad = df[df["status"] != "ok"]
    if len(bad):  # a dash in the tables above is explained here, never silently dropped
        out["Failed or not applicable (why the tables show a dash)"] = (
            bad.assign(seeds=bad["seed"].astype(str))
            .groupby(["task", "path_label", "solver_label", "status", "reason"], sort=False)
            .agg(metrics=("metric", lambda m: ", ".join(dict.fromkeys(m))),
                 seeds=("seeds", lambda v: ", ".join(sorted(set(v), key=int))))
            .reset_index().set_index("task"))
    return out


def _markdown(t: pd.DataFrame) -> str:
    t = t.reset_index()
    head = "| " + " | ".join(map(str, t.columns)) + " |"
    sep = "|" + "---|" * len(t.columns)
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in t.itertuples(index=False)]
    return "\n".join([head, sep, *body])


# ------------------------------------------------------------------------------------ figures
def _footer(fig, meta: dict, df: pd.DataFrame) -> None:
    commit = (meta.get("git") or {}).get("commit") or "unknown"
    dirty = " (dirty)" if (meta.get("git") or {}).get("dirty") else ""
    n_eval = ", ".join(str(n) for n in sorted(df["n_eval"].dropna().unique()))
    seeds = df["seed"].nunique()
    fig.text(0.01, -0.01, f"suite {meta.get('suite', df['suite'].iloc[0])} · commit "
             f"{commit[:10]}{dirty} · {seeds} seed(s) · n_eval {n_eval}", fontsize=7,
             color="0.35", ha="left", va="top")


def _save(fig, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _nfe_of(df: pd.DataFrame) -> pd.Series:
    nfe = df[df["metric"] == "nfe"].groupby(["task", "path_label", "solver_label"])["value"].mean()
    return nfe


_SOLVER_STYLES = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-."), ("v", (0, (5, 1))),
                  ("P", (0, (3, 1, 1, 1, 1, 1)))]


def figure_metric_vs_nfe(df: pd.DataFrame, metric: str, meta: dict, folder: Path
                         ) -> list[Path]:
    import matplotlib.pyplot as plt

    s = summarize(df)
    nfe = _nfe_of(df)
    sub = s[s["metric"] == metric]
    out = []
    for task, tsub in sub.groupby("task", sort=False):
        pts = []
        for r in tsub.itertuples():
            key = (task, r.path_label, r.solver_label)
            if key in nfe.index:
                solver = r.solver_label.split("@")[0].split("x")[0].split("(")[0]
                pts.append((r.path_label, solver, float(nfe[key]), r.mean, r.std))
        if len({p[2] for p in pts}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        lines = pd.DataFrame(pts, columns=["path", "solver", "nfe", "mean", "std"])
        # Lipman Fig. 7's reading: one colour per path, one marker and line style per solver
        colours = {p: f"C{i % 10}" for i, p in enumerate(dict.fromkeys(lines["path"]))}
        styles = {sv: _SOLVER_STYLES[i % len(_SOLVER_STYLES)]
                  for i, sv in enumerate(dict.fromkeys(lines["solver"]))}
        for (path, solver), g in lines.groupby(["path", "solver"], sort=False):
            g = g.sort_values("nfe")
            marker, ls = styles[solver]
            ax.errorbar(g["nfe"], g["mean"], yerr=g["std"], color=colours[path], marker=marker,
                        linestyle=ls, capsize=2, label=f"{path} · {solver}")
        ax.set_xscale("log")
        if (lines["mean"] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} vs NFE — {task}")
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
        _footer(fig, meta, df)
        out.append(_save(fig, folder, f"{metric}_vs_nfe_{_slug(task)}"))
    return out


def figure_bars(df: pd.DataFrame, meta: dict, folder: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    s = summarize(df)
    out = []
    for metric in ("w2", "npe"):
        sub = s[s["metric"] == metric]
        if sub.empty:
            continue
        tasks = list(dict.fromkeys(sub["task"]))
        combos = list(dict.fromkeys(zip(sub["path_label"], sub["solver_label"], strict=True)))
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(tasks)), 4))
        width = 0.8 / len(combos)
        for i, (path, solver) in enumerate(combos):
            vals = [sub[(sub.task == t) & (sub.path_label == path) &
                        (sub.solver_label == solver)] for t in tasks]
            means = [v["mean"].iloc[0] if len(v) else np.nan for v in vals]
            stds = [v["std"].iloc[0] if len(v) else 0 for v in vals]
            ax.bar(np.arange(len(tasks)) + i * width, means, width, yerr=stds, capsize=2,
                   label=f"{path} · {solver}" if len({c[1] for c in combos}) > 1 else path)
        if metric == "w2":
            floors = s[s["metric"] == "w2_floor"].groupby("task")["mean"].first()
            for j, t in enumerate(tasks):
                if t in floors.index:
                    ax.hlines(floors[t], j - 0.1, j + 0.9, colors="k", linestyles="--",
                              label="sampling floor" if j == 0 else None)
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
        ax.set_xticklabels(tasks, fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric.upper()} (mean ± std over seeds)")
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
        _footer(fig, meta, df)
        out.append(_save(fig, folder, f"{metric}_bars"))
    return out


def figure_losses(losses: list[dict], meta: dict, df: pd.DataFrame, folder: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    if not losses:
        return []
    out = []
    for task in dict.fromkeys(r["task"] for r in losses):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in (r for r in losses if r["task"] == task):
            if r["losses"]:
                steps, vals = zip(*r["losses"], strict=True)
                ax.plot(steps, vals, label=f"{r['path_label']} s{r['seed']}", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(f"Training loss — {task}")
        ax.legend(fontsize=6, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")
        _footer(fig, meta, df)
        out.append(_save(fig, folder, f"loss_{_slug(task)}"))
    return out


def figure_samples_2d(results: Path, meta: dict, df: pd.DataFrame, folder: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    files = sorted((results / "samples").glob("*seed0.npz")) if (results / "samples").is_dir() \
        else []
    if not files:
        return []
    cols = min(4, len(files))
    rows = math.ceil(len(files) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax, f in zip(axes.flat, files, strict=False):
        z = np.load(f)
        ax.scatter(z["test"][:, 0], z["test"][:, 1], s=1, c="0.8")
        ax.scatter(z["samples"][:, 0], z["samples"][:, 1], s=1, c="tab:blue")
        for tr in np.transpose(z["trajectories"], (1, 0, 2))[:32]:
            ax.plot(tr[:, 0], tr[:, 1], c="tab:olive", lw=0.5, alpha=0.7)
        ax.set_title(f.stem.replace("-seed0", ""), fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(files):]:
        ax.axis("off")
    fig.suptitle("Samples (blue), held-out data (grey), trajectories (olive); seed 0")
    _footer(fig, meta, df)
    return [_save(fig, folder, "samples_2d")]


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)


# ------------------------------------------------------------------------------------ document
def build(results: str | Path, fmt: str = "md", out: str | Path | None = None) -> Path:
    """Write report.md or report.html (and figures) into ``out`` (default RESULTS/report)."""
    import matplotlib

    matplotlib.use("Agg")
    results = Path(results)
    df = load_results(results)
    store = ResultStore(results)
    meta = store.read_meta()
    folder = Path(out) if out else results / "report"
    figs: list[Path] = []
    for metric in ("solver_mse", "fid", "w2"):
        figs += figure_metric_vs_nfe(df, metric, meta, folder)
    figs += figure_bars(df, meta, folder)
    figs += figure_losses(store.read_losses(), meta, df, folder)
    figs += figure_samples_2d(results, meta, df, folder)
    grids = sorted((results / "samples").glob("*.png")) if (results / "samples").is_dir() else []
    tabs = tables(df)
    commit = (meta.get("git") or {}).get("commit") or "unknown"
    header = {
        "suite": meta.get("suite", df["suite"].iloc[0]), "commit": commit,
        "dirty tree": (meta.get("git") or {}).get("dirty"), "started": meta.get("started"),
        "finished": meta.get("finished"), "seeds": sorted(df["seed"].unique().tolist()),
        "n_eval": sorted(df["n_eval"].unique().tolist()),
        "torch": ((meta.get("environment") or {}).get("versions") or {}).get("torch"),
        "failed rows": int((df["status"] == "failed").sum()),
    }
    if fmt == "md":
        parts = [f"# fmbench report: {header['suite']}", "",
                 " · ".join(f"**{k}** {v}" for k, v in header.items()), ""]
        for title, t in tabs.items():
            parts += [f"## {title}", "", _markdown(t), ""]
        if figs or grids:
            parts += ["## Figures", ""]
            parts += [f"![{p.stem}]({p.relative_to(folder) if p.is_relative_to(folder) else p})"
                      for p in figs]
            parts += [f"![{g.stem}]({Path('..') / 'samples' / g.name})" for g in grids
                      if folder == results / "report"]
        path = folder / "report.md"
        atomic_write_text(path, "\n".join(parts) + "\n")
        return path
    if fmt != "html":
        raise ValueError(f"format must be 'md' or 'html', got {fmt!r}")

    def img(p: Path) -> str:
        data = base64.b64encode(p.read_bytes()).decode()
        return f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(p.stem)}">' \
               f"<figcaption>{html.escape(p.stem)}</figcaption></figure>"

    body = [f"<h1>fmbench report: {html.escape(str(header['suite']))}</h1>",
            "<p>" + " · ".join(f"<b>{html.escape(k)}</b> {html.escape(json.dumps(v, default=str))}"
                               for k, v in header.items()) + "</p>"]
    for title, t in tabs.items():
        body += [f"<h2>{html.escape(title)}</h2>", _bold_html(t)]
    body += ["<h2>Figures</h2>", *[img(p) for p in figs + grids]]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
             "collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
             "img{max-width:100%}figure{display:inline-block;margin:6px}")
    path = folder / "report.html"
    atomic_write_text(path, f"<!doctype html><html><head><meta charset='utf-8'><title>fmbench "
                            f"{html.escape(str(header['suite']))}</title><style>{style}</style>"
                            f"</head><body>{''.join(body)}</body></html>")
    return path


def _bold_html(t: pd.DataFrame) -> str:
    t = t.reset_index()
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns)
    rows = []
    for row in t.itertuples(index=False):
        cells = []
        for v in row:
            v = str(v)
            cells.append(f"<td><b>{html.escape(v[2:-2])}</b></td>" if v.startswith("**")
                         else f"<td>{html.escape(v)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"
