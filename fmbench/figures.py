"""Report figures (matplotlib, written atomically), each with a caption saying what it shows:
metric against NFE per path and solver, W2/NPE bars per task, training-loss curves per path,
2D samples with trajectories per task.

One look per component across every figure of a report (:class:`Styles`): a path is a colour
and a marker (distinct pairs for up to 70 paths), a solver a line style (NFE figures) or a hatch
(bars), assigned in suite order. Log axes only where values span at least a factor
``LOG_SPAN``, with plain tick labels (1, 2, 5, 10, …); floors are drawn as bands (mean ± sd over
draws). Each figure carries a footer naming the suite, commit, seeds and sample counts that
produced it. Every input file is checked; an unreadable one is left out and described in
``problems``.
"""

from __future__ import annotations

import json
import math
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fmbench.storage import atomic_write, digest
from fmbench.summary import FEWER, LEVEL, headers, summarize

SLUG_MAX = 80  # characters of a task name in a figure's file name
LOG_SPAN = 10.0  # an axis is logarithmic only when its values span this factor or more
# Okabe & Ito's colour-blind-safe palette (less its yellow) and three more; 10 colours × 7 markers
# give 70 distinct (colour, marker) pairs because 10 and 7 are coprime
PATH_COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000",
                "#8C564B", "#7F7F7F", "#BCBD22")
PATH_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
SOLVER_LINES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)), (0, (1, 3)),
                (0, (8, 2, 2, 2)))
SOLVER_HATCHES = ("", "///", "...", "xxx", "\\\\\\", "ooo", "---", "+++")


@dataclass(frozen=True)
class Figure:
    """A written figure and its caption (what is plotted, over which noise)."""

    path: Path
    caption: str
    kind: str = "plot"  # "plot" (matplotlib) or "grid" (an image grid at its pixel size)


def meta_value(meta: dict, *keys: str):
    """meta[k1][k2]...; None where run.json lacks the key or holds something else than an object."""
    for k in keys:
        meta = meta.get(k) if isinstance(meta, dict) else None
    return meta


def _plain(s: object) -> str:
    """Untrusted text for a matplotlib label: ``$`` would start mathtext (a parse error kills
    the figure)."""
    return str(s).replace("$", r"\$")


def solver_families(df: pd.DataFrame) -> dict[str, str]:
    """Solver label → its family: the method, with its time grid when not uniform. A family's
    settings (e.g. NFE budgets) are the points of one line in an NFE figure."""
    out = {}
    for label, g in df.groupby("solver_label", sort=False):
        try:
            params = json.loads(str(g["solver_params"].iloc[0]))
        except ValueError:
            params = {}
        grid = params.get("grid") if isinstance(params, dict) else None
        own = isinstance(params, dict) and params.get("times") is not None
        method = str(g["solver"].iloc[0])
        out[label] = (f"{method} (own times)" if own else
                      f"{method} ({grid} grid)" if grid not in (None, "uniform") else method)
    return out


@dataclass(frozen=True)
class Styles:
    """A look per path (colour, marker), per solver family (line style) and per solver label
    (hatch), in the order the rows give them (suite order)."""

    paths: dict[str, tuple[str, str]]
    families: dict[str, object]
    hatches: dict[str, str]
    family_of: dict[str, str]

    @classmethod
    def of(cls, df: pd.DataFrame, more_paths=()) -> Styles:
        paths = dict.fromkeys([*df["path_label"], *more_paths])
        family_of = solver_families(df)
        families = dict.fromkeys(family_of.values())
        return cls({p: (PATH_COLOURS[i % len(PATH_COLOURS)], PATH_MARKERS[i % len(PATH_MARKERS)])
                    for i, p in enumerate(paths)},
                   {f: _line(i) for i, f in enumerate(families)},
                   {s: _hatch(i) for i, s in enumerate(family_of)}, family_of)

    def path_handles(self, paths) -> list:
        from matplotlib.lines import Line2D

        return [Line2D([], [], color=self.paths[p][0], marker=self.paths[p][1], linestyle="-",
                       label=_plain(p)) for p in paths]

    def family_handles(self, families) -> list:
        from matplotlib.lines import Line2D

        return [Line2D([], [], color="0.2", linestyle=self.families[f], label=_plain(f))
                for f in families]


