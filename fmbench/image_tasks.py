"""Image tasks: which dataset, its options, training batches and evaluation sets.

A task whose target is an image dataset (``fmbench list datasets`` marks them) takes options in its
``[[task]]`` table: ``root`` (folder, archive or file), ``download`` (CIFAR-10 only), ``channels``
(image folders), ``n_train`` (use only the first n training images: CPU-scale runs) and ``hflip``
(random horizontal flips during training, on by default as in Tong's recipe).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fmbench import image_data as I
from fmbench.registry import Registry


@dataclass(frozen=True)
class ImageDatasetDef:
    loader: Callable[[dict, str], I.ImageSet]
    options: dict[str, tuple[type, object]]  # option → (type, default); default None = required
    description: str


IMAGE_DATASETS: Registry[ImageDatasetDef] = Registry("image dataset")

COMMON = {"n_train": (int, 0), "hflip": (bool, True)}
IMAGE_DATASETS.register("cifar10")(ImageDatasetDef(
    lambda o, split: I.load_cifar10(o["root"], split, o["download"]),
    {"root": (str, None), "download": (bool, False), **COMMON},
    "CIFAR-10 from the official cifar-10-python.tar.gz (or its extracted folder)"))
IMAGE_DATASETS.register("fashion-mnist")(ImageDatasetDef(
    lambda o, split: I.load_fashion_mnist(o["root"], split),
    {"root": (str, I.FASHION_MNIST_ROOT), **COMMON},
    "Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)"))
IMAGE_DATASETS.register("image-folder")(ImageDatasetDef(
    lambda o, split: I.load_image_folder(
        o["root"], split, o["channels"],
        (o["n_train"] or None) if split == "train" else (o.get("n_test") or None)),
    {"root": (str, None), "channels": (int, 3), "n_test": (int, 0), **COMMON},
    "<root>/<split>/<class>/*.png|jpg, as a folder or a .tar(.gz) archive"))
IMAGE_DATASETS.register("npz")(ImageDatasetDef(
    lambda o, split: I.load_npz(o["root"] if split == "train" else o["test"], split),
    {"root": (str, None), "test": (str, None), **COMMON},
    "uint8 image arrays in .npz files (root: train file, test: test file)"))

_CACHE: dict[tuple, I.ImageSet] = {}


def load_split(dataset: str, options: dict, split: str) -> I.ImageSet:
    """The split's images (cached in-process); ``n_train`` trims the training split."""
    key = (dataset, tuple(sorted(options.items())), split)
    if key not in _CACHE:
        ds = IMAGE_DATASETS.get(dataset).loader(options, split)
        n = options.get("n_train") if split == "train" else options.get("n_test")
        if n:
            ds = I.ImageSet(ds.images[:n], None if ds.labels is None else ds.labels[:n],
                            ds.name, split)
        _CACHE[key] = ds
    return _CACHE[key]


def image_sampler(images: torch.Tensor, hflip: bool) -> Callable[[int, torch.Generator],
                                                                  torch.Tensor]:
    """Training batches: uniform random images (with replacement), optional flips, in [−1, 1]."""

    def sample(n: int, g: torch.Generator) -> torch.Tensor:
        idx = torch.randint(0, len(images), (n,), generator=g)
        batch = images[idx]
        if hflip:
            batch = I.random_hflip(batch, g)
        return I.to_model_range(batch)

    return sample
