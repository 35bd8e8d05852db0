"""Conditional probability paths x_t = a(t)·x1 + b(t)·x0 + c(t)·ε and their targets.

Time runs t ∈ [0, 1]: x0 ~ source at t=0, x1 ~ data at t=1, ε ~ N(0, I) independent of both.
The conditional target velocity is u_t = a'(t)·x1 + b'(t)·x0 + c'(t)·ε. A path is a small frozen
dataclass: its fields are the parameters a suite may set, its methods are pure functions of tensors.

Shapes: ``t`` is ``(n,)``; ``x0``, ``x1``, ``eps`` are ``(n, *dims)``; coefficient functions take and
return ``(n,)`` tensors (broadcast against the data by :func:`_bc`).

Objectives: ``velocity`` regresses u_t (flow matching); ``noise`` regresses x0 (denoising score
matching in the ε-parameterisation, the "Score Matching" baseline of Lipman et al. 2023). A noise
prediction x̂0(x, t) ≈ E[x0 | x_t = x] becomes a velocity through
u(x, t) = (a'/a)·x + (b' − a'·b/a)·x̂0, valid for c ≡ 0 and a > 0; for the VP path this is exactly
the probability-flow ODE of the VP SDE (see ``docs`` in README).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch

from fmbench.paths.couplings import COUPLINGS
from fmbench.registry import Registry

PATHS: Registry[type[GaussianPath]] = Registry("path")

OBJECTIVES = ("velocity", "noise")


def _bc(coef: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast an ``(n,)`` coefficient against an ``(n, *dims)`` tensor, in its dtype.

    Coefficients are best computed from float64 times (VP's b(t) near t = 1 cancels badly in
    float32) and cast here."""
    return coef.reshape(coef.shape[0], *([1] * (like.dim() - 1))).to(like.dtype)


@dataclass(frozen=True)
class GaussianPath:
    """Base class. Subclasses define ``coeffs`` and ``dcoeffs``; everything else is shared.

    Class attributes (not suite parameters):
      gaussian_source_only: the path is defined for a Gaussian source only.
      t_min, t_max: training times are drawn from U[t_min, t_max]; sampling integrates t_min → t_max.
    """

    coupling: str = "independent"
    replace: bool | None = None  # None: the coupling's own default (entropic OT draws from its plan)
    objective: str = "velocity"

    gaussian_source_only = False
    supported_objectives: ClassVar[tuple[str, ...]] = ("velocity",)
    t_min = 0.0
    t_max = 1.0
    source_scale = 1.0

    # --- to be provided by subclasses -------------------------------------------------------
    def coeffs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def dcoeffs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    # --- shared -----------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if self.objective not in self.supported_objectives:
            raise ValueError(
                f"objective must be one of {list(self.supported_objectives)}, got {self.objective!r}"
            )
        if self.replace is None:
            default = COUPLINGS.get(self.coupling).__dataclass_fields__["replace"].default
            object.__setattr__(self, "replace", default)
        self.check()
        self.coupling_params()  # raises for a coupling this path cannot parameterise

    def coupling_params(self) -> dict:
        """Keyword arguments for the coupling: entropic OT takes reg = 2σ² from the path's σ."""
        if self.coupling != "entropic-ot":
            return {"replace": self.replace}
        sigma = getattr(self, "sigma", None)
        if sigma is None or not sigma > 0:
            raise ValueError("the entropic-ot coupling needs a path with sigma > 0 "
                             "(its regularisation is 2·sigma²)")
        return {"replace": self.replace, "reg": 2 * sigma**2}

    def check(self) -> None:
        """Raise ValueError for out-of-range parameters (overridden where there are any)."""

    @property
    def name(self) -> str:
        return getattr(type(self), "registered_name", type(self).__name__)

    def params(self) -> dict:
        """All suite-settable parameters with their resolved values."""
        return asdict(self)

    @classmethod
    def param_fields(cls) -> dict[str, type]:
        return {f.name: f.type for f in fields(cls)}

    def interpolate(
        self, x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, eps: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x_t, u_t) for paired samples; ``eps`` is needed only when c ≢ 0."""
        a, b, c = self.coeffs(t)
        da, db, dc = self.dcoeffs(t)
        xt = _bc(a, x1) * x1 + _bc(b, x0) * x0
        ut = _bc(da, x1) * x1 + _bc(db, x0) * x0
        if eps is not None:
            xt = xt + _bc(c, eps) * eps
            ut = ut + _bc(dc, eps) * eps
        return xt, ut

    @property
    def needs_eps(self) -> bool:
        return False

    def regression_target(
        self, x0: torch.Tensor, ut: torch.Tensor
    ) -> torch.Tensor:
        """What the network regresses: u_t (velocity) or x0 (noise)."""
        return ut if self.objective == "velocity" else x0

    def to_velocity(self, out: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Turn the network output at (x, t) into a velocity; ``t`` has shape ``(n,)``."""
        if self.objective == "velocity":
            return out
        a, b, _ = self.coeffs(t)
        da, db, _ = self.dcoeffs(t)
        return _bc(da / a, x) * x + _bc(db - da * b / a, x) * out

    def sample_t(self, n: int, generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=dtype)
        return self.t_min + (self.t_max - self.t_min) * u

    def source_log_prob(self, x0: torch.Tensor) -> torch.Tensor:
        """log N(x0; 0, source_scale² I), summed over non-batch dims."""
        s = self.source_scale
        d = x0[0].numel()
        sq = x0.reshape(x0.shape[0], -1).pow(2).sum(1)
        return -0.5 * sq / s**2 - d * math.log(s) - 0.5 * d * math.log(2 * math.pi)


