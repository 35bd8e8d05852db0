"""Metrics. Each declares its name, unit and direction and computes from an :class:`EvalContext`.

Definitions (see DESIGN.md):
- ``w2``: exact W2 (POT ``emd2``, squared Euclidean ground cost, then sqrt) between generated samples
  and held-out target samples, both of size n_eval. Reported beside ``w2_floor``: W2 between the
  held-out set and a second independent draw of the target of the same size, i.e. what a perfect
  model would score; differences below the floor are sampling noise.
- ``nll``: negative log-likelihood in nats per sample of held-out target points, through the
  reverse ODE with the exact divergence (autograd, one pass per dimension) and the case's solver;
  needs a Gaussian source (otherwise not applicable).
- ``npe``: Tong et al.'s normalised path energy |PE − W2²(q0, q1)| / W2²(q0, q1) with
  PE = E ∫ ‖v(x_t, t)‖² dt integrated along the learned flow by the case's solver from n_eval source
  points, and W2² the exact OT cost between those source points and the held-out target points.
- ``nfe``: calls of the vector field while sampling (counted).
- ``solver_mse``: mean per-element squared error between the samples and a reference solve from the
  same noise (RK4, ``reference_steps`` steps, default 1000; on the first ``solver_mse_n`` noise
  samples when set).
- Image metrics (``fid``, ``kid``, ``bpd``) live in :mod:`fmbench.image_metrics`.
- ``train_time``, ``sample_time``, ``coupling_time``: wall-clock seconds.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import ot
import torch

from fmbench.likelihood import log_prob_continuous
from fmbench.paths.schedules import GaussianPath
from fmbench.registry import Registry
from fmbench.solvers import SolveResult, SolverSpec, solve


@dataclass(frozen=True)
class MetricDef:
    name: str
    unit: str
    higher_is_better: bool
    description: str
    version: int = 1
    settings: tuple[str, ...] = ()  # MetricsConfig fields that define the value (stored per row)


class NotApplicable(Exception):
    """The metric does not apply to this case (e.g. NLL with a non-Gaussian source)."""


@dataclass(frozen=True)
class NotApplicableValue:
    """Returned for one output of a metric that otherwise applies (e.g. a floor it cannot give)."""

    reason: str


METRICS: Registry[MetricDef] = Registry("metric")
_COMPUTE: dict[str, Callable[[EvalContext], dict[str, float]]] = {}


def metric(name: str, unit: str, higher_is_better: bool, description: str,
           settings: tuple[str, ...] = ()):
    """Register a metric; the function returns {output name: value}. Extra outputs (w2_floor, …)
    are registered on their own with their unit and direction. ``settings`` names the suite
    [metrics] fields that define the value; each result row stores them."""

    def deco(fn):
        METRICS.register(name)(MetricDef(name, unit, higher_is_better, description,
                                         settings=settings))
        _COMPUTE[name] = fn
        return fn

    return deco


def w2_exact(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact 2-Wasserstein distance between two empirical measures with uniform weights."""
    a = x.reshape(x.shape[0], -1).double().numpy()
    b = y.reshape(y.shape[0], -1).double().numpy()
    cost = ot.dist(a, b)  # squared Euclidean
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost,
                    numItermax=10**7)
    for c in caught:
        if "numItermax" in str(c.message):
            raise RuntimeError(f"exact OT for W2 did not converge: {c.message}")
    return math.sqrt(max(float(w), 0.0))


@dataclass
class EvalContext:
    """Everything a metric may need for one case (model × solver × seed); solves are shared."""

    path: GaussianPath
    model: torch.nn.Module
    spec: SolverSpec
    x0_eval: torch.Tensor  # source points for generation (n_eval)
    x1_test: torch.Tensor  # held-out target points (n_eval)
    x1_floor: torch.Tensor  # independent second target draw (n_eval)
    gaussian_source: bool
    train_meta: dict
    reference_steps: int = 1000
    solver_mse_n: int = 0  # 0 = all of x0_eval
    eval_batch: int = 1_000_000
    cache: dict = field(default_factory=dict)  # per-model cache shared across solver cases
    local: dict = field(default_factory=dict)  # this case's own solves
    extras: dict = field(default_factory=dict)  # image tasks: data, metric settings, device

    def _solve_chunks(self, x0: torch.Tensor, spec: SolverSpec) -> tuple[torch.Tensor, float]:
        """Solve in chunks of eval_batch; returns (final states, mean NFE per chunk)."""
        ys, nfes = [], []
        for i in range(0, len(x0), self.eval_batch):
            with torch.no_grad():
                res = solve(self.velocity, x0[i:i + self.eval_batch], spec, self.path.t_min,
                            self.path.t_max)
            ys.append(res.y)
            nfes.append(res.nfe)
        return torch.cat(ys), sum(nfes) / len(nfes)

    def velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tv = t.to(torch.float64).expand(x.shape[0])
        return self.path.to_velocity(self.model(x, tv.to(x.dtype)), x, tv)

    def generate(self) -> tuple[SolveResult, float]:
        if "gen" not in self.local:
            start = time.perf_counter()
            try:
                y, nfe = self._solve_chunks(self.x0_eval, self.spec)
            except Exception as e:  # remembered: every metric of this case fails the same way
                self.local["gen"] = e
                raise
            self.local["gen"] = (SolveResult(y, nfe), time.perf_counter() - start)
        if isinstance(self.local["gen"], Exception):
            raise self.local["gen"]
        return self.local["gen"]

    def samples(self) -> torch.Tensor:
        y = self.generate()[0].y
        if not torch.isfinite(y).all():
            raise FloatingPointError("generated samples contain NaN or inf")
        return y

    @property
    def n_mse(self) -> int:
        return min(self.solver_mse_n or len(self.x0_eval), len(self.x0_eval))

    def reference(self) -> torch.Tensor:
        """RK4 solve with reference_steps steps from the first n_mse noise samples."""
        if "reference" not in self.cache:
            spec = SolverSpec("rk4", steps=self.reference_steps)
            self.cache["reference"] = self._solve_chunks(self.x0_eval[: self.n_mse], spec)[0]
        return self.cache["reference"]

    def not_for_images(self, what: str) -> None:
        if self.extras.get("is_image"):
            raise NotApplicable(f"{what} is a low-dimensional metric")


