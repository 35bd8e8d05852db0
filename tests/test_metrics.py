"""Metrics against answers known independently: Gaussian-to-Gaussian flows and exact OT maps."""

import math

import pytest
import torch

from fmbench.generate import generate, velocity_field
from fmbench.likelihood import log_prob_continuous
from fmbench.metrics import METRICS, MetricsConfig, NotApplicable, Scoring, compute, w2_exact
from fmbench.paths import make_path
from fmbench.solvers import SolverSpec
from fmbench.tasks import PointInputs

M = torch.tensor([2.0, -1.0], dtype=torch.float64)
S = 0.5


class LinearFlow(torch.nn.Module):
    """v(x, t) of x_t = (1 + (s − 1)t)·x0 + t·m: pushes N(0, I) to N(m, s² I) at t = 1."""

    def __init__(self, m=M, s=S):
        super().__init__()
        self.m, self.s = m, s

    def forward(self, x, t):
        t = t.to(x.dtype)[:, None]
        return (self.s - 1) * (x - t * self.m) / (1 + (self.s - 1) * t) + self.m


def gauss_logpdf(x, m, s):
    d = x.shape[1]
    return (-0.5 * ((x - m) ** 2).sum(1) / s**2 - d * math.log(s)
            - 0.5 * d * math.log(2 * math.pi))


def _ctx(spec, n=200, seed=0, x1_test=None, gaussian=True, model=None, x0=None,
         reference_steps=1000):
    """The Scoring of one case of ``model`` (the exact flow by default), as the runner builds it:
    one generation from x0, then the metrics."""
    g = torch.Generator().manual_seed(seed)
    draw = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x0 = draw if x0 is None else x0
    x1 = M + S * torch.randn(n, 2, generator=g, dtype=torch.float64)
    floor = M + S * torch.randn(n, 2, generator=g, dtype=torch.float64)
    path = make_path("rf")
    field = velocity_field(model or LinearFlow(), path)
    settings = MetricsConfig(n_eval=n, reference_steps=reference_steps, eval_batch=10**6)
    return Scoring(path, spec, field, generate(field, x0, spec, path, 10**6),
                   PointInputs(x0, x1 if x1_test is None else x1_test, floor), settings,
                   gaussian, 1.0, 0.0)


def test_nll_matches_closed_form_density():
    ctx = _ctx(SolverSpec("dopri5", rtol=1e-8, atol=1e-8))
    x1 = ctx.inputs.x1_test
    logp, nfe = log_prob_continuous(ctx.field, x1, ctx.path.source_log_prob, ctx.spec,
                                    exact=True)
    torch.testing.assert_close(logp, gauss_logpdf(x1, M, S), rtol=1e-5, atol=1e-5)
    assert nfe > 0
    want = float(-gauss_logpdf(x1, M, S).mean())
    assert compute("nll", ctx)["nll"] == pytest.approx(want, rel=1e-5)


def test_nll_not_applicable_without_gaussian_source():
    ctx = _ctx(SolverSpec("euler", steps=10), gaussian=False)
    with pytest.raises(NotApplicable):
        compute("nll", ctx)


def test_w2_translation_and_affine_maps_are_exact():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 2, generator=g, dtype=torch.float64)
    shift = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert w2_exact(x, x + shift) == pytest.approx(5.0, rel=1e-9)
    # x ↦ m + s·x (s > 0) is the gradient of a convex function, hence the optimal map
    y = M + 2.5 * x
    want = math.sqrt(float(((y - x) ** 2).sum(1).mean()))
    assert w2_exact(x, y) == pytest.approx(want, rel=1e-9)


def test_w2_between_gaussians_matches_closed_form():
    g = torch.Generator().manual_seed(2)
    n = 1500
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([8.0, 0.0], dtype=torch.float64) + 2.0 * torch.randn(n, 2, generator=g,
                                                                        dtype=torch.float64)
    # W2²(N(0, I), N(m, 4I)) = |m|² + d·(2 − 1)²
    assert w2_exact(x, y) == pytest.approx(math.sqrt(64 + 2), rel=0.02)


def test_w2_metric_reports_floor():
    ctx = _ctx(SolverSpec("rk4", steps=20))
    out = compute("w2", ctx)
    assert set(out) == {"w2", "w2_floor"}
    assert out["w2_floor"] == pytest.approx(w2_exact(ctx.inputs.x1_test, ctx.inputs.x1_floor))
    # the exact flow's samples are as far from the test set as a second target draw is
    assert out["w2"] == pytest.approx(out["w2_floor"], rel=0.5)


def test_npe_is_zero_for_the_exact_ot_flow():
    """Straight lines at constant speed: PE = E‖(s − 1)x0 + m‖² = W2² to the pushed points."""
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(200, 2, generator=g, dtype=torch.float64)
    ctx = _ctx(SolverSpec("euler", steps=100), x1_test=M + S * x0, x0=x0)
    assert compute("npe", ctx)["npe"] == pytest.approx(0.0, abs=1e-9)


class Detour(LinearFlow):
    def forward(self, x, t):  # add a swirl: curved, longer paths
        v = super().forward(x, t)
        return v + 3.0 * torch.stack([-x[:, 1], x[:, 0]], 1)


def test_npe_positive_for_a_detour():
    ctx = _ctx(SolverSpec("rk4", steps=50), model=Detour())
    assert compute("npe", ctx)["npe"] > 0.5


def test_nfe_and_solver_mse():
    ctx4 = _ctx(SolverSpec("euler", nfe=4), model=Detour())
    ctx16 = _ctx(SolverSpec("euler", nfe=16), model=Detour())
    assert compute("nfe", ctx4)["nfe"] == 4
    # curved trajectories: Euler has error, shrinking with NFE
    e4, e16 = compute("solver_mse", ctx4)["solver_mse"], compute("solver_mse", ctx16)["solver_mse"]
    assert e4 > e16 > 0
    ctx_rk = _ctx(SolverSpec("rk4", steps=250), model=Detour())
    assert compute("solver_mse", ctx_rk)["solver_mse"] < 1e-9


def test_every_metric_declares_unit_and_direction():
    for name, m in METRICS.items():
        assert m.name == name and isinstance(m.unit, str)
        assert isinstance(m.higher_is_better, bool) and m.description
