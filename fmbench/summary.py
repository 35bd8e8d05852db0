"""Summaries of a results table: per task × path × solver × metric, the mean over training seeds
and evaluation draws with its uncertainty (:mod:`fmbench.uncertainty`), the cell text every
table shares, and which value is best where noise separates it.

- A group's ok values form a (seeds × draws) table; a seed that lacks a draw is left out (or the
  draw, when that keeps more values), so seeds and draws stay crossed.
- Scores (ranked metrics, e.g. w2, npe, fid) are shown as ``mean ± h (S×R)``: h is the half-width of
  the 95% confidence interval from the crossed estimator (seed and draw noise combined), S×R the
  seeds × draws behind the mean. With one seed and one draw there is no interval: ``mean (1×1)``.
- Floors (``w2_floor``, ``fid_floor``: what a perfect model scores at the metric's own n) do not
  depend on the model: they are a distribution over the R pairs of draws, shown as
  ``mean (sd s, R draws)``.
- Best: within a column of a ranked metric, the best mean is **best** only when a paired test over
  the shared draws (:func:`fmbench.uncertainty.paired_difference`) separates it from every other
  value at ``ALPHA``; otherwise it and every value it is not separated from are *tied* (≈).
"""

from __future__ import annotations

import math

import pandas as pd

import fmbench.image_metrics  # noqa: F401  (registers the image metrics' roles)
from fmbench.metrics import metric_role
from fmbench.uncertainty import crossed_mean, paired_difference

GROUP = ["task", "path_label", "solver_label", "metric"]
LEVEL = 0.95  # confidence level of every interval fmbench shows
ALPHA = 0.05  # significance level of "best" in report tables
TIE = "≈"


def value_table(g: pd.DataFrame) -> pd.DataFrame:
    """A group's ok values as a (seed × draw) table without holes (module docstring): while a
    value is missing, the seed or the draw with the most missing values is left out (a seed on a
    tie), so a complete block remains whenever there is any value."""
    t = (g.pivot_table(index="seed", columns="draw", values="value", aggfunc="mean")
         .sort_index().sort_index(axis=1))
    while t.size and t.isna().to_numpy().any():
        by_seed, by_draw = t.isna().sum(axis=1), t.isna().sum(axis=0)
        if by_seed.max() / t.shape[1] >= by_draw.max() / t.shape[0]:
            t = t.drop(index=by_seed.idxmax())
        else:
            t = t.drop(columns=by_draw.idxmax())
    return t


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per task × path × solver × metric over ok rows: ``mean``, ``se``, ``half`` (95%
    CI half-width), ``sd`` (of the per-draw means over draws for floors, of the per-seed means
    over seeds otherwise), ``n_seeds``, ``n_draws``, ``covers`` (which noise the interval
    covers), ``role``, ``unit``, ``higher_is_better`` and ``table`` (the seed × draw values)."""
    cols = [*GROUP, "mean", "se", "half", "sd", "n_seeds", "n_draws", "covers", "role", "unit",
            "higher_is_better", "table"]
    ok = df[df["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame(columns=cols)
    ok["value"] = ok["value"].astype(float)
    hib = ok.groupby("metric")["higher_is_better"].first().astype(str) == "True"
    units = ok.groupby("metric")["unit"].first().fillna("").astype(str)
    out = []
    for key, g in ok.groupby(GROUP, sort=False):
        t = value_table(g)
        est = crossed_mean(t.to_numpy(float))
        role = metric_role(key[-1])
        spread = t.mean(axis=0) if role == "floor" else t.mean(axis=1)
        out.append({**dict(zip(GROUP, key, strict=True)), "mean": est.mean, "se": est.se,
                    "half": est.half_width(LEVEL), "sd": float(spread.std(ddof=1)) if len(spread) > 1
                    else math.nan, "n_seeds": est.n_seeds, "n_draws": est.n_draws,
                    "covers": est.covers, "role": role, "unit": units[key[-1]],
                    "higher_is_better": bool(hib[key[-1]]),
                    "table": t})
    return pd.DataFrame(out, columns=cols)


def header(metric: str, unit: str, higher_is_better: bool, role: str) -> str:
    """A metric's column header in every table: its name, unit in brackets and direction, e.g.
    ``nll [nats] ↓``, ``w2 ↓``; a floor has no direction (it is not a score)."""
    unit = f" [{unit}]" if unit else ""
    arrow = "" if role == "floor" else " ↑" if higher_is_better else " ↓"
    return f"{metric}{unit}{arrow}"


def headers(s: pd.DataFrame) -> dict[str, str]:
    """:func:`header` of every metric of a summary, by metric name."""
    first = s.drop_duplicates("metric")
    return {r.metric: header(r.metric, r.unit, bool(r.higher_is_better), r.role)
            for r in first.itertuples()}


def _with_error(mean: float, err: float) -> tuple[str, str]:
    """A mean and its error (> 0) as text: fixed point to the error's second significant digit,
    or 3 and 2 significant digits when either is tiny or huge."""
    if not all(v == 0 or 1e-4 <= abs(v) < 1e6 for v in (mean, err)):
        return f"{mean:.3g}", f"{err:.2g}"
    d = max(1 - math.floor(math.log10(err)), 0)
    return f"{mean:.{d}f}", f"{err:.{d}f}"


def cell(row, show_n: bool = True) -> str:
    """The text of one summary row (module docstring): digits follow the uncertainty;
    ``show_n=False`` leaves out (S×R) (a caption then gives it: :func:`counts_note`)."""
    mean, n_s, n_d = float(row["mean"]), int(row["n_seeds"]), int(row["n_draws"])
    if row["role"] == "floor":
        sd = float(row["sd"])
        if not math.isfinite(sd):
            return f"{mean:.3g} (1 draw)"
        m, e = _with_error(mean, sd) if sd > 0 else (f"{mean:.3g}", "0")
        return f"{m} (sd {e}, {n_d} draws)"
    n = f" ({n_s}×{n_d})" if show_n else ""
    half = float(row["half"])
    if not (math.isfinite(half) and half > 0):
        return f"{mean:.4g}{n}"
    m, e = _with_error(mean, half)
    return f"{m} ± {e}{n}"


def counts_note(s: pd.DataFrame) -> str:
    """The seeds × draws behind the rows' means, e.g. '3×5 (train_time: 3×1)'."""
    counts = s.loc[s["role"] != "floor"].assign(
        n=lambda x: x["n_seeds"].astype(str) + "×" + x["n_draws"].astype(str))
    if counts.empty:
        return ""
    common = counts["n"].mode().iloc[0]
    other = counts[counts["n"] != common].groupby("metric", sort=False)["n"].agg(
        lambda v: "/".join(dict.fromkeys(v)))
    return common + "".join(f" ({m}: {v})" for m, v in other.items())


