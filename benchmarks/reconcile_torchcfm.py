"""Reconcile fmbench's training with TorchCFM's own matchers, scored by fmbench's evaluation.

    pip install -e ".[bench]"        # torchcfm 1.0.7
    python benchmarks/reconcile_torchcfm.py [--suite suites/toy2d.toml] \\
        [--tasks N->8gaussians moons->8gaussians] [--paths icfm otcfm] [--seeds 0 1 2 3 4] \\
        [--steps N] [--out results/reconcile-torchcfm] [--shard I/K] \\
        [--sides fmbench torchcfm fmbench-replace]

For every (task, path, seed) of the suite that the filters keep, one model per side (``--sides``,
default the first two below) is trained with the suite's protocol (network, initial weights,
optimiser, batch size, steps):

- ``fmbench``: fmbench's own training, through the model cache (``--cache-dir``, default
  fmbench's), so the models are the ones ``fmbench run`` of the same suite reuses;
- ``torchcfm``: a plain loop around TorchCFM 1.0.7's ``ConditionalFlowMatcher`` (icfm) or
  ``ExactOptimalTransportConditionalFlowMatcher`` (otcfm) with the path's σ — TorchCFM draws
  t, x_t and u_t and, for OT-CFM, pairs the batch; the network starts from the SAME initial
  weights as fmbench's model of that seed, the batches come from the same samplers (own stream).
  One difference is TorchCFM's design, kept on purpose: its OT-CFM draws the batch's pairs i.i.d.
  from the exact plan (``sample_plan(replace=True)``: about 37% of the points repeat and as many
  go unused), where fmbench's ``exact-ot`` pairs by the plan's permutation (``replace = true`` on
  the path gives TorchCFM's pairing).
- ``fmbench-replace`` (only with ``--sides``): fmbench's training with ``replace = true`` on the
  OT-CFM path, i.e. TorchCFM's pairing in fmbench's loop (its own model key in the cache), to
  test whether the pairing explains a difference between the first two.

Every side is scored by ``fmbench.work.score_case`` on the same evaluation draws (the suite's
``eval_draws``; 5 for 2D tasks), so evaluation noise is shared. Per (task, path) and pair of sides
a, b (``PAIRS``: fmbench − torchcfm, fmbench-replace − torchcfm, fmbench − fmbench-replace, where
both have seeds) the script prints each side's mean ± 95% CI (seeds × draws,
``fmbench.uncertainty.crossed_mean``) and the paired difference a − b with its 95% CI and p-value
(``paired_difference``: the shared draw effect cancels, seeds differ). One JSON line per (task,
path, seed, side) goes to ``<out>/rows.jsonl`` as soon as it is scored; a rerun skips what is
there, so an interrupted run resumes. ``--shard I/K`` keeps every K-th (task, path, seed)
starting at I, for K processes in parallel (each with one torch thread); ``--report`` only
prints the table of ``rows.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fmbench.cache import default_cache_dir, new_model, trained_model
from fmbench.plan import derived_seed, work_units
from fmbench.suite import load_suite
from fmbench.tasks import load_task
from fmbench.train import make_optimizer
from fmbench.uncertainty import crossed_mean, paired_difference
from fmbench.work import UnitJob, score_case

METRICS = ("w2", "npe")
SIDES = ("fmbench", "torchcfm", "fmbench-replace")
# the comparisons the report prints, each (a, b) as a − b paired on the evaluation draws
PAIRS = (("fmbench", "torchcfm"), ("fmbench-replace", "torchcfm"), ("fmbench", "fmbench-replace"))


def torchcfm_model(unit, suite, data):
    """The unit's network trained by TorchCFM's matcher (a plain loop, as TorchCFM's examples)."""
    from torchcfm import conditional_flow_matching as cfm

    path, cfg = unit.first.path, suite.training
    matcher = {"icfm": cfm.ConditionalFlowMatcher,
               "otcfm": cfm.ExactOptimalTransportConditionalFlowMatcher}[path.name](
        sigma=path.sigma)
    model = new_model(unit, suite.model, data)  # fmbench's initial weights for this seed
    opt = make_optimizer(model.parameters(), cfg)
    src, tgt = data.source(path), data.target()
    g = torch.Generator().manual_seed(derived_seed(unit.first.seed, "torchcfm batches"))
    # TorchCFM draws t and ε from torch's global RNG and OT pairs from numpy's: seed both
    torch.manual_seed(derived_seed(unit.first.seed, "torchcfm torch"))
    np.random.seed(derived_seed(unit.first.seed, "torchcfm numpy"))
    start = time.perf_counter()
    for _ in range(cfg.steps):
        t, xt, ut = matcher.sample_location_and_conditional_flow(src(cfg.batch_size, g),
                                                                 tgt(cfg.batch_size, g))
        loss = (model(xt, t) - ut).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
    return model.eval(), {"train_time": time.perf_counter() - start, "coupling_time": math.nan,
                          "losses": []}


def score(job: UnitJob, unit, model, meta, data) -> dict[str, list[float]]:
    """Per metric, its value on each evaluation draw (fmbench's scoring of the unit's case)."""
    suite, case = job.suite, unit.first
    inputs = [data.eval_inputs(suite.metrics.n_eval, suite.data_seed, case.path, r)
              for r in range(data.eval_draws(suite.metrics.eval_draws))]
    values = score_case(job, case, model, meta, data, inputs,
                        [{} for _ in inputs], {})
    out = {}
    for m in METRICS:
        vals = [v[m] for v in values]
        bad = [reason for _, status, reason in vals if status != "ok"]
        if bad:
            raise RuntimeError(f"{m} failed: {bad[0]}")
        out[m] = [value for value, _, _ in vals]
    return out


def with_replacement(suite):
    """The suite with every OT-CFM path drawing its pairs i.i.d. from the plan (TorchCFM's way)."""
    return replace(suite, paths=tuple(replace(p, replace=True) if p.name == "otcfm" else p
                                      for p in suite.paths))


def _train(side: str, unit, units_r: dict, suite, suite_r, data, cache: Path):
    """(model, meta, cached) of one side of one unit."""
    if side == "fmbench":
        return trained_model(unit, suite, data, cache)
    if side == "fmbench-replace":
        return trained_model(units_r[unit.key], suite_r, data, cache)
    return (*torchcfm_model(unit, suite, data), False)


def run(args, suite, rows_file: Path) -> None:
    done = set()
    if rows_file.exists():
        for line in rows_file.read_text().splitlines():
            r = json.loads(line)
            done.add((r["task"], r["path"], r["seed"], r["side"]))
    units = [u for u in work_units(suite)
             if (not args.tasks or u.first.task.name in args.tasks)
             and (not args.paths or u.first.path.name in args.paths)]
    suite_r = with_replacement(suite)  # the same grid in the same order, other model keys
    units_r = {u.key: r for u, r in zip(work_units(suite), work_units(suite_r), strict=True)}
    i, k = args.shard
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    for unit in units[i::k]:
        c = unit.first
        data = load_task(c.task)
        for side in args.sides:
            key = (c.task.name, c.path.name, c.seed, side)
            if key in done or (side == "fmbench-replace" and c.path.name != "otcfm"):
                continue
            t0 = time.perf_counter()
            model, meta, cached = _train(side, unit, units_r, suite, suite_r, data, cache)
            job = UnitJob(suite, str(Path(args.out) / side), str(cache))
            row = {"task": key[0], "path": key[1], "seed": key[2], "side": side,
                   "steps": suite.training.steps, "train_time": float(meta["train_time"]),
                   "cached": cached, **score(job, unit, model, meta, data)}
            with rows_file.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"{unit.label} {side}: w2 {np.mean(row['w2']):.4f} npe "
                  f"{np.mean(row['npe']):.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)


def _ci(e) -> str:
    return f"{e.mean:.4f} ± {e.half_width():.4f}"


def report(rows_file: Path, markdown: bool = False) -> None:
    rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    groups: dict[tuple, dict[str, dict[int, dict]]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["path"]), {}).setdefault(r["side"], {})[r["seed"]] = r
    head = ("task", "path", "metric", "seeds×draws", "a", "b", "mean ± 95% CI of a",
            "mean ± 95% CI of b", "a − b", "p")
    if markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    else:
        print("\nmean ± 95% CI over seeds × evaluation draws; a − b paired on the draws "
              "(its CI covers seeds and draws)")
        print(f"{'task':18s} {'path':6s} {'metric':6s} {'n':>5s} {'side a':>15s} {'side b':>15s} "
              f"{'a':>18s} {'b':>18s} {'a - b':>20s} {'p':>6s}")
    for (task, path), sides in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        for sa, sb in PAIRS:
            seeds = sorted(set(sides.get(sa, {})) & set(sides.get(sb, {})))
            for m in METRICS if seeds else ():
                a, b = ([sides[s][seed][m] for seed in seeds] for s in (sa, sb))
                ea, eb, d = crossed_mean(a), crossed_mean(b), paired_difference(a, b)
                cells = (task, path, m, f"{len(seeds)}x{len(a[0])}", sa, sb, _ci(ea), _ci(eb),
                         f"{d.mean:+.4f} ± {d.half_width():.4f}", f"{d.p_value():.3f}")
                if markdown:
                    print("| " + " | ".join(cells).replace("->", "→") + " |")
                else:
                    print(f"{task:18s} {path:6s} {m:6s} {cells[3]:>5s} {sa:>15s} {sb:>15s} "
                          f"{cells[6]:>18s} {cells[7]:>18s} {cells[8]:>20s} {cells[9]:>6s}")


