"""CycleGAN's variants and the ct2mr task: the task's ground truth, the labelled unpaired source,
shape-consistent CycleGAN (Zhang et al. 2018), augmented CycleGAN (Almahairi et al. 2018), Chu
et al.'s steganography measurements, and exact resumes after SIGKILL."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import stub_ctx
from test_cyclegan import write_unpaired
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets

import gankit as gk
from gankit.config import parse_overrides, resolve_config
from gankit.data import load_data
from gankit.data.contrast_tasks import contrast_pair_dataset, label_agreement, segment_by_contrast
from gankit.data.phantoms import CONTRASTS, TISSUES
from gankit.data.sources import build_source
from gankit.errors import ConfigError, DataError
from gankit.metrics.steganography import fragility, quantise, steer
from gankit.registry import MODELS


def build(name, ds, **over):
    cfg = resolve_config(name, parse_overrides([f"{k}={v}" for k, v in
                                                {**MODELS.get(name).tiny, **over}.items()]))
    return MODELS.get(name)(cfg, ds.describe())


@pytest.fixture(scope="module")
def small_ct2mr():
    return contrast_pair_dataset("small", n_a=40, n_b=30, n_test=20, size=32)


# -- the ct2mr task ------------------------------------------------------------------------------
def test_ct2mr_test_pairs_share_tissue_maps_and_train_domains_are_disjoint():
    ds = load_data("ct2mr")
    info = ds.info
    la, lx, lt = info["a_labels"], info["x_labels"], info["labels_test"]
    assert ds.pairing == "unpaired" and ds.a.shape == (800, 1, 32, 32) and ds.x.shape[0] == 800
    assert lt.shape == (200, 32, 32) and la.dtype == torch.int64
    assert info["label_classes"] == list(TISSUES)
    # every rendering is its tissue map's contrast table plus noise of std 0.03 ([0, 1] units)
    for img, lab, c in ((ds.a, la, "ct"), (ds.x, lx, "mr"), (ds.a_test, lt, "ct"),
                        (ds.x_test, lt, "mr")):
        clean = torch.tensor(CONTRASTS[c])[lab]
        res = ((img[:, 0] + 1) / 2 - clean)[(clean > 0.05) & (clean < 0.95)]  # unclipped pixels
        assert abs(float(res.std()) - 0.03) < 0.002 and abs(float(res.mean())) < 0.002
        assert label_agreement(segment_by_contrast(img, c), lab, 6)["accuracy"] > 0.9
    # paired in evaluation: a_test[i] and x_test[i] show one anatomy, with independent noise
    ra = (ds.a_test[:, 0] + 1) / 2 - torch.tensor(CONTRASTS["ct"])[lt]
    rx = (ds.x_test[:, 0] + 1) / 2 - torch.tensor(CONTRASTS["mr"])[lt]
    inner = (lt == 1)
    assert abs(np.corrcoef(ra[inner].numpy(), rx[inner].numpy())[0, 1]) < 0.05
    # unpaired in training: no tissue map of one set appears in another
    def keys(lab):
        return {hash(m.numpy().tobytes()) for m in lab}
    ka, kx, kt = keys(la), keys(lx), keys(lt)
    assert len(ka) == 800 and len(kx) == 800 and len(kt) == 200
    assert not (ka & kx) and not (ka & kt) and not (kx & kt)
    # every tissue occurs, lesions included; the task is fixed (the seed does not change it)
    assert set(torch.unique(la).tolist()) == set(range(6))
    assert torch.equal(load_data("ct2mr", seed=5).a, ds.a)


def test_label_agreement_known_answers():
    true = torch.tensor([[[0, 1, 1, 2]]])
    pred = torch.tensor([[[0, 1, 2, 2]]])
    r = label_agreement(pred, true, 3)
    assert r["accuracy"] == 0.75
    assert r["dice_1"] == pytest.approx(2 / 3) and r["dice_2"] == pytest.approx(2 / 3)
    assert r["dice"] == pytest.approx(2 / 3)
    assert label_agreement(true, true, 3) == {"accuracy": 1.0, "dice_1": 1.0, "dice_2": 1.0,
                                              "dice": 1.0}


# -- the unpaired-labelled source ---------------------------------------------------------------
def test_labelled_source_draws_each_image_with_its_map_and_resumes(tiny_unpaired_labelled):
    ds = tiny_unpaired_labelled
    src = build_source("unpaired-labelled", ds, 8, torch.device("cpu"), seed=3)
    ref = build_source("unpaired", ds, 8, torch.device("cpu"), seed=3)
    for _ in range(7):  # past an epoch of each domain (44 and 36 images)
        batch, plain = src.draw(), ref.draw()
        assert torch.equal(batch["a"], plain["a"]) and torch.equal(batch["b"], plain["b"])
        for dom, key, imgs in (("a", "a_labels", ds.a), ("b", "x_labels", ds.x)):
            idx = [int((imgs == im).flatten(1).all(1).nonzero()[0]) for im in batch[dom]]
            assert torch.equal(batch[f"{dom}_labels"], ds.info[key][idx])
    state = src.state_dict()
    after = [src.draw() for _ in range(5)]
    again = build_source("unpaired-labelled", ds, 8, torch.device("cpu"), seed=3)
    again.load_state_dict(state)
    for want in after:
        got = again.draw()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_labelled_source_resizes_maps_and_refuses_unlabelled_data(tiny_unpaired_labelled,
                                                                  tiny_unpaired):
    ds = tiny_unpaired_labelled
    from gankit.data import _resize

    _resize(ds, 8)  # what --set data.image_size=8 does to the images
    b = build_source("unpaired-labelled", ds, 4, torch.device("cpu"), seed=0).draw()
    assert b["a"].shape == (4, 1, 8, 8) and b["a_labels"].shape == (4, 8, 8)
    assert b["a_labels"].dtype == torch.int64 and set(b["a_labels"].unique().tolist()) <= {0, 1, 2}
    with pytest.raises(DataError, match="no per-pixel label maps"):
        build_source("unpaired-labelled", tiny_unpaired, 4, torch.device("cpu"), seed=0)


# -- shape-consistent CycleGAN ------------------------------------------------------------------
def _ce(logits, y):
    """Per-pixel cross-entropy by hand: mean of log-sum-exp minus the true class's logit."""
    lse = logits.exp().sum(1).log()  # [N, H, W]
    true = logits.gather(1, y[:, None])[:, 0]
    return (lse - true).mean()


