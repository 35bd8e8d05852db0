"""Per-step cost of each coupling at Tong's 2D batch size, against the rest of an I-CFM step.

    python benchmarks/coupling_cost.py [--batch 512] [--repeats 5]

Prints milliseconds per call (median over repeats, same process) and the ratio to one I-CFM
training step (3x64 SELU MLP: sample, interpolate, forward, backward, AdamW) without a coupling.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fmbench.data import sample
from fmbench.models import MLP
from fmbench.paths import make_coupling, make_path


def _median_ms(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    n = args.batch
    g = torch.Generator().manual_seed(0)
    model = MLP(2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = make_path("icfm")

    def icfm_step():
        x0, x1 = torch.randn(n, 2, generator=g), sample("8gaussians", n, g)
        t = path.sample_t(n, g)
        xt, ut = path.interpolate(x0, x1, t, torch.randn(n, 2, generator=g))
        loss = (model(xt, t.float()) - ut).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    base = _median_ms(icfm_step, args.repeats * 10)
    print(f"I-CFM training step without coupling: {base:.2f} ms (batch {n})")
    tasks = [("gaussian", "8gaussians"), ("moons", "8gaussians"), ("gaussian", "moons"),
             ("gaussian", "scurve")]
    for name, kw in [("exact-ot", {}), ("entropic-ot", {"reg": 0.02})]:
        c = make_coupling(name, **kw)
        for src, tgt in tasks:
            x0, x1 = sample(src, n, 1), sample(tgt, n, 2)
            ms = _median_ms(lambda c=c, x0=x0, x1=x1: c.pair(x0, x1, g), args.repeats)
            print(f"{name:12s} {kw!s:16s} {src:>8s}->{tgt:<10s} {ms:9.1f} ms/step "
                  f"= {ms / base:7.1f}x the rest of the step")


if __name__ == "__main__":
    main()
