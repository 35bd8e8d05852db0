"""The training loop: pair, interpolate, regress — with EMA, warm-up, clipping and exact resume.

One step: draw a source batch x0 and a target batch x1, re-pair them with the path's coupling, draw
t (and ε when the path has c ≢ 0), form (x_t, u_t) and regress the network output on u_t (velocity
objective) or x0 (noise objective) with mean squared error. Step k's batch comes from its own
generator seeded by (case seed, k) and is computed ahead of the step by ``coupling_workers``
processes (:mod:`fmbench.batches`): the result does not depend on their number.

Real runs: an exponential moving average of the weights (``ema_decay``; the EMA weights are what
evaluation uses), linear learning-rate warm-up, gradient-norm clipping, and checkpoints every
``checkpoint_every`` steps holding weights, EMA, optimiser, step, loss curve and the dropout RNG's
state, written atomically. Given a checkpoint file that exists, training resumes from it and
reproduces the uninterrupted run exactly (same step, same batches, same dropout stream). Mixed
precision (bf16 autocast) and ``torch.compile`` apply on CUDA only. Checkpoints load with
``weights_only=True``.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from fmbench.batches import BatchMaker, batches, resolve_workers
from fmbench.paths.couplings import Coupling
from fmbench.paths.schedules import GaussianPath
from fmbench.storage import atomic_write
from fmbench.validation import FieldError, Range, check_ranges, short_repr


class TrainingFailed(RuntimeError):
    """Training produced a non-finite or diverging loss."""


# loading a file can fail for the machine's reasons rather than the file's: such a file is kept
MACHINE_ERRORS = (MemoryError, torch.OutOfMemoryError)


class CorruptCheckpoint(RuntimeError):
    """A checkpoint file exists but cannot be loaded (truncated, from other code); the caller
    sets it aside and trains from scratch with a fresh model."""

    def __init__(self, file: Path, reason: str):
        self.file, self.reason = file, reason
        super().__init__(f"{file}: {reason}")


OPTIMIZERS = ("adam", "adamw")

# the allowed values of TrainConfig's numbers (0 = off where 0 is allowed); TrainConfig checks them
TRAIN_RANGES = {
    "steps": Range(1), "batch_size": Range(1), "lr": Range(0, lo_open=True),
    "weight_decay": Range(0), "grad_clip": Range(0), "warmup_steps": Range(0),
    "ema_decay": Range(0, 1, hi_open=True), "checkpoint_every": Range(0), "log_every": Range(1),
    "divergence_factor": Range(0, lo_open=True), "coupling_workers": Range(-1),
}


@dataclass(frozen=True)
class TrainConfig:
    """The suite's ``[training]`` table; checked when made (FieldError naming the setting)."""

    steps: int = 20000
    batch_size: int = 512
    lr: float = 1e-3
    optimizer: str = "adamw"  # one of OPTIMIZERS
    weight_decay: float = 0.01
    grad_clip: float = 0.0  # 0 = off
    warmup_steps: int = 0
    ema_decay: float = 0.0  # 0 = off; Tong's CIFAR recipe uses 0.9999
    checkpoint_every: int = 0  # 0 = only at the end (if a checkpoint file is given)
    amp: bool = False  # bf16 autocast, CUDA only
    compile: bool = False  # torch.compile, CUDA only
    log_every: int = 100
    divergence_factor: float = 1e6  # loss above factor × first loss counts as divergence
    # processes computing batches (and their couplings) ahead of the step: -1 = the unit's CPU
    # share when the coupling re-pairs, 0 = in process; placement only, never a number
    coupling_workers: int = -1

    PLACEMENT: ClassVar[tuple[str, ...]] = ("coupling_workers",)  # not part of what is trained

    def __post_init__(self) -> None:
        self.check()

    def definition(self) -> dict:
        """The settings that decide the trained model (the model key, --resume's comparison)."""
        return {k: v for k, v in asdict(self).items() if k not in self.PLACEMENT}

    def check(self) -> None:
        check_ranges(self, TRAIN_RANGES)
        if self.optimizer not in OPTIMIZERS:
            raise FieldError("optimizer", f"must be {' or '.join(map(repr, OPTIMIZERS))}, got "
                                          f"{short_repr(self.optimizer)}")


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach(), 1 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def _save_checkpoint(file: Path, state: dict) -> None:
    atomic_write(file, lambda f: torch.save(state, f))


