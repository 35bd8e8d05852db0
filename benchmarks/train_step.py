"""Training-step cost of fmbench against TorchCFM's matchers and a raw PyTorch loop, one process.

    pip install -e ".[bench]"        # torchcfm 1.0.7
    python benchmarks/train_step.py [--rounds 3] [--steps 150] [--batch 512] [--workers 0 1 2]

The same network (fmbench's MLP 3×64 SELU), the same data samplers and the same AdamW at batch 512
for every contender; only the loop around them differs:

- ``torchcfm``: TorchCFM 1.0.7's ``ConditionalFlowMatcher`` (I-CFM), ``ExactOptimalTransport…``
  (OT-CFM) and ``SchrodingerBridge…`` (SB-CFM, its default ``ot_method="exact"``: exact OT pairs,
  not the entropic plan — see README) with σ = 0.1;
- ``raw``: the shortest loop one would write by hand (I-CFM; OT-CFM with POT's ``ot.emd``);
- ``fmbench wK``: ``fmbench.train.train`` with ``coupling_workers = K`` (0 = in process).

Contenders are interleaved over ``--rounds`` rounds; each figure is the median over rounds of the
median step time within a round (after 10 warm-up steps). The main process uses one torch thread
(as do coupling workers). Prints ms/step and the ratio to TorchCFM's step for the same method.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import ot
import torch

from fmbench.data import DATASETS
from fmbench.models import MLP
from fmbench.paths import make_coupling, make_path
from fmbench.train import TrainConfig, train

WARMUP = 10


def _gauss(n, g):
    return torch.randn(n, 2, generator=g)


def _median_step(step_fn, steps: int) -> float:
    times = []
    for k in range(steps + WARMUP):
        t = time.perf_counter()
        step_fn()
        if k >= WARMUP:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _net_and_opt():
    model = MLP(2)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)


def torchcfm_step(method: str, src, tgt, n: int, steps: int) -> float:
    from torchcfm import conditional_flow_matching as cfm

    fm = {"icfm": lambda: cfm.ConditionalFlowMatcher(sigma=0.1),
          "otcfm": lambda: cfm.ExactOptimalTransportConditionalFlowMatcher(sigma=0.1),
          "sbcfm": lambda: cfm.SchrodingerBridgeConditionalFlowMatcher(sigma=0.1)}[method]()
    model, opt = _net_and_opt()
    g = torch.Generator().manual_seed(0)

    def step():
        x0, x1 = src(n, g), tgt(n, g)
        t, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
        loss = (model(xt, t) - ut).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _median_step(step, steps)


def raw_step(method: str, src, tgt, n: int, steps: int) -> float:
    model, opt = _net_and_opt()
    g = torch.Generator().manual_seed(0)
    w = np.full(n, 1.0 / n)

    def step():
        x0, x1 = src(n, g), tgt(n, g)
        if method == "otcfm":
            plan = ot.emd(w, w, torch.cdist(x0.double(), x1.double()).pow(2).numpy())
            x1 = x1[torch.from_numpy(plan.argmax(1))]
        t = torch.rand(n, generator=g)
        xt = t[:, None] * x1 + (1 - t[:, None]) * x0 + 0.1 * torch.randn(n, 2, generator=g)
        loss = (model(xt, t) - (x1 - x0)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return _median_step(step, steps)


def fmbench_step(method: str, src, tgt, n: int, steps: int, workers: int) -> float:
    path = make_path(method, sigma=0.1)
    coupling = make_coupling(path.coupling, **path.coupling_params())
    model = MLP(2)
    stamps: list[float] = []
    cfg = TrainConfig(steps=steps + WARMUP, batch_size=n, coupling_workers=workers)
    train(model, path, coupling, src, tgt, cfg, seed=0,
          on_step=lambda *_: stamps.append(time.perf_counter()))
    return statistics.median(np.diff(stamps[WARMUP - 1:])) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", default=["icfm", "otcfm", "sbcfm"])
    args = ap.parse_args()
    torch.set_num_threads(1)
    tasks = {"N->8gaussians": (_gauss, DATASETS.get("8gaussians")),
             "moons->8gaussians": (DATASETS.get("moons"), DATASETS.get("8gaussians"))}
    for task, (src, tgt) in tasks.items():
        for method in args.methods:
            st = dict(src=src, tgt=tgt, n=args.batch, steps=args.steps)
            contenders = {"torchcfm": lambda m=method, st=st: torchcfm_step(m, **st)}
            if method != "sbcfm":
                contenders["raw"] = lambda m=method, st=st: raw_step(m, **st)
            for k in args.workers:
                if method == "icfm" and k > 0:
                    continue  # the independent coupling stays in process (fmbench.batches)
                contenders[f"fmbench w{k}"] = (lambda m=method, k=k, st=st:
                                               fmbench_step(m, **st, workers=k))
            times: dict[str, list[float]] = {name: [] for name in contenders}
            for _ in range(args.rounds):
                for name, fn in contenders.items():
                    times[name].append(fn())
            ref = statistics.median(times["torchcfm"])
            cells = [f"{name} {statistics.median(v):7.2f} ms ({statistics.median(v) / ref:.2f}x)"
                     for name, v in times.items()]
            print(f"{task:18s} {method:6s} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