def test_shape_loss_is_the_hand_computed_cross_entropy(tiny_unpaired_labelled):
    ds = tiny_unpaired_labelled
    m = build("shape-cyclegan", ds, **{"model.lambda_shape": 2.5})
    m0 = build("shape-cyclegan", ds, **{"model.lambda_shape": 0.0})
    m0.load_state_dict(m.state_dict())
    batch = {"a": ds.a[:6], "b": ds.x[:6], "a_labels": ds.info["a_labels"][:6],
             "b_labels": ds.info["x_labels"][:6]}
    names = [ph.name for ph in m.phases()]
    assert names == ["G", "S", "D_A", "D_B"]
    g, s = m.phases()[:2]
    assert g.opts == ("G_AB", "G_BA") and s.opts == ("S_A", "S_B")
    loss, stats = g.loss_fn(stub_ctx(m, batch, torch.zeros(1)))
    loss0, _ = m0.phases()[0].loss_fn(stub_ctx(m0, batch, torch.zeros(1)))
    with torch.no_grad():
        fb, fa = m.G_AB(batch["a"]), m.G_BA(batch["b"])
        ab, ba = _ce(m.S_B(fb), batch["a_labels"]), _ce(m.S_A(fa), batch["b_labels"])
        seg = _ce(m.S_A(batch["a"]), batch["a_labels"]) + _ce(m.S_B(batch["b"]), batch["b_labels"])
    assert float(stats["G/shape_AB"]) == pytest.approx(float(ab), rel=1e-5)
    assert float(stats["G/shape_BA"]) == pytest.approx(float(ba), rel=1e-5)
    assert float((loss - loss0).detach()) == pytest.approx(2.5 * float(ab + ba), rel=1e-4)
    ctx = stub_ctx(m, batch, torch.zeros(1))
    ctx.stash[("cyclegan", 0)] = (fa, fb)
    s_loss, s_stats = s.loss_fn(ctx)
    assert float(s_loss.detach()) == pytest.approx(float(seg + 2.5 * (ab + ba)), rel=1e-5)
    assert float(s_stats["S/seg_A"] + s_stats["S/seg_B"]) == pytest.approx(float(seg), rel=1e-5)
    assert float(F.cross_entropy(m.S_B(fb), batch["a_labels"]).detach()) == pytest.approx(float(ab))


