"""Couplings π(x0, x1) of a minibatch: independent, exact OT, entropic OT.

A coupling takes two batches of equal size n and returns them re-paired, either WITHOUT replacement
(``replace=False``: the result is a permutation of the x1 batch against the x0 batch, so no sample
is duplicated or dropped) or by drawing n pairs i.i.d. from the plan (``replace=True``, TorchCFM's
``sample_map``: some samples repeat, others drop out).

- exact OT: POT's network simplex (``ot.emd``) on squared Euclidean costs. With uniform weights of
  equal size the optimal plan returned is a permutation matrix, so without replacement (the default)
  the pairing IS the plan. Measured at 512×512 on one CPU core (``benchmarks/coupling_cost.py``): POT
  20–22 ms, scipy's ``linear_sum_assignment`` 48–76 ms, the ``lap`` package's LAPJV 120–150 ms.
- entropic OT: min <π, C> − reg·H(π) by :func:`entropic_plan` (warm-started sparse Sinkhorn, below),
  checked against POT's ``sinkhorn_log`` in the tests. Its plan is not a permutation, so it pairs
  WITH replacement by default: pair frequencies follow π (Tong et al.'s SB-CFM). ``replace=False``
  gives a permutation whose rows, visited in random order, draw their partner from the plan row
  restricted to the partners still free: near the plan, not equal to it.

All randomness comes from the ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import ot
import scipy.sparse as sp
import torch

from fmbench.registry import Registry

COUPLINGS: Registry[type] = Registry("coupling")


class CouplingError(RuntimeError):
    """The coupling could not be computed to the stated accuracy."""


def sq_cost(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean cost matrix (n, m) in float64, flattening non-batch dims."""
    a = x0.reshape(x0.shape[0], -1).double()
    b = x1.reshape(x1.shape[0], -1).double()
    return torch.cdist(a, b).pow(2)


def exact_ot(cost: np.ndarray, log: bool = False):
    """POT's ``ot.emd`` with uniform weights: the plan, and with ``log`` its dual potentials (u, v)
    (u_i + v_j ≤ C_ij, with equality on the plan's support). CouplingError when it fails."""
    n, m = cost.shape
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ot.emd(np.full(n, 1.0 / n), np.full(m, 1.0 / m), cost, numItermax=1_000_000,
                     log=log)
    for w in caught:
        if "numItermax" in str(w.message) or "infeasible" in str(w.message).lower():
            raise CouplingError(f"exact OT did not converge: {w.message}")
    return res