def separated(a: pd.DataFrame, b: pd.DataFrame, alpha: float = ALPHA) -> bool:
    """Whether two groups' means differ beyond noise: a paired test over the draws they share;
    False when they share none or there is no noise estimate at all."""
    common = [c for c in a.columns if c in b.columns]
    if not common:
        return False
    est = paired_difference(a[common].to_numpy(float), b[common].to_numpy(float))
    p = est.p_value()
    return bool(math.isfinite(p) and p < alpha)


def best_marks(s: pd.DataFrame, by: list[str], alpha: float = ALPHA) -> pd.Series:
    """Per row of the summary ``s``: ``"best"`` (the best of its ``by`` group, separated from
    every other row of the group), ``"tie"`` (the best or a row it is not separated from, when
    the best is not separated from all), or ``""``. Only ranked metrics (role ``score``) in
    groups of two or more rows are marked."""
    marks = pd.Series("", index=s.index, dtype=object)
    for _, g in s.groupby(by, sort=False):
        if g["role"].iloc[0] != "score" or len(g) < 2:
            continue
        hib = bool(g["higher_is_better"].iloc[0])
        top = g["mean"].idxmax() if hib else g["mean"].idxmin()
        tied = [i for i in g.index if i != top and not separated(s.at[top, "table"],
                                                                 s.at[i, "table"], alpha)]
        if tied:
            marks.loc[[top, *tied]] = "tie"
        else:
            marks.loc[top] = "best"
    return marks


def interval_note(s: pd.DataFrame) -> str:
    """One sentence on what the ± of these rows covers (which noise, for which metrics: a
    metric's every value, or only its values with one seed or one draw behind them)."""
    rows = s[s["role"] != "floor"]
    common = rows["covers"].mode().iloc[0] if len(rows) else "nothing"
    parts = [f"{_NOISE[common]}"]
    for c in [c for c in dict.fromkeys(rows["covers"]) if c != common]:
        where = []
        for m, g in rows.groupby("metric", sort=False):
            if (g["covers"] == c).all():
                where.append(m)
            elif (g["covers"] == c).any():
                where.append(f"{m} where {FEWER[c]}")
        parts.append(f"{_NOISE[c]} for {', '.join(where)}")
    return (f"mean ± half-width of the {LEVEL:.0%} confidence interval (t, crossed seeds × "
            f"evaluation draws), covering {'; '.join(parts)}; (S×R) = seeds × evaluation draws "
            "behind the mean; floors: mean (sd over pairs of draws)")


# where a value's interval covers less than most: what is behind it (interval note, captions)
FEWER = {"draws": "one seed is behind it (1×R)", "seeds": "one draw is behind it (S×1)",
         "nothing": "one value is behind it (1×1)",
         "seeds and draws": "several seeds and draws are behind it"}
_NOISE = {"seeds and draws": "training-seed and evaluation-draw noise",
          "seeds": "training-seed noise only", "draws": "evaluation-draw noise only",
          "nothing": "no noise (one value: no interval)"}