def test_shape_cyclegan_segments_and_refuses_unlabelled_data(tiny_unpaired_labelled,
                                                            tiny_unpaired):
    ds = tiny_unpaired_labelled
    m = build("shape-cyclegan", ds)
    with torch.no_grad():
        seg = m.segment(ds.x[:3])
        assert torch.equal(seg, m.S_B(ds.x[:3]).argmax(1)) and seg.shape == (3, 16, 16)
        assert torch.equal(m.segment(ds.a[:3], direction="A"), m.S_A(ds.a[:3]).argmax(1))
    with pytest.raises(ConfigError, match="direction must be A or B"):
        m.segment(ds.x[:2], direction="AB")
    with pytest.raises(ConfigError, match="needs a label map per image"):
        build("shape-cyclegan", tiny_unpaired)


# -- augmented CycleGAN -------------------------------------------------------------------------
def test_augmented_cycle_losses_are_the_papers(tiny_unpaired):
    ds = tiny_unpaired
    m = build("augcyclegan", ds, **{"model.lambda_latent": 3.0})
    a, b = ds.a[:5], ds.x[:5]
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    loss, stats, fakes = m.g_loss(m.networks(), a, b, za, zb)
    with torch.no_grad():
        fb = m.G_AB(a, zb)
        enc_a = m.E_A(a, fb)
        rec_a, rec_zb = m.G_BA(fb, enc_a), m.E_B(a, fb)
        fa = m.G_BA(b, za)
        enc_b = m.E_B(fa, b)
        rec_b, rec_za = m.G_AB(fa, enc_b), m.E_A(fa, b)
        adv = ((m.D_B(fb) - 1) ** 2).mean() + ((m.D_A(fa) - 1) ** 2).mean() \
            + ((m.D_Za(enc_a) - 1) ** 2).mean() + ((m.D_Zb(enc_b) - 1) ** 2).mean()
        hand = adv + 10 * ((rec_a - a).abs().mean() + (rec_b - b).abs().mean()) \
            + 3 * ((rec_za - za).abs().mean() + (rec_zb - zb).abs().mean())
    assert float(loss.detach()) == pytest.approx(float(hand.detach()), rel=1e-5)
    assert torch.equal(fakes["b"], fb) and torch.equal(fakes["za"], enc_a)
    assert float(stats["G/cycle_zb"]) == pytest.approx(float((rec_zb - zb).abs().mean()), rel=1e-5)
    assert [ph.name for ph in m.phases()] == ["G", "D_A", "D_B", "D_Z"]
    assert m.phases()[0].opts == ("G_AB", "G_BA", "E_A", "E_B")


