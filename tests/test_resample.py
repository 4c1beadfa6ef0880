"""Fused resampling convolutions (gankit.nn.resample) equal the naive layers they replace."""

import pytest
import torch
import torch.nn.functional as F

from gankit.nn.resample import ConvPool2d, UpConv2d


@pytest.mark.parametrize("size", [4, 7, 14, 16])
def test_upconv_is_upsample_then_conv(size):
    torch.manual_seed(0)
    layer = UpConv2d(3, 5).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    naive = F.conv2d(F.interpolate(x, scale_factor=2.0, mode="nearest"), layer.weight,
                     layer.bias, padding=1)
    out = layer(x)
    assert out.shape == (2, 5, 2 * size, 2 * size)
    torch.testing.assert_close(out, naive, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("size", [4, 8, 14, 28])
def test_convpool_is_conv_then_avgpool(size):
    torch.manual_seed(1)
    layer = ConvPool2d(4, 6).double()
    x = torch.randn(3, 4, size, size, dtype=torch.float64)
    naive = F.avg_pool2d(F.conv2d(x, layer.weight, layer.bias, padding=1), 2)
    torch.testing.assert_close(layer(x), naive, rtol=1e-12, atol=1e-12)


def test_fused_layers_keep_3x3_parameters_gradients_and_spectral_norm():
    torch.manual_seed(2)
    layer = torch.nn.utils.parametrizations.spectral_norm(ConvPool2d(2, 3))
    assert layer.parametrizations.weight.original.shape == (3, 2, 3, 3)
    x = torch.randn(4, 2, 8, 8)
    layer(x).square().mean().backward()
    g = layer.parametrizations.weight.original.grad
    assert g is not None and g.shape == (3, 2, 3, 3) and g.abs().sum() > 0
    up = UpConv2d(2, 3)
    assert set(up.state_dict()) == {"weight", "bias"} and up.weight.shape == (3, 2, 3, 3)