def computable_metrics() -> list[str]:
    """Metric names a suite may ask for (some registered outputs only come with another)."""
    return sorted(_COMPUTE)


def compute(name: str, ctx: EvalContext) -> dict[str, float]:
    METRICS.get(name)
    return _COMPUTE[name](ctx)


METRICS.register("w2_floor")(MetricDef(
    "w2_floor", "", False,
    "W2 between the held-out target set and an independent draw of the same size (sampling floor)",
    settings=("n_eval",),
))


@metric("w2", "", False, "exact W2 between generated and held-out samples (with w2_floor)",
        ("n_eval",))
def _w2(ctx: EvalContext) -> dict[str, float]:
    ctx.not_for_images("w2")
    if "w2_floor" not in ctx.cache:
        ctx.cache["w2_floor"] = w2_exact(ctx.x1_test, ctx.x1_floor)
    return {"w2": w2_exact(ctx.samples(), ctx.x1_test), "w2_floor": ctx.cache["w2_floor"]}


@metric("nfe", "evals", False, "vector-field evaluations used to generate samples")
def _nfe(ctx: EvalContext) -> dict[str, float]:
    return {"nfe": float(ctx.generate()[0].nfe)}


@metric("sample_time", "s", False, "wall time to generate n_eval samples")
def _sample_time(ctx: EvalContext) -> dict[str, float]:
    return {"sample_time": ctx.generate()[1]}


@metric("train_time", "s", False, "wall time of training (from the model cache if reused)")
def _train_time(ctx: EvalContext) -> dict[str, float]:
    return {"train_time": float(ctx.train_meta["train_time"])}


@metric("coupling_time", "s", False, "wall time spent computing couplings during training")
def _coupling_time(ctx: EvalContext) -> dict[str, float]:
    return {"coupling_time": float(ctx.train_meta["coupling_time"])}


@metric("solver_mse", "", False, "mean squared error against a 1000-step RK4 solve, same noise",
        ("n_eval", "reference_steps", "solver_mse_n"))
def _solver_mse(ctx: EvalContext) -> dict[str, float]:
    ref = ctx.reference()
    return {"solver_mse": float((ctx.samples()[: len(ref)] - ref).pow(2).mean())}


def path_energy(ctx: EvalContext) -> float:
    """E ∫ ‖v(x_t, t)‖² dt along the learned flow from the eval source points."""

    def aug(t, state):
        x, _ = state
        v = ctx.velocity(t, x)
        return v, v.reshape(v.shape[0], -1).pow(2).sum(1)

    e0 = torch.zeros(ctx.x0_eval.shape[0], dtype=ctx.x0_eval.dtype)
    with torch.no_grad():
        res = solve(aug, (ctx.x0_eval, e0), ctx.spec, ctx.path.t_min, ctx.path.t_max)
    pe = res.y[1]
    if not torch.isfinite(pe).all():
        raise FloatingPointError("path energy is not finite")
    return float(pe.mean())


@metric("npe", "", False, "normalised path energy |PE - W2^2| / W2^2 (Tong et al.)",
        ("n_eval",))
def _npe(ctx: EvalContext) -> dict[str, float]:
    ctx.not_for_images("npe")
    if "w2sq_source_target" not in ctx.cache:
        ctx.cache["w2sq_source_target"] = w2_exact(ctx.x0_eval, ctx.x1_test) ** 2
    w2sq = ctx.cache["w2sq_source_target"]
    return {"npe": abs(path_energy(ctx) - w2sq) / w2sq}


@metric("nll", "nats", False, "negative log-likelihood of held-out points (exact divergence)",
        ("n_eval",))
def _nll(ctx: EvalContext) -> dict[str, float]:
    ctx.not_for_images("nll (use bpd)")
    if not ctx.gaussian_source:
        raise NotApplicable("NLL needs a Gaussian source density")
    logp, _ = log_prob_continuous(ctx.velocity, ctx.x1_test, ctx.path.source_log_prob, ctx.spec,
                                  ctx.path.t_min, ctx.path.t_max, exact=True)
    if not torch.isfinite(logp).all():
        raise FloatingPointError("log-likelihood is not finite")
    return {"nll": float(-logp.mean())}
