"""FastGAN (Liu et al. 2021): skip-layer excitation, the random-quadrant decoder target, the
margin hinge, the reconstruction distance it says it uses, CLI and exact resume."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import run_cli
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets

from gankit.config import resolve_config
from gankit.data.base import Dataset
from gankit.errors import ConfigError
from gankit.models.fastgan import SLE, FastGAN, quadrant, sle_pairs


def _data(r=32, n=16):
    g = torch.Generator().manual_seed(0)
    return Dataset("tiny32", torch.rand(n, 1, r, r, generator=g) * 2 - 1)


def _build(ds=None, **model):
    cfg = resolve_config("fastgan", {"model": {"width": 4, "latent_dim": 8, **model}})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return FastGAN(cfg, (ds or _data()).describe())


def test_skip_layer_excitation_gates_each_channel_of_the_high_resolution_map():
    torch.manual_seed(0)
    sle = SLE(6, 3)
    lo, hi = torch.randn(2, 6, 4, 4), torch.randn(2, 3, 32, 32)
    out = sle(lo, hi)
    gate = out / hi  # one factor per sample and channel, in (0, 1)
    assert torch.allclose(gate, gate[:, :, :1, :1].expand_as(gate), atol=1e-5)
    assert (gate > 0).all() and (gate < 1).all()
    assert sle_pairs(32, None) == [(4, 32)] and sle_pairs(64, None) == [(4, 32), (8, 64)]
    assert sle_pairs(256, None) == [(4, 64), (8, 128), (16, 256)]  # the paper's factor 16
    m = _build()
    assert list(m.G.sle) == ["4_32"]


def test_quadrants_tile_the_map():
    x = torch.arange(2 * 16, dtype=torch.float).view(2, 1, 4, 4)
    q = torch.tensor([0, 3])
    got = quadrant(x, q)
    assert torch.equal(got[0, 0], x[0, 0, :2, :2]) and torch.equal(got[1, 0], x[1, 0, 2:, 2:])
    full = torch.cat([torch.cat([quadrant(x, torch.full((2,), k)) for k in (0, 1)], -1),
                      torch.cat([quadrant(x, torch.full((2,), k)) for k in (2, 3)], -1)], -2)
    assert torch.equal(full, x)


class _StubD(torch.nn.Module):
    """A discriminator with fixed logits and maps, and decoders that return zeros."""

    def __init__(self, real_logit, fake_logit):
        super().__init__()
        self.r, self.f = real_logit, fake_logit
        self.decode_all = lambda f: torch.zeros(len(f), 1, 16, 16)
        self.decode_part = lambda f: torch.zeros(len(f), 1, 16, 16)

    side = 8

    def forward_features(self, x):
        n = len(x)
        return torch.full((n, 1, 5, 5), self.r), {8: torch.zeros(n, 2, 8, 8),
                                                   16: torch.zeros(n, 2, 16, 16)}

    def forward(self, x):
        return torch.full((len(x), 1, 5, 5), self.f)


def test_margin_hinge_and_the_reconstruction_targets():
    m = _build(diffaugment="")  # no augmentation: exact targets
    real = _data().x[:4]
    fake = torch.zeros(4, 1, 32, 32)
    g = torch.Generator().manual_seed(3)
    _, stats = m.d_losses(_StubD(0.5, -0.2), real, fake, g)
    g2 = torch.Generator().manual_seed(3)
    m_r = 0.8 + 0.2 * torch.rand(4, 1, 5, 5, generator=g2)
    m_f = 0.8 + 0.2 * torch.rand(4, 1, 5, 5, generator=g2)
    adv = F.relu(m_r - 0.5).mean() + F.relu(m_f - 0.2).mean()
    assert float(stats["loss/D/adv"]) == pytest.approx(float(adv), rel=1e-6)
    q = torch.randint(0, 4, (4,), generator=g2)
    t_all = F.interpolate(real, size=16, mode="bilinear", align_corners=False, antialias=True)
    t_part = quadrant(F.interpolate(real, size=32, mode="bilinear", align_corners=False,
                                    antialias=True), q)
    want = t_all.abs().mean() + t_part.abs().mean()  # decoders output 0: L1 = mean |target|
    assert float(stats["loss/D/recon_l1"]) == pytest.approx(float(want), rel=1e-5)
    # logits beyond the margin cost nothing
    _, s2 = m.d_losses(_StubD(2.0, -2.0), real, fake, torch.Generator().manual_seed(3))
    assert float(s2["loss/D/adv"]) == 0.0


def test_the_reconstruction_distance_is_named_and_sizes_are_checked():
    assert "L1" in _build().summary_note()
    m = _build(recon="features", recon_features="random-cnn")
    assert "perceptual" in m.summary_note() and "random-cnn" in m.summary_note()
    a = torch.rand(2, 1, 16, 16, requires_grad=True)
    d = m.recon_distance(a * 2 - 1, torch.zeros(2, 1, 16, 16))
    d.backward()
    assert a.grad.abs().sum() > 0  # differentiable through the frozen extractor
    with pytest.raises(ConfigError, match="no feature extractor 'nope'"):
        _build(recon="features", recon_features="nope")
    cfg = resolve_config("fastgan", {})
    assert not FastGAN.valid_image_sizes(cfg).fits(8, 8)
    assert not FastGAN.valid_image_sizes(cfg).fits(48, 48)
    assert FastGAN.valid_image_sizes(cfg).fits(64, 64)
    o = cfg.optim
    assert (o.lr_g, o.lr_d, tuple(o.betas_g)) == (2e-4, 2e-4, (0.5, 0.999))


def test_cli_trains_and_samples(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "fastgan", "--data", "mnist5k", "--image-size", "32", "--steps", "2",
                   "--batch-size", "4", "--no-progress", "--out", out, *sets("fastgan")) == 0
    assert run_cli("sample", out, "--n", "5", "--truncation", "1.0", "--out",
                   tmp_path / "s.npy") == 0
    assert np.load(tmp_path / "s.npy").shape == (5, 1, 32, 32)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    np.savez(tmp_path / "tiny.npz", x=_data(n=24).x.numpy())
    args = ["fastgan", "--data", str(tmp_path / "tiny.npz"), "--steps", "24", "--batch-size",
            "4", "--no-progress", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.keep_ckpts=10", *sets("fastgan")]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert any("decode_part" in k for k in a)
    assert_identical(a, b)
