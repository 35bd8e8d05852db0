"""ODE solvers (torchdiffeq) behind one call signature, with the NFE counted.

``solve(func, y0, spec, t0, t1)`` integrates dy/dt = func(t, y) and returns the final state, the
exact number of calls of ``func`` (counted by wrapping it, adaptive solvers included: their initial
step-size selection and rejected steps are real evaluations and are counted), and optionally the
trajectory.

Fixed-step methods take either a step count or an NFE budget; a budget B gives
floor(B / evals_per_step) steps (Euler 1, midpoint/Heun-2 2, Heun-3 3, RK4 4 evaluations per step), so
``{name = ["euler", "midpoint", "rk4"], nfe = [8, 16]}`` in a suite compares them at equal NFE.
Adaptive methods take rtol/atol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from fmbench.registry import Registry
from fmbench.validation import FieldError, Range, check_ranges


@dataclass(frozen=True)
class SolverInfo:
    method: str  # torchdiffeq method name
    adaptive: bool
    evals_per_step: int | None  # fixed-step methods only
    description: str


SOLVERS: Registry[SolverInfo] = Registry("solver")
for _info in [
    SolverInfo("euler", False, 1, "explicit Euler, order 1"),
    SolverInfo("midpoint", False, 2, "explicit midpoint, order 2"),
    SolverInfo("heun2", False, 2, "Heun's method, order 2"),
    SolverInfo("heun3", False, 3, "Heun's third-order method"),
    SolverInfo("rk4", False, 4, "classical Runge-Kutta (3/8 rule), order 4"),
    SolverInfo("dopri5", True, None, "Dormand-Prince 5(4), adaptive"),
    SolverInfo("dopri8", True, None, "Dormand-Prince 8(7), adaptive"),
    SolverInfo("bosh3", True, None, "Bogacki-Shampine 3(2), adaptive"),
    SolverInfo("adaptive_heun", True, None, "Heun-Euler 2(1), adaptive"),
    SolverInfo("fehlberg2", True, None, "Runge-Kutta-Fehlberg 2(1), adaptive"),
]:
    SOLVERS.register(_info.method)(_info)


DEFAULT_TOL = 1e-5  # rtol and atol of an adaptive solver when not given


@dataclass(frozen=True)
class SolverSpec:
    """What a suite asks for: a method and either steps/NFE budget (fixed) or rtol/atol (adaptive).

    Checked when made: a FieldError names the setting that is wrong (or missing)."""

    method: str
    steps: int | None = None
    nfe: int | None = None
    rtol: float | None = None  # adaptive only; None = DEFAULT_TOL
    atol: float | None = None

    def __post_init__(self):
        info = SOLVERS.get(self.method)
        given = [k for k in ("steps", "nfe", "rtol", "atol") if getattr(self, k) is not None]
        if info.adaptive:
            for bad in ("steps", "nfe"):
                if bad in given:
                    raise FieldError(bad, f"{self.method} is adaptive: give rtol/atol instead")
            for k in ("rtol", "atol"):
                if k not in given:
                    object.__setattr__(self, k, DEFAULT_TOL)
            check_ranges(self, {"rtol": Range(0, lo_open=True), "atol": Range(0, lo_open=True)})
            return
        for bad in ("rtol", "atol"):
            if bad in given:
                raise FieldError(bad, f"{self.method} is fixed-step: give steps or nfe instead")
        if ("steps" in given) == ("nfe" in given):
            raise ValueError(f"{self.method} is fixed-step: give exactly one of steps or nfe")
        if self.steps is not None:
            check_ranges(self, {"steps": Range(1)})
        elif self.nfe < info.evals_per_step:
            raise FieldError("nfe", f"an NFE budget of {self.nfe} is below one {self.method} step "
                                    f"({info.evals_per_step} evaluations)")

    @property
    def info(self) -> SolverInfo:
        return SOLVERS.get(self.method)

    @property
    def n_steps(self) -> int | None:
        if self.info.adaptive:
            return None
        return self.steps if self.steps is not None else self.nfe // self.info.evals_per_step

    def label(self) -> str:
        if self.info.adaptive:
            return f"{self.method}(rtol={self.rtol:g},atol={self.atol:g})"
        if self.nfe is not None:
            return f"{self.method}@nfe{self.nfe}"
        return f"{self.method}x{self.steps}"

    def params(self) -> dict:
        if self.info.adaptive:
            return {"rtol": self.rtol, "atol": self.atol}
        return {"steps": self.n_steps, "nfe_budget": self.nfe}


@dataclass
class SolveResult:
    y: torch.Tensor  # final state (or tuple element 0's final state for tuple states)
    nfe: int
    trajectory: torch.Tensor | None = None  # (T, *y.shape) where requested
    times: torch.Tensor | None = None


class StepSizeUnderflow(RuntimeError):
    """An adaptive solver's step shrank to nothing: the field is too stiff for the tolerances."""


class _Counted:
    def __init__(self, func: Callable):
        self.func, self.calls, self.last_t = func, 0, None

    def __call__(self, t, y):
        self.calls += 1
        self.last_t = t  # kept as a tensor: float() here would sync the device on every call
        return self.func(t, y)


def solve(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    y0,
    spec: SolverSpec,
    t0: float = 0.0,
    t1: float = 1.0,
    trajectory: bool = False,
    n_saved: int = 101,
) -> SolveResult:
    """Integrate dy/dt = func(t, y) from t0 to t1 (t1 < t0 integrates backwards).

    Times are float64 whatever the state's dtype (float32 times underflow adaptive steps near a
    stiff end point); torchdiffeq then hands ``func`` the time cast to the state's dtype.

    ``y0`` may be a tensor or a tuple of tensors (augmented states, e.g. log-density).
    With ``trajectory=True`` fixed-step solvers return every step, adaptive ones ``n_saved`` points.
    """
    counted = _Counted(func)
    if spec.info.adaptive:
        n_out = n_saved if trajectory else 2
        ts = torch.linspace(t0, t1, n_out, dtype=torch.float64)
        try:
            # step_t makes the last step land on t1: without it torchdiffeq steps past t1 and
            # interpolates back, evaluating the field outside [t0, t1] (NaN for paths whose
            # coefficients end at t1, e.g. sm-vp beyond t = 1)
            out = odeint(counted, y0, ts, method=spec.method, rtol=spec.rtol, atol=spec.atol,
                         options={"step_t": ts[-1:]})
        except AssertionError as e:  # torchdiffeq reports a vanishing step with a bare assert
            if "underflow in dt" not in str(e):
                raise
            raise StepSizeUnderflow(
                f"{spec.label()}: the step size underflowed near t = {float(counted.last_t):.10g} after "
                f"{counted.calls} evaluations: the field is too stiff there (or not finite) for "
                f"these tolerances (loosen rtol/atol or use a fixed-step solver)") from e
    else:
        k = spec.n_steps
        grid = torch.linspace(t0, t1, k + 1, dtype=torch.float64)
        # the grid is both the step grid and the output times: exactly k steps
        ts = grid if trajectory else grid[[0, -1]]
        out = odeint(counted, y0, ts, method=spec.method, options={"grid_constructor":
                     lambda f, y, t: grid})
    final = tuple(o[-1] for o in out) if isinstance(out, tuple) else out[-1]
    traj = None
    if trajectory:
        traj = out[0] if isinstance(out, tuple) else out
    return SolveResult(final, counted.calls, traj, ts if trajectory else None)
