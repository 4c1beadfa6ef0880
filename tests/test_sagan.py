"""SAGAN (Zhang et al. 2019): the attention block's formula, conditional BN, the projection
discriminator, spectral norm in both networks, the paper's defaults, CLI and exact resume."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_tiny_images
from helpers import run_cli
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets

import gankit
from gankit.config import resolve_config
from gankit.errors import ConfigError
from gankit.models.sagan import SAGAN, SAGANDiscriminator, attention_sizes
from gankit.nn.attention import SelfAttention2d
from gankit.nn.cbn import ConditionalBatchNorm2d


def test_attention_is_the_papers_formula_and_starts_as_the_identity():
    torch.manual_seed(0)
    a = SelfAttention2d(16)
    x = torch.randn(2, 16, 5, 6)
    assert torch.equal(a(x), x)  # gamma = 0 at initialisation
    with torch.no_grad():
        a.gamma.fill_(0.7)
    f = a.f(x).flatten(2)  # [N, C/8, HW] keys
    g = a.g(x).flatten(2)  # queries
    h = a.h(x).flatten(2)  # values
    s = torch.einsum("nci,ncj->nji", f, g)  # s[j, i] = f(x_i)^T g(x_j)
    beta = s.softmax(-1)  # over i, for each output position j
    o = torch.einsum("nji,nci->ncj", beta, h).reshape(2, -1, 5, 6)
    assert torch.allclose(a(x), x + 0.7 * a.v(o), atol=1e-5)
    assert torch.allclose(a.attention(x), beta, atol=1e-6)
    assert torch.allclose(beta.sum(-1), torch.ones(2, 30))


def test_attention_reaches_across_the_whole_map():
    """One output position depends on a far corner, which a 3x3 convolution cannot see."""
    torch.manual_seed(0)
    a = SelfAttention2d(8)
    with torch.no_grad():
        a.gamma.fill_(1.0)
    x = torch.randn(1, 8, 9, 9, requires_grad=True)
    a(x)[0, :, 0, 0].sum().backward()
    assert x.grad[0, :, 8, 8].abs().sum() > 0


def test_conditional_bn_starts_as_batch_norm_and_learns_a_gain_and_bias_per_class():
    torch.manual_seed(0)
    cbn = ConditionalBatchNorm2d(3, 4)
    x = torch.randn(8, 3, 4, 4)
    c = F.one_hot(torch.arange(8) % 4, 4).float()
    plain = F.batch_norm(x, None, None, training=True)
    assert torch.allclose(cbn(x, c), plain, atol=1e-5)
    with torch.no_grad():
        cbn.gain.weight.copy_(torch.randn(3, 4))
        cbn.bias.weight.copy_(torch.randn(3, 4))
    y = cbn(x, c)
    for i in range(8):
        k = i % 4
        want = plain[i] * (1 + cbn.gain.weight[:, k])[:, None, None] \
            + cbn.bias.weight[:, k][:, None, None]
        assert torch.allclose(y[i], want, atol=1e-5)


def test_projection_discriminator_adds_the_class_embedding_inner_product():
    torch.manual_seed(0)
    d = SAGANDiscriminator(1, 16, 8, num_classes=3, attn_res=8).eval()
    x = torch.randn(4, 1, 16, 16)
    phi = d.features(x)
    c0, c2 = torch.zeros(4, dtype=torch.long), torch.full((4,), 2)
    diff = d(x, c0) - d(x, c2)
    e = d.embed.weight  # [width, classes]
    assert torch.allclose(diff[:, 0], (phi * (e[:, 0] - e[:, 2])).sum(1), atol=1e-4)
    assert torch.allclose(d(x), d.head(phi), atol=1e-5)  # no label: no projection term


def _build(ds, **model):
    cfg = resolve_config("sagan", {"model": {"g_width": 8, "d_width": 8, "latent_dim": 8,
                                             **model}})
    return SAGAN(cfg, ds.describe())


def test_spectral_norm_in_both_networks_but_not_on_the_conditional_gains():
    m = _build(make_tiny_images())
    assert m.conditional
    sn = {k for k, mod in m.G.named_modules() if hasattr(mod, "parametrizations")}
    assert "project" in sn and "blocks.0.c1" in sn and "attn.f" in sn and "out" in sn
    assert not any(".bn1." in k or ".bn2." in k for k in sn)  # CBN maps start at zero
    assert any(hasattr(mod, "parametrizations") for mod in m.D.modules())
    assert hasattr(m.D.embed, "parametrizations") and hasattr(m.D.attn.v, "parametrizations")


def test_the_papers_defaults():
    cfg = resolve_config("sagan", {})
    assert cfg.loss.name == "hinge"
    o = cfg.optim
    assert (o.lr_g, o.lr_d, tuple(o.betas_g), tuple(o.betas_d), o.n_critic) == \
        (1e-4, 4e-4, (0.0, 0.9), (0.0, 0.9), 1)


def test_unlabelled_data_gives_an_unconditional_model_and_sizes_are_checked():
    from gankit.data.base import Dataset

    m = _build(Dataset("unlabelled", make_tiny_images().x))
    assert not m.conditional and m.D.embed is None
    assert m.sample(3).shape == (3, 1, 16, 16)
    assert attention_sizes(32) == [8, 16] and attention_sizes(28) == [14] and attention_sizes(8) == []
    with pytest.raises(ConfigError, match="attn_res=4 is not a feature-map size"):
        _build(make_tiny_images(), attn_res=4)


def test_cli_trains_samples_with_labels_and_truncation(tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "sagan", "--data", "mnist5k", "--image-size", "16", "--steps", "2",
                   "--batch-size", "4", "--no-progress", "--out", out, *sets("sagan")) == 0
    assert run_cli("sample", out, "--n", "6", "--labels", "7", "--truncation", "0.5", "--out",
                   tmp_path / "s.npy") == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (6, 1, 16, 16) and np.abs(x).max() <= 1
    g = gankit.load(out)
    assert torch.equal(g.sample(4, seed=1, labels=3), g.sample(4, seed=1, labels=3))
    assert not torch.equal(g.sample(4, seed=1, labels=3), g.sample(4, seed=1, labels=5))
    # 8 px: no map both networks attend at (8x8 data alone is up-sized to 16 by default)
    assert run_cli("train", "sagan", "--data", "digits", "--image-size", "8", "--steps", "1",
                   "--out", tmp_path / "small") == 2


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    ds = make_tiny_images()
    np.savez(tmp_path / "tiny.npz", x=ds.x.numpy(), y=ds.y.numpy())
    args = ["sagan", "--data", str(tmp_path / "tiny.npz"), "--steps", "24", "--batch-size", "4",
            "--no-progress", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.keep_ckpts=10", *sets("sagan")]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert any("attn.gamma" in k for k in a)
    assert_identical(a, b)
