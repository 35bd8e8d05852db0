import pytest
import torch

from fmbench.unet import PRESETS, UNet, UNetConfig, count_parameters


def test_default_is_tongs_cifar_unet_35_7m():
    """Tong et al.'s CIFAR-10 U-Net (TorchCFM UNetModelWrapper: 128 ch, mult 1,2,2,2, 2 res blocks,
    attention at 16, 64-channel heads, dropout 0.1) has 35,746,307 parameters."""
    assert count_parameters(UNet(3, 32, UNetConfig())) == 35_746_307
    assert PRESETS["cifar-tong"] == UNetConfig()


@pytest.mark.parametrize("preset,shape", [("small", (3, 32, 32)), ("tiny", (1, 28, 28)),
                                          ("tiny", (3, 32, 32))])
def test_shapes_and_time_dependence(preset, shape):
    torch.manual_seed(0)
    m = UNet(shape[0], shape[1], PRESETS[preset])
    for p in m.parameters():  # zero-initialised convs block the time path at init: perturb
        if p.dim() > 1 and not p.any():
            torch.nn.init.normal_(p, std=0.05)
    m.eval()
    x = torch.randn(2, *shape)
    a, b = m(x, torch.tensor([0.1, 0.1])), m(x, torch.tensor([0.9, 0.9]))
    assert a.shape == x.shape
    assert not torch.allclose(a, b)
    assert torch.allclose(m(x, torch.tensor(0.1)), a)


def test_zero_initialised_output():
    m = UNet(3, 32, PRESETS["tiny"])
    assert torch.count_nonzero(m(torch.randn(2, 3, 32, 32), torch.rand(2))) == 0


def test_bad_configs():
    with pytest.raises(ValueError, match="multiple of 32"):
        UNet(3, 32, UNetConfig(channels=48))
    with pytest.raises(ValueError, match="not divisible"):
        UNet(3, 28, UNetConfig())
