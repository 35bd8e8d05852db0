"""OT-CFM training batches of fmbench and of TorchCFM 1.0.7, side by side: the same statistics
over many steps, to tell whether the two loops feed the network the same distribution.

    pip install -e ".[bench]"
    python benchmarks/ot_batches.py [--task moons->8gaussians] [--steps 400]

fmbench's batches come from its training loop's ``BatchMaker`` (the suite's OT-CFM path with
``replace = true``, TorchCFM's pairing); TorchCFM's from
``ExactOptimalTransportConditionalFlowMatcher.sample_location_and_conditional_flow`` on the same
samplers. Printed: mean ± 2 standard errors over steps of E t, E|u_t|², E|x_t|² and sd|u_t|².
"""

import argparse
from dataclasses import replace

import numpy as np
import torch

from fmbench.batches import BatchMaker
from fmbench.paths import make_coupling
from fmbench.plan import work_units
from fmbench.suite import load_suite
from fmbench.tasks import load_task

NAMES = ("E t", "E|u_t|^2", "E|x_t|^2", "sd|u_t|^2")


def stats(t, xt, ut) -> list[float]:
    u2 = ut.double().pow(2).sum(1)
    return [float(t.double().mean()), float(u2.mean()),
            float(xt.double().pow(2).sum(1).mean()), float(u2.std())]


def main() -> None:
    from torchcfm import conditional_flow_matching as cfm

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--suite", default="suites/toy2d.toml")
    ap.add_argument("--task", default="moons->8gaussians")
    ap.add_argument("--steps", type=int, default=400)
    args = ap.parse_args()
    torch.set_num_threads(1)
    suite = load_suite(args.suite)
    unit = next(u for u in work_units(suite)
                if u.first.task.name == args.task and u.first.path.name == "otcfm")
    path = replace(unit.first.path, replace=True)
    data = load_task(unit.first.task)
    src, tgt, n = data.source(path), data.target(), suite.training.batch_size
    maker = BatchMaker(path, make_coupling(path.coupling, **path.coupling_params()), src, tgt,
                       n, unit.first.seed)
    matcher = cfm.ExactOptimalTransportConditionalFlowMatcher(sigma=path.sigma)
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(2)
    np.random.seed(3)
    a, b = [], []
    for step in range(args.steps):
        batch = maker(step)
        a.append(stats(batch.t, batch.xt, batch.target))
        b.append(stats(*matcher.sample_location_and_conditional_flow(src(n, g), tgt(n, g))))
    a, b = np.array(a), np.array(b)
    se = 2 / np.sqrt(args.steps)
    for i, name in enumerate(NAMES):
        print(f"{name:10s} fmbench {a[:, i].mean():.4f} ± {se * a[:, i].std():.4f}   "
              f"torchcfm {b[:, i].mean():.4f} ± {se * b[:, i].std():.4f}")


if __name__ == "__main__":
    main()
