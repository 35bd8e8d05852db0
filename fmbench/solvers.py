"""ODE solvers behind one call signature, with the NFE counted.

``solve(func, y0, spec, t0, t1)`` integrates dy/dt = func(t, y) and returns the final state, the
exact number of calls of ``func`` (counted by wrapping it, adaptive solvers included: their initial
step-size selection and rejected steps are real evaluations and are counted), and optionally the
trajectory.

Fixed-step methods take either a step count or an NFE budget; a budget B gives the most steps
whose evaluations fit in B (Euler 1, midpoint/Heun-2 2, Heun-3 3, RK4 4 per step; EDM's Heun
2 per step less one), so ``{name = ["euler", "midpoint", "rk4"], nfe = [8, 16]}`` in a suite
compares them at equal NFE. They step on a time grid: uniform (the default), EDM's ρ-schedule
(``grid = "edm"``, Karras et al. 2022, eq. 5) or the suite's own (``times``, as fractions of the
path's time interval). torchdiffeq's methods are registered here; a solver of another library
or one's own registers a :class:`SolverInfo` with a ``stepper`` (EDM's Heun is one). Adaptive
methods (torchdiffeq) take rtol/atol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from fmbench.registry import Registry
from fmbench.storage import digest
from fmbench.validation import FieldError, Range, check_ranges

State = torch.Tensor | tuple  # a tensor, or a tuple of tensors (augmented states)
Stepper = Callable[[Callable, State, torch.Tensor, bool], tuple[State, list | None]]


@dataclass(frozen=True)
class SolverInfo:
    """A registered solver. ``method``: its name (a torchdiffeq method unless ``stepper`` is
    given). Fixed-step solvers: ``evals_per_step`` and, where the last step differs,
    ``nfe_of_steps(k)`` (the evaluations k steps take). ``stepper(func, y0, grid, keep)``: a
    fixed-step solver of one's own, stepping ``func(t, y)`` over the float64 ``grid``; returns
    the final state and, with ``keep``, the state at every grid point (NFE is counted by the
    caller wrapping ``func``)."""

    method: str
    adaptive: bool
    evals_per_step: int | None  # fixed-step methods only
    description: str
    stepper: Stepper | None = None
    nfe_of_steps: Callable[[int], int] | None = None

    def nfe(self, steps: int) -> int:
        """Evaluations of ``steps`` steps (fixed-step solvers)."""
        return self.nfe_of_steps(steps) if self.nfe_of_steps else steps * self.evals_per_step

    def steps_within(self, budget: int) -> int:
        """The most steps whose evaluations fit in ``budget`` (0 when not one does)."""
        k = budget // self.evals_per_step
        while k > 0 and self.nfe(k) > budget:
            k -= 1
        while self.nfe(k + 1) <= budget:
            k += 1
        return k


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


def _axpy(y: State, h, d: State) -> State:
    return tuple(a + h * b for a, b in zip(y, d, strict=True)) if isinstance(y, tuple) \
        else y + h * d


def _mean(a: State, b: State) -> State:
    return tuple((x + z) / 2 for x, z in zip(a, b, strict=True)) if isinstance(a, tuple) \
        else (a + b) / 2


def edm_heun(func: Callable, y0: State, grid: torch.Tensor, keep: bool
             ) -> tuple[State, list | None]:
    """Karras et al. 2022, Algorithm 1 (deterministic): Heun's 2nd-order step on every interval
    but the last, where the Euler step stands (EDM's σ = 0 end; here t = 1): 2k − 1 evaluations
    for k steps."""
    y, states = y0, ([y0] if keep else None)
    n = len(grid) - 1
    for i in range(n):
        t, t_next = grid[i], grid[i + 1]
        h = t_next - t  # float64, as the grid
        d = func(t, y)
        y_next = _axpy(y, h, d)
        if i < n - 1:
            y_next = _axpy(y, h, _mean(d, func(t_next, y_next)))
        y = y_next
        if keep:
            states.append(y)
    return y, states


SOLVERS.register("edm_heun")(SolverInfo(
    "edm_heun", False, 2, "EDM's Heun (Karras et al. 2022, Alg. 1): order 2, the last step's "
    "correction skipped (2k - 1 evaluations)", stepper=edm_heun,
    nfe_of_steps=lambda k: 2 * k - 1))

DEFAULT_TOL = 1e-5  # rtol and atol of an adaptive solver when not given
GRIDS = ("uniform", "edm")
EDM_RHO, EDM_SIGMA_MIN, EDM_SIGMA_MAX = 7.0, 0.002, 80.0  # Karras et al. 2022, Table 1


def edm_fractions(k: int, rho: float = EDM_RHO, sigma_min: float = EDM_SIGMA_MIN,
                  sigma_max: float = EDM_SIGMA_MAX) -> torch.Tensor:
    """EDM's ρ-schedule of k steps as fractions s ∈ [0, 1] of the path's time: σ_i =
    (σ_max^(1/ρ) + i/(k−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ for i < k, σ_k = 0, mapped through
    the linear interpolant's noise-to-signal ratio σ = (1 − s)/s, s = 1/(1 + σ); the first point
    is the source (s = 0, σ = ∞), so the first step goes from the source to σ_1."""
    if k == 1:
        return torch.tensor([0.0, 1.0], dtype=torch.float64)
    i = torch.arange(k, dtype=torch.float64)
    sig = (sigma_max ** (1 / rho) + i / (k - 1) * (sigma_min ** (1 / rho)
                                                   - sigma_max ** (1 / rho))) ** rho
    sig[-1] = sigma_min  # exactly, whatever the rounding of the power
    s = torch.cat([1 / (1 + sig), torch.ones(1, dtype=torch.float64)])
    s[0] = 0.0
    return s


def _short(x: float) -> str:
    """A number as its shortest exact repr (two different values never read alike)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


@dataclass(frozen=True)
class SolverSpec:
    """What a suite asks for: a method and either steps/NFE budget (fixed) or rtol/atol (adaptive).

    Checked when made: a FieldError names the setting that is wrong (or missing)."""

    method: str
    steps: int | None = None
    nfe: int | None = None
    rtol: float | None = None  # adaptive only; None = DEFAULT_TOL
    atol: float | None = None
    grid: str = "uniform"  # fixed-step: uniform | edm (EDM's ρ-schedule)
    rho: float | None = None  # grid = "edm": its ρ (None = 7)
    times: tuple[float, ...] = ()  # fixed-step: the grid itself, as fractions 0 … 1 of the path's time

    def __post_init__(self):
        info = SOLVERS.get(self.method)
        given = [k for k in ("steps", "nfe", "rtol", "atol") if getattr(self, k) is not None]
        if info.adaptive:
            for bad in ("steps", "nfe", "times", "rho"):
                if bad in given or (bad in ("times", "rho") and getattr(self, bad)):
                    raise FieldError(bad, f"{self.method} is adaptive: give rtol/atol instead")
            if self.grid != "uniform":
                raise FieldError("grid", f"{self.method} is adaptive: it chooses its own steps")
            for k in ("rtol", "atol"):
                if k not in given:
                    object.__setattr__(self, k, DEFAULT_TOL)
            check_ranges(self, {"rtol": Range(0, lo_open=True), "atol": Range(0, lo_open=True)})
            return
        for bad in ("rtol", "atol"):
            if bad in given:
                raise FieldError(bad, f"{self.method} is fixed-step: give steps or nfe instead")
        self._check_grid(info, given)

    def _check_grid(self, info: SolverInfo, given: list[str]) -> None:
        if self.grid not in GRIDS:
            raise FieldError("grid", f"must be one of {', '.join(map(repr, GRIDS))}, got "
                                     f"{self.grid!r} (or give times = [...])")
        if self.rho is not None and (self.grid != "edm" or not 0.5 <= self.rho <= 100):
            raise FieldError("rho", "applies to grid = \"edm\" and must be in [0.5, 100] "
                                    "(Karras et al.: 7)")
        if self.times:
            t = self.times
            if given or self.grid != "uniform":
                raise FieldError("times", "is the whole grid: leave steps, nfe and grid out")
            rising = all(b > a for a, b in zip(t, t[1:], strict=False))
            if len(t) < 2 or t[0] != 0 or t[-1] != 1 or not rising:
                raise FieldError("times", "must increase strictly from 0 to 1 (fractions of the "
                                          "path's time interval), at least two values")
            return
        if ("steps" in given) == ("nfe" in given):
            raise ValueError(f"{self.method} is fixed-step: give exactly one of steps or nfe")
        if self.steps is not None:
            check_ranges(self, {"steps": Range(1)})
        elif info.steps_within(self.nfe) < 1:
            raise FieldError("nfe", f"an NFE budget of {self.nfe} is below one {self.method} step "
                                    f"({info.nfe(1)} evaluations)")

    @property
    def info(self) -> SolverInfo:
        return SOLVERS.get(self.method)

    @property
    def n_steps(self) -> int | None:
        if self.info.adaptive:
            return None
        if self.times:
            return len(self.times) - 1
        return self.steps if self.steps is not None else self.info.steps_within(self.nfe)

    def fractions(self) -> torch.Tensor:
        """The fixed-step grid as fractions of the path's time interval (float64, 0 … 1)."""
        if self.times:
            return torch.tensor(self.times, dtype=torch.float64)
        if self.grid == "edm":
            return edm_fractions(self.n_steps, self.rho if self.rho is not None else EDM_RHO)
        return torch.linspace(0, 1, self.n_steps + 1, dtype=torch.float64)

    def label(self) -> str:
        if self.info.adaptive:
            return f"{self.method}(rtol={self.rtol:g},atol={self.atol:g})"
        if self.times:
            shown = ",".join(map(_short, self.times))
            tag = shown if len(shown) <= 40 else digest(list(self.times), 8)
            return f"{self.method}@times[{tag}]"
        base = f"{self.method}@nfe{self.nfe}" if self.nfe is not None else \
            f"{self.method}x{self.steps}"
        if self.grid == "edm":
            base += f"-edm(rho={_short(self.rho if self.rho is not None else EDM_RHO)})"
        return base

    def params(self) -> dict:
        if self.info.adaptive:
            return {"rtol": self.rtol, "atol": self.atol}
        out = {"steps": self.n_steps, "nfe_budget": self.nfe}
        if self.grid != "uniform":
            out.update(grid=self.grid, rho=self.rho if self.rho is not None else EDM_RHO)
        if self.times:
            out["times"] = list(self.times)
        return out


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
        grid = t0 + (t1 - t0) * spec.fractions()
        ts = grid if trajectory else grid[[0, -1]]
        if spec.info.stepper is not None:
            final, states = spec.info.stepper(counted, y0, grid, trajectory)
            traj = _stack(states) if trajectory else None
            return SolveResult(final, counted.calls, traj, ts if trajectory else None)
        # the grid is both the step grid and the output times: exactly k steps
        out = odeint(counted, y0, ts, method=spec.method, options={"grid_constructor":
                     lambda f, y, t: grid})
    final = tuple(o[-1] for o in out) if isinstance(out, tuple) else out[-1]
    traj = None
    if trajectory:
        traj = out[0] if isinstance(out, tuple) else out
    return SolveResult(final, counted.calls, traj, ts if trajectory else None)


def _stack(states: list) -> torch.Tensor:
    """The trajectory of a stepper's states (of the first element for tuple states)."""
    return torch.stack([x[0] if isinstance(x, tuple) else x for x in states])