def test_translation_varies_with_the_code(tiny_unpaired, tmp_path):
    over = {**MODELS.get("augcyclegan").tiny, "train.batch_size": 8, "train.steps": 4,
            "train.log_every": 2, "train.sample_every": 1000, "train.ckpt_every": 4}
    run = gk.train("augcyclegan", tiny_unpaired, out=tmp_path / "r", progress=False,
                   overrides=over)
    g = gk.load(run.run_dir)
    a = tiny_unpaired.a_test
    one, two = g.translate(a, seed=1), g.translate(a, seed=2)
    assert (one - two).abs().mean() > 0.01  # another code, another translation of one input
    assert torch.equal(one, g.translate(a, seed=1)) and torch.equal(one, run.generator.translate(
        a, seed=1))
    z = torch.randn(4)
    fixed = g.translate(a, z=z)
    assert torch.allclose(fixed, g.translate(a, z=z.expand(len(a), 4)))
    with torch.no_grad():
        assert torch.allclose(fixed, g.model.G_AB(a, z.expand(len(a), 4)), atol=1e-6)
    assert g.translate(tiny_unpaired.x_test, seed=1, direction="BA").shape == (4, 1, 16, 16)
    with pytest.raises(ConfigError, match="z must be one code"):
        g.translate(a, z=torch.zeros(3))
    with pytest.raises(ConfigError, match="direction must be AB or BA"):
        g.translate(a, direction="AA")