def _register(name: str):
    def deco(cls):
        cls.registered_name = name
        return PATHS.register(name)(cls)

    return deco


def register_path(name: str):
    """Class decorator registering a :class:`GaussianPath` subclass (a frozen dataclass) under
    ``name``: what suites write as ``[[path]] name``. The built-ins use it too (as ``_register``)."""
    return _register(name)


@_register("fm-ot")
@dataclass(frozen=True)
class FMOTPath(GaussianPath):
    """Lipman et al. 2023, OT path: x_t = t·x1 + (1 − (1 − σ_min)t)·x0, x0 ~ N(0, I).

    u_t = x1 − (1 − σ_min)·x0. At t=1 the conditional is N(x1, σ_min² I).
    """

    sigma_min: float = 1e-4
    gaussian_source_only = True

    def check(self) -> None:
        if not 0.0 <= self.sigma_min < 1.0:
            raise ValueError(f"sigma_min must be in [0, 1), got {self.sigma_min}")

    def coeffs(self, t):
        return t, 1 - (1 - self.sigma_min) * t, torch.zeros_like(t)

    def dcoeffs(self, t):
        one = torch.ones_like(t)
        return one, -(1 - self.sigma_min) * one, torch.zeros_like(t)


@_register("ve")
@dataclass(frozen=True)
class VEPath(GaussianPath):
    """Lipman et al. 2023, variance exploding: x_t = x1 + σ(1 − t)·ε with
    σ(s) = σ_min·(σ_max/σ_min)^s.

    fmbench draws the source x0 ~ N(0, σ_max² I) (p_0 ≈ data ∗ N(0, σ_max²) ≈ N(0, σ_max²) for
    σ_max ≫ data scale) and writes ε = x0/σ_max, so a = 1, b(t) = σ(1 − t)/σ_max, c = 0 and
    u_t = b'(t)·x0 = −ln(σ_max/σ_min)·σ(1 − t)/σ_max·x0.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0
    gaussian_source_only = True

    def check(self) -> None:
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )

    @property
    def source_scale(self) -> float:  # type: ignore[override]
        return self.sigma_max

    def _sigma(self, s):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** s

    def coeffs(self, t):
        return torch.ones_like(t), self._sigma(1 - t) / self.sigma_max, torch.zeros_like(t)

    def dcoeffs(self, t):
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        db = -log_ratio * self._sigma(1 - t) / self.sigma_max
        return torch.zeros_like(t), db, torch.zeros_like(t)


@_register("vp")
@dataclass(frozen=True)
class VPPath(GaussianPath):
    """Lipman et al. 2023, variance preserving (diffusion) path:
    x_t = α(1 − t)·x1 + sqrt(1 − α(1 − t)²)·x0, α(s) = exp(−½·T(s)),
    T(s) = β_min·s + ½(β_max − β_min)s², x0 ~ N(0, I).

    b'(t) diverges at t = 1, so training times and sampling stop at t_max = 1 − 1e-5.
    Supports both objectives; ``sm-vp`` is this path with the noise objective.
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    gaussian_source_only = True
    supported_objectives = ("velocity", "noise")
    t_max = 1.0 - 1e-5

    def check(self) -> None:
        if not 0.0 <= self.beta_min <= self.beta_max:
            raise ValueError(
                f"need 0 <= beta_min <= beta_max, got {self.beta_min}, {self.beta_max}"
            )

    def _T(self, s):
        return self.beta_min * s + 0.5 * (self.beta_max - self.beta_min) * s**2

    def _alpha(self, s):
        return torch.exp(-0.5 * self._T(s))

    def _beta(self, s):
        return self.beta_min + (self.beta_max - self.beta_min) * s

    def coeffs(self, t):
        a = self._alpha(1 - t)
        return a, torch.sqrt(-torch.expm1(-self._T(1 - t))), torch.zeros_like(t)

    def dcoeffs(self, t):
        a = self._alpha(1 - t)
        da = 0.5 * self._beta(1 - t) * a
        b = torch.sqrt(-torch.expm1(-self._T(1 - t)))
        return da, -a * da / b, torch.zeros_like(t)


