"""Uncertainty of a benchmark number from two noises: training seeds and evaluation draws.

A metric value ``x[s, r]`` comes from the model trained with seed ``s`` scored on evaluation draw
``r``. The draws are shared: every seed's model (and every path and solver) is scored on the same
R draws, so seeds and draws are *crossed*, not nested. The model (a two-way random-effects model
without replication)::

    x[s, r] = mu + a[s] + d[r] + e[s, r],   Var a = σ_s², Var d = σ_d², Var e = σ_e²

gives Var(grand mean) = σ_s²/S + σ_d²/R + σ_e²/(S·R). With the mean squares of the two-way
table, E[MS_seeds] = σ_e² + R·σ_s² and E[MS_draws] = σ_e² + S·σ_d², so

    V = (MS_seeds + MS_draws) / (S·R)

has expectation Var(grand mean) + σ_e²/(S·R): conservative by one residual term, never negative
(the unbiased MS_seeds + MS_draws − MS_resid can be, and needs a floor; in simulation it gave
the same coverage with wider intervals, because its Satterthwaite df is smaller). Degrees of
freedom: Welch–Satterthwaite over the two mean squares; the confidence interval is
mean ± t(df) · sqrt(V). With one draw (R = 1) this is the usual seed standard error (df S − 1)
and covers seed noise only; with one seed it covers draw noise only: :attr:`Estimate.covers`
says which. Measured coverage of the 95% interval (tests/test_uncertainty.py; 3000 simulated
tables each): 0.95-0.99 with S, R >= 3; about 0.90 with S = 2 or R = 2, where the df rest on
one degree of freedom (use at least 3 seeds and 3 draws where the numbers matter).

A difference between two methods scored on the same draws (:func:`paired_difference`) lets the
shared draw effect ``d[r]`` cancel: per draw, the difference of the two seed means; its variance
over draws estimates the draw part of the difference's variance (σ_e terms included), and each
side adds its seed component (MS_seeds − MS_resid)/(S·R), floored at 0. A side with one seed
borrows the other side's per-seed variance. With R = 1 it is Welch's test over seeds; with one
seed per side, a paired t-test over draws, which covers draw noise only (``covers`` says so).

Pure math: arrays in, numbers out; no I/O, no random state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Estimate:
    """A mean with its standard error, the degrees of freedom of that error, and what it covers
    (``"seeds and draws"``, ``"seeds"``, ``"draws"`` or ``"nothing"`` for a single value)."""

    mean: float
    se: float
    df: float
    n_seeds: int
    n_draws: int
    covers: str

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        """The two-sided confidence interval mean ± t(df)·se (NaNs without an error)."""
        if not (self.se >= 0 and self.df > 0):
            return math.nan, math.nan
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * self.se
        return self.mean - half, self.mean + half

    def half_width(self, level: float = 0.95) -> float:
        """Half the width of :meth:`interval` (NaN without an error)."""
        lo, hi = self.interval(level)
        return (hi - lo) / 2

    def p_value(self, null: float = 0.0) -> float:
        """Two-sided p-value of mean = ``null`` (a t-test with this error and df)."""
        if not (self.se >= 0 and self.df > 0):
            return math.nan  # no error estimate
        if self.se == 0:
            return 1.0 if self.mean == null else 0.0
        return float(2 * stats.t.sf(abs(self.mean - null) / self.se, self.df))


def _table(x) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if a.ndim == 1:
        a = a[:, None]  # one draw
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"values must be a (seeds, draws) table, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("values must be finite (leave failed values out before summarizing)")
    return a


def mean_squares(x) -> tuple[float, float, float]:
    """(MS_seeds, MS_draws, MS_resid) of a (seeds, draws) table with S, R >= 2."""
    a = _table(x)
    s, r = a.shape
    grand = a.mean()
    seed_means, draw_means = a.mean(axis=1), a.mean(axis=0)
    ms_s = r * float(((seed_means - grand) ** 2).sum()) / (s - 1)
    ms_d = s * float(((draw_means - grand) ** 2).sum()) / (r - 1)
    resid = a - seed_means[:, None] - draw_means[None, :] + grand
    ms_e = float((resid ** 2).sum()) / ((s - 1) * (r - 1))
    return ms_s, ms_d, ms_e


def _satterthwaite(parts: list[tuple[float, float]]) -> float:
    """Welch–Satterthwaite df of a sum of terms c_i·MS_i, given [(c_i·MS_i, df_i)] (a term may
    be negative; terms with df 0 are left out)."""
    total = sum(v for v, _ in parts)
    denom = sum(v * v / df for v, df in parts if df > 0)
    return total * total / denom if denom > 0 else math.inf


def crossed_mean(x) -> Estimate:
    """The grand mean of a (seeds, draws) table with the standard error that combines seed and
    draw noise (module docstring); a 1-D array is one value per seed (one draw)."""
    a = _table(x)
    s, r = a.shape
    mean = float(a.mean())
    if s > 1 and r > 1:
        ms_s, ms_d, _ = mean_squares(a)
        n = s * r
        v = (ms_s + ms_d) / n
        df = _satterthwaite([(ms_s / n, s - 1), (ms_d / n, r - 1)])
        return Estimate(mean, math.sqrt(v), df, s, r, "seeds and draws")
    if s > 1 or r > 1:
        flat = a.ravel()
        return Estimate(mean, float(flat.std(ddof=1)) / math.sqrt(flat.size), flat.size - 1.0,
                        s, r, "seeds" if s > 1 else "draws")
    return Estimate(mean, math.nan, 0.0, 1, 1, "nothing")


def _seed_component(a: np.ndarray) -> tuple[float, float]:
    """The seed part of a side's grand-mean variance, (σ_s²/S estimate, its df)."""
    s, r = a.shape
    if s < 2:
        return 0.0, 0.0
    if r < 2:
        return float(a[:, 0].var(ddof=1)) / s, s - 1.0
    ms_s, _, ms_e = mean_squares(a)
    return max(ms_s - ms_e, 0.0) / (s * r), s - 1.0


