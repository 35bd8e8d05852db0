"""A coupling registered by a callable entry point."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fmbench.paths import COUPLINGS, Coupling


@dataclass(frozen=True)
class NormSortedCoupling(Coupling):
    """Pairs the i-th smallest source norm with the i-th smallest target norm (a deterministic
    permutation: the plan puts mass 1/n on each of those pairs)."""

    def log_plan(self, x0, x1):
        n = x0.shape[0]
        i = torch.argsort(x0.reshape(n, -1).norm(dim=1))
        j = torch.argsort(x1.reshape(x1.shape[0], -1).norm(dim=1))
        out = torch.full((n, x1.shape[0]), float("-inf"), dtype=torch.float64)
        out[i, j] = -math.log(n)
        return out


def register() -> None:
    COUPLINGS.register("example-norm-sorted")(NormSortedCoupling)
