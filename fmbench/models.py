"""Networks v_θ(x, t). ``MLP`` for low-dimensional data (time concatenated to the input)."""

from __future__ import annotations

import torch
from torch import nn

from fmbench.registry import Registry

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


# model kinds: name → builder(model config, data shape) → network v(x, t). suite.py binds
# [model] to the kind's config; tasks say which kinds can learn their data.
MODELS: Registry = Registry("model kind")


@MODELS.register("mlp")
def _mlp(cfg, shape: tuple[int, ...]) -> nn.Module:
    return MLP(shape[0], cfg.width, cfg.depth, cfg.activation)


@MODELS.register("unet")
def _unet(cfg, shape: tuple[int, ...]) -> nn.Module:
    from fmbench.unet import UNet

    return UNet(shape[0], (shape[1], shape[2]), cfg.unet)


def build_model(cfg, shape: tuple[int, ...]) -> nn.Module:
    """A new network of the configured kind for data of ``shape`` (without the batch axis)."""
    return MODELS.get(cfg.kind)(cfg, shape)