def _line(i: int):
    return SOLVER_LINES[i] if i < len(SOLVER_LINES) else (0, (1 + i % 6, 1 + i // 6))


def _hatch(i: int) -> str:
    return SOLVER_HATCHES[i % len(SOLVER_HATCHES)] * (1 + i // len(SOLVER_HATCHES))


def _plain_number(v: float, _pos=None) -> str:
    return f"{v:g}"


def readable_axis(ax, which: str, values, ticks_at_values: bool = False) -> None:
    """Log scale when the positive ``values`` span ``LOG_SPAN`` or more, else linear; tick
    labels as plain numbers (``20``, not ``2×10^1``). ``ticks_at_values``: ticks at the values
    themselves (NFE budgets) when there are at most 8 of them."""
    from matplotlib import ticker

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    axis = ax.xaxis if which == "x" else ax.yaxis
    if len(v) and (v > 0).all() and v.max() / v.min() >= LOG_SPAN:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
        axis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
        axis.set_minor_formatter(ticker.NullFormatter())
    if ticks_at_values and 0 < len(np.unique(v)) <= 8:
        axis.set_major_locator(ticker.FixedLocator(np.unique(v)))
        axis.set_minor_locator(ticker.NullLocator())
    axis.set_major_formatter(ticker.FuncFormatter(_plain_number))


def _footer(fig, meta: dict, df: pd.DataFrame) -> None:
    commit = str(meta_value(meta, "git", "commit") or "unknown")
    dirty = " (dirty)" if meta_value(meta, "git", "dirty") else ""
    n_eval = ", ".join(str(n) for n in sorted(df["n_eval"].dropna().unique()))
    seeds = df["seed"].nunique()
    draws = df["draw"].nunique() if "draw" in df.columns else 1
    suite = meta_value(meta, "suite") or df["suite"].iloc[0]
    fig.text(0.01, -0.01, _plain(f"suite {suite} · commit {commit[:10]}{dirty} · {seeds} "
                                 f"seed(s) × {draws} evaluation draw(s) · n_eval {n_eval}"),
             fontsize=7, color="0.35", ha="left", va="top")


def _save(fig, folder: Path, name: str, caption: str) -> Figure:
    import matplotlib.pyplot as plt

    try:
        return Figure(atomic_write(folder / f"{name}.png", lambda f: fig.savefig(
            f, format="png", dpi=110, bbox_inches="tight")), caption)
    finally:
        plt.close(fig)


def _nfe_of(df: pd.DataFrame) -> pd.Series:
    """Mean NFE by (task, path, solver) over ok rows."""
    return df[(df["metric"] == "nfe") & (df["status"] == "ok")].assign(
        value=lambda x: x["value"].astype(float)).groupby(
        ["task", "path_label", "solver_label"])["value"].mean()


def _floor(s: pd.DataFrame, name: str, task: str) -> tuple[float, float] | None:
    """(mean, sd over draws) of a task's floor metric in the summary, None when absent."""
    f = s[(s["metric"] == name) & (s["task"] == task)]
    if f.empty:
        return None
    sd = float(f["sd"].iloc[0])
    return float(f["mean"].iloc[0]), sd if math.isfinite(sd) else 0.0


def _floor_band(ax, floor: tuple[float, float] | None, x0=None, x1=None) -> bool:
    """The floor as a dashed line with a ± sd band (over ``x0..x1``, else the whole axis)."""
    if floor is None:
        return False
    mean, sd = floor
    if x0 is None:
        ax.axhline(mean, color="0.3", linestyle="--", linewidth=1, zorder=1)
        if sd > 0:
            ax.axhspan(mean - sd, mean + sd, color="0.5", alpha=0.2, linewidth=0, zorder=0)
    else:
        ax.hlines(mean, x0, x1, colors="0.3", linestyles="--", linewidth=1, zorder=3)
        if sd > 0:
            ax.fill_between([x0, x1], mean - sd, mean + sd, color="0.5", alpha=0.25,
                            linewidth=0, zorder=2)
    return True


def _floor_handle():
    from matplotlib.patches import Patch

    return Patch(facecolor="0.5", alpha=0.35, edgecolor="0.3", linestyle="--",
                 label="sampling floor ± sd over draws")


def _noise(s: pd.DataFrame) -> str:
    n = s[s["role"] != "floor"]
    if n.empty:
        return ""
    covers = n["covers"].mode().iloc[0]
    others = [f"over {c} where {FEWER[c]}" for c in dict.fromkeys(n["covers"]) if c != covers]
    return (f"Error bars: {LEVEL:.0%} confidence interval over {covers}, seeds × draws "
            f"{int(n['n_seeds'].max())}×{int(n['n_draws'].max())}"
            + (f" ({'; '.join(others)})" if others else "") + ".")


def _nfe_points(tsub: pd.DataFrame, nfe: pd.Series, styles: Styles, task: str) -> pd.DataFrame:
    pts = []
    for r in tsub.itertuples():
        key = (task, r.path_label, r.solver_label)
        if key in nfe.index:
            pts.append((r.path_label, styles.family_of[r.solver_label], float(nfe[key]), r.mean,
                        r.half if math.isfinite(r.half) else 0.0))
    return pd.DataFrame(pts, columns=["path", "family", "nfe", "mean", "half"])


def figure_metric_vs_nfe(df: pd.DataFrame, metric: str, meta: dict, folder: Path
                         ) -> list[Figure]:
    """Per task: the metric's mean against NFE, a line per path × solver family (colour and
    marker: path; line style: solver), error bars, the floor as a band."""
    import matplotlib.pyplot as plt

    s = summarize(df)
    nfe, styles = _nfe_of(df), Styles.of(df)
    sub = s[s["metric"] == metric]
    head = headers(s).get(metric, metric)
    out = []
    for task, tsub in sub.groupby("task", sort=False):
        lines = _nfe_points(tsub, nfe, styles, task)
        if lines["nfe"].nunique() < 2:
            continue
        fig, ax = plt.subplots(figsize=(6.4, 4))
        for (path, family), g in lines.groupby(["path", "family"], sort=False):
            g = g.sort_values("nfe")
            colour, marker = styles.paths[path]
            ax.errorbar(g["nfe"], g["mean"], yerr=g["half"], color=colour, marker=marker,
                        linestyle=styles.families[family], capsize=2, markersize=5)
        floor = _floor_band(ax, _floor(s, f"{metric}_floor", task))
        readable_axis(ax, "x", lines["nfe"], ticks_at_values=True)
        readable_axis(ax, "y", [*(lines["mean"] - lines["half"]), *(lines["mean"] + lines["half"])])
        ax.set_xlabel("NFE (network evaluations per sample)")
        ax.set_ylabel(_plain(head))
        ax.set_title(_plain(f"{metric} against NFE — {task}"), fontsize=10)
        ax.grid(True, which="major", color="0.9", linewidth=0.6)
        first = ax.legend(handles=styles.path_handles(dict.fromkeys(lines["path"])),
                          title="path", fontsize=7, title_fontsize=7, loc="upper left",
                          bbox_to_anchor=(1.02, 1))
        ax.add_artist(first)
        ax.legend(handles=styles.family_handles(dict.fromkeys(lines["family"]))
                  + ([_floor_handle()] if floor else []), title="solver", fontsize=7,
                  title_fontsize=7, loc="lower left", bbox_to_anchor=(1.02, 0))
        _footer(fig, meta, df)
        caption = (f"{head} against the number of function evaluations on {task}: one "
                   "line per path (colour and marker) and solver (line style). "
                   + _noise(tsub) + (" Grey band: the sampling floor (mean ± sd over draws)."
                                     if floor else ""))
        out.append(_save(fig, folder, f"{metric}_vs_nfe_{_slug(task)}", caption))
    return out


def _bar_panel(ax, ts: pd.DataFrame, styles: Styles, floor) -> None:
    combos = list(dict.fromkeys(zip(ts["path_label"], ts["solver_label"], strict=True)))
    for i, (path, solver) in enumerate(combos):
        r = ts[(ts["path_label"] == path) & (ts["solver_label"] == solver)].iloc[0]
        half = r["half"] if math.isfinite(r["half"]) else 0.0
        ax.bar(i, r["mean"], 0.8, yerr=half, capsize=2, color=styles.paths[path][0],
               hatch=styles.hatches[solver], edgecolor="white", linewidth=0, zorder=1,
               error_kw={"elinewidth": 1, "zorder": 4})
    _floor_band(ax, floor, -0.5, len(combos) - 0.5)
    ax.set_xticks(range(len(combos)))
    ax.set_xticklabels([_plain(p) for p, _ in combos], rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(combos) - 0.4)
    ax.grid(True, axis="y", color="0.9", linewidth=0.6, zorder=0)


def figure_bars(df: pd.DataFrame, meta: dict, folder: Path) -> list[Figure]:
    """W2 and NPE: a panel per task (own y scale), a bar per path × solver (colour: path;
    hatch: solver), error bars, the floor as a band."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    s = summarize(df)
    styles = Styles.of(df)
    out = []
    for metric in ("w2", "npe"):
        sub = s[s["metric"] == metric]
        if sub.empty:
            continue
        tasks = list(dict.fromkeys(sub["task"]))
        fig, axes = plt.subplots(1, len(tasks), figsize=(0.5 + 2.6 * len(tasks), 3.6),
                                 squeeze=False)
        floors = False
        for ax, task in zip(axes[0], tasks, strict=True):
            floor = _floor(s, f"{metric}_floor", task)
            floors |= floor is not None
            _bar_panel(ax, sub[sub["task"] == task], styles, floor)
            ax.set_title(_plain(task), fontsize=9)
        axes[0][0].set_ylabel(_plain(headers(s)[metric]))
        solvers = list(dict.fromkeys(sub["solver_label"]))
        handles = [Patch(facecolor=styles.paths[p][0], label=_plain(p))
                   for p in dict.fromkeys(sub["path_label"])]
        if len(solvers) > 1:
            handles += [Patch(facecolor="0.75", hatch=styles.hatches[v], edgecolor="white",
                              label=_plain(v)) for v in solvers]
        handles += [_floor_handle()] if floors else []
        fig.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 0.95))
        fig.suptitle(f"{metric.upper()} per task" + ("" if len(solvers) > 1 else
                                                      f" ({_plain(solvers[0])})"), fontsize=10)
        fig.tight_layout()
        _footer(fig, meta, df)
        caption = (f"{headers(s)[metric]} per task and path"
                   + (" (hatch: solver)" if len(solvers) > 1 else f", solver {solvers[0]}")
                   + "; each panel has its own scale. " + _noise(sub)
                   + (" Grey band: the sampling floor (mean ± sd over draws)." if floors else ""))
        out.append(_save(fig, folder, f"{metric}_bars", caption))
    return out


LOSS_LINES = {"median": "thin lines are the seeds, the thick line their median",
              "single": "a path trained with one seed shows that seed's line",
              "seeds": "a path whose seeds logged different steps shows each seed, no median"}


def _loss_lines(ax, path: str, curves: list[np.ndarray], colour) -> str:
    """One path's loss curves on ``ax``; returns what was drawn (a key of LOSS_LINES)."""
    alone = len(curves) == 1  # one seed: its own line is the one to read
    for c in curves:  # a curve of one or two logged points shows as markers
        ax.plot(c[:, 0], c[:, 1], color=colour, lw=1.5 if alone else 0.6,
                alpha=1 if alone else 0.35, marker="o" if len(c) < 3 else None, markersize=4)
    n = min(len(c) for c in curves)
    if not alone and all(np.array_equal(c[:n, 0], curves[0][:n, 0]) for c in curves):
        med = np.median([c[:n, 1] for c in curves], axis=0)
        ax.plot(curves[0][:n, 0], med, color=colour, lw=1.8,
                label=_plain(f"{path} (median of {len(curves)} seeds)"))
        return "median"
    ax.plot([], [], color=colour, label=_plain(f"{path} ({len(curves)} seed(s))"))
    return "single" if alone else "seeds"


def figure_losses(losses: list[dict], meta: dict, df: pd.DataFrame, folder: Path
                  ) -> list[Figure]:
    """Per task: training loss against step, a colour per path; thin lines are seeds, the thick
    line their median."""
    import matplotlib.pyplot as plt

    styles = Styles.of(df, [r["path_label"] for r in losses])
    tasks = {r["task"] for r in losses}
    out = []
    for task in [t for t in dict.fromkeys([*df["task"], *tasks]) if t in tasks]:  # suite order
        fig, ax = plt.subplots(figsize=(6.4, 4))
        recs = [r for r in losses if r["task"] == task and r["losses"]]
        drawn = {_loss_lines(ax, path, [np.asarray(r["losses"], float) for r in recs
                                        if r["path_label"] == path], styles.paths[path][0])
                 for path in styles.paths if any(r["path_label"] == path for r in recs)}
        readable_axis(ax, "y", [v for r in recs for _, v in r["losses"]])
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (the path's objective)")
        ax.set_title(_plain(f"Training loss — {task}"), fontsize=10)
        ax.grid(True, color="0.9", linewidth=0.6)
        ax.legend(fontsize=7, bbox_to_anchor=(1.02, 1), loc="upper left")
        _footer(fig, meta, df)
        caption = (f"Training loss on {task}, one colour per path: "
                   + "; ".join(LOSS_LINES[k] for k in LOSS_LINES if k in drawn)
                   + ". Paths' objectives differ in scale: compare a path's seeds and its "
                   "convergence, not levels across paths.")
        out.append(_save(fig, folder, f"loss_{_slug(task)}", caption))
    return out


def _read_samples(f: Path, problems: list[str]) -> dict[str, np.ndarray] | None:
    """The 2D arrays of a samples/*.npz (never unpickled), or None (set aside) when unusable."""
    try:
        with np.load(f, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k], dtype=float) for k in ("samples", "trajectories", "test")}
    except (OSError, ValueError, TypeError, EOFError, KeyError, MemoryError, zipfile.BadZipFile,
            zlib.error) as e:
        problems.append(f"{f}: not a readable samples file ({type(e).__name__}: {e}) (skipped)")
        return None
    shapes = {k: v.shape for k, v in arrays.items()}
    want = {"samples": 2, "test": 2, "trajectories": 3}  # dimensions, the last one of size 2
    if not all(len(shapes[k]) == n and shapes[k][-1] == 2 for k, n in want.items()):
        problems.append(f"{f}: arrays of unexpected shapes {shapes} (want samples and test (n, 2), "
                        "trajectories (steps, n, 2)) (skipped)")
        return None
    return arrays




@dataclass(frozen=True)
class Panel:
    """One case's saved samples, named as the tables name it."""

    task: str
    path: str
    solver: str
    seed: int
    nfe: float | None
    file: Path
    why_seed: str

    @property
    def title(self) -> str:
        nfe = f"NFE {self.nfe:.3g} · " if self.nfe is not None else ""
        return f"{self.path} · {self.solver}\n{nfe}seed {self.seed}"


def _representative_seed(g: pd.DataFrame) -> tuple[int, str]:
    """The seed whose mean W2 over draws is the median of its seeds' (the upper middle one for
    an even count, so never the better of two): a typical model, not the best one; without W2,
    the first seed."""
    w2 = g[(g["metric"] == "w2") & (g["status"] == "ok")]
    seeds = sorted(g["seed"].unique().tolist())
    if w2.empty or len(seeds) == 1:
        return int(seeds[0]), "first seed" if len(seeds) > 1 else "the only seed"
    by = w2.assign(value=w2["value"].astype(float)).groupby("seed")["value"].mean().sort_values()
    return int(by.index[len(by) // 2]), f"median W2 of {len(by)} seeds"


def sample_panels(results: Path, df: pd.DataFrame, suffix: str) -> list[Panel]:
    """Per task × path × solver in suite order, the saved samples (``suffix``: .npz or .png) of
    its representative seed (:func:`_representative_seed`), where the file exists."""
    from fmbench.artifacts import sample_stem

    folder = results / "samples"
    nfe = df[(df["metric"] == "nfe") & (df["status"] == "ok")]
    out = []
    for (task, path, solver), g in df.groupby(["task", "path_label", "solver_label"], sort=False):
        seed, why = _representative_seed(g)
        file = folder / (sample_stem(task, path, solver, seed) + suffix)
        if not file.is_file():
            continue
        n = nfe[(nfe["task"] == task) & (nfe["path_label"] == path)
                & (nfe["solver_label"] == solver) & (nfe["seed"] == seed)]["value"].astype(float)
        out.append(Panel(task, path, solver, seed, float(n.mean()) if len(n) else None, file, why))
    return out


def _limits(arrays: list[np.ndarray]) -> tuple[tuple[float, float], tuple[float, float]]:
    """Shared axis limits of a task's panels: the 0.5–99.5 % range of the held-out data and the
    samples, with a margin (a few far-off samples do not shrink the picture)."""
    pts = np.concatenate(arrays)
    lo, hi = np.nanpercentile(pts, 0.5, axis=0), np.nanpercentile(pts, 99.5, axis=0)
    pad = 0.08 * (hi - lo) + 1e-9
    return (lo[0] - pad[0], hi[0] + pad[0]), (lo[1] - pad[1], hi[1] + pad[1])


def _task_samples(task: str, panels: list[tuple[Panel, dict]], meta, df, folder) -> Figure:
    import matplotlib.pyplot as plt

    paths = list(dict.fromkeys(p.path for p, _ in panels))
    solvers = list(dict.fromkeys(p.solver for p, _ in panels))
    fig, axes = plt.subplots(len(paths), len(solvers), squeeze=False,
                             figsize=(2.6 * len(solvers) + 0.4, 2.6 * len(paths) + 0.6))
    xlim, ylim = _limits([a for _, z in panels for a in (z["test"], z["samples"])])
    for ax in axes.flat:
        ax.axis("off")
    for p, z in panels:
        ax = axes[paths.index(p.path)][solvers.index(p.solver)]
        ax.axis("on")
        ax.scatter(z["test"][:, 0], z["test"][:, 1], s=1, c="0.78", rasterized=True)
        ax.scatter(z["samples"][:, 0], z["samples"][:, 1], s=1, c="#0072B2", rasterized=True)
        for tr in np.transpose(z["trajectories"], (1, 0, 2))[:32]:
            ax.plot(tr[:, 0], tr[:, 1], c="#E69F00", lw=0.5, alpha=0.7)
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal", adjustable="box")
        ax.set_title(_plain(p.title), fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(_plain(f"Samples — {task}"), fontsize=10)
    fig.tight_layout()
    _footer(fig, meta, df)
    whys = "; ".join(dict.fromkeys(p.why_seed for p, _ in panels))
    caption = (f"Generated samples on {task} (blue) over held-out data (grey), with 32 "
               f"trajectories from source to target (orange); a row per path, a column per "
               f"solver, in suite order, on shared axes. Each panel shows one seed ({whys}).")
    return _save(fig, folder, f"samples_{_slug(task)}", caption)


def figure_samples_2d(results: Path, meta: dict, df: pd.DataFrame, folder: Path,
                      problems: list[str] | None = None) -> list[Figure]:
    """Per 2D task, a grid of sample panels (:func:`sample_panels`)."""
    problems = [] if problems is None else problems
    loaded = [(p, z) for p in sample_panels(results, df, ".npz")
              if (z := _read_samples(p.file, problems)) is not None]
    return [_task_samples(task, [(p, z) for p, z in loaded if p.task == task], meta, df, folder)
            for task in dict.fromkeys(p.task for p, _ in loaded)]


def image_grids(results: Path, df: pd.DataFrame, problems: list[str]) -> list[Figure]:
    """The sample grids of image cases (:func:`sample_panels`) that decode as PNG images, with
    captions; the others are set aside."""
    from PIL import Image

    from fmbench.artifacts import GRID_SAMPLES

    good = []
    for p in sample_panels(results, df, ".png"):
        try:
            with Image.open(p.file) as im:
                im.load()
                fmt = im.format
        except (OSError, ValueError, SyntaxError, MemoryError, Image.DecompressionBombError) as e:
            fmt = f"unreadable ({type(e).__name__}: {e})"
        if fmt == "PNG":
            nfe = f", NFE {p.nfe:.3g}" if p.nfe is not None else ""
            case = (df["task"] == p.task) & (df["path_label"] == p.path) & (
                df["solver_label"] == p.solver)
            n = min(GRID_SAMPLES, int(df.loc[case if case.any() else df["task"] == p.task,
                                             "n_eval"].max()))
            good.append(Figure(p.file, f"{p.task}: the first {n} samples of {p.path} with "
                               f"{p.solver}{nfe}, seed {p.seed} ({p.why_seed}); evaluation "
                               "draw 0.", kind="grid"))
        else:
            problems.append(f"{p.file}: not a PNG image: {fmt} (skipped)")
    return good


def _slug(s: str) -> str:
    """A file-name part from untrusted text: ASCII letters, digits, ``-_.``; long ones are cut to
    SLUG_MAX characters, with a hash of the whole text so that they stay distinct."""
    slug = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in s)
    if len(slug) <= SLUG_MAX:
        return slug
    return f"{slug[:SLUG_MAX - 11]}-{digest(s, 10)}"
