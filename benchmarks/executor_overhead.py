"""Per-unit executor overhead: what an executor adds to each work unit beyond the unit's own work.

A suite of many tiny units (a 1-step training, 8 points, one Euler step, the NFE metric) is run
through an executor; for each unit, overhead = (time from the unit's "started" event to its outcome
reaching the coordinator) − (the unit's own wall time, measured inside the worker). Start-up (pool
spawn, Ray start) is reported apart: it is paid once per run, not per unit.

    .venv/bin/python benchmarks/executor_overhead.py                   # local, 2 workers
    .venv/bin/python benchmarks/executor_overhead.py --executor ray
    .venv/bin/python benchmarks/executor_overhead.py --workers 1       # in process
    .venv/bin/python benchmarks/executor_overhead.py --executor slurm --units 6  # submitit local

Executors that hand every unit over at once (Ray, SLURM) give no dispatch time per unit; for
them the overhead is estimated from the pace of the outcomes with ``--parallel`` units running at
once (Ray's local instance: 2).

Units dispatched before the first outcome are left out of the per-unit figures (their wait
includes the start-up). Prints n units, mean, median and max overhead per unit (target < 1 s),
and the start-up time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from fmbench.executors import make_executor
from fmbench.plan import work_units
from fmbench.suite import parse_suite
from fmbench.work import UnitJob


def tiny_suite(seeds: int):
    return parse_suite({
        "suite": {"name": "overhead", "seeds": list(range(seeds))},
        "task": [{"source": "gaussian", "target": "8gaussians"}],
        "model": {"width": 8, "depth": 1},
        "training": {"steps": 1, "batch_size": 8},
        "path": [{"name": "icfm"}],
        "solver": [{"name": "euler", "steps": 1}],
        "metrics": {"names": ["nfe"], "n_eval": 8},
    }, "<overhead>")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--executor", default="local")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--units", type=int, default=40)
    ap.add_argument("--parallel", type=int, default=2,
                    help="units running at once, for executors that dispatch every unit at once")
    args = ap.parse_args()
    suite = tiny_suite(args.units)
    units = work_units(suite)
    opts = {"workers": args.workers} if args.executor == "local" else {}
    if args.executor == "ray":
        opts = {"local_cpus": 2}
    if args.executor == "slurm":
        opts = {"cluster": "local"}
    executor = make_executor(args.executor, **opts)
    with tempfile.TemporaryDirectory() as tmp:
        job = UnitJob(suite, str(Path(tmp) / "out"), str(Path(tmp) / "cache"))
        started: dict[str, float] = {}

        def on_event(ev):
            if ev.kind == "started":
                started.setdefault(ev.key, time.perf_counter())

        t0 = time.perf_counter()
        overheads, own, first, last = [], [], None, None
        for out in executor.run(job, units, on_event):
            own.append(out.seconds)
            now = last = time.perf_counter()
            if first is not None and started.get(out.key, t0) >= first:  # steady state only
                overheads.append(now - started[out.key] - out.seconds)
            first = first or now
    total = time.perf_counter() - t0
    print(f"executor: {executor.describe()}")
    if overheads:
        ms = [1e3 * x for x in overheads]
        print(f"units: {len(ms)}; overhead per unit: mean {statistics.mean(ms):.2f} ms, "
              f"median {statistics.median(ms):.2f} ms, max {max(ms):.2f} ms "
              "(time from dispatch to outcome minus the unit's own time, units dispatched after "
              "the first outcome)")
    else:  # every unit was handed over at once (Ray, SLURM): from the pace of the outcomes
        per = (last - first) * args.parallel / max(len(own) - 1, 1) - statistics.median(own)
        if per < 0:
            print(f"units: {len(own)}, all dispatched and run at once (more than --parallel "
                  f"{args.parallel}): no per-unit figure; see the whole run below")
        else:
            print(f"units: {len(own)}, all dispatched at once; overhead per unit ~{1e3 * per:.1f} "
                  f"ms (time between outcomes x {args.parallel} running at once, minus a unit's "
                  "median own time)")
    print(f"a unit's own time: median {statistics.median(own):.3f} s")
    print(f"first outcome after {first - t0:.2f} s (start-up included); whole run {total:.2f} s")


if __name__ == "__main__":
    main()