def _draw_entries(log_values: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Positions of k entries drawn i.i.d. with probability ∝ exp(log_values)."""
    return torch.multinomial(torch.softmax(log_values, 0), k, replacement=True,
                             generator=generator)


def _pairs_from_log_plan(
    log_plan: torch.Tensor, replace: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (i, j) of n pairs drawn from an (n, m) plan given by its (unnormalised) logs.

    Working with logs keeps the draw exact where plan entries underflow to 0 in linear scale
    (entropic plans at small regularisation): without replacement each row takes the Gumbel-max of
    its log-plan restricted to the free columns, which samples ∝ π_ij among them.
    """
    n, m = log_plan.shape
    if replace:
        k = _draw_entries(log_plan.reshape(-1), n, generator)
        return k // m, k % m
    order = torch.randperm(n, generator=generator)
    gumbel = -torch.log(-torch.log(torch.rand(n, m, generator=generator, dtype=torch.float64)
                                   .clamp_min(1e-300)))
    scores = log_plan.double() + gumbel
    taken = torch.zeros(m, dtype=torch.bool)
    cols = torch.empty(n, dtype=torch.long)
    for i in order.tolist():
        row = scores[i].masked_fill(taken, float("-inf"))
        j = int(row.argmax())
        if row[j] == float("-inf"):
            raise CouplingError(f"row {i} of the plan has no mass on the columns still free")
        cols[i] = j
        taken[j] = True
    return torch.arange(n), cols


@dataclass(frozen=True)
class Coupling:
    replace: bool = False

    def plan(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """The (n, m) transport plan (sums to 1)."""
        return torch.exp(self.log_plan(x0, x1))

    def log_plan(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def pair(
        self, x0: torch.Tensor, x1: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x0', x1') paired according to the coupling."""
        _same_size(x0, x1)
        i, j = _pairs_from_log_plan(self.log_plan(x0, x1), self.replace, generator)
        return x0[i], x1[j]


def _same_size(x0: torch.Tensor, x1: torch.Tensor) -> None:
    if x0.shape[0] != x1.shape[0]:
        raise ValueError(f"batches differ in size: {x0.shape[0]} vs {x1.shape[0]}")


@COUPLINGS.register("independent")
@dataclass(frozen=True)
class IndependentCoupling(Coupling):
    """π = p0 ⊗ p1: the batches as drawn (already independent), no re-pairing."""

    def log_plan(self, x0, x1):
        n, m = x0.shape[0], x1.shape[0]
        return torch.full((n, m), -math.log(n * m), dtype=torch.float64)

    def pair(self, x0, x1, generator):
        _same_size(x0, x1)
        return x0, x1


@COUPLINGS.register("exact-ot")
@dataclass(frozen=True)
class ExactOTCoupling(Coupling):
    """Exact minibatch OT (squared Euclidean cost), POT's ``ot.emd``."""

    def plan(self, x0, x1):
        return torch.from_numpy(exact_ot(sq_cost(x0, x1).numpy()))

    def log_plan(self, x0, x1):
        return torch.log(self.plan(x0, x1))

    def pair(self, x0, x1, generator):
        _same_size(x0, x1)
        plan = self.plan(x0, x1)
        if self.replace:
            i, j = _pairs_from_log_plan(torch.log(plan), True, generator)
            return x0[i], x1[j]
        # a vertex of the Birkhoff polytope: one non-zero per row
        j = plan.argmax(dim=1)
        if torch.unique(j).numel() != j.numel():
            raise CouplingError("exact OT plan is not a permutation")
        return x0, x1[j]


@COUPLINGS.register("entropic-ot")
@dataclass(frozen=True)
class EntropicOTCoupling(Coupling):
    """Entropic OT, min <π, C> − reg·H(π); pairs drawn from the plan (with replacement) by default.

    ``tol`` bounds the relative marginal error max_i |n·Σ_j π_ij − 1| of the returned plan.
    """

    replace: bool = True
    reg: float = 0.02
    tol: float = 1e-2
    max_iter: int = 20_000

    def __post_init__(self):
        if not self.reg > 0:
            raise ValueError(f"reg must be > 0, got {self.reg}")

    def sparse_plan(self, x0, x1) -> EntropicPlan:
        return entropic_plan(sq_cost(x0, x1), self.reg, self.tol, self.max_iter)

    def log_plan(self, x0, x1):
        return self.sparse_plan(x0, x1).dense_log()

    def pair(self, x0, x1, generator):
        _same_size(x0, x1)
        plan = self.sparse_plan(x0, x1)
        if not self.replace:
            i, j = _pairs_from_log_plan(plan.dense_log(), False, generator)
            return x0[i], x1[j]
        i, j = plan.draw(x0.shape[0], generator)
        return x0[i], x1[j]


# --- entropic OT ------------------------------------------------------------------------------

SUPPORT_K = 40.0  # the support: plan entries above e^−K/n


@dataclass(frozen=True)
class EntropicPlan:
    """An entropic plan π_ij = exp((f_i + g_j − C_ij)/reg), with its support.

    ``rows``, ``cols``, ``log_values`` list the entries within e^−K of their row's largest
    (:func:`entropic_plan`); every other entry is below e^−K relative and in total below
    ``off_support`` (the bound on the mass a row or column has outside the support, ≤ 1e-12 in
    practice). ``dense_log()`` gives every entry of the (n, m) log-plan exactly.
    """

    f: torch.Tensor
    g: torch.Tensor
    cost: torch.Tensor
    reg: float
    rows: torch.Tensor
    cols: torch.Tensor
    log_values: torch.Tensor
    off_support: float
    iterations: int

    def dense_log(self) -> torch.Tensor:
        return (self.f[:, None] + self.g[None, :] - self.cost) / self.reg

    def draw(self, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Indices (i, j) of k pairs drawn i.i.d. from π (on its support)."""
        idx = _draw_entries(self.log_values, k, generator)
        return self.rows[idx], self.cols[idx]


def entropic_plan(cost: torch.Tensor, reg: float, tol: float = 1e-2, max_iter: int = 20_000
                  ) -> EntropicPlan:
    """The entropic OT plan with uniform marginals, to relative marginal error ``tol``.

    Sinkhorn at small ``reg`` (SB-CFM's 2σ² = 0.02 against 2D costs of 10–100) is slow from a cold
    start (ε-scaling: 0.4–10 s at 512×512) and its kernel exp(−C/reg) underflows. Here:

    1. Warm start from the exact OT duals (u, v) of POT's network simplex (~20 ms at 512×512): the
       entropic duals differ from them by O(reg·log n), and the reduced costs C − u − v ≥ 0 are 0
       on the OT permutation.
    2. Support: the entries of the current log-plan L = (f_i + g_j − C_ij)/reg within e^−K
       (K = 40) of 1/n, 3–10 % of a 512×512 plan in the 2D tasks; their kernel is representable.
    3. Over-relaxed Sinkhorn (ω = 1.9, dropping to 1 should it stall) in scaling form on that
       sparse kernel: two sparse matrix-vector products an iteration, no exp or log in the loop.
    4. Verified, not assumed: a final plain column update makes the columns exact on the support;
       the row error there plus a rigorous bound on the mass outside the support (each row's
       count of off-support entries times its largest one, from the dense L) must be below
       ``tol``, and the same for columns. Otherwise the support is rebuilt around the new duals
       and step 3 repeats (at most ``ROUNDS`` times).

    If no round passes the check (a support graph so weakly connected that Sinkhorn crawls), the
    plan is recomputed by the dense log-domain ε-scaling of :func:`sinkhorn_log`, so the result
    always meets ``tol`` or raises :class:`CouplingError`.
    """
    cost = cost.double()
    c = cost.numpy()
    n, m = c.shape
    _, log = exact_ot(c, log=True)
    f, g = log["u"] - reg * math.log(n), log["v"]
    for _ in range(ROUNDS):
        lp = (f[:, None] + g[None, :] - c) / reg
        on = lp >= -math.log(n) - SUPPORT_K
        rows, cols = np.nonzero(on)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        kernel = sp.csr_matrix((np.exp(lp[rows, cols]), cols, indptr), shape=(n, m))
        got = _scaling_sinkhorn(kernel, n, m, tol, max_iter)
        if got is None:
            got = _newton(kernel, n, m, tol, min(max_iter, NEWTON_STEPS))
        if got is None:
            break
        alpha, beta, iters, err = got
        f, g = f + reg * np.log(alpha), g + reg * np.log(beta)
        lp = (f[:, None] + g[None, :] - c) / reg
        off = np.where(on, -np.inf, lp)
        off_rows = (m - on.sum(1)) * np.exp(off.max(1))
        off_cols = (n - on.sum(0)) * np.exp(off.max(0))
        bound = max(n * off_rows.max(), m * off_cols.max())
        if err + bound < tol:
            log_values = torch.from_numpy(lp[rows, cols])
            return EntropicPlan(torch.from_numpy(f), torch.from_numpy(g), cost, reg,
                                torch.from_numpy(rows), torch.from_numpy(cols), log_values,
                                float(bound), iters)
    f, g = sinkhorn_log(cost, reg, tol, max_iter, duals=True)
    lp = (f[:, None] + g[None, :] - cost) / reg
    r, k = torch.nonzero(torch.ones_like(lp, dtype=torch.bool), as_tuple=True)
    return EntropicPlan(f, g, cost, reg, r, k, lp.reshape(-1), 0.0, -1)


SINKHORN_ITER = 300  # sparse Sinkhorn iterations before Newton takes over
ROUNDS = 3
NEWTON_STEPS = 50


def _scaling_sinkhorn(kernel, n: int, m: int, tol: float, max_iter: int, omega: float = 1.9):
    """(α, β, iterations, row error) with π = diag(α)·K·diag(β) within tol/2 on the support and
    its columns exact there, or None (not converged: the caller rebuilds or falls back)."""
    kernel_t = kernel.T  # CSC view: a matrix-vector product without a copy
    a, b = 1.0 / n, 1.0 / m
    alpha, beta = np.ones(n), np.ones(m)
    best, stall = math.inf, 0
    with np.errstate(all="ignore"):
        for it in range(1, min(max_iter, SINKHORN_ITER) + 1):
            kb = kernel @ beta
            err = np.abs(n * alpha * kb - 1).max()
            if not np.isfinite(err):
                return None
            if err < tol / 2:
                beta = b / (kernel_t @ alpha)  # plain column update: columns exact
                row_err = np.abs(n * alpha * (kernel @ beta) - 1).max()
                if row_err < tol / 2 and np.isfinite(beta).all() and beta.min() > 0:
                    return alpha, beta, it, row_err
            if err < best:
                best, stall = err, 0
            else:
                stall += 1
                if stall > 20:
                    omega = 1.0
            alpha = _relax(alpha, a / kb, omega)
            beta = _relax(beta, b / (kernel_t @ alpha), omega)
    return None


def _newton(kernel, n: int, m: int, tol: float, max_steps: int):
    """Newton's method on the dual (Sinkhorn–Newton, Brauer et al. 2017) over the sparse support,
    for the weakly connected supports where Sinkhorn crawls: (α, β, −steps, row error) as
    :func:`_scaling_sinkhorn`, or None.

    In log-scalings (x, y) the dual F = Σ_ij K_ij e^(x_i + y_j) − a·Σx − b·Σy is convex with
    Hessian [[diag(r), P], [Pᵀ, diag(c)]]; eliminating y leaves the n×n Laplacian-like system
    (diag(r) − P·diag(1/c)·Pᵀ)·dx = rhs, solved densely (Cholesky, a ridge for its null space)."""
    import scipy.linalg

    a, b = 1.0 / n, 1.0 / m
    x, y = np.zeros(n), np.zeros(m)

    def objective(x, y):
        return float(np.exp(x) @ (kernel @ np.exp(y))) - a * x.sum() - b * y.sum()

    with np.errstate(all="ignore"):
        for step in range(1, max_steps + 1):
            plan = sp.diags(np.exp(x)) @ kernel @ sp.diags(np.exp(y))
            r, c = np.asarray(plan.sum(1)).ravel(), np.asarray(plan.sum(0)).ravel()
            if not (np.isfinite(r).all() and np.isfinite(c).all() and c.min() > 0):
                return None
            if np.abs(m * c - 1).max() < 1e-12 + tol / 4 and np.abs(n * r - 1).max() < tol / 4:
                y = y + np.log(b / c)  # exact columns
                beta = np.exp(y)
                alpha = np.exp(x)
                row_err = np.abs(n * alpha * (kernel @ beta) - 1).max()
                if row_err < tol / 2:
                    return alpha, beta, -step, row_err
            pc = plan @ sp.diags(1.0 / c)
            schur = np.diag(r) - (pc @ plan.T).toarray()
            schur[np.diag_indices(n)] += 1e-12 * r.mean()
            rhs = -(r - a) + pc @ (c - b)
            try:
                dx = scipy.linalg.solve(schur, rhs, assume_a="pos", check_finite=False)
            except (np.linalg.LinAlgError, ValueError):
                return None
            dy = -((c - b) + plan.T @ dx) / c
            f0, slope, t = objective(x, y), (r - a) @ dx + (c - b) @ dy, 1.0
            while t > 1e-6 and not objective(x + t * dx, y + t * dy) <= f0 + 1e-4 * t * slope:
                t /= 2
            x, y = x + t * dx, y + t * dy
    return None


def _relax(old: np.ndarray, new: np.ndarray, omega: float) -> np.ndarray:
    """Over-relaxed scaling update old^(1−ω)·new^ω (ω = 1: the plain Sinkhorn update)."""
    return new if omega == 1.0 else old ** (1 - omega) * new ** omega


def sinkhorn_log(cost: torch.Tensor, reg: float, tol: float = 1e-2,
                 max_iter: int = 20_000, log: bool = False, duals: bool = False):
    """Entropic OT plan with uniform marginals by dense log-domain Sinkhorn with ε-scaling.

    The dual potentials (f, g) are updated with logsumexp, so nothing underflows however small
    ``reg`` is against the costs; ε is halved from max(cost) down to ``reg``, each stage warm-starting
    the next (loose tolerance 0.1 on the intermediate stages). The row-marginal error of the current
    plan comes free with each f-update: n·Σ_j π_ij = exp((f_old,i − f_new,i)/ε); the g-update makes the
    column marginals exact. Raises :class:`CouplingError` if ``tol`` is not met within ``max_iter``
    iterations of the final stage or anything is non-finite.

    The fall-back of :func:`entropic_plan` and its reference in ``benchmarks/coupling_cost.py``
    (0.4–10 s at 512×512, reg 0.02). Returns the plan, its log (``log``) or the duals (``duals``).
    """
    cost = cost.double()
    n, m = cost.shape
    log_a, log_b = -math.log(n), -math.log(m)
    f = torch.zeros(n, dtype=torch.float64)
    g = torch.zeros(m, dtype=torch.float64)
    eps_list, e = [], float(cost.max())
    while e > reg:
        eps_list.append(e)
        e /= 2
    eps_list.append(reg)
    err = float("inf")
    for k, eps in enumerate(eps_list):
        final = k == len(eps_list) - 1
        for _ in range(max_iter):
            f_new = eps * log_a - eps * torch.logsumexp((g[None, :] - cost) / eps, 1)
            err = (torch.exp((f - f_new) / eps) - 1).abs().max().item()
            f = f_new
            g = eps * log_b - eps * torch.logsumexp((f[:, None] - cost) / eps, 0)
            if err < (tol if final else max(tol, 0.1)):
                break
    log_plan = (f[:, None] + g[None, :] - cost) / reg
    if not torch.isfinite(log_plan).all():
        raise CouplingError(f"entropic OT (reg={reg}) produced non-finite entries")
    if not err < tol:
        raise CouplingError(f"entropic OT (reg={reg}) did not reach marginal tolerance {tol} in "
                            f"{max_iter} iterations (error {err:.3g})")
    if duals:
        return f, g
    return log_plan if log else torch.exp(log_plan)


def make_coupling(name: str, **params) -> Coupling:
    return COUPLINGS.get(name)(**params)
