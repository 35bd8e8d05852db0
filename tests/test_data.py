import pytest
import torch

from fmbench.data import DATASETS, sample
from fmbench.registry import Registry, UnknownNameError


@pytest.mark.parametrize("name", DATASETS.names())
def test_datasets_are_seeded_2d_and_finite(name):
    a, b, c = sample(name, 500, 0), sample(name, 500, 0), sample(name, 500, 1)
    assert a.shape == (500, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_8gaussians_modes_and_spread():
    x = sample("8gaussians", 8000, 0)
    r = x.norm(dim=1)
    assert abs(float(r.mean()) - 5.0) < 0.1
    # TorchCFM's covariance sqrt(0.1)·I: per-coordinate std 0.1**0.25 around each centre
    ang = torch.atan2(x[:, 1], x[:, 0])
    k = torch.round(ang / (torch.pi / 4)) % 8
    centres = 5 * torch.stack([torch.cos(k * torch.pi / 4), torch.sin(k * torch.pi / 4)], 1)
    assert abs(float((x - centres).std()) - 0.1**0.25) < 0.02


def test_checkerboard_support():
    x = sample("checkerboard", 4000, 0)
    assert x.abs().max() <= 4.0
    # alternate squares of side 2 are empty
    cell = (torch.floor(x[:, 0] / 2) + torch.floor(x[:, 1] / 2)) % 2
    assert cell.unique().numel() == 1


def test_registry_errors():
    reg = Registry("widget")
    reg.register("alpha")(1)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("alpha")(2)
    with pytest.raises(UnknownNameError, match="Did you mean 'alpha'"):
        reg.get("alpah")
