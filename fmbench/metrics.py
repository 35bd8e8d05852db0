"""Metrics: the score stage. Each declares its name, unit and direction and computes its values
from a :class:`Scoring` (typed inputs: the case's generation, the task's evaluation inputs, lazily
computed per-model references); :func:`fmbench.score.score_case` runs them.

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
  PE is integrated alongside the state in a solve of its own (adding the energy to the samples'
  solve would change an adaptive solver's steps, hence the samples).
- ``nfe``: calls of the vector field while sampling (counted).
- ``solver_mse``: mean per-element squared error between the samples and a reference solve from the
  same noise (RK4, ``reference_steps`` steps, default 1000; on the first ``solver_mse_n`` noise
  samples when set).
- Image metrics (``fid``, ``kid``, ``bpd``) live in :mod:`fmbench.image_metrics`.
- ``train_time``, ``sample_time``, ``coupling_time``: wall-clock seconds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import ot
import torch

from fmbench.generate import Field, Generation, solve_chunks
from fmbench.likelihood import log_prob_continuous
from fmbench.paths.schedules import GaussianPath
from fmbench.registry import Registry
from fmbench.solvers import SolverSpec, solve
from fmbench.tasks import ImageInputs, PointInputs
from fmbench.validation import FieldError, Range, check_ranges, short_repr, unknown_name

T = TypeVar("T")


@dataclass(frozen=True)
class MetricDef:
    name: str
    unit: str
    higher_is_better: bool
    description: str
    version: int = 1
    settings: tuple[str, ...] = ()  # MetricsConfig fields that define the value (stored per row)
    uses_samples: bool = True  # needs the case's generated samples (the generate stage runs)
    role: str = "score"  # score: ranked; floor: a noise floor (mean ± sd); info: cost or spread
    per_draw: bool = True  # a value per evaluation draw (False: per model, e.g. train_time)

    @property
    def ranked(self) -> bool:
        """Whether reports rank it (a 'best' value per column); floors and costs are not."""
        return self.role == "score"


ROLES = ("score", "floor", "info")


def metric_role(name: str) -> str:
    """The role of a metric named in a results table (``score`` for names this fmbench does not
    know, e.g. a plug-in's metric read without the plug-in)."""
    return METRICS.get(name).role if name in METRICS else "score"


@dataclass(frozen=True)
class MetricsConfig:
    """The suite's ``[metrics]`` table: which metrics, and the settings that define them."""

    names: tuple[str, ...] = ("w2", "npe", "nfe", "sample_time", "train_time")
    n_eval: int = 1000
    eval_draws: int = 0  # evaluation draws per case (0 = the task kind's default: tasks.py)
    reference_steps: int = 1000
    solver_mse_n: int = 0  # noise samples for solver_mse (0 = n_eval)
    eval_batch: int = 1000
    feature_batch: int = 0  # images per Inception call (0 = 16 on CPU, 64 on GPU)
    fid_ref_n: int = 0  # training images for FID reference statistics (0 = the whole split)
    feature_extractor: str = "inception-v3-compat"
    inception_weights: str = ""
    kid_subset_size: int = 1000
    bpd_n: int = 1000
    bpd_k: int = 1
    bpd_probes: int = 1
    bpd_rtol: float = 1e-5

    def __post_init__(self) -> None:
        """The table's rules (FieldError naming the setting): names registered and computable on
        their own, no duplicates; numbers in :data:`METRICS_RANGES`; a torch-fidelity extractor."""
        for n in self.names:
            if n not in METRICS:
                raise FieldError("names", unknown_name(METRICS, n))
            if n not in _COMPUTE:
                raise FieldError("names", f"{n!r} is reported with another metric, not on its "
                                          f"own (w2_floor comes with w2); choose from "
                                          f"{', '.join(computable_metrics())}")
        if len(set(self.names)) != len(self.names):
            raise FieldError("names", f"has duplicates: {', '.join(self.names)}")
        check_ranges(self, METRICS_RANGES)
        from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

        if self.feature_extractor not in FEATURE_EXTRACTORS_REGISTRY:
            raise FieldError("feature_extractor", f"unknown torch-fidelity feature extractor "
                             f"{short_repr(self.feature_extractor)}; registered: "
                             f"{', '.join(sorted(FEATURE_EXTRACTORS_REGISTRY))}")


# the numbers' ranges: integers >= their bound here (else >= 0), floats > 0
METRICS_RANGES = {
    "eval_draws": Range(0, 1000),
    **{k: Range(lo) for k, lo in {"n_eval": 2, "reference_steps": 1, "solver_mse_n": 0,
                                  "eval_batch": 1, "feature_batch": 0, "fid_ref_n": 0,
                                  "kid_subset_size": 1, "bpd_n": 1, "bpd_k": 1,
                                  "bpd_probes": 1}.items()},
    "bpd_rtol": Range(0, lo_open=True),
}


class NotApplicable(Exception):
    """The metric does not apply to this case (e.g. NLL with a non-Gaussian source)."""


@dataclass(frozen=True)
class NotApplicableValue:
    """Returned for one output of a metric that otherwise applies (e.g. a floor it cannot give)."""

    reason: str


METRICS: Registry[MetricDef] = Registry("metric")
_COMPUTE: dict[str, Callable[[Scoring], dict[str, float]]] = {}


def metric(name: str, unit: str, higher_is_better: bool, description: str,
           settings: tuple[str, ...] = (), uses_samples: bool = True, role: str = "score",
           per_draw: bool = True):
    """Register a metric; the function takes a :class:`Scoring` and returns {output name: value}.
    Extra outputs (w2_floor, …) are registered on their own with their unit and direction.
    ``settings`` names the suite [metrics] fields that define the value (each result row stores
    them); ``uses_samples`` says whether it reads the case's generated samples; ``role`` and
    ``per_draw``: :class:`MetricDef`."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")

    def deco(fn):
        METRICS.register(name)(MetricDef(name, unit, higher_is_better, description,
                                         settings=settings, uses_samples=uses_samples,
                                         role=role, per_draw=per_draw))
        _COMPUTE[name] = fn
        return fn

    return deco


def w2_exact(x: torch.Tensor, y: torch.Tensor) -> float:
    """Exact 2-Wasserstein distance between two empirical measures with uniform weights."""
    a = x.reshape(x.shape[0], -1).double().cpu().numpy()
    b = y.reshape(y.shape[0], -1).double().cpu().numpy()
    cost = ot.dist(a, b)  # squared Euclidean
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cost,
                    numItermax=10**7)
    for c in caught:
        if "numItermax" in str(c.message):
            raise RuntimeError(f"exact OT for W2 did not converge: {c.message}")
    return math.sqrt(max(float(w), 0.0))


class Reference(Generic[T]):
    """A value derived from the model or the task and shared by a work unit's cases (the
    solver-MSE reference solve, a floor, …), computed on first use: ``scoring.get(REF)``.
    ``per_case`` references (features of the generated samples) are shared by the metrics of
    one case only; ``per_draw=False`` ones (FID reference statistics of the training split) do not
    depend on the evaluation draw and are shared by all draws."""

    def __init__(self, name: str, compute: Callable[[Scoring], T], per_case: bool = False,
                 per_draw: bool = True):
        self.name, self.compute, self.per_case, self.per_draw = name, compute, per_case, per_draw

    def __repr__(self) -> str:
        return f"Reference({self.name})"


@dataclass
class Scoring:
    """What the metrics of one case receive: the case's generation, the task's evaluation inputs,
    the field, the training record and the metric settings. Per-model references are memoised in
    ``shared`` (one dict per work unit and evaluation draw, keyed by :class:`Reference` objects)
    or, for draw-independent ones, in ``across_draws`` (one dict per work unit)."""

    path: GaussianPath
    spec: SolverSpec
    field: Field
    generation: Generation
    inputs: PointInputs | ImageInputs
    settings: MetricsConfig
    gaussian_source: bool
    train_time: float = float("nan")
    coupling_time: float = float("nan")
    device: torch.device = torch.device("cpu")
    cache_dir: Path | None = None
    shared: dict[Reference, object] = field(default_factory=dict)
    across_draws: dict[Reference, object] = field(default_factory=dict)
    _own: dict[Reference, object] = field(default_factory=dict)

    def get(self, ref: Reference[T]) -> T:
        memo = (self._own if ref.per_case else self.shared if ref.per_draw
                else self.across_draws)
        if ref not in memo:
            memo[ref] = ref.compute(self)
        return memo[ref]  # type: ignore[return-value]

    def samples(self) -> torch.Tensor:
        return self.generation.finite_samples()

    def points(self, what: str) -> PointInputs:
        """The low-dimensional inputs; NotApplicable on an image task."""
        if not isinstance(self.inputs, PointInputs):
            raise NotApplicable(f"{what} is a low-dimensional metric")
        return self.inputs

    def images(self) -> ImageInputs:
        if not isinstance(self.inputs, ImageInputs):
            raise NotApplicable("image metric on a non-image task")
        return self.inputs

    @property
    def n_mse(self) -> int:
        n = len(self.inputs.x0)
        return min(self.settings.solver_mse_n or n, n)


def computable_metrics() -> list[str]:
    """Metric names a suite may ask for (some registered outputs only come with another)."""
    registered = set(METRICS.names())  # a plug-in withdrawn after a failure: not computable
    return sorted(n for n in _COMPUTE if n in registered)


def compute(name: str, s: Scoring) -> dict[str, float]:
    METRICS.get(name)
    return _COMPUTE[name](s)


def uses_samples(names: tuple[str, ...]) -> bool:
    """Whether any of the metrics reads generated samples (else the generate stage is skipped)."""
    return any(METRICS.get(n).uses_samples for n in names)


METRICS.register("w2_floor")(MetricDef(
    "w2_floor", "", False,
    "W2 between the held-out target set and an independent draw of the same size (sampling floor)",
    settings=("n_eval",), role="floor",
))


def _w2_floor(s: Scoring) -> float:
    x = s.points("w2")
    return w2_exact(x.x1_test, x.x1_floor)


def _w2sq_source_target(s: Scoring) -> float:
    x = s.points("npe")
    return w2_exact(x.x0, x.x1_test) ** 2


def _reference_solve(s: Scoring) -> torch.Tensor:
    """RK4 with ``reference_steps`` steps from the first n_mse source points."""
    spec = SolverSpec("rk4", steps=s.settings.reference_steps)
    return solve_chunks(s.field, s.inputs.x0[: s.n_mse], spec, s.path, s.settings.eval_batch)[0]


W2_FLOOR = Reference("w2_floor", _w2_floor)
W2SQ_SOURCE_TARGET = Reference("w2sq_source_target", _w2sq_source_target)
REFERENCE_SOLVE = Reference("solver_mse reference solve", _reference_solve)


@metric("w2", "", False, "exact W2 between generated and held-out samples (with w2_floor)",
        ("n_eval",))
def _w2(s: Scoring) -> dict[str, float]:
    x = s.points("w2")
    return {"w2": w2_exact(s.samples(), x.x1_test), "w2_floor": s.get(W2_FLOOR)}


@metric("nfe", "evals", False, "vector-field evaluations used to generate samples", role="info")
def _nfe(s: Scoring) -> dict[str, float]:
    return {"nfe": float(s.generation.check().nfe)}


@metric("sample_time", "s", False, "wall time to generate n_eval samples", role="info")
def _sample_time(s: Scoring) -> dict[str, float]:
    return {"sample_time": s.generation.check().seconds}


@metric("train_time", "s", False, "wall time of training (from the model cache if reused)",
        uses_samples=False, role="info", per_draw=False)
def _train_time(s: Scoring) -> dict[str, float]:
    if math.isnan(s.train_time):
        raise NotApplicable("the model was read from a file, not trained here")
    return {"train_time": float(s.train_time)}


@metric("coupling_time", "s", False, "wall time spent computing couplings during training",
        uses_samples=False, role="info", per_draw=False)
def _coupling_time(s: Scoring) -> dict[str, float]:
    if math.isnan(s.coupling_time):
        raise NotApplicable("the model was read from a file, not trained here")
    return {"coupling_time": float(s.coupling_time)}


@metric("solver_mse", "", False,
        "mean squared error against a reference RK4 solve (reference_steps steps), same noise",
        ("n_eval", "reference_steps", "solver_mse_n"))
def _solver_mse(s: Scoring) -> dict[str, float]:
    ref = s.get(REFERENCE_SOLVE)
    return {"solver_mse": float((s.samples()[: len(ref)] - ref).pow(2).mean())}


def path_energy(s: Scoring) -> float:
    """E ∫ ‖v(x_t, t)‖² dt along the learned flow from the eval source points (its own solve:
    the energy is integrated alongside the state)."""

    def aug(t, state):
        x, _ = state
        v = s.field(t, x)
        return v, v.reshape(v.shape[0], -1).pow(2).sum(1)

    x0 = s.inputs.x0
    e0 = torch.zeros(x0.shape[0], dtype=x0.dtype)
    with torch.no_grad():
        res = solve(aug, (x0, e0), s.spec, s.path.t_min, s.path.t_max)
    pe = res.y[1]
    if not torch.isfinite(pe).all():
        raise FloatingPointError("path energy is not finite")
    return float(pe.mean())


@metric("npe", "", False, "normalised path energy |PE - W2^2| / W2^2 (Tong et al.)",
        ("n_eval",), uses_samples=False)
def _npe(s: Scoring) -> dict[str, float]:
    w2sq = s.get(W2SQ_SOURCE_TARGET)
    return {"npe": abs(path_energy(s) - w2sq) / w2sq}


@metric("nll", "nats", False, "negative log-likelihood of held-out points (exact divergence)",
        ("n_eval",), uses_samples=False)
def _nll(s: Scoring) -> dict[str, float]:
    x = s.points("nll (use bpd)")
    if not s.gaussian_source:
        raise NotApplicable("NLL needs a Gaussian source density")
    logp, _ = log_prob_continuous(s.field, x.x1_test, s.path.source_log_prob, s.spec,
                                  s.path.t_min, s.path.t_max, exact=True)
    if not torch.isfinite(logp).all():
        raise FloatingPointError("log-likelihood is not finite")
    return {"nll": float(-logp.mean())}
