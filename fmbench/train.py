"""The training loop for low-dimensional flows: pair, interpolate, regress.

One step: draw a source batch x0 and a target batch x1, re-pair them with the path's coupling, draw
t (and ε when the path has c ≢ 0), form (x_t, u_t) and regress the network output on u_t (velocity
objective) or x0 (noise objective) with mean squared error. All randomness comes from one
``torch.Generator`` seeded by the case seed; the model is initialised under the same seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fmbench.paths.couplings import Coupling
from fmbench.paths.schedules import GaussianPath


class TrainingFailed(RuntimeError):
    """Training produced a non-finite or diverging loss."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 20000
    batch_size: int = 512
    lr: float = 1e-3
    optimizer: str = "adamw"  # adam | adamw
    weight_decay: float = 0.01
    grad_clip: float = 0.0  # 0 = off
    warmup_steps: int = 0
    log_every: int = 100
    divergence_factor: float = 1e6  # loss above factor × first loss counts as divergence

    def check(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train(
    model: torch.nn.Module,
    path: GaussianPath,
    coupling: Coupling,
    sample_source: Callable[[int, torch.Generator], torch.Tensor],
    sample_target: Callable[[int, torch.Generator], torch.Tensor],
    cfg: TrainConfig,
    seed: int,
    on_step: Callable[[int, float], None] | None = None,
) -> dict:
    """Train ``model`` in place. Returns metadata: loss curve, wall times, steps.

    Raises :class:`TrainingFailed` on a non-finite or diverging loss.
    """
    gen = torch.Generator().manual_seed(seed)
    opt = make_optimizer(model.parameters(), cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    )
    losses: list[tuple[int, float]] = []
    running, count, first = 0.0, 0, None
    coupling_time = 0.0
    start = time.perf_counter()
    model.train()
    for step in range(1, cfg.steps + 1):
        x0 = sample_source(cfg.batch_size, gen)
        x1 = sample_target(cfg.batch_size, gen)
        c0 = time.perf_counter()
        x0, x1 = coupling.pair(x0, x1, gen)
        coupling_time += time.perf_counter() - c0
        t = path.sample_t(cfg.batch_size, gen)
        eps = torch.randn(x1.shape, generator=gen) if path.needs_eps else None
        xt, ut = path.interpolate(x0, x1, t, eps)
        target = path.regression_target(x0, ut)
        loss = (model(xt, t.to(xt.dtype)) - target).pow(2).mean()
        value = loss.item()
        if first is None:
            first = value
        if not math.isfinite(value):
            raise TrainingFailed(f"loss became {value} at step {step}")
        if value > cfg.divergence_factor * max(first, 1e-12):
            raise TrainingFailed(f"loss diverged to {value:.3g} at step {step} (first {first:.3g})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        running += value
        count += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            losses.append((step, running / count))
            running, count = 0.0, 0
        if on_step is not None:
            on_step(step, value)
    model.eval()
    return {
        "losses": losses,
        "train_time": time.perf_counter() - start,
        "coupling_time": coupling_time,
        "steps": cfg.steps,
    }