def _shard(s: str) -> tuple[int, int]:
    i, k = (int(x) for x in s.split("/"))
    if not 0 <= i < k:
        raise argparse.ArgumentTypeError(f"--shard I/K needs 0 <= I < K, got {s}")
    return i, k


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="suites/toy2d.toml")
    ap.add_argument("--tasks", nargs="*", default=["N->8gaussians", "moons->8gaussians"])
    ap.add_argument("--paths", nargs="*", default=["icfm", "otcfm"], choices=["icfm", "otcfm"])
    ap.add_argument("--seeds", type=int, nargs="*", help="default: the suite's")
    ap.add_argument("--steps", type=int, help="default: the suite's (20k for toy2d)")
    ap.add_argument("--out", default="results/reconcile-torchcfm")
    ap.add_argument("--sides", nargs="*", default=list(SIDES[:2]), choices=SIDES,
                    help="which trainings to run (default: fmbench torchcfm)")
    ap.add_argument("--cache-dir")
    ap.add_argument("--shard", type=_shard, default=(0, 1))
    ap.add_argument("--report", action="store_true", help="only print the table of rows.jsonl")
    ap.add_argument("--markdown", action="store_true", help="the table as Markdown")
    args = ap.parse_args()
    rows_file = Path(args.out) / "rows.jsonl"
    if not args.report:
        torch.set_num_threads(1)
        suite = load_suite(args.suite)
        training = replace(suite.training, coupling_workers=0,  # placement only: same model
                           **({"steps": args.steps} if args.steps else {}))
        suite = replace(suite, training=training,
                        metrics=replace(suite.metrics, names=METRICS),
                        seeds=tuple(args.seeds) if args.seeds else suite.seeds)
        rows_file.parent.mkdir(parents=True, exist_ok=True)
        run(args, suite, rows_file)
    report(rows_file, args.markdown)


if __name__ == "__main__":
    main()
