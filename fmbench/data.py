"""Low-dimensional (2D) datasets, seeded through a ``torch.Generator``.

Each dataset is a function ``(n, generator) -> (n, 2) float32 tensor`` drawing i.i.d. samples from a
fixed distribution, so "splits" are independent draws under different seeds: training batches come
from the training generator, the held-out test set and the W2 floor set from fixed evaluation seeds
(see ``runner``). Definitions follow the papers' code where it exists:

- ``gaussian``: N(0, I) (the usual source).
- ``8gaussians``: TorchCFM's; centres 5·(cos kπ/4, sin kπ/4), each with covariance sqrt(0.1)·I.
- ``moons``: scikit-learn ``make_moons(noise=0.2)``, then 3x − 1 (TorchCFM's scaling).
- ``scurve``: scikit-learn ``make_s_curve(noise=0.05)``, coordinates (x, z), times 1.5.
- ``checkerboard``: FFJORD/Lipman's 4×4-square checkerboard on [−4, 4]².
- ``swissroll``: scikit-learn ``make_swiss_roll(noise=1.0)``, coordinates (x, z), divided by 5 (FFJORD).
- ``circles``: scikit-learn ``make_circles(factor=0.5, noise=0.08)`` times 3 (FFJORD).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from sklearn import datasets as skd

from fmbench.registry import Registry

Sampler = Callable[[int, torch.Generator], torch.Tensor]
DATASETS: Registry[Sampler] = Registry("dataset")


def _np_seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**31 - 1, (1,), generator=generator))


def _f32(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float32)


@DATASETS.register("gaussian")
def gaussian(n: int, generator: torch.Generator) -> torch.Tensor:
    """Standard normal N(0, I) in 2D (the usual source)."""
    return torch.randn(n, 2, generator=generator)


@DATASETS.register("8gaussians")
def eight_gaussians(n: int, generator: torch.Generator) -> torch.Tensor:
    """Eight Gaussians (std 0.1^0.25 ≈ 0.56) centred on a circle of radius 5 (Tong et al.)."""
    k = torch.randint(0, 8, (n,), generator=generator).float()
    centres = 5.0 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1)
    return centres + 0.1**0.25 * torch.randn(n, 2, generator=generator)


@DATASETS.register("moons")
def moons(n: int, generator: torch.Generator) -> torch.Tensor:
    """scikit-learn's two moons, noise 0.2, scaled by 3 and shifted by −1 (Tong et al.)."""
    x, _ = skd.make_moons(n, noise=0.2, random_state=_np_seed(generator))
    return _f32(x * 3 - 1)


@DATASETS.register("scurve")
def scurve(n: int, generator: torch.Generator) -> torch.Tensor:
    """scikit-learn's S-curve (noise 0.05), its (x, z) coordinates scaled by 1.5."""
    x, _ = skd.make_s_curve(n, noise=0.05, random_state=_np_seed(generator))
    return _f32(x[:, [0, 2]] * 1.5)


@DATASETS.register("checkerboard")
def checkerboard(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform on the dark squares of a 4×4 checkerboard over [−4, 4]²."""
    x1 = torch.rand(n, generator=generator) * 4 - 2
    x2 = torch.rand(n, generator=generator) - torch.randint(0, 2, (n,), generator=generator) * 2.0
    x2 = x2 + torch.floor(x1) % 2
    return torch.stack([x1, x2], 1) * 2


@DATASETS.register("swissroll")
def swissroll(n: int, generator: torch.Generator) -> torch.Tensor:
    """scikit-learn's Swiss roll (noise 1), its (x, z) coordinates divided by 5."""
    x, _ = skd.make_swiss_roll(n, noise=1.0, random_state=_np_seed(generator))
    return _f32(x[:, [0, 2]] / 5.0)


@DATASETS.register("circles")
def circles(n: int, generator: torch.Generator) -> torch.Tensor:
    """scikit-learn's two concentric circles (factor 0.5, noise 0.08), scaled by 3."""
    x, _ = skd.make_circles(n, factor=0.5, noise=0.08, random_state=_np_seed(generator))
    return _f32(x * 3)


def sample(name: str, n: int, seed: int | torch.Generator) -> torch.Tensor:
    """Draw n samples of dataset ``name`` with a seed or generator."""
    g = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))
    return DATASETS.get(name)(n, g)
