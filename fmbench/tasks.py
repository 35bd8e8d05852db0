"""Task kinds: what a task's data looks like, how it is sampled for training, which fixed inputs
its evaluation uses, where its models run and how its samples are saved.

Two kinds, chosen by the task's target (:func:`kind_of`):

- ``points`` (:class:`PointData`): low-dimensional datasets of :mod:`fmbench.data`. Evaluation
  inputs are ``n_eval`` source points, ``n_eval`` held-out target points and an independent
  second target draw (the W2 floor). Models run on the CPU (a 3×64 MLP is slower on a GPU).
- ``image`` (:class:`ImageData`): image datasets of :mod:`fmbench.image_tasks`. Evaluation inputs
  are ``n_eval`` source noises and the dataset's train and test splits (uint8). Models run on the
  GPU when there is one.

Evaluation inputs are fixed per task by the suite's ``data_seed`` — the same for every path,
solver and training seed (paired comparisons) — and Gaussian source noise is drawn *per sample*
(sample i from its own seed, as EDM's generator does), so the source noises are the same whatever
the evaluation batch, the number of workers or ``n_eval`` (noise i never changes; how the solve's
chunking affects adaptive solvers: :mod:`fmbench.generate`).

Evaluation draws: ``[metrics] eval_draws = R`` gives every case R independent sets of those
inputs (draw r: its own source noise, held-out points and floor draw; for images its own source
noise and its own random subset of the test split for the floor and bits/dim — test splits may
be sorted by class), each fixed by ``data_seed`` and r, so draw r is the same for every path,
solver and training seed and in every run of the suite: seeds and draws are crossed
(:mod:`fmbench.uncertainty`). For 2D tasks draw 0 is the single draw of earlier fmbench
versions. The default R belongs to the task kind
(:attr:`TaskData.default_eval_draws`), chosen from measurement (README "Uncertainty").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from fmbench import data as D
from fmbench.image_tasks import IMAGE_DATASETS, image_sampler, load_split
from fmbench.paths.schedules import GaussianPath
from fmbench.plan import derived_seed
from fmbench.storage import atomic_write, digest

if TYPE_CHECKING:
    from fmbench.generate import Generation
    from fmbench.suite import Task


def draw_parts(data_seed: int, task: str, role: str, draw: int) -> tuple:
    """Seed parts of an evaluation input (draw 0 keeps the parts of the single-draw design)."""
    return (data_seed, task, role) + ((draw,) if draw else ())


def per_sample_normal(n: int, shape: tuple[int, ...], *parts) -> torch.Tensor:
    """n standard-normal draws of ``shape``; draw i comes from its own generator seeded by
    (``parts``, i), so the first k draws never depend on n or on how the set is split."""
    out = torch.empty(n, *shape)
    g = torch.Generator()
    for i in range(n):
        g.manual_seed(derived_seed(*parts, i))
        out[i] = torch.randn(shape, generator=g)
    return out


@dataclass
class PointInputs:
    """Evaluation inputs of a low-dimensional task (fixed per task)."""

    x0: torch.Tensor  # source points to generate from (n_eval, d)
    x1_test: torch.Tensor  # held-out target points (n_eval, d)
    x1_floor: torch.Tensor  # an independent second target draw (n_eval, d)


@dataclass
class ImageInputs:
    """Evaluation inputs of an image task: source noise, and the dataset's splits (uint8)."""

    x0: torch.Tensor  # (n_eval, C, H, W) source noise, on the task's device
    train_images: torch.Tensor
    test_images: torch.Tensor
    target: str  # dataset name and resolved options: the identity of its feature caches
    options: dict
    test_order: torch.Tensor | None = None  # this draw's order of the test split (None: as is)
    draw: int = 0

    def test_subset(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The first n test images in this draw's order, and their indices (None: the whole
        split, in its own order, when n covers it: the same set for every draw)."""
        if self.test_order is None or n >= len(self.test_images):
            return self.test_images[:n], None
        index = self.test_order[:n]
        return self.test_images[index], index


class TaskData:
    """A loaded task: training samplers and evaluation inputs (see the module docstring)."""

    kind: ClassVar[str]
    default_eval_draws: ClassVar[int]  # evaluation draws when the suite says eval_draws = 0
    keeps_trajectories: ClassVar[int] = 0  # trajectories saved per case (for report plots)
    uses_gpu: ClassVar[bool] = False  # trained and evaluated on a GPU when there is one

    def __init__(self, task: Task, shape: tuple[int, ...]):
        self.task, self.shape = task, shape

    def device(self) -> torch.device:
        return torch.device("cuda" if self.uses_gpu and torch.cuda.is_available() else "cpu")

    def source(self, path: GaussianPath):
        """The training source sampler (n, generator) → (n, *shape)."""
        if self.task.gaussian_source:
            scale, shape = path.source_scale, self.shape
            return lambda n, g: scale * torch.randn(n, *shape, generator=g)
        return D.DATASETS.get(self.task.source)

    @classmethod
    def components(cls, task: Task) -> tuple:
        """The data components a model of ``task`` is trained on — this kind's class and the
        registered datasets it samples — whose code defines the model (``plan.training_code``)."""
        return (cls,) if task.gaussian_source else (cls, D.DATASETS.get(task.source))

    def content_digest(self) -> str:
        """Digest of training data read from files ('' where registered code generates the data:
        that code is in the model key). The model cache keys models by the model key and this,
        so two folders whose data roots read the same text but hold other data never share a
        model, while the same data anywhere does."""
        return ""

    @classmethod
    def eval_draws(cls, setting: int) -> int:
        """The number of evaluation draws for the suite's ``eval_draws`` setting."""
        return setting or cls.default_eval_draws

    def generator(self, data_seed: int, role: str, draw: int) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed(*draw_parts(data_seed, self.task.name,
                                                                      role, draw)))

    def source_points(self, n: int, data_seed: int, path: GaussianPath, draw: int = 0
                      ) -> torch.Tensor:
        """The n fixed evaluation source points of a draw (per-sample seeds for a Gaussian
        source)."""
        if self.task.gaussian_source:
            return path.source_scale * per_sample_normal(
                n, self.shape, *draw_parts(data_seed, self.task.name, "source", draw))
        return D.DATASETS.get(self.task.source)(n, self.generator(data_seed, "source", draw))

    def target(self):
        raise NotImplementedError

    def eval_inputs(self, n: int, data_seed: int, path: GaussianPath, draw: int = 0):
        """The evaluation inputs of draw ``draw`` (module docstring)."""
        raise NotImplementedError

    def save_samples(self, stem: Path, generation: Generation, inputs) -> None:
        raise NotImplementedError


