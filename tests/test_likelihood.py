"""bits/dim machinery against closed forms on image-shaped tensors."""

import math

import pytest
import torch

from fmbench.likelihood import (
    bits_per_dim,
    exact_divergence,
    hutchinson_divergence,
    log_prob_continuous,
    rademacher,
)
from fmbench.solvers import SolverSpec

SHAPE = (1, 4, 4)
D = 16


def linear_flow(m: float, s: float):
    """v of x_t = (1 + (s − 1)t)x0 + t·m: N(0, I) at t=0 to N(m, s²I) at t=1."""

    def v(t, x):
        tt = t.to(x.dtype)
        return (s - 1) * (x - tt * m) / (1 + (s - 1) * tt) + m

    return v


def std_normal_logp(x):
    return -0.5 * x.flatten(1).pow(2).sum(1) - 0.5 * D * math.log(2 * math.pi)


def gauss_logp(y, m, s):
    return (-0.5 * ((y - m) / s).flatten(1).pow(2).sum(1) - D * math.log(s)
            - 0.5 * D * math.log(2 * math.pi))


def exact_discrete_bpd(pixels, m, s):
    """−log P(k) / (D ln 2) with P(k) = Π Φ-differences over each pixel's bin in y-space."""
    k = pixels.double()
    lo, hi = k / 128 - 1, (k + 1) / 128 - 1
    n = torch.distributions.Normal(torch.tensor(m, dtype=torch.float64),
                                   torch.tensor(s, dtype=torch.float64))
    logp = torch.log(n.cdf(hi) - n.cdf(lo)).flatten(1).sum(1)
    return -logp / (D * math.log(2))


def _images(n, seed, m=0.2, s=0.5):
    g = torch.Generator().manual_seed(seed)
    y = m + s * torch.randn(n, *SHAPE, generator=g, dtype=torch.float64)
    return ((y + 1) * 128).floor().clamp(0, 255).to(torch.uint8)


def test_continuous_log_prob_matches_gaussian_exact_and_hutchinson():
    m, s = 0.3, 0.6
    g = torch.Generator().manual_seed(0)
    y = m + s * torch.randn(5, *SHAPE, generator=g, dtype=torch.float64)
    spec = SolverSpec("dopri5", rtol=1e-8, atol=1e-8)
    want = gauss_logp(y, m, s)
    for exact in (True, False):  # the Jacobian is a multiple of I: Hutchinson is exact too
        got, nfe = log_prob_continuous(linear_flow(m, s), y, std_normal_logp, spec, exact=exact)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        assert nfe > 0


def test_hutchinson_is_unbiased_for_a_nonlinear_field():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Tanh(),
                              torch.nn.Conv2d(4, 1, 3, padding=1)).double()
    x = torch.randn(3, *SHAPE, dtype=torch.float64, requires_grad=True)
    v = net(x)
    exact = exact_divergence(v, x)
    probes = rademacher((4000, *x.shape), torch.Generator().manual_seed(1), torch.float64)
    singles = torch.stack([hutchinson_divergence(v, x, probes[i:i + 1]) for i in range(4000)])
    mean, se = singles.mean(0), singles.std(0) / math.sqrt(4000)
    assert ((mean - exact).abs() < 4 * se + 1e-9).all()
    assert (singles.std(0) > 0).all()  # a genuinely stochastic estimator here
    torch.testing.assert_close(hutchinson_divergence(v, x, probes), mean)


def test_bpd_matches_exact_discrete_probability_for_smooth_density():
    """Density nearly flat over a pixel bin (s ≫ 2/256): the dequantisation bound is tight."""
    m, s = 0.2, 0.5
    px = _images(4, 1, m, s)
    spec = SolverSpec("dopri5", rtol=1e-7, atol=1e-7)
    bpd, _ = bits_per_dim(linear_flow(m, s), px, std_normal_logp, spec, k_samples=1, exact=True)
    torch.testing.assert_close(bpd, exact_discrete_bpd(px, m, s), rtol=2e-4, atol=2e-4)


def test_importance_samples_tighten_the_bound():
    """Density varying within a bin (s ≈ bin width): K = 1 overestimates bpd, more samples bring
    it down toward the exact discrete value, never below it on average."""
    m, s = 0.2, 0.01
    px = _images(6, 2, m, s)
    spec = SolverSpec("rk4", steps=400)
    exact = exact_discrete_bpd(px, m, s).mean()
    b1 = torch.stack([bits_per_dim(linear_flow(m, s), px, std_normal_logp, spec, 1, exact=False,
                                   generator=torch.Generator().manual_seed(r))[0].mean()
                      for r in range(3)]).mean()
    b16 = bits_per_dim(linear_flow(m, s), px, std_normal_logp, spec, 16, exact=False,
                       generator=torch.Generator().manual_seed(9))[0].mean()
    assert b1 > b16 > exact - 0.01
    assert float(b1 - exact) > 0.01


def test_bpd_rejects_float_pixels():
    with pytest.raises(TypeError):
        bits_per_dim(linear_flow(0, 1), torch.zeros(1, *SHAPE), std_normal_logp,
                     SolverSpec("euler", steps=2))


class LinearFlow(torch.nn.Module):
    """:func:`linear_flow` as a module v(x, t) for fmbench.evaluate (t: one time per image)."""

    def __init__(self, m: float, s: float):
        super().__init__()
        self.m, self.s = m, s
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # a state dict to digest

    def forward(self, x, t):
        t = t.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        return (self.s - 1) * (x - t * self.m) / (1 + (self.s - 1) * t) + self.m + 0 * self.anchor


def test_bpd_metric_end_to_end_matches_the_discrete_closed_form(tmp_path):
    """The ``bpd`` metric through fmbench.evaluate (image task from .npz, the path's source
    density and time range, dequantisation, Jacobian, bits): a flow carrying N(0, I) exactly to
    N(m, s²I) scores the test images' exact discrete bits/dim. Dropping the D·log(2/256) term
    moves the value by 7 bits/dim, a wrong time direction by far more than the tolerance."""
    import numpy as np

    import fmbench

    m, s = 0.2, 0.5
    px = _images(4, 3, m, s)
    np.savez(tmp_path / "test.npz", images=px.numpy())
    np.savez(tmp_path / "train.npz", images=_images(8, 4, m, s).numpy())
    df = fmbench.evaluate(
        LinearFlow(m, s), {"target": "npz", "root": str(tmp_path / "train.npz"),
                           "test": str(tmp_path / "test.npz")},
        solvers=["euler:2"], path={"name": "icfm", "sigma": 0.0},
        metrics={"names": ["bpd"], "bpd_n": 4, "bpd_k": 1, "bpd_probes": 1, "bpd_rtol": 1e-7},
        eval_draws=1)
    row = df[df["metric"] == "bpd"]
    assert (row["status"] == "ok").all(), row["reason"].tolist()
    want = float(exact_discrete_bpd(px, m, s).mean())
    assert float(row["value"].iloc[0]) == pytest.approx(want, rel=3e-4, abs=3e-4)