@_register("sm-vp")
@dataclass(frozen=True)
class ScoreMatchingVPPath(VPPath):
    """Denoising score matching on the VP path (noise regression), sampled and scored through the
    probability-flow ODE: the "Score Matching" rows of Lipman et al. 2023."""

    objective: str = "noise"


@dataclass(frozen=True)
class _ConstantNoisePath(GaussianPath):
    """Shared by paths with c(t) = σ constant (so c' = 0): ε is drawn only when σ > 0."""

    sigma: float = 0.0

    def check(self) -> None:
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")

    @property
    def needs_eps(self) -> bool:
        return self.sigma > 0


@_register("icfm")
@dataclass(frozen=True)
class ICFMPath(_ConstantNoisePath):
    """Tong et al. 2024, I-CFM: x_t = t·x1 + (1 − t)·x0 + σ·ε, u_t = x1 − x0, independent coupling."""

    sigma: float = 0.1

    def coeffs(self, t):
        return t, 1 - t, torch.full_like(t, self.sigma)

    def dcoeffs(self, t):
        one = torch.ones_like(t)
        return one, -one, torch.zeros_like(t)


@_register("otcfm")
@dataclass(frozen=True)
class OTCFMPath(ICFMPath):
    """Tong et al. 2024, OT-CFM: I-CFM with an exact minibatch OT coupling (POT's network simplex)."""

    coupling: str = "exact-ot"


@_register("rf")
@dataclass(frozen=True)
class RectifiedFlowPath(ICFMPath):
    """Rectified flow (Liu et al. 2023): I-CFM with σ = 0, x_t = t·x1 + (1 − t)·x0."""

    sigma: float = 0.0


@_register("sbcfm")
@dataclass(frozen=True)
class SBCFMPath(GaussianPath):
    """Tong et al. 2024, SB-CFM: x_t = t·x1 + (1 − t)·x0 + σ·sqrt(t(1 − t))·ε with an entropic OT
    coupling of regularisation 2σ² (the Brownian-bridge / Schrödinger-bridge path).

    u_t = x1 − x0 + σ(1 − 2t)/(2·sqrt(t(1 − t)))·ε; c' diverges at t ∈ {0, 1}, so training times are
    drawn from [t_eps, 1 − t_eps] (sampling integrates the full [0, 1]).
    """

    sigma: float = 0.1
    coupling: str = "entropic-ot"
    t_eps: float = 1e-4

    def check(self) -> None:
        if self.sigma <= 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if not 0.0 < self.t_eps < 0.5:
            raise ValueError(f"t_eps must be in (0, 0.5), got {self.t_eps}")

    @property
    def needs_eps(self) -> bool:
        return True

    def sample_t(self, n, generator, dtype=torch.float64):
        u = torch.rand(n, generator=generator, dtype=dtype)
        return self.t_eps + (1 - 2 * self.t_eps) * u

    def coeffs(self, t):
        return t, 1 - t, self.sigma * torch.sqrt(t * (1 - t))

    def dcoeffs(self, t):
        one = torch.ones_like(t)
        dc = self.sigma * (1 - 2 * t) / (2 * torch.sqrt(t * (1 - t)))
        return one, -one, dc


@_register("trig")
@dataclass(frozen=True)
class TrigPath(_ConstantNoisePath):
    """Trigonometric (VP) interpolant: x_t = sin(πt/2)·x1 + cos(πt/2)·x0 + σ·ε."""

    def coeffs(self, t):
        h = 0.5 * math.pi * t
        return torch.sin(h), torch.cos(h), torch.full_like(t, self.sigma)

    def dcoeffs(self, t):
        h = 0.5 * math.pi * t
        return 0.5 * math.pi * torch.cos(h), -0.5 * math.pi * torch.sin(h), torch.zeros_like(t)


def make_path(name: str, **params) -> GaussianPath:
    """Build a registered path by name (raises UnknownNameError / TypeError / ValueError)."""
    return PATHS.get(name)(**params)
