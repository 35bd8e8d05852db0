"""Report figures (matplotlib, written atomically): metric against NFE per path and solver, W2/NPE
bars, training-loss curves, 2D samples with trajectories, image sample grids. Each figure carries a
footer naming the suite, commit, seeds and sample counts that produced it. Every input file is
checked; an unreadable one is left out and described in ``problems``.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from fmbench.storage import atomic_write, digest
from fmbench.summary import LEVEL, summarize

SLUG_MAX = 80  # characters of a task name in a figure's file name


def meta_value(meta: dict, *keys: str):
    """meta[k1][k2]...; None where run.json lacks the key or holds something else than an object."""
    for k in keys:
        meta = meta.get(k) if isinstance(meta, dict) else None
    return meta


def _plain(s: object) -> str:
    """Untrusted text for a matplotlib label: ``$`` would start mathtext (a parse error kills
    the figure)."""
    return str(s).replace("$", r"\$")


def _footer(fig, meta: dict, df: pd.DataFrame) -> None:
    commit = str(meta_value(meta, "git", "commit") or "unknown")
    dirty = " (dirty)" if meta_value(meta, "git", "dirty") else ""
    n_eval = ", ".join(str(n) for n in sorted(df["n_eval"].dropna().unique()))
    seeds = df["seed"].nunique()
    draws = df["draw"].nunique() if "draw" in df.columns else 1
    suite = meta_value(meta, "suite") or df["suite"].iloc[0]
    fig.text(0.01, -0.01, _plain(f"suite {suite} · commit {commit[:10]}{dirty} · {seeds} "
                                 f"seed(s) × {draws} evaluation draw(s) · n_eval {n_eval}"),
             fontsize=7,
             color="0.35", ha="left", va="top")


def _save(fig, folder: Path, name: str) -> Path:
    import matplotlib.pyplot as plt

    try:
        return atomic_write(folder / f"{name}.png",
                            lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def _nfe_of(df: pd.DataFrame) -> pd.Series:
    nfe = df[df["metric"] == "nfe"].groupby(["task", "path_label", "solver_label"])["value"].mean()
    return nfe


def _floor(s: pd.DataFrame, name: str, task: str) -> tuple[float, float] | None:
    """(mean, sd over draws) of a task's floor metric in the summary, None when absent."""
    f = s[(s["metric"] == name) & (s["task"] == task)]
    if f.empty:
        return None
    sd = float(f["sd"].iloc[0])
    return float(f["mean"].iloc[0]), sd if math.isfinite(sd) else 0.0


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
                pts.append((r.path_label, solver, float(nfe[key]), r.mean,
                            r.half if math.isfinite(r.half) else 0.0))
        if len({p[2] for p in pts}) < 2:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        lines = pd.DataFrame(pts, columns=["path", "solver", "nfe", "mean", "half"])
        # Lipman Fig. 7's reading: one colour per path, one marker and line style per solver
        colours = {p: f"C{i % 10}" for i, p in enumerate(dict.fromkeys(lines["path"]))}
        styles = {sv: _SOLVER_STYLES[i % len(_SOLVER_STYLES)]
                  for i, sv in enumerate(dict.fromkeys(lines["solver"]))}
        for (path, solver), g in lines.groupby(["path", "solver"], sort=False):
            g = g.sort_values("nfe")
            marker, ls = styles[solver]
            ax.errorbar(g["nfe"], g["mean"], yerr=g["half"], color=colours[path], marker=marker,
                        linestyle=ls, capsize=2, label=_plain(f"{path} · {solver}"))
        floor = _floor(s, f"{metric}_floor", task)
        if floor is not None:
            mean, sd = floor
            ax.axhline(mean, color="k", linestyle="--", linewidth=1, label="sampling floor")
            if sd > 0:
                ax.axhspan(mean - sd, mean + sd, color="0.5", alpha=0.2, label="floor ± sd",
                           zorder=0)
        ax.set_xscale("log")
        if (lines["mean"] > 0).all():
            ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(_plain(metric))
        ax.set_title(_plain(f"{metric} vs NFE — {task} (bars: {LEVEL:.0%} CI)"))
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
            halves = [v["half"].iloc[0] if len(v) and math.isfinite(v["half"].iloc[0]) else 0
                      for v in vals]
            ax.bar(np.arange(len(tasks)) + i * width, means, width, yerr=halves, capsize=2,
                   label=_plain(f"{path} · {solver}" if len({c[1] for c in combos}) > 1 else path))
        labelled = False
        for j, t in enumerate(tasks):
            floor = _floor(s, f"{metric}_floor", t)
            if floor is not None:
                mean, sd = floor
                ax.hlines(mean, j - 0.1, j + 0.9, colors="k", linestyles="--",
                          label=None if labelled else "sampling floor (± sd over draws)")
                if sd > 0:
                    ax.fill_between([j - 0.1, j + 0.9], mean - sd, mean + sd, color="0.5",
                                    alpha=0.25, linewidth=0, zorder=0)
                labelled = True
        ax.set_xticks(np.arange(len(tasks)) + 0.4 - width / 2)
        ax.set_xticklabels([_plain(t) for t in tasks], fontsize=8)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric.upper()} (bars: {LEVEL:.0%} CI over seeds × evaluation draws)")
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
                ax.plot(steps, vals, label=_plain(f"{r['path_label']} s{r['seed']}"), lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(_plain(f"Training loss — {task}"))
        ax.legend(fontsize=6, ncol=2, bbox_to_anchor=(1.02, 1), loc="upper left")
        _footer(fig, meta, df)
        out.append(_save(fig, folder, f"loss_{_slug(task)}"))
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


def figure_samples_2d(results: Path, meta: dict, df: pd.DataFrame, folder: Path,
                      problems: list[str] | None = None) -> list[Path]:
    import matplotlib.pyplot as plt

    problems = [] if problems is None else problems
    files = sorted((results / "samples").glob("*seed0.npz")) if (results / "samples").is_dir() \
        else []
    loaded = [(f, z) for f in files if (z := _read_samples(f, problems)) is not None]
    if not loaded:
        return []
    cols = min(4, len(loaded))
    rows = math.ceil(len(loaded) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax, (f, z) in zip(axes.flat, loaded, strict=False):
        ax.scatter(z["test"][:, 0], z["test"][:, 1], s=1, c="0.8")
        ax.scatter(z["samples"][:, 0], z["samples"][:, 1], s=1, c="tab:blue")
        for tr in np.transpose(z["trajectories"], (1, 0, 2))[:32]:
            ax.plot(tr[:, 0], tr[:, 1], c="tab:olive", lw=0.5, alpha=0.7)
        ax.set_title(_plain(f.stem.replace("-seed0", "")), fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(loaded):]:
        ax.axis("off")
    fig.suptitle("Samples (blue), held-out data (grey), trajectories (olive); seed 0")
    _footer(fig, meta, df)
    return [_save(fig, folder, "samples_2d")]


def image_grids(results: Path, problems: list[str]) -> list[Path]:
    """samples/*.png that decode as PNG images; the others are set aside."""
    from PIL import Image

    files = sorted((results / "samples").glob("*.png")) if (results / "samples").is_dir() else []
    good = []
    for p in files:
        try:
            with Image.open(p) as im:
                im.load()
                fmt = im.format
        except (OSError, ValueError, SyntaxError, MemoryError, Image.DecompressionBombError) as e:
            fmt = f"unreadable ({type(e).__name__}: {e})"
        if fmt == "PNG":
            good.append(p)
        else:
            problems.append(f"{p}: not a PNG image: {fmt} (skipped)")
    return good


def _slug(s: str) -> str:
    """A file-name part from untrusted text: ASCII letters, digits, ``-_.``; long ones are cut to
    SLUG_MAX characters, with a hash of the whole text so that they stay distinct."""
    slug = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in s)
    if len(slug) <= SLUG_MAX:
        return slug
    return f"{slug[:SLUG_MAX - 11]}-{digest(s, 10)}"