CHECKPOINT_KEYS = ("model", "optimizer", "ema", "torch_rng", "step", "first_loss", "losses",
                   "coupling_time", "train_time")


def _load_checkpoint(file: Path, device: torch.device, steps: int) -> dict:
    try:
        state = torch.load(file, map_location=device, weights_only=True)
    except MACHINE_ERRORS:
        raise
    except Exception as e:  # noqa: BLE001 - truncated or foreign: any failure means unusable
        raise CorruptCheckpoint(file, f"unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or set(CHECKPOINT_KEYS) - set(state):
        raise CorruptCheckpoint(file, "not a training checkpoint of this fmbench")
    why = _bad_fields(state, steps)
    if why:
        raise CorruptCheckpoint(file, why)
    return state


def _bad_fields(state: dict, steps: int) -> str:
    def number(x) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool)

    if not (isinstance(state["step"], int) and 0 <= state["step"] <= steps):
        return f"step {state['step']!r} is not in [0, {steps}]"
    if not (state["first_loss"] is None or number(state["first_loss"])):
        return "first_loss is not a number"
    if not all(isinstance(x, list | tuple) and len(x) == 2 and all(map(number, x))
               for x in state["losses"]):
        return "losses is not a list of (step, loss) pairs"
    running = state.get("running_loss", (0.0, 0))
    if not (isinstance(running, list | tuple) and len(running) == 2 and all(map(number, running))):
        return "running_loss is not a (sum, count) pair"
    if not (number(state["coupling_time"]) and number(state["train_time"])):
        return "its times are not numbers"
    return ""


def train(model, path, coupling, sample_source, sample_target, cfg, seed, on_step=None,
          checkpoint=None, device="cpu") -> dict:
    """Train ``model`` in place (its weights become the EMA weights when EMA is on).

    ``on_step(step, loss, items_per_second)`` is called after every step. Returns metadata: loss
    curve, wall times, steps. Raises :class:`TrainingFailed` on a non-finite or diverging loss.
    Operations that draw from torch's global RNG (dropout) get a per-case stream seeded from
    ``seed``, saved in checkpoints, and the caller's global RNG state is left untouched.
    """
    dev = torch.device(device)
    devices = [dev.index or 0] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed((seed * 1_000_003 + 7919) % 2**63)
        return _train(model, path, coupling, sample_source, sample_target, cfg, seed, on_step,
                      checkpoint, dev)


@dataclass
class _Log:
    """Training bookkeeping carried through checkpoints: steps done, the loss curve (means over
    ``log_every`` steps, with the interval in progress), the first loss (divergence test) and the
    wall times so far."""

    step: int = 0
    first: float | None = None
    losses: list = field(default_factory=list)
    running: float = 0.0
    count: int = 0
    coupling_time: float = 0.0
    elapsed: float = 0.0

    def observe(self, step: int, value: float, cfg: TrainConfig) -> None:
        """Record a step's loss; TrainingFailed when it is non-finite or diverging."""
        if self.first is None:
            self.first = value
        if not math.isfinite(value):
            raise TrainingFailed(f"loss became {value} at step {step}")
        if value > cfg.divergence_factor * max(self.first, 1e-12):
            raise TrainingFailed(f"loss diverged to {value:.3g} at step {step} "
                                 f"(first {self.first:.3g})")
        self.step = step
        self.running += value
        self.count += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            self.losses.append((step, self.running / self.count))
            self.running, self.count = 0.0, 0

    def state(self) -> dict:
        return {"step": self.step, "first_loss": self.first, "losses": self.losses,
                "running_loss": (self.running, self.count),
                "coupling_time": self.coupling_time, "train_time": self.elapsed}

    @classmethod
    def from_state(cls, state: dict) -> _Log:
        running, count = state.get("running_loss", (0.0, 0))
        return cls(state["step"], state["first_loss"], [tuple(x) for x in state["losses"]],
                   running, count, state["coupling_time"], state["train_time"])