def paired_difference(a, b) -> Estimate:
    """mean(a) − mean(b) for two (seeds, draws) tables scored on the same R draws (column r of
    both is draw r), with a standard error in which the shared draw effect cancels."""
    ta, tb = _table(a), _table(b)
    if ta.shape[1] != tb.shape[1]:
        raise ValueError(f"the two sides must share their draws: {ta.shape[1]} vs "
                         f"{tb.shape[1]} draws")
    r = ta.shape[1]
    diff = float(ta.mean() - tb.mean())
    sa, sb = ta.shape[0], tb.shape[0]
    seeds = max(sa, sb) > 1  # seed noise measured on at least one side
    covers = ("seeds and draws" if r > 1 and seeds else "draws" if r > 1
              else "seeds" if seeds else "nothing")
    (ca, dfa), (cb, dfb) = _seed_component(ta), _seed_component(tb)
    # a side with one seed has no seed noise of its own to measure: it borrows the other side's
    # per-seed variance (both sides' models are trained the same way)
    if sa == 1 and sb > 1:
        ca, dfa = cb * sb, dfb
    elif sb == 1 and sa > 1:
        cb, dfb = ca * sa, dfa
    if r == 1:  # Welch over seeds
        if sa < 2 and sb < 2:
            return Estimate(diff, math.nan, 0.0, sa + sb, 1, "nothing")
        return Estimate(diff, math.sqrt(ca + cb), _satterthwaite([(ca, dfa), (cb, dfb)]),
                        sa + sb, 1, covers)
    d = ta.mean(axis=0) - tb.mean(axis=0)  # per draw: the draw effect cancels
    v_draw = float(d.var(ddof=1)) / r
    v = v_draw + ca + cb
    df = _satterthwaite([(v_draw, r - 1), (ca, dfa), (cb, dfb)])
    return Estimate(diff, math.sqrt(v), df, sa + sb, r, covers)