class PointData(TaskData):
    kind = "points"
    keeps_trajectories = 64
    default_eval_draws = 5  # README "Uncertainty": CI widths and costs by R

    @classmethod
    def load(cls, task: Task) -> PointData:
        return cls(task, (2,))

    @classmethod
    def components(cls, task: Task) -> tuple:
        return super().components(task) + (D.DATASETS.get(task.target),)

    def target(self):
        return D.DATASETS.get(self.task.target)

    def eval_inputs(self, n: int, data_seed: int, path: GaussianPath, draw: int = 0
                    ) -> PointInputs:
        def sample(role):
            return self.target()(n, self.generator(data_seed, role, draw))

        return PointInputs(self.source_points(n, data_seed, path, draw), sample("test"),
                           sample("floor"))

    def save_samples(self, stem: Path, generation: Generation, inputs: PointInputs) -> None:
        """``<stem>.npz``: up to 2000 samples, the saved trajectories and the held-out points."""
        arrays = {"samples": generation.samples[:2000].numpy(),
                  "trajectories": generation.trajectories.numpy(),
                  "test": inputs.x1_test[:2000].numpy()}
        atomic_write(stem.with_name(stem.name + ".npz"), lambda f: np.savez(f, **arrays))


class ImageData(TaskData):
    kind = "image"
    uses_gpu = True
    default_eval_draws = 3  # R generated sets give FID/KID their evaluation standard error

    def __init__(self, task: Task, train: torch.Tensor, test: torch.Tensor):
        super().__init__(task, tuple(train.shape[1:]))
        self.train_images, self.test_images = train, test
        self._content_digest: str | None = None

    @classmethod
    def load(cls, task: Task) -> ImageData:
        opts = task.opts()
        return cls(task, load_split(task.target, opts, "train").images,
                   load_split(task.target, opts, "test").images)

    @classmethod
    def components(cls, task: Task) -> tuple:
        return super().components(task) + (IMAGE_DATASETS.get(task.target),)

    def content_digest(self) -> str:
        if self._content_digest is None:  # ~0.4 s for CIFAR-10's training split
            x = self.train_images
            self._content_digest = digest(f"{tuple(x.shape)} {x.dtype}".encode()
                                          + x.contiguous().numpy().tobytes())
        return self._content_digest

    def target(self):
        return image_sampler(self.train_images, bool(self.task.opts().get("hflip", True)))

    def eval_inputs(self, n: int, data_seed: int, path: GaussianPath, draw: int = 0
                    ) -> ImageInputs:
        # every draw, draw 0 included, takes a random order: splits may be sorted by class
        order = torch.randperm(len(self.test_images),
                               generator=self.generator(data_seed, "test", draw))
        return ImageInputs(self.source_points(n, data_seed, path, draw).to(self.device()),
                           self.train_images, self.test_images, self.task.target,
                           self.task.opts(), order, draw)

    def save_samples(self, stem: Path, generation: Generation, inputs: ImageInputs) -> None:
        """``<stem>.png``: a grid of the first ``GRID_SAMPLES`` (64) samples."""
        from fmbench.artifacts import save_sample_grid

        save_sample_grid(stem.with_name(stem.name + ".png"), generation.samples)


TASK_KINDS: dict[str, type[TaskData]] = {"points": PointData, "image": ImageData}


def kind_of(target: str) -> type[TaskData]:
    """The task kind of a target dataset name."""
    return ImageData if target in IMAGE_DATASETS else PointData


_LOADED: dict[tuple, TaskData] = {}  # per process: a worker loads each task's data once


def load_task(task: Task) -> TaskData:
    key = (task, tuple(sorted(task.opts().items())))  # resolved roots: same text, other folder
    if key not in _LOADED:
        _LOADED[key] = kind_of(task.target).load(task)
    return _LOADED[key]
