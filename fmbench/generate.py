"""Generate: ONE solve per case and evaluation draw from the draw's fixed source points; its
result feeds every metric of that draw, and draw 0's the saved samples and trajectories.

The solve runs in chunks of ``eval_batch`` points. With a fixed-step solver each point's ODE is
independent of the others, so the samples do not depend on the chunking (float rounding aside).
An adaptive solver (dopri5) picks its steps from the error of the whole chunk, so a sample moves
within the solver's tolerance (~1e-5 at rtol = atol = 1e-5) and the NFE (the mean over chunks)
changes when ``eval_batch`` does: keep ``eval_batch`` fixed across runs you compare.

The first chunk is solved with its trajectory kept when the task saves trajectories; asking
torchdiffeq for intermediate outputs does not change its steps (fixed grids are the grid;
adaptive solvers interpolate), so the samples and the NFE are those of a plain solve.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fmbench.paths.schedules import GaussianPath
from fmbench.solvers import SolverSpec, solve

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def velocity_field(model: torch.nn.Module, path: GaussianPath) -> Field:
    """v(t, x) of a trained network: its output turned into a velocity (noise-prediction
    objectives are converted by the path), with t a float64 scalar from the solver."""

    def v(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        tv = t.to(torch.float64).expand(x.shape[0])
        return path.to_velocity(model(x, tv.to(x.dtype)), x, tv)

    return v


def solve_chunks(field: Field, x0: torch.Tensor, spec: SolverSpec, path: GaussianPath,
                 batch: int) -> tuple[torch.Tensor, float]:
    """Final states of a solve from every row of x0, in chunks; (states, mean NFE per chunk)."""
    ys, nfes = [], []
    for i in range(0, len(x0), batch):
        with torch.no_grad():
            res = solve(field, x0[i:i + batch], spec, path.t_min, path.t_max)
        ys.append(res.y)
        nfes.append(res.nfe)
    return torch.cat(ys), sum(nfes) / len(nfes)


@dataclass
class Generation:
    """One case's samples: the solve's final states, its NFE (mean per chunk), its wall time and
    the trajectories of the first points (T, k, *shape) when kept. ``error`` is set instead when
    the solve failed; every metric that needs the samples then fails with it."""

    samples: torch.Tensor | None = None
    nfe: float = float("nan")
    seconds: float = float("nan")
    trajectories: torch.Tensor | None = None
    error: BaseException | None = None

    def check(self) -> Generation:
        """Itself; raises the solve's error when it failed."""
        if self.error is not None:
            raise self.error
        return self

    def finite_samples(self) -> torch.Tensor:
        """The samples; raises the solve's error, or FloatingPointError when any is NaN/inf."""
        if not torch.isfinite(self.check().samples).all():
            raise FloatingPointError("generated samples contain NaN or inf")
        return self.samples


def generate(field: Field, x0: torch.Tensor, spec: SolverSpec, path: GaussianPath, batch: int,
             keep_trajectories: int = 0, n_saved: int = 51) -> Generation:
    """Solve from every row of ``x0`` (see the module docstring); a failure is a value."""
    start = time.perf_counter()
    try:
        traj = None
        ys, nfes = [], []
        for i in range(0, len(x0), batch):
            want = keep_trajectories > 0 and i == 0
            with torch.no_grad():
                res = solve(field, x0[i:i + batch], spec, path.t_min, path.t_max,
                            trajectory=want, n_saved=n_saved)
            if want:
                traj = res.trajectory[:, :keep_trajectories]
            ys.append(res.y)
            nfes.append(res.nfe)
        return Generation(torch.cat(ys), sum(nfes) / len(nfes), time.perf_counter() - start,
                          traj)
    except Exception as e:  # noqa: BLE001 - recorded: every metric that needs samples fails
        return Generation(error=e, seconds=time.perf_counter() - start)
