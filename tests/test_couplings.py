import math

import numpy as np
import ot
import pytest
import torch

from fmbench.data import sample
from fmbench.paths import CouplingError, make_coupling
from fmbench.paths.couplings import entropic_plan, sinkhorn_log, sq_cost


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


@pytest.mark.parametrize("name,kw", [("exact-ot", {}),
                                     ("entropic-ot", {"reg": 0.02, "replace": False}),
                                     ("entropic-ot", {"reg": 5.0, "replace": False}),
                                     ("independent", {})])
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


# --- the warm-started sparse entropic solver -----------------------------------------------------

def _uniform(n):
    return np.full(n, 1 / n)


@pytest.mark.parametrize("reg", [0.5, 2.0])
def test_entropic_plan_equals_pot_at_moderate_reg(reg):
    """POT's log-domain Sinkhorn run to 1e-12 is the reference; our plan must agree entrywise."""
    x0, x1 = _batches(n=80, seed=13)
    cost = sq_cost(x0, x1)
    n = len(x0)
    ref = ot.sinkhorn(_uniform(n), _uniform(n), cost.numpy(), reg, method="sinkhorn_log",
                      stopThr=1e-13, numItermax=200_000)
    got = entropic_plan(cost, reg, tol=1e-8)
    assert got.iterations > 0  # the sparse path, not the dense fall-back
    np.testing.assert_allclose(torch.exp(got.dense_log()).numpy(), ref, atol=1e-8 / n, rtol=1e-6)


@pytest.mark.parametrize("tgt,n,method", [("8gaussians", 64, "newton"),
                                          ("scurve", 96, "sinkhorn")])
def test_entropic_plan_small_reg_equals_dense_eps_scaling(tgt, n, method):
    """At SB-CFM's reg 0.02 POT's Sinkhorn fails (underflow); the dense log-domain ε-scaling is
    the independent reference. Both to tolerance 1e-4: the same plan. The 8-Gaussians batch has
    weakly linked clusters where Sinkhorn crawls and Newton finishes."""
    x0, x1 = _batches(n=n, seed=14, tgt=tgt)
    cost = sq_cost(x0, x1)
    ref = sinkhorn_log(cost, 0.02, tol=1e-4, max_iter=100_000)
    got = entropic_plan(cost, 0.02, tol=1e-4)
    assert (got.iterations < 0) if method == "newton" else (got.iterations > 0)
    assert got.iterations != -1  # not the dense fall-back
    plan = torch.exp(got.dense_log())
    assert 0.5 * float((plan - ref).abs().sum()) < 3e-4
    assert (plan.sum(1) * n - 1).abs().max() < 1e-4
    assert (plan.sum(0) * n - 1).abs().max() < 1e-4
    # the support holds all but a negligible part of the mass, and the draw uses it
    on = torch.zeros_like(plan, dtype=torch.bool)
    on[got.rows, got.cols] = True
    assert float(plan[~on].sum()) <= got.off_support < 1e-6
    dense = got.dense_log()[got.rows, got.cols]
    np.testing.assert_allclose(got.log_values.numpy(), dense.numpy())


def test_entropic_plan_newton_reaches_tight_tolerance():
    x0, x1 = _batches(n=96, seed=14, src="moons")
    got = entropic_plan(sq_cost(x0, x1), 0.02, tol=1e-10)
    plan = torch.exp(got.dense_log())
    assert (plan.sum(1) * 96 - 1).abs().max() < 1e-10
    assert (plan.sum(0) * 96 - 1).abs().max() < 1e-10


def test_entropic_plan_meets_tol_at_batch_512():
    x0, x1 = _batches(n=512, seed=15, src="moons")
    cost = sq_cost(x0, x1)
    got = entropic_plan(cost, 0.02, tol=1e-2)
    plan = torch.exp(got.dense_log())
    assert (plan.sum(1) * 512 - 1).abs().max() < 1e-2
    assert (plan.sum(0) * 512 - 1).abs().max() < 1e-2
    exact = ot.emd2(_uniform(512), _uniform(512), cost.numpy())
    assert exact - 1e-9 <= float((plan * cost).sum()) <= exact + 0.02 * math.log(512**2)


def test_entropic_plan_falls_back_when_the_check_fails(monkeypatch):
    """A support too narrow to hold the plan must be caught by the off-support bound and the plan
    recomputed densely: still the right plan, never a silently truncated one."""
    import fmbench.paths.couplings as C

    x0, x1 = _batches(n=64, seed=16, tgt="scurve")
    cost = sq_cost(x0, x1)
    ref = sinkhorn_log(cost, 0.02, tol=1e-5)
    monkeypatch.setattr(C, "SUPPORT_K", 0.5)
    got = C.entropic_plan(cost, 0.02, tol=1e-5)
    assert got.iterations == -1  # the dense fall-back
    np.testing.assert_allclose(torch.exp(got.dense_log()).numpy(), ref.numpy(), atol=1e-12)


def test_entropic_pairs_follow_the_plan():
    """Pairs drawn with replacement (SB-CFM's default) have the plan's frequencies: a chi-square
    test over many batches, the plan as the null (p-value above 1e-3)."""
    from scipy.stats import chisquare

    x0, x1 = _batches(n=6, seed=17)
    c = make_coupling("entropic-ot", reg=2.0)
    assert c.replace
    plan = c.plan(x0, x1).numpy()
    g = torch.Generator().manual_seed(0)
    counts = np.zeros((6, 6))
    idx0 = {tuple(r): i for i, r in enumerate(x0.tolist())}
    idx1 = {tuple(r): j for j, r in enumerate(x1.tolist())}
    reps = 1500
    for _ in range(reps):
        p0, p1 = c.pair(x0, x1, g)
        for a, b in zip(p0.tolist(), p1.tolist(), strict=True):
            counts[idx0[tuple(a)], idx1[tuple(b)]] += 1
    expected = plan.reshape(-1) / plan.sum() * counts.sum()
    keep = expected > 5
    assert keep.sum() >= 12  # a spread plan, not a permutation
    obs, exp_ = counts.reshape(-1)[keep], expected[keep]
    assert chisquare(obs, exp_ * obs.sum() / exp_.sum()).pvalue > 1e-3
    # the same draw from a plan that is NOT this one is rejected (the test has power)
    wrong = np.roll(exp_, 1)
    assert chisquare(obs, wrong * obs.sum() / wrong.sum()).pvalue < 1e-6


def test_sbcfm_path_draws_from_its_plan_by_default():
    from fmbench.paths import make_path

    p = make_path("sbcfm", sigma=0.1)
    assert p.replace and make_coupling(p.coupling, **p.coupling_params()).replace
    assert not make_path("otcfm").replace  # exact OT: the permutation is the plan
    assert not make_path("sbcfm", replace=False).replace