def _restore(ckpt: Path, model, opt, ema, device: torch.device, cfg: TrainConfig) -> _Log:
    """Load a checkpoint into model, optimiser, EMA and RNG; CorruptCheckpoint when it cannot."""
    state = _load_checkpoint(ckpt, device, cfg.steps)
    try:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"].cpu())
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise CorruptCheckpoint(ckpt, f"does not fit this model ({e})") from None
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"].cpu())
    return _Log.from_state(state)


def _loss(forward, batch, cfg: TrainConfig, device: torch.device) -> torch.Tensor:
    """The step's regression loss on a prepared batch."""
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.amp and device.type == "cuda"):
        out = forward(batch.xt.to(device), batch.t.to(device))
    return (out.float() - batch.target.to(device)).pow(2).mean()


def _warm_up(opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """Linear learning-rate warm-up over ``warmup_steps``."""
    if cfg.warmup_steps:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, step / cfg.warmup_steps)


def _optimize(loss: torch.Tensor, model: torch.nn.Module, opt: torch.optim.Optimizer,
              ema: torch.nn.Module | None, cfg: TrainConfig) -> None:
    """Backward, optional gradient-norm clipping, the optimiser step and the EMA update."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    if ema is not None:
        ema_update(ema, model, cfg.ema_decay)


def _train(
    model: torch.nn.Module,
    path: GaussianPath,
    coupling: Coupling,
    sample_source: Callable[[int, torch.Generator], torch.Tensor],
    sample_target: Callable[[int, torch.Generator], torch.Tensor],
    cfg: TrainConfig,
    seed: int,
    on_step: Callable[[int, float, float], None] | None = None,
    checkpoint: str | Path | None = None,
    device: torch.device = torch.device("cpu"),
) -> dict:
    cuda = device.type == "cuda"
    model.to(device)
    opt = make_optimizer(model.parameters(), cfg)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 else None
    ckpt = Path(checkpoint) if checkpoint else None
    log = _restore(ckpt, model, opt, ema, device, cfg) if ckpt and ckpt.exists() else _Log()
    maker = BatchMaker(path, coupling, sample_source, sample_target, cfg.batch_size, seed)
    stream = batches(maker, log.step + 1, cfg.steps,
                     resolve_workers(cfg.coupling_workers, coupling))

    def save(elapsed: float) -> None:
        _save_checkpoint(ckpt, {
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "ema": ema.state_dict() if ema is not None else {},
            "torch_rng": torch.get_rng_state(),
            **({"cuda_rng": torch.cuda.get_rng_state()} if cuda else {}),
            **log.state(), "train_time": elapsed})

    forward = torch.compile(model) if (cfg.compile and cuda) else model
    model.train()
    t_start = t_last = time.perf_counter()
    for step, batch in zip(range(log.step + 1, cfg.steps + 1), stream, strict=True):
        _warm_up(opt, cfg, step)
        log.coupling_time += batch.coupling_seconds
        loss = _loss(forward, batch, cfg, device)
        value = loss.item()
        log.observe(step, value, cfg)
        _optimize(loss, model, opt, ema, cfg)
        now = time.perf_counter()
        rate, t_last = cfg.batch_size / max(now - t_last, 1e-9), now
        if ckpt is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save(log.elapsed + (now - t_start))
        if on_step is not None:
            on_step(step, value, rate)
    log.elapsed += time.perf_counter() - t_start
    if ckpt is not None:
        log.step = cfg.steps
        save(log.elapsed)
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    model.eval()
    return {"losses": log.losses, "train_time": log.elapsed,
            "coupling_time": log.coupling_time, "steps": cfg.steps, "ema_decay": cfg.ema_decay}
