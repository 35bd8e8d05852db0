"""Networks v_θ(x, t) and the model kinds a suite's ``[model]`` table chooses from.

``MLP`` for low-dimensional data (time concatenated to the input); the U-Net for images lives in
:mod:`fmbench.unet`. Each kind in :data:`MODELS` owns its settings dataclass, which checks itself
(:class:`~fmbench.validation.FieldError` naming the setting); suite.py binds ``[model]`` to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fmbench.registry import Registry
from fmbench.unet import PRESETS as UNET_PRESETS
from fmbench.unet import UNet, UNetConfig
from fmbench.validation import FieldError, Range, check_ranges, unknown_name

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation")
for _name, _cls in {
    "selu": nn.SELU, "relu": nn.ReLU, "silu": nn.SiLU, "elu": nn.ELU, "tanh": nn.Tanh,
    "gelu": nn.GELU, "softplus": nn.Softplus,
}.items():
    ACTIVATIONS.register(_name)(_cls)


class MLP(nn.Module):
    """``depth`` hidden layers of ``width`` units; input (x, t), output shaped like x.

    depth=3, width=64, activation="selu" is TorchCFM's 2D network (Tong et al. 2024).
    """

    def __init__(self, dim: int, width: int = 64, depth: int = 3, activation: str = "selu"):
        super().__init__()
        act = ACTIVATIONS.get(activation)
        layers: list[nn.Module] = [nn.Linear(dim + 1, width), act()]
        for _ in range(depth - 1):
            layers += [nn.Linear(width, width), act()]
        layers.append(nn.Linear(width, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x: (n, dim); t: scalar or (n,)."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        return self.net(torch.cat([x, t[:, None]], 1))


MLP_RANGES = {"width": Range(1), "depth": Range(1)}


@dataclass(frozen=True)
class MLPConfig:
    """``[model]`` with ``kind = "mlp"``; checked when made (FieldError naming the setting)."""

    width: int = 64
    depth: int = 3  # hidden layers
    activation: str = "selu"  # a name in ACTIVATIONS

    def __post_init__(self) -> None:
        check_ranges(self, MLP_RANGES)
        if not isinstance(self.activation, str) or self.activation not in ACTIVATIONS:
            raise FieldError("activation", unknown_name(ACTIVATIONS, str(self.activation)))


@dataclass(frozen=True)
class ModelKind:
    """A model kind: its settings dataclass (all fields with defaults; it checks its values),
    named starting points for them (``[model] preset = …``), and the network builder
    ``build(settings, data shape without the batch axis) → v(x, t)``."""

    config: type
    build: Callable[[Any, tuple[int, ...]], nn.Module]
    presets: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    data: tuple[str, ...] = ("points",)  # the kinds of task data it can model (TaskData.kind)
    # a model read from a file instead of trained: load(settings, data shape, device) → v(x, t)
    # in eval mode; None: trained by fmbench (and kept in the model cache)
    load: Callable[[Any, tuple[int, ...], Any], nn.Module] | None = None
    # settings completed from the files they name when the suite is read: prepare(settings, the
    # suite's folder) → settings (a FieldError names the setting)
    prepare: Callable[[Any, Any], Any] | None = None


# model kinds: suite.py binds [model] to the kind's config and checks that the kind models each
# task's kind of data
MODELS: Registry[ModelKind] = Registry("model kind")


def _mlp(cfg: MLPConfig, shape: tuple[int, ...]) -> nn.Module:
    return MLP(shape[0], cfg.width, cfg.depth, cfg.activation)


def _unet(cfg: UNetConfig, shape: tuple[int, ...]) -> nn.Module:
    return UNet(shape[0], (shape[1], shape[2]), cfg)


MODELS.register("mlp")(ModelKind(MLPConfig, _mlp,
                                 description="MLP on (x, t) for low-dimensional data"))
MODELS.register("unet")(ModelKind(UNetConfig, _unet, UNET_PRESETS,
                                  description="ADM-style U-Net for images", data=("image",)))

DEFAULT_KIND = "mlp"


@dataclass(frozen=True)
class ModelConfig:
    """The suite's model: a kind and that kind's settings (its config dataclass; None = its
    defaults). ``dataclasses.asdict`` of it is JSON (it is hashed into model keys)."""

    kind: str = DEFAULT_KIND
    options: Any = None

    def __post_init__(self) -> None:
        cls = MODELS.get(self.kind).config
        if self.options is None:
            object.__setattr__(self, "options", cls())
        elif not isinstance(self.options, cls):
            raise TypeError(f"{self.kind} models take {cls.__name__} options, got "
                            f"{type(self.options).__name__}")


def build_model(cfg: ModelConfig, shape: tuple[int, ...]) -> nn.Module:
    """A new network of the configured kind for data of ``shape`` (without the batch axis)."""
    return MODELS.get(cfg.kind).build(cfg.options, shape)


import fmbench.checkpoints  # noqa: E402,F401  (registers the checkpoint and torchcfm-unet kinds)