def test_the_latent_cycle_makes_codes_recoverable(tiny_unpaired):
    """Minimising the latent terms of the augmented cycle (image cycles off) trains E_B to read
    z_b back from G_AB(a, z_b) and E_A z_a from G_BA(b, z_a); before, they cannot."""
    torch.manual_seed(0)
    m = build("augcyclegan", tiny_unpaired, **{"model.width": 8, "model.lambda_cycle": 0.0,
                                               "model.lambda_latent": 10.0})
    nets = m.networks()
    params = [p for k in ("G_AB", "G_BA", "E_A", "E_B") for p in nets[k].parameters()]
    opt = torch.optim.Adam(params, 1e-3, betas=(0.5, 0.999))
    g = torch.Generator().manual_seed(1)
    a, b = tiny_unpaired.a[:16], tiny_unpaired.x[:16]

    def errors():
        with torch.no_grad():
            z = torch.randn(64, 4, generator=torch.Generator().manual_seed(9))
            aa, bb = tiny_unpaired.a[torch.arange(64) % 44], tiny_unpaired.x[torch.arange(64) % 36]
            eb = (m.E_B(aa, m.G_AB(aa, z)) - z).abs().mean()
            ea = (m.E_A(m.G_BA(bb, z), bb) - z).abs().mean()
            return float(ea), float(eb), float((z - z.mean(0)).abs().mean())

    ea0, eb0, naive = errors()
    assert min(ea0, eb0) > 0.8 * naive  # untrained: no better than guessing the mean code
    for _ in range(100):
        za, zb = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
        loss, _, _ = m.g_loss(nets, a, b, za, zb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ea, eb, _ = errors()
    assert max(ea, eb) < 0.6 * naive, (ea, eb, naive)


# -- Chu et al.: hidden information --------------------------------------------------------------
def _stego(scale=50.0):
    """A known steganographic pair: the visible part of the translation is ``a`` on 4 levels;
    the rest of ``a`` is hidden in it at 1/scale amplitude and decoded by amplifying it."""
    def forward(a):
        c = quantise(a, 2)
        return c + (a - c) / scale

    def backward(b):
        c = quantise(b, 2)
        return c + (b - c) * scale
    return forward, backward


def test_fragility_and_steering_tell_a_hiding_pair_from_an_honest_one():
    a = torch.rand(6, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.8
    fwd, bwd = _stego()
    assert torch.allclose(bwd(fwd(a)), a, atol=1e-5)  # the cycle is exact
    ident = (lambda x: x, lambda x: x)
    hid, honest = fragility(fwd, bwd, a), fragility(*ident, a)
    assert hid["reconstruction_mae"] < 1e-5 and honest["reconstruction_mae"] == 0
    assert honest["perturbed"]["noise_0.01"]["gain"] == pytest.approx(1.0)  # error = change
    assert hid["perturbed"]["noise_0.01"]["gain"] > 20  # amplified by the decoder
    assert honest["perturbed"]["quantise_8bit"]["change"] < 1 / 255
    s_hid = steer(fwd, bwd, a, a.roll(1, 0), eps=0.01, steps=60, lr=0.001)
    s_honest = steer(*ident, a, a.roll(1, 0), eps=0.01, steps=60, lr=0.001)
    assert s_honest["delta_mae"] <= 0.01 + 1e-6 and s_hid["delta_mae"] <= 0.01 + 1e-6
    assert s_honest["moved"] < 0.05 and s_hid["moved"] > 0.3


# -- exact resume after kill -9 -----------------------------------------------------------------
COMMON = ["--steps", "24", "--batch-size", "4", "--no-progress", "--set", "train.ckpt_every=4",
          "--set", "train.log_every=2", "--set", "train.sample_every=100",
          "--set", "train.keep_ckpts=10", "--set", "model.pool_size=10"]


def test_shape_cyclegan_resumes_bit_identically_after_sigkill(tmp_path):
    args = ["shape-cyclegan", "--data", "ct2mr", "--set", "data.image_size=16", *COMMON,
            *sets("shape-cyclegan")]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert any("S_B" in k for k in a) and any(k.startswith("family.pool_A") for k in a)
    assert_identical(a, b)


def test_augcyclegan_resumes_bit_identically_after_sigkill(tmp_path):
    data = write_unpaired(tmp_path / "data")
    args = ["augcyclegan", "--data", f"unpaired:{data}", *COMMON, *sets("augcyclegan")]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert any("D_Zb" in k for k in a)
    assert_identical(a, b)


def test_hidden_information_sees_the_noise_only_through_the_own_translation():
    """A pair that passes the input's noise through its translation reconstructs it (correlation
    1); from a true B-image with independent noise the correlation is near 0."""
    from gankit.metrics.steganography import hidden_information

    g = torch.Generator().manual_seed(0)
    clean = torch.full((4, 1, 16, 16), -1.0)
    clean[:, :, 4:12, 4:12] = 0.2
    a = (clean + 0.06 * torch.randn(clean.shape, generator=g)).clamp(-1, 1)
    b_true = -(clean + 0.06 * torch.randn(clean.shape, generator=g)).clamp(-1, 1)
    r = hidden_information(lambda x: -x, lambda x: -x, a, clean, b_true)
    assert r["mae_from_own_translation"] == 0 and r["mae_from_true_b"] > 0.03
    assert r["noise_corr_from_own_translation"] == pytest.approx(1.0)
    assert abs(r["noise_corr_from_true_b"]) < 0.15


def test_cli_refuses_unlabelled_data_for_shape_cyclegan_in_one_line(tmp_path, capsys):
    from helpers import cli_output

    data = write_unpaired(tmp_path / "data", n=8, size=32)
    code, _, err = cli_output(capsys, "train", "shape-cyclegan", "--data", f"unpaired:{data}",
                              "--steps", "1", "--no-progress", "--out", tmp_path / "run")
    assert code == 2 and len(err) == 1 and "needs a label map per image" in err[0]
    assert not (tmp_path / "run").exists()


def test_anatomy_through_the_cycle_separates_shown_from_hidden():
    """A translation that squeezes the input into 1 % of the range shows no structure (Dice 0
    when read as a B-image), yet its inverse recovers all of it (Dice 1)."""
    from gankit.metrics.steganography import anatomy_through_cycle

    a = torch.full((2, 1, 16, 16), -1.0)
    a[:, :, 4:10, 5:12] = 0.8
    labels = (a[:, 0] > 0).long()

    def read(t):
        return (t[:, 0] > 0).long()

    r = anatomy_through_cycle(lambda x: -1 + (x + 1) / 100, lambda y: (y + 1) * 100 - 1, a,
                              -a, labels, read, read, 2)
    assert r["input"]["dice"] == 1.0 and r["recovered_by_cycle"]["dice"] == 1.0
    assert r["visible_in_translation"]["dice"] == 0.0
    assert r["from_true_b"]["dice"] < 0.5  # a plain B-image is not what this decoder reads
