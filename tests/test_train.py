"""Training loop: exact resume from checkpoints, EMA, warm-up, weights_only checkpoints."""

from dataclasses import replace

import pytest
import torch

from fmbench.data import DATASETS
from fmbench.models import MLP
from fmbench.paths import make_coupling, make_path
from fmbench.train import TrainConfig, train


def _run(tmp_path, cfg, ckpt=None, stop_at=None, seed=0):
    torch.manual_seed(123)
    model = MLP(2, 16, 2)

    def on_step(step, loss, rate):
        assert rate > 0
        if stop_at is not None and step == stop_at:
            raise KeyboardInterrupt

    meta = train(model, make_path("otcfm"), make_coupling("exact-ot"),
                 lambda n, g: torch.randn(n, 2, generator=g), DATASETS.get("moons"), cfg, seed,
                 on_step, checkpoint=ckpt)
    return model, meta


CFG = TrainConfig(steps=40, batch_size=32, lr=1e-2, ema_decay=0.9, warmup_steps=10,
                  grad_clip=1.0, checkpoint_every=10, log_every=5)


@pytest.mark.parametrize("stop_at", [10, 17])  # right after a checkpoint, and between two
@pytest.mark.parametrize("log_every", [5, 7])  # 7: a checkpoint falls inside a log interval
def test_resume_reproduces_uninterrupted_run(tmp_path, stop_at, log_every):
    cfg = replace(CFG, log_every=log_every)
    ref, ref_meta = _run(tmp_path, cfg, ckpt=tmp_path / "ref.pt")
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, cfg, ckpt=ckpt, stop_at=stop_at)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 10
    resumed, meta = _run(tmp_path, cfg, ckpt=ckpt)
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert meta["losses"] == ref_meta["losses"]


def test_unreadable_checkpoint_is_reported_not_loaded(tmp_path):
    from fmbench.train import CorruptCheckpoint

    ckpt = tmp_path / "c.pt"
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, CFG, ckpt=ckpt, stop_at=12)
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(CorruptCheckpoint, match="unreadable"):
        _run(tmp_path, CFG, ckpt=ckpt)
    torch.save({"step": 3}, ckpt)
    with pytest.raises(CorruptCheckpoint, match="not a training checkpoint"):
        _run(tmp_path, CFG, ckpt=ckpt)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, CFG, ckpt=tmp_path / "good.pt", stop_at=12)
    good = torch.load(tmp_path / "good.pt", weights_only=True)
    for key, bad in (("step", 10**9), ("running_loss", "x"), ("losses", [[1]])):
        torch.save({**good, key: bad}, ckpt)
        with pytest.raises(CorruptCheckpoint, match=key):
            _run(tmp_path, CFG, ckpt=ckpt)


class DropoutMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = MLP(2, 16, 2)
        self.drop = torch.nn.Dropout(0.3)

    def forward(self, x, t):
        return self.drop(self.net(x, t))


def test_resume_is_exact_with_dropout(tmp_path):
    """Dropout draws from torch's global RNG: it is seeded per case and saved in checkpoints."""
    cfg = TrainConfig(steps=8, batch_size=16, checkpoint_every=4)

    def run(ckpt, stop_at=None):
        torch.manual_seed(5)
        m = DropoutMLP()

        def on_step(step, loss, rate):
            if step == stop_at:
                raise KeyboardInterrupt

        torch.manual_seed(999)  # whatever the caller's global state, the result is the same
        train(m, make_path("icfm"), make_coupling("independent"),
              lambda n, g: torch.randn(n, 2, generator=g), DATASETS.get("moons"), cfg, 0,
              on_step, checkpoint=ckpt)
        return m

    ref = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", stop_at=6)
    resumed = run(tmp_path / "b.pt")
    for a, b in zip(ref.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_ema_weights_are_the_moving_average_of_the_same_training():
    """The same path, seed and data without EMA give the raw weights w_k of every step; the
    model trained with EMA must come back with e_K, e_k = d·e_{k−1} + (1 − d)·w_k, e_0 = w_0
    (fails if EMA is dropped, applied to other weights, or returned raw)."""
    decay, steps = 0.9, 25

    def fit(cfg, record=None):
        torch.manual_seed(123)
        model = MLP(2, 16, 2)
        if record is not None:
            record.append({k: v.clone() for k, v in model.state_dict().items()})
        meta = train(model, make_path("icfm"), make_coupling("independent"),
                     lambda n, g: torch.randn(n, 2, generator=g), DATASETS.get("moons"), cfg, 0,
                     None if record is None else lambda *a: record.append(
                         {k: v.clone() for k, v in model.state_dict().items()}))
        return model, meta

    raw_steps: list[dict] = []
    raw, _ = fit(TrainConfig(steps=steps, batch_size=32, lr=1e-2), raw_steps)
    ema_model, meta = fit(TrainConfig(steps=steps, batch_size=32, lr=1e-2, ema_decay=decay))
    assert meta["ema_decay"] == decay and len(raw_steps) == steps + 1
    expected = dict(raw_steps[0])
    for w in raw_steps[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * w[k] for k in w}
    for k, v in ema_model.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=1e-5, atol=1e-6)
    assert any(not torch.allclose(v, raw.state_dict()[k])
               for k, v in ema_model.state_dict().items())


