"""Each path's x_t and u_t against closed forms re-derived here, and u_t = d/dt x_t by autograd."""

import math

import pytest
import torch

from fmbench.paths import PATHS, make_path
from fmbench.paths.schedules import _bc

T_GRID = torch.linspace(0.01, 0.99, 13, dtype=torch.float64)
SIGMAS = [0.0, 0.05, 0.1, 0.5, 1.0]


def _data(n=13, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0, x1, eps = (torch.randn(n, d, generator=g, dtype=torch.float64) for _ in range(3))
    return x0, x1, eps


def _vp_alpha(s, bmin=0.1, bmax=20.0):
    return torch.exp(-0.5 * (bmin * s + 0.5 * (bmax - bmin) * s**2))


def closed_form(name, params, t, x0, x1, eps):
    """(x_t, u_t) written out from the papers' formulas, independently of the path classes."""
    t = t[:, None]
    if name == "fm-ot":
        s = params.get("sigma_min", 1e-4)
        return t * x1 + (1 - (1 - s) * t) * x0, x1 - (1 - s) * x0
    if name in ("icfm", "otcfm", "rf"):
        s = params.get("sigma", 0.0 if name == "rf" else 0.1)
        return t * x1 + (1 - t) * x0 + s * eps, x1 - x0
    if name == "sbcfm":
        s = params.get("sigma", 0.1)
        mu = t * x1 + (1 - t) * x0
        xt = mu + s * torch.sqrt(t * (1 - t)) * eps
        # Tong et al. eq.: u = (1 − 2t)/(2t(1 − t))·(x − μ) + (x1 − x0)
        return xt, (1 - 2 * t) / (2 * t * (1 - t)) * (xt - mu) + (x1 - x0)
    if name == "trig":
        s = params.get("sigma", 0.0)
        h = math.pi / 2
        return (torch.sin(h * t) * x1 + torch.cos(h * t) * x0 + s * eps,
                h * torch.cos(h * t) * x1 - h * torch.sin(h * t) * x0)
    if name == "ve":
        smin, smax = params.get("sigma_min", 0.01), params.get("sigma_max", 50.0)
        sig = smin * (smax / smin) ** (1 - t)
        # Lipman: μ = x1, σ_t = σ_{1−t}; source sample x0 = σ_max·ε', u = σ'/σ (x − μ)
        xt = x1 + sig * (x0 / smax)
        dsig = -sig * math.log(smax / smin)
        return xt, dsig / sig * (xt - x1)
    if name in ("vp", "sm-vp"):
        a = _vp_alpha(1 - t)
        sig = torch.sqrt(1 - a**2)
        xt = a * x1 + sig * x0
        beta = 0.1 + (20.0 - 0.1) * (1 - t)
        da = 0.5 * beta * a  # d/dt α(1 − t)
        dsig = -a * da / sig
        # Lipman Theorem 3: u = σ'/σ (x − μ) + μ'
        return xt, dsig / sig * (xt - a * x1) + da * x1
    raise AssertionError(name)


def _param_grid(name):
    if name in ("icfm", "otcfm", "trig"):
        return [{"sigma": s} for s in SIGMAS]
    if name == "rf":
        return [{}]
    if name == "sbcfm":
        return [{"sigma": s} for s in SIGMAS if s > 0]
    if name == "fm-ot":
        return [{"sigma_min": s} for s in (0.0, 1e-4, 0.1)]
    if name == "ve":
        return [{"sigma_min": 0.01, "sigma_max": m} for m in (1.0, 12.0, 50.0)]
    return [{}]


CASES = [(n, p) for n in PATHS.names() for p in _param_grid(n)]


@pytest.mark.parametrize("name,params", CASES)
def test_interpolate_matches_closed_form(name, params):
    path = make_path(name, **params)
    x0, x1, eps = _data()
    xt, ut = path.interpolate(x0, x1, T_GRID, eps if path.needs_eps else None)
    want_x, want_u = closed_form(name, params, T_GRID, x0, x1, eps)
    if not path.needs_eps and name in ("icfm", "otcfm", "trig"):
        want_x = want_x - params.get("sigma", 0.0) * eps  # σ = 0: no noise term
    torch.testing.assert_close(xt, want_x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ut, want_u, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name,params", CASES)
def test_velocity_is_time_derivative(name, params):
    path = make_path(name, **params)
    x0, x1, eps = _data(seed=1)
    t = T_GRID.clone().requires_grad_(True)
    e = eps if path.needs_eps else None
    xt, ut = path.interpolate(x0, x1, t, e)
    # d/dt of x_t per sample: each row depends only on its own t, so summing over rows is exact
    dxdt = torch.stack([torch.autograd.grad(xt[:, k].sum(), t, retain_graph=True)[0]
                        for k in range(xt.shape[1])], 1)
    torch.testing.assert_close(dxdt, ut.detach(), rtol=1e-7, atol=1e-7)


def test_noise_objective_gives_marginal_velocity_for_point_mass():
    """With data a point mass m, E[x0 | x_t = x] = (x − a·m)/b exactly; the converted velocity
    must equal the marginal velocity a'·m + b'·(x − a·m)/b."""
    path = make_path("sm-vp")
    m = torch.tensor([[1.5, -0.5]], dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(len(T_GRID), 2, generator=g, dtype=torch.float64)
    a, b, _ = path.coeffs(T_GRID)
    da, db, _ = path.dcoeffs(T_GRID)
    x0_hat = (x - _bc(a, x) * m) / _bc(b, x)
    want = _bc(da, x) * m + _bc(db, x) * x0_hat
    torch.testing.assert_close(path.to_velocity(x0_hat, x, T_GRID), want)


def test_sm_vp_velocity_is_probability_flow_ode():
    """u = ½β(s)(x + ∇log p) with s = 1 − t and score −x̂0/b: the VP probability-flow ODE."""
    path = make_path("sm-vp")
    g = torch.Generator().manual_seed(4)
    x = torch.randn(len(T_GRID), 2, generator=g, dtype=torch.float64)
    x0_hat = torch.randn(len(T_GRID), 2, generator=g, dtype=torch.float64)
    _, b, _ = path.coeffs(T_GRID)
    beta = 0.1 + (20.0 - 0.1) * (1 - T_GRID)
    score = -x0_hat / b[:, None]
    want = 0.5 * beta[:, None] * (x + score)
    torch.testing.assert_close(path.to_velocity(x0_hat, x, T_GRID), want)


def test_ve_source_and_endpoints():
    path = make_path("ve", sigma_min=0.01, sigma_max=12.0)
    assert path.source_scale == 12.0
    a, b, _ = path.coeffs(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(b, torch.tensor([1.0, 0.01 / 12.0], dtype=torch.float64))
    x0 = torch.zeros(1, 2, dtype=torch.float64)
    lp = path.source_log_prob(x0)
    torch.testing.assert_close(lp, torch.tensor([-2 * math.log(12.0) - math.log(2 * math.pi)],
                                                dtype=torch.float64))


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="sigma"):
        make_path("icfm", sigma=-1.0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        make_path("ve", sigma_min=5.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="objective"):
        make_path("icfm", objective="noise")
    with pytest.raises(TypeError):
        make_path("icfm", bogus=1)
