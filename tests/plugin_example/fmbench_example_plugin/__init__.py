"""An example fmbench plug-in: registers a probability path, a 2D dataset, a metric, a model kind
and a solver with the decorators fmbench's built-ins use (its coupling registers through a
callable entry point, ``fmbench_example_plugin.couplings:register``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fmbench.data import DATASETS
from fmbench.metrics import metric
from fmbench.models import MODELS, ModelKind
from fmbench.paths import GaussianPath, register_path
from fmbench.solvers import SOLVERS, SolverInfo


@register_path("example-quadratic")
@dataclass(frozen=True)
class QuadraticTimePath(GaussianPath):
    """x_t = t²·x1 + (1 − t²)·x0: the straight path travelled at speed 2t (u_t = 2t·(x1 − x0))."""

    def coeffs(self, t):
        return t * t, 1 - t * t, torch.zeros_like(t)

    def dcoeffs(self, t):
        return 2 * t, -2 * t, torch.zeros_like(t)


@DATASETS.register("example-spiral")
def spiral(n: int, generator: torch.Generator) -> torch.Tensor:
    """An Archimedean spiral, radius 1 to 4 over two turns, with noise 0.1."""
    s = torch.rand(n, generator=generator)
    r, a = 1 + 3 * s, 4 * math.pi * s
    x = torch.stack([r * torch.cos(a), r * torch.sin(a)], 1)
    return x + 0.1 * torch.randn(n, 2, generator=generator)


@metric("example_mean_error", "", False,
        "distance between the means of generated and held-out points", ("n_eval",))
def mean_error(s) -> dict[str, float]:
    x = s.points("example_mean_error")
    diff = s.samples().double().mean(0) - x.x1_test.double().mean(0)
    return {"example_mean_error": float(diff.norm())}


@dataclass(frozen=True)
class ResMLPConfig:
    width: int = 32
    blocks: int = 2

    def __post_init__(self) -> None:
        if not (isinstance(self.width, int) and self.width >= 1):
            raise ValueError(f"width must be a positive integer, got {self.width!r}")


class ResMLP(nn.Module):
    """v(x, t): residual blocks on (x, t)."""

    def __init__(self, dim: int, cfg: ResMLPConfig):
        super().__init__()
        self.inp = nn.Linear(dim + 1, cfg.width)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.SiLU(), nn.Linear(cfg.width, cfg.width)) for _ in range(cfg.blocks))
        self.out = nn.Linear(cfg.width, dim)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(len(x), 1)
        h = self.inp(torch.cat([x, t], 1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


def _build(cfg: ResMLPConfig, shape: tuple[int, ...]) -> nn.Module:
    return ResMLP(shape[0], cfg)


MODELS.register("example-resmlp")(ModelKind(ResMLPConfig, _build,
                                            description="residual MLP (example plug-in)"))


def ralston(func, y0, grid, keep):
    """Ralston's second-order Runge-Kutta method on fmbench's time grid (2 evaluations a step)."""
    y, states = y0, ([y0] if keep else None)
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        h = t_next - t
        k1 = func(t, y)
        k2 = func(t + 2 * h / 3, y + 2 * h / 3 * k1)
        y = y + h * (k1 / 4 + 3 * k2 / 4)
        if keep:
            states.append(y)
    return y, states


SOLVERS.register("example-ralston")(SolverInfo(
    "example-ralston", False, 2, "Ralston's RK2 (example plug-in)", stepper=ralston))
