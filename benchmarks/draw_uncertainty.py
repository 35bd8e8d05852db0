"""What evaluation draws change, measured on a finished run with R >= 2 draws.

    fmbench run suites/toy2d-cpu.toml --out results/toy2d-draws --workers 2
    python benchmarks/draw_uncertainty.py results/toy2d-draws [--solver euler@100]

For each task × path and metric (w2, npe by default): the mean and the 95% CI half-width as
fmbench would report them with ONE evaluation draw (draw 0: a t-interval over seeds, which covers
seed noise only) and with all R draws (the crossed seeds × draws estimator), the spread of the
per-draw means, and the floor's spread. Then, per task, OT-CFM − I-CFM in NPE and W2: the paired
difference over the shared draws (R draws) and the seed-only Welch difference on draw 0, with
their intervals and whether OT-CFM's lower value holds beyond the interval.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fmbench.compare import load_results  # noqa: E402
from fmbench.summary import LEVEL, value_table  # noqa: E402
from fmbench.uncertainty import crossed_mean, paired_difference  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results")
    ap.add_argument("--metrics", default="w2,npe")
    ap.add_argument("--solver", default=None, help="solver label (default: the first one)")
    ap.add_argument("--a", default="otcfm", help="path label of the method expected lower")
    ap.add_argument("--b", default="icfm", help="path label it is compared with")
    args = ap.parse_args(argv)
    df = load_results(args.results)
    df = df[df["status"] == "ok"].assign(value=lambda x: x["value"].astype(float))
    solver = args.solver or df["solver_label"].iloc[0]
    df = df[df["solver_label"] == solver]
    metrics = args.metrics.split(",")
    r_all = int(df["draw"].nunique())
    print(f"{args.results}: solver {solver}, {df['seed'].nunique()} seeds × {r_all} draws\n")
    rows = []
    for (task, path, metric), g in df[df["metric"].isin(metrics)].groupby(
            ["task", "path_label", "metric"], sort=False):
        t = value_table(g)
        one, full = crossed_mean(t[[0]].to_numpy()), crossed_mean(t.to_numpy())
        rows.append({"task": task, "path": path, "metric": metric,
                     "R=1 mean": one.mean, "R=1 ±": one.half_width(LEVEL),
                     f"R={t.shape[1]} mean": full.mean, f"R={t.shape[1]} ±": full.half_width(LEVEL),
                     "width ratio": full.half_width(LEVEL) / one.half_width(LEVEL),
                     "sd of draw means": float(t.mean(axis=0).std(ddof=1)),
                     "sd of seed means": float(t.mean(axis=1).std(ddof=1))})
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    floor = df[df["metric"] == "w2_floor"].groupby(["task", "draw"])["value"].first()
    if len(floor):
        print("\nw2_floor over draws (mean, sd, min, max):")
        print(floor.groupby("task").agg(["mean", "std", "min", "max"]).to_string(
            float_format=lambda x: f"{x:.4g}"))
    print(f"\n{args.a} − {args.b} (negative: {args.a} lower), {LEVEL:.0%} intervals:")
    out = []
    for (task, metric), g in df[df["metric"].isin(metrics)].groupby(["task", "metric"],
                                                                   sort=False):
        ta, tb = (value_table(g[g["path_label"] == p]) for p in (args.a, args.b))
        if ta.empty or tb.empty:
            continue
        common = [c for c in ta.columns if c in tb.columns]
        paired = paired_difference(ta[common].to_numpy(), tb[common].to_numpy())
        welch = paired_difference(ta[[0]].to_numpy(), tb[[0]].to_numpy())
        for name, e in ((f"paired, R={len(common)}", paired), ("Welch, R=1", welch)):
            lo, hi = e.interval(LEVEL)
            out.append({"task": task, "metric": metric, "test": name, "difference": e.mean,
                        "low": lo, "high": hi, "p": e.p_value(),
                        f"{args.a} lower beyond CI": bool(hi < 0)})
    print(pd.DataFrame(out).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
