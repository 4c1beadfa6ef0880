"""CycleGAN (Zhu et al. 2017): the ResNet generator, the objective, the image pool and its
checkpoint, translation in both directions, and an exact resume after SIGKILL."""


import numpy as np
import pytest
import torch
from helpers import stub_ctx
from PIL import Image
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets

import gankit as gk
from gankit.config import parse_overrides, resolve_config
from gankit.errors import ConfigError, DataError
from gankit.models.cyclegan import CycleGAN, ImagePool
from gankit.nn.resnet_gen import ResnetBlock, ResnetGenerator
from gankit.registry import MODELS

TINY = MODELS.get("cyclegan").tiny
FAST = {"train.log_every": 1, "train.ckpt_every": 2, "train.sample_every": 100,
        "train.batch_size": 8, "train.steps": 2}


def build(ds, **over):
    cfg = resolve_config("cyclegan", parse_overrides([f"{k}={v}" for k, v in
                                                      {**TINY, **over}.items()]))
    return CycleGAN(cfg, ds.describe())


# -- the generator ------------------------------------------------------------------------------
@pytest.mark.parametrize("n_blocks", [6, 9])
def test_resnet_generator_layers_follow_the_paper(n_blocks):
    """c7s1-64, d128, d256, R256 x n, u128, u64, c7s1-3 + tanh (appendix 7.2)."""
    G = ResnetGenerator(3, 3, 64, n_blocks)
    layers = list(G.model)
    kinds = [type(m).__name__ for m in layers]
    head = ["ReflectionPad2d", "Conv2d", "InstanceNorm2d", "ReLU"] + \
        ["Conv2d", "InstanceNorm2d", "ReLU"] * 2
    tail = ["ConvTranspose2d", "InstanceNorm2d", "ReLU"] * 2 + ["ReflectionPad2d", "Conv2d", "Tanh"]
    assert kinds == head + ["ResnetBlock"] * n_blocks + tail
    assert layers[0].padding == (3, 3, 3, 3) and layers[1].kernel_size == (7, 7)
    assert [(m.out_channels, m.stride) for m in layers if type(m) is torch.nn.Conv2d] == \
        [(64, (1, 1)), (128, (2, 2)), (256, (2, 2)), (3, (1, 1))]
    assert [m.out_channels for m in layers if isinstance(m, torch.nn.ConvTranspose2d)] == [128, 64]
    norms = [m for m in G.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 3 + 2 * n_blocks + 2 and not any(m.affine for m in norms)
    block = next(m for m in layers if isinstance(m, ResnetBlock))
    assert [type(m).__name__ for m in block.block] == \
        ["ReflectionPad2d", "Conv2d", "InstanceNorm2d", "ReLU", "ReflectionPad2d", "Conv2d",
         "InstanceNorm2d"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in G.modules())


def test_resnet_block_is_residual_and_generator_output_is_in_range():
    blk = ResnetBlock(4)
    for p in blk.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(blk(x), x)  # a zero branch leaves the identity path
    G = ResnetGenerator(1, 3, 8, 2)
    y = G(torch.randn(5, 1, 24, 24) * 10)
    assert y.shape == (5, 3, 24, 24) and y.abs().max() < 1 and y.std() > 0


def test_model_option_sets_the_number_of_blocks(tiny_unpaired):
    m = build(tiny_unpaired, **{"model.n_blocks": 3})
    for G in (m.G_AB, m.G_BA):
        assert sum(isinstance(x, ResnetBlock) for x in G.model) == 3
    assert set(m.networks()) == {"G_AB", "G_BA", "D_A", "D_B"}
    for k, net in m.networks().items():
        assert getattr(m, k) is net
    assert any(isinstance(x, torch.nn.InstanceNorm2d) for x in m.D_A.modules())


# -- the objective ------------------------------------------------------------------------------
def test_losses_equal_the_hand_computed_objective(tiny_unpaired):
    """G: LSGAN both ways + 10 x cycle L1 both ways + 5 x identity L1 both ways; each D:
    0.5 x [(D(real) - 1)^2 + D(fake)^2], over every patch (the pool is empty, so it shows the
    new fakes)."""
    m = build(tiny_unpaired, **{"model.n_layers": 1})
    a, b = tiny_unpaired.a[:6], tiny_unpaired.x[:6]
    ctx = stub_ctx(m, {"a": a, "b": b}, torch.zeros(6, 1, 16, 16))
    g_phase, da_phase, db_phase = m.phases()
    assert (g_phase.opts, da_phase.opts, db_phase.opts) == (("G_AB", "G_BA"), ("D_A",), ("D_B",))
    loss_g, stats = g_phase.loss_fn(ctx)
    loss_da, _ = da_phase.loss_fn(ctx)
    loss_db, _ = db_phase.loss_fn(ctx)
    with torch.no_grad():
        fb, fa = m.G_AB(a), m.G_BA(b)
        lb, la = m.D_B(fb), m.D_A(fa)
        assert lb.shape[-1] > 1  # many patches
        g_hand = ((lb - 1) ** 2).mean() + ((la - 1) ** 2).mean() \
            + 10 * ((m.G_BA(fb) - a).abs().mean() + (m.G_AB(fa) - b).abs().mean()) \
            + 5 * ((m.G_AB(b) - b).abs().mean() + (m.G_BA(a) - a).abs().mean())
        da_hand = 0.5 * (((m.D_A(a) - 1) ** 2).mean() + (m.D_A(fa) ** 2).mean())
        db_hand = 0.5 * (((m.D_B(b) - 1) ** 2).mean() + (m.D_B(fb) ** 2).mean())
    assert loss_g.item() == pytest.approx(g_hand.item(), rel=1e-5)
    assert loss_da.item() == pytest.approx(da_hand.item(), rel=1e-5)
    assert loss_db.item() == pytest.approx(db_hand.item(), rel=1e-5)
    assert stats["G/cycle_A"] > 0 and stats["G/identity_B"] > 0
    # the pools now hold the six fakes each D was shown
    assert int(m.pool_A.count) == int(m.pool_B.count) == 6
    assert torch.equal(m.pool_B.images[:6], fb) and torch.equal(m.pool_A.images[:6], fa)


def test_identity_weight_and_lambda_are_options(tiny_unpaired):
    a, b = tiny_unpaired.a[:4], tiny_unpaired.x[:4]
    m0 = build(tiny_unpaired, **{"model.lambda_identity": 0.0})
    m1 = build(tiny_unpaired, **{"model.lambda_identity": 0.0, "model.lambda_cycle": 20.0})
    m1.load_state_dict(m0.state_dict())
    nets0, nets1 = m0.networks(), m1.networks()
    l0, s0, _, _ = m0.g_loss(nets0, a, b)
    l1, _, _, _ = m1.g_loss(nets1, a, b)
    assert "G/identity_A" not in s0
    cyc = s0["G/cycle_A"] + s0["G/cycle_B"]
    assert (l1 - l0).item() == pytest.approx(10 * cyc.item(), rel=1e-5)


# -- the image pool -----------------------------------------------------------------------------
def test_pool_fills_then_swaps_half_of_the_time():
    pool = ImagePool(50, (1, 2, 2))
    g = torch.Generator().manual_seed(0)
    ims = torch.arange(60, dtype=torch.float).view(60, 1, 1, 1).expand(60, 1, 2, 2)
    out = pool.query(ims[:30], g)
    assert torch.equal(out, ims[:30]) and int(pool.count) == 30
    out = pool.query(ims[30:50], g)
    assert torch.equal(out, ims[30:50]) and int(pool.count) == 50  # returned while filling
    assert torch.equal(pool.images, ims[:50])
    swaps, n = 0, 4000
    for k in range(n):
        new = torch.full((1, 1, 2, 2), 1000.0 + k)
        before = pool.images.clone()
        got = pool.query(new, g)
        if torch.equal(got, new):  # shown itself: pool unchanged
            assert torch.equal(pool.images, before)
        else:  # a stored image is shown and the new one takes its slot
            swaps += 1
            j = [i for i in range(50) if not torch.equal(pool.images[i], before[i])]
            assert len(j) == 1 and torch.equal(before[j[0]], got[0])
            assert torch.equal(pool.images[j[0]], new[0])
    assert int(pool.count) == 50
    assert abs(swaps / n - 0.5) < 0.03  # probability 1/2 (4000 draws: sd 0.008)


def test_pool_of_size_zero_passes_fakes_through():
    pool = ImagePool(0, (1, 4, 4))
    x = torch.randn(3, 1, 4, 4)
    assert pool.query(x, torch.Generator().manual_seed(0)) is x


def test_pool_is_checkpointed_and_restored_exactly(tiny_unpaired, tmp_path):
    run = gk.train("cyclegan", tiny_unpaired, out=tmp_path / "r", progress=False,
                   overrides={**FAST, **TINY, "train.steps": 8, "train.ckpt_every": 8,
                              "model.pool_size": 20})
    live = run.model
    assert int(live.pool_A.count) == int(live.pool_B.count) == 20  # 8 steps x 8 > 20: full
    loaded = gk.load(run.run_dir).model
    for dom in "AB":
        p_live, p_load = getattr(live, f"pool_{dom}"), getattr(loaded, f"pool_{dom}")
        assert torch.equal(p_live.images, p_load.images) and p_live.images.abs().sum() > 0
        assert int(p_load.count) == 20
    bufs = live.family_buffers()
    assert {"pool_A.images", "pool_B.images", "pool_A.count", "pool_B.count"} <= set(bufs)


def test_schedule_is_constant_then_linear_decay(tiny_unpaired):
    m = build(tiny_unpaired, **{"train.steps": 200})
    spec = m.optim_spec("G_AB")
    assert (spec.lr, spec.betas, spec.schedule, spec.decay_start) == \
        (2e-4, (0.5, 0.999), "linear", 100)
    assert m.optim_spec("D_B").lr == 2e-4
    m = build(tiny_unpaired, **{"optim.decay_start": 7})
    assert m.optim_spec("D_A").decay_start == 7


# -- translating and errors ---------------------------------------------------------------------
def test_translate_both_directions_through_load(tiny_unpaired, tmp_path):
    run = gk.train("cyclegan", tiny_unpaired, out=tmp_path / "r", progress=False,
                   overrides={**FAST, **TINY})
    g = gk.load(run.run_dir)
    a, b = tiny_unpaired.a_test, tiny_unpaired.x_test
    ab, ba = g.translate(a), g.translate(b, direction="BA")
    assert ab.shape == a.shape and ba.shape == b.shape
    with torch.no_grad():
        assert torch.allclose(ab, g.model.G_AB(a), atol=1e-6)
        assert torch.allclose(ba, g.model.G_BA(b), atol=1e-6)
    assert not torch.allclose(ab, ba)
    assert torch.equal(g.translate(a, direction="AB"), ab)
    assert torch.equal(ab, run.generator.translate(a))
    with pytest.raises(ConfigError, match="direction must be AB or BA"):
        g.translate(a, direction="BB")
    with pytest.raises(ConfigError, match="only the option direction"):
        g.translate(a, truncation=1.0)
    with pytest.raises(DataError, match="multiples of 4"):
        g.translate(torch.zeros(1, 1, 18, 18))


def test_one_line_errors_for_bad_configs_and_data(tiny_unpaired, tiny_paired):
    with pytest.raises(ConfigError, match="least-squares"):
        build(tiny_unpaired, **{"loss.name": "hinge"})
    with pytest.raises(ConfigError, match="trains on unpaired"):
        build(tiny_paired)


# -- exact resume after kill -9 -----------------------------------------------------------------
def write_unpaired(root, n=24, size=16):
    """Folders A/ (horizontal bars) and B/ (vertical bars) of grey PNGs."""
    rng = np.random.default_rng(0)
    for dom in "AB":
        (root / dom).mkdir(parents=True)
        for i in range(n):
            im = (rng.random((size, size)) * 40).astype(np.uint8)
            k = (i % 4) * 4
            if dom == "A":
                im[k:k + 4, :] = 220
            else:
                im[:, k:k + 4] = 220
            Image.fromarray(im).save(root / dom / f"{i:03d}.png")
    return root


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    data = write_unpaired(tmp_path / "data")
    args = ["cyclegan", "--data", f"unpaired:{data}", "--steps", "24", "--batch-size", "4",
            "--no-progress", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.sample_every=100", "--set", "train.keep_ckpts=10",
            "--set", "model.pool_size=10", *sets("cyclegan")]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert any(k.startswith("family.pool_B") for k in a)  # the pools are in the checkpoint
    assert_identical(a, b)


def test_domains_with_different_channels_translate_without_identity_term():
    """Grey A -> RGB B: G_AB maps 1 to 3 channels, G_BA back; the identity term, which feeds
    a B image to G_AB, cannot apply and is left out."""
    from gankit.data.base import Dataset

    g = torch.Generator().manual_seed(0)
    a, b = torch.rand(8, 1, 16, 16, generator=g) * 2 - 1, torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    ds = Dataset("grey2rgb", b, a=a, pairing="unpaired")
    m = build(ds)
    loss, stats, fake_b, fake_a = m.g_loss(m.networks(), a[:4], b[:4])
    assert fake_b.shape == (4, 3, 16, 16) and fake_a.shape == (4, 1, 16, 16)
    assert "G/identity_A" not in stats and torch.isfinite(loss)
    assert m.translate(a[:2]).shape == (2, 3, 16, 16)
    assert m.translate(b[:2], direction="BA").shape == (2, 1, 16, 16)
    with pytest.raises(DataError, match=r"\[N, 1, H, W\]"):
        m.translate(b[:2])
