"""Training batches: drawn, paired by the coupling and interpolated, one per step, ahead of the step.

A minibatch coupling does not depend on the model, so step k's batch — source and target draws,
their pairing, the times t and the noise ε, the regression input and target — is a pure function
of (seed, k): :func:`make_batch` draws it from its own generator, seeded from the case seed and the
step. That makes a batch the same whoever computes it and whenever, so batches can be computed
ahead of the step by worker processes (torch's DataLoader, ``coupling_workers`` of them) while the
network trains on earlier ones: the trained model is bit-for-bit the same with 0, 1 or k workers,
and a resumed run draws exactly the batches the uninterrupted run would have drawn.

With k workers an OT-CFM step costs about max(rest of the step, coupling / k) instead of their sum.
The coupling's time is measured where it runs and summed (``coupling_time``: seconds of coupling
work, on or off the critical path).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from fmbench.paths.couplings import Coupling, IndependentCoupling
from fmbench.paths.schedules import GaussianPath
from fmbench.storage import digest

Sampler = Callable[[int, torch.Generator], torch.Tensor]
PREFETCH = 4  # batches each worker computes ahead


@dataclass(frozen=True)
class Batch:
    """One step's regression problem: network input (xt, t) and target, plus how long its
    coupling took (seconds)."""

    xt: torch.Tensor
    t: torch.Tensor
    target: torch.Tensor
    coupling_seconds: float


@dataclass(frozen=True)
class BatchMaker:
    """Everything a batch depends on; ``maker(step)`` is step ``step``'s :class:`Batch`."""

    path: GaussianPath
    coupling: Coupling
    sample_source: Sampler
    sample_target: Sampler
    batch_size: int
    seed: int

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(int(digest([self.seed, "batch", step], 8), 16))

    def __call__(self, step: int) -> Batch:
        gen = self.generator(step)
        n = self.batch_size
        x0 = self.sample_source(n, gen)
        x1 = self.sample_target(n, gen)
        c0 = time.perf_counter()
        x0, x1 = self.coupling.pair(x0, x1, gen)
        seconds = time.perf_counter() - c0
        t = self.path.sample_t(n, gen)
        eps = torch.randn(x1.shape, generator=gen) if self.path.needs_eps else None
        xt, ut = self.path.interpolate(x0, x1, t, eps)
        return Batch(xt, t.to(xt.dtype), self.path.regression_target(x0, ut), seconds)


class _Steps(torch.utils.data.Dataset):
    def __init__(self, maker: BatchMaker, first: int, last: int):
        self.maker, self.first, self.last = maker, first, last

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __getitem__(self, i: int) -> Batch:
        return self.maker(self.first + i)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # a coupling worker is one core's worth of work


def resolve_workers(setting: int, coupling: Coupling) -> int:
    """Coupling worker processes for a ``coupling_workers`` setting: −1 (auto) gives the unit's
    CPU share (its torch threads) when the coupling re-pairs batches, none for the independent
    coupling (nothing to take off the critical path; a worker would only add transfer cost);
    0 computes batches in the training process. Without ``fork`` (macOS, Windows), in process."""
    if setting == 0 or "fork" not in mp.get_all_start_methods():
        return 0
    if setting < 0:
        return 0 if isinstance(coupling, IndependentCoupling) else max(1, torch.get_num_threads())
    return setting


def batches(maker: BatchMaker, first: int, last: int, workers: int) -> Iterator[Batch]:
    """Steps ``first`` … ``last``'s batches in order, computed ahead by ``workers`` processes
    (0: in this process, on demand)."""
    if workers == 0:
        return (maker(step) for step in range(first, last + 1))
    loader = torch.utils.data.DataLoader(
        _Steps(maker, first, last), batch_size=None, shuffle=False, num_workers=workers,
        prefetch_factor=PREFETCH, worker_init_fn=_one_thread,
        multiprocessing_context=mp.get_context("fork"))
    return iter(loader)
