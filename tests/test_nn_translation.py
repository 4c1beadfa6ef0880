"""pix2pix networks (gankit.nn.unet, gankit.nn.patchgan): skips, test-time dropout, patch size."""

import pytest
import torch
from torch import nn

from gankit.nn.patchgan import PatchDiscriminator, receptive_field
from gankit.nn.unet import GenDropout, UNetGenerator


def _unet(cin, cout, res, **kw):
    torch.manual_seed(0)
    return UNetGenerator(cin, cout, res, width=8, max_width=32, **kw)


@pytest.mark.parametrize("res,cin,cout", [(8, 1, 1), (32, 3, 3), (64, 1, 3), (64, 3, 1)])
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_unet_shape_and_range(res, cin, cout, norm):
    G = _unet(cin, cout, res, norm=norm)
    x = torch.rand(2, cin, res, res) * 2 - 1
    y = G(x)
    assert y.shape == (2, cout, res, res)
    assert y.abs().max() <= 1 and torch.isfinite(y).all()
    y.mean().backward()  # every parameter is on the path to the output
    assert all(p.grad is not None for p in G.parameters())


def test_unet_256_is_the_papers_layer_list():
    # The paper's U-Net-256 at 1/8 width (64 -> 8, 512 -> 64): same layer list, 1/64 the cost.
    G = UNetGenerator(3, 3, 256, width=8, max_width=64)
    enc = [b[0].out_channels for b in G.encoder]
    dec = [b[1].out_channels for b in G.decoder] + [G.to_image[1].out_channels]
    assert enc == [8, 16, 32, 64, 64, 64, 64, 64]  # C64-C128-C256-C512-...-C512
    assert dec == [64, 64, 64, 64, 32, 16, 8, 3]  # CD512 x3 - C512-C256-C128-C64 - out
    assert G.decoder[1][1].in_channels == 128  # [skip, out] concatenated
    has_dropout = [any(isinstance(m, GenDropout) for m in b) for b in G.decoder]
    assert has_dropout == [True, True, True, False, False, False, False]
    # no norm on the first and innermost encoder blocks, a norm on every other one
    normed = [any(isinstance(m, nn.BatchNorm2d) for m in b) for b in G.encoder]
    assert normed == [False, True, True, True, True, True, True, False]
    assert isinstance(G.encoder[1][2], nn.LeakyReLU) and G.encoder[1][2].negative_slope == 0.2
    assert isinstance(G.to_image[-1], nn.Tanh)


@pytest.mark.parametrize("res", [28, 48, 2, 0, 100])
def test_unet_refuses_non_power_of_two(res):
    with pytest.raises(ValueError, match="power of two >= 4"):
        UNetGenerator(3, 3, res)


def test_unet_skip_connections_carry_the_input():
    # Zero the innermost (1x1) encoder activation: without skips the output would then be the
    # same for every input; with them it still depends on the input.
    G = _unet(3, 3, 32).eval()
    calls = []

    def zero(module, inputs, output):
        calls.append(output.shape)
        return torch.zeros_like(output)

    G.encoder[-1].register_forward_hook(zero)
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(2, 1, 3, 32, 32, generator=g) * 2 - 1
    ya, yb = G(a), G(b)
    assert calls == [(1, 32, 1, 1)] * 2  # the hook hit the 1x1 bottleneck
    assert (ya - yb).abs().max() > 1e-2
    # Control: zeroing the skips too leaves nothing of the input, so the check above can fail.
    for block in G.encoder[:-1]:
        block.register_forward_hook(zero)
    assert torch.equal(G(a), G(b))


def test_unet_dropout_at_test_time():
    G = _unet(3, 3, 32).eval()
    assert len(G.dropouts()) == 3  # the innermost three decoder blocks
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(G(x), G(x))  # always=False: eval is deterministic
    g = torch.Generator()
    for d in G.dropouts():
        d.always, d.generator = True, g
    g.manual_seed(5)
    y1 = G(x)
    y2 = G(x)  # the generator has moved on: a new mask
    assert (y1 - y2).abs().max() > 1e-3
    g.manual_seed(5)
    assert torch.equal(G(x), y1)  # same seeded generator, same output
    for d in G.dropouts():
        d.always = False
    assert torch.equal(G(x), G(x))