def test_warmup_ramps_learning_rate():
    seen = []
    model = MLP(2, 8, 1)
    cfg = TrainConfig(steps=6, batch_size=8, lr=0.1, warmup_steps=4)
    import fmbench.train as T

    real = T.make_optimizer

    def spy(params, c):
        opt = real(params, c)
        orig = opt.step

        def step(*a, **k):
            seen.append(opt.param_groups[0]["lr"])
            return orig(*a, **k)

        opt.step = step
        return opt

    T.make_optimizer = spy
    try:
        train(model, make_path("icfm"), make_coupling("independent"),
              lambda n, g: torch.randn(n, 2, generator=g), DATASETS.get("moons"), cfg, 0)
    finally:
        T.make_optimizer = real
    assert seen == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


@pytest.mark.parametrize("path_name", ["otcfm", "sbcfm"])
def test_coupling_workers_do_not_change_the_model(path_name):
    """Batches are a function of (seed, step): 0, 1 or 2 coupling worker processes train the same
    network bit for bit (exact and entropic couplings, with and without ε)."""
    path = make_path(path_name, sigma=0.1)
    coupling = make_coupling(path.coupling, **path.coupling_params())
    states = []
    for workers in (0, 1, 2):
        torch.manual_seed(5)
        model = MLP(2, 16, 2)
        cfg = TrainConfig(steps=12, batch_size=64, coupling_workers=workers)
        meta = train(model, path, coupling, lambda n, g: torch.randn(n, 2, generator=g),
                     DATASETS.get("8gaussians"), cfg, seed=3)
        assert meta["coupling_time"] > 0
        states.append(model.state_dict())
    for other in states[1:]:
        for k in states[0]:
            assert torch.equal(states[0][k], other[k]), k


def test_batches_are_computed_in_worker_processes():
    """With workers the batches are made elsewhere (each sample carries the pid that drew it)."""
    import os

    from fmbench.batches import BatchMaker, batches, resolve_workers
    from fmbench.paths.couplings import IndependentCoupling

    def pid_sampler(n, g):
        return torch.full((n, 2), float(os.getpid()), dtype=torch.float64)

    maker = BatchMaker(make_path("icfm", sigma=0.0), IndependentCoupling(), pid_sampler,
                       pid_sampler, 4, seed=0)
    here = {float(b.xt[0, 0]) for b in batches(maker, 1, 6, workers=0)}
    away = {float(b.xt[0, 0]) for b in batches(maker, 1, 6, workers=2)}
    assert here == {float(os.getpid())}
    assert float(os.getpid()) not in away and 1 <= len(away) <= 2
    # the rule: independent coupling stays in process, re-pairing couplings get workers
    assert resolve_workers(-1, IndependentCoupling()) == 0
    assert resolve_workers(-1, make_coupling("exact-ot")) >= 1
    assert resolve_workers(0, make_coupling("exact-ot")) == 0


def test_placement_settings_do_not_change_the_model_key():
    import tomllib

    from fmbench.plan import cases
    from fmbench.suite import parse_suite

    def loads_suite(text):
        return parse_suite(tomllib.loads(text))

    text = '[suite]\nname = "k"\n[[task]]\ntarget = "moons"\n[[path]]\nname = "otcfm"\n' \
           '[[solver]]\nname = "euler"\nsteps = 2\n[training]\nsteps = 5\n'

    a = cases(loads_suite(text))[0].model_key
    b = cases(loads_suite(text + "coupling_workers = 2\n"))[0].model_key
    c = cases(loads_suite(text.replace("steps = 5", "steps = 6")))[0].model_key
    assert a == b != c
