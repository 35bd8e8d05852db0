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