def test_gen_dropout_mask_and_scale():
    layer = GenDropout(0.25).eval()
    x = torch.ones(4, 1000)
    assert layer(x) is x  # inactive in eval unless ``always``
    layer.always = True
    layer.generator = torch.Generator().manual_seed(3)
    y = layer(x)
    keep = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) >= 0.25
    assert torch.equal(y, keep / 0.75)
    assert abs((y == 0).float().mean().item() - 0.25) < 0.03
    assert len(_unet(3, 3, 32, dropout=0.0).dropouts()) == 0
    with pytest.raises(ValueError):
        GenDropout(1.0)


def test_unet_batch_norm_keeps_no_running_statistics():
    G = _unet(3, 3, 32, norm="batch")
    assert not [n for n, _ in G.named_buffers() if "running" in n]
    assert any(isinstance(m, nn.BatchNorm2d) for m in G.modules())
    # eval mode normalises with the test batch: a sample's output depends on its batch-mates
    G.eval()
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    assert (G(x)[:1] - G(x[:2])[:1]).abs().max() > 1e-4


def test_init_is_dcgan():
    torch.manual_seed(0)
    G = UNetGenerator(3, 3, 16)  # channels 64-128-256-512: 2.3M weights
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.Conv2d)])
    gain = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert abs(w.std().item() - 0.02) < 1e-3 and abs(w.mean().item()) < 1e-3
    assert abs(gain.mean().item() - 1) < 5e-3 and abs(gain.std().item() - 0.02) < 5e-3


def test_receptive_field_values():
    assert [receptive_field(n) for n in (0, 1, 2, 3)] == [1, 16, 34, 70]
    with pytest.raises(ValueError):
        receptive_field(-1)


@pytest.mark.parametrize("n_layers", [0, 1, 2, 3])
def test_patchgan_receptive_field_measured(n_layers):
    # Gradient of one central logit w.r.t. a 128x128 input: its nonzero support is the patch.
    torch.manual_seed(0)
    D = PatchDiscriminator(3, width=8, n_layers=n_layers).double().eval()  # eval: BN is per-pixel
    x = torch.randn(1, 3, 128, 128, dtype=torch.float64, requires_grad=True)
    out = D(x)
    h, w = out.shape[-2:]
    out[0, 0, h // 2, w // 2].backward()
    support = x.grad[0].abs().sum(0) > 0  # [128, 128]
    rows, cols = support.any(1).nonzero(), support.any(0).nonzero()
    assert rows.max() - rows.min() + 1 == receptive_field(n_layers)
    assert cols.max() - cols.min() + 1 == receptive_field(n_layers)
    assert D.receptive_field == receptive_field(n_layers)


def test_patchgan_shapes_layers_and_features():
    torch.manual_seed(0)
    D = PatchDiscriminator(6, width=8)
    x = torch.rand(2, 6, 256, 256) * 2 - 1
    assert D(x).shape == (2, 1, 30, 30)  # the paper's 70x70 PatchGAN on 256x256: 30x30 logits
    convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32, 64, 1]
    assert [c.stride[0] for c in convs] == [2, 2, 2, 1, 1]
    assert [c.kernel_size[0] for c in convs] == [4] * 5
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 3  # none on C64
    assert not isinstance(list(D.modules())[-1], nn.Sigmoid)
    f = D.features(x[:, :, :64, :64])
    assert f.shape == (2, 64 * 7 * 7)
    pix = PatchDiscriminator(3, n_layers=0, norm="instance")
    assert [c.out_channels for c in pix.modules() if isinstance(c, nn.Conv2d)] == [64, 128, 1]
    assert pix(torch.rand(2, 3, 16, 16)).shape == (2, 1, 16, 16)
    assert PatchDiscriminator(3, width=128).body[-3].out_channels == 512  # capped at max_width
    with pytest.raises(ValueError, match="unknown norm"):
        PatchDiscriminator(3, norm="layer")
