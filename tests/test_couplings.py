import math

import numpy as np
import ot
import pytest
import torch

from fmbench.data import sample
from fmbench.paths import CouplingError, make_coupling
from fmbench.paths.couplings import sinkhorn_log, sq_cost


def _batches(n=64, seed=0, src="gaussian", tgt="8gaussians"):
    return sample(src, n, seed), sample(tgt, n, seed + 100)


def _rows_as_set(x):
    return {tuple(r) for r in x.tolist()}


def test_exact_ot_plan_equals_pot():
    x0, x1 = _batches()
    c = make_coupling("exact-ot")
    plan = c.plan(x0, x1)
    cost = sq_cost(x0, x1).numpy()
    n = len(x0)
    ref = ot.emd(np.full(n, 1 / n), np.full(n, 1 / n), cost)
    np.testing.assert_allclose(plan.numpy(), ref, atol=1e-12)
    # the pairing returned without replacement realises exactly that plan's cost
    p0, p1 = c.pair(x0, x1, torch.Generator().manual_seed(0))
    got = float(((p0.double() - p1.double()) ** 2).sum(1).mean())
    want = ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), cost)
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name,kw", [("exact-ot", {}), ("entropic-ot", {"reg": 0.02}),
                                     ("entropic-ot", {"reg": 5.0}), ("independent", {})])
def test_without_replacement_is_a_permutation(name, kw):
    x0, x1 = _batches(n=100, seed=1)
    p0, p1 = make_coupling(name, **kw).pair(x0, x1, torch.Generator().manual_seed(0))
    assert _rows_as_set(p0) == _rows_as_set(x0) and len(_rows_as_set(p0)) == 100
    assert _rows_as_set(p1) == _rows_as_set(x1) and len(_rows_as_set(p1)) == 100


def test_with_replacement_draws_from_plan_support():
    x0, x1 = _batches(n=50, seed=2)
    c = make_coupling("exact-ot", replace=True)
    plan = c.plan(x0, x1)
    g = torch.Generator().manual_seed(0)
    p0, p1 = c.pair(x0, x1, g)
    idx0 = {tuple(r): i for i, r in enumerate(x0.tolist())}
    idx1 = {tuple(r): j for j, r in enumerate(x1.tolist())}
    for a, b in zip(p0.tolist(), p1.tolist(), strict=True):
        assert plan[idx0[tuple(a)], idx1[tuple(b)]] > 0
    # with replacement some samples repeat (and others are dropped) with overwhelming probability
    assert len(_rows_as_set(p0)) < 50


def test_sinkhorn_matches_pot_at_moderate_reg():
    x0, x1 = _batches(n=40, seed=3)
    cost = sq_cost(x0, x1)
    n = len(x0)
    reg = 2.0
    ours = sinkhorn_log(cost, reg, tol=1e-9)
    ref = ot.sinkhorn(np.full(n, 1 / n), np.full(n, 1 / n), cost.numpy(), reg,
                      method="sinkhorn_log", stopThr=1e-12, numItermax=100000)
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-9 / n, rtol=1e-6)


def test_entropic_small_reg_is_finite_and_near_marginals():
    """reg = 0.02 against costs of order 10-100 underflows plain Sinkhorn; log-domain must hold."""
    x0, x1 = _batches(n=128, seed=4)
    cost = sq_cost(x0, x1)
    assert cost.max() > 50
    with np.errstate(all="ignore"):
        assert not np.isfinite(np.exp(-cost.numpy() / 0.02)).all() or \
            (np.exp(-cost.numpy() / 0.02) == 0).mean() > 0.5  # the naive kernel is mostly zeros
    plan = sinkhorn_log(cost, 0.02, tol=1e-3)
    n = len(x0)
    assert torch.isfinite(plan).all()
    assert (plan.sum(1) * n - 1).abs().max() < 1e-3
    assert (plan.sum(0) * n - 1).abs().max() < 1e-9
    # near the exact OT cost (entropic cost is above it, by little at this reg)
    exact = ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), cost.numpy())
    got = float((plan * cost).sum())
    assert exact - 1e-6 <= got <= exact * 1.05


def test_entropic_tends_to_independent_as_reg_grows():
    x0, x1 = _batches(n=60, seed=5)
    cost = sq_cost(x0, x1)
    n = len(x0)
    uniform = torch.full((n, n), 1 / n**2, dtype=torch.float64)
    tvs = [0.5 * float((sinkhorn_log(cost, reg, tol=1e-4) - uniform).abs().sum())
           for reg in (0.1, 10.0, 1e3, 1e6)]
    assert all(a > b for a, b in zip(tvs, tvs[1:], strict=False))
    assert tvs[-1] < 1e-4


def test_entropic_failure_is_an_error_not_a_fallback():
    x0, x1 = _batches(n=64, seed=6)
    c = make_coupling("entropic-ot", reg=0.02, tol=1e-6, max_iter=2)
    with pytest.raises(CouplingError, match="did not reach"):
        c.pair(x0, x1, torch.Generator().manual_seed(0))


def test_coupling_is_seeded():
    x0, x1 = _batches(n=32, seed=7)
    c = make_coupling("entropic-ot", reg=1.0)
    a = c.pair(x0, x1, torch.Generator().manual_seed(11))
    b = c.pair(x0, x1, torch.Generator().manual_seed(11))
    assert torch.equal(a[1], b[1])


def test_mismatched_batches_rejected():
    with pytest.raises(ValueError, match="differ"):
        make_coupling("exact-ot").pair(torch.zeros(3, 2), torch.zeros(4, 2),
                                       torch.Generator())


def test_ot_lowers_transport_cost_vs_independent():
    x0, x1 = _batches(n=128, seed=8)
    g = torch.Generator().manual_seed(0)

    def cost(pair):
        return float(((pair[0] - pair[1]) ** 2).sum(1).mean())

    ind = cost(make_coupling("independent").pair(x0, x1, g))
    ex = cost(make_coupling("exact-ot").pair(x0, x1, g))
    ent = cost(make_coupling("entropic-ot", reg=0.02).pair(x0, x1, g))
    assert ex < ind and ent < ind
    assert ex <= ent + 1e-6 or math.isclose(ex, ent, rel_tol=0.05)


def test_entropic_pairing_at_tiny_reg_follows_the_plan():
    """Plan entries underflow in linear scale at reg 2e-3; the draw works in log space and must
    still give (near-)OT pairs, never random partners."""
    x0, x1 = _batches(n=256, seed=9)
    g = torch.Generator().manual_seed(0)
    p0, p1 = make_coupling("entropic-ot", reg=2e-3).pair(x0, x1, g)
    n = len(x0)
    exact = ot.emd2(np.full(n, 1 / n), np.full(n, 1 / n), sq_cost(x0, x1).numpy())
    per_pair = ((p0.double() - p1.double()) ** 2).sum(1)
    assert float(per_pair.mean()) <= 1.05 * exact
    # no pair far off its plan: the worst pair costs no more than the worst exact-OT pair + slack
    q0, q1 = make_coupling("exact-ot").pair(x0, x1, g)
    worst_exact = float(((q0.double() - q1.double()) ** 2).sum(1).max())
    assert float(per_pair.max()) <= worst_exact * 1.5


def test_path_coupling_compatibility():
    from fmbench.paths import make_path

    assert make_path("icfm", coupling="entropic-ot", sigma=0.3).coupling_params()["reg"] == \
        pytest.approx(0.18)
    assert "reg" not in make_path("sbcfm", coupling="exact-ot").coupling_params()
    with pytest.raises(ValueError, match="entropic-ot coupling needs"):
        make_path("rf", coupling="entropic-ot")
