"""GANs with auxiliary heads and codes: SGAN, AC-GAN, InfoGAN, SS-GAN (fast tier).

Each test pins a property that defines the model (its loss formula, what its heads see, who owns
which parameters), on tiny networks and the 16x16 3-class ``tiny_images`` data.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import stub_ctx
from safetensors.torch import load_file, save_file

import gankit
from gankit.api import TrainedModel
from gankit.config import parse_overrides, resolve_config
from gankit.errors import ConfigError
from gankit.losses import get_loss
from gankit.models import get_family
from gankit.models.infogan import info_nll
from gankit.models.sgan import choose_labelled, real_logit
from gankit.models.ssgan import rotate4
from gankit.registry import MODELS
from gankit.train.checkpoint import write_manifest
from gankit.train.trainer import Trainer

FAST = {"train.log_every": 1, "train.ckpt_every": 2, "train.sample_every": 100,
        "train.batch_size": 8, "train.ema": False}


def build(name, ds, **over):
    """A family built as ``gankit.train`` builds it (seeded init), without training."""
    items = {**FAST, **MODELS.get(name).tiny, **over}
    cfg = resolve_config(name, parse_overrides([f"{k}={v}" for k, v in items.items()]))
    torch.manual_seed(cfg.train.seed)
    return cfg, get_family(name)(cfg, ds.describe())


# --- SGAN -----------------------------------------------------------------------------------
def test_labelled_subset_is_class_balanced_seeded_and_handles_small_classes():
    y = torch.arange(60) % 3
    a = choose_labelled(y, 12, 3, seed=0)
    assert torch.equal(a, choose_labelled(y, 12, 3, seed=0))  # reproducible
    assert not torch.equal(a, choose_labelled(y, 12, 3, seed=1))  # but drawn, not the first 12
    assert len(a.unique()) == 12 and torch.equal(a, a.sort().values)
    assert torch.bincount(y[a], minlength=3).tolist() == [4, 4, 4]
    # 13 labels over 3 classes: one class gets the extra one
    assert sorted(torch.bincount(y[choose_labelled(y, 13, 3, 0)], minlength=3).tolist()) == [4, 4, 5]
    # a class with a single example gives it; the shortfall goes to the other classes
    y2 = torch.tensor([0] * 10 + [1] * 10 + [2])
    b = choose_labelled(y2, 9, 3, seed=0)
    assert torch.bincount(y2[b], minlength=3).tolist() == [4, 4, 1]


def test_sgan_real_probability_is_Z_over_Z_plus_1_and_unsup_loss(tiny_images):
    _, m = build("sgan", tiny_images)
    m.eval()
    x = tiny_images.x[:6]
    logits = m.classify(x)
    assert logits.shape == (6, 3)
    Z = logits.double().exp().sum(1)
    p = torch.sigmoid(m.discriminate(m.D, x).double())
    assert torch.allclose(p, Z / (Z + 1), rtol=1e-6)
    # Salimans et al. 2016 L_unsup = -E log D(x) - E log(1 - D(G(z))), from K logits
    lr, lf = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[-3.0, 0.2, 0.1], [1.0, 1.0, 1.0]])
    zr, zf = lr.exp().sum(1), lf.exp().sum(1)
    hand = -torch.log(zr / (zr + 1)).mean() - torch.log(1 / (zf + 1)).mean()
    got = get_loss("nonsaturating").d_loss(real_logit(lr), real_logit(lf))
    assert got.item() == pytest.approx(hand.item(), rel=1e-6)


def test_sgan_supervised_loss_only_sees_the_labelled_subset(tiny_images):
    _, m = build("sgan", tiny_images)
    x, y = tiny_images.x, tiny_images.y
    idx = m.labelled_indices(y)
    assert len(idx) == 12 and torch.bincount(y[idx], minlength=3).tolist() == [4, 4, 4]
    outside = torch.ones(len(y), dtype=torch.bool)
    outside[idx] = False
    # poison everything outside the subset: NaN images, wrong labels
    x2, y2 = x.clone(), y.clone()
    x2[outside] = float("nan")
    y2[outside] = (y2[outside] + 1) % 3
    l1, _ = m.supervised_loss(m.D, x, y, 16, torch.Generator().manual_seed(5))
    l2, _ = m.supervised_loss(m.D, x2, y2, 16, torch.Generator().manual_seed(5))
    assert torch.isfinite(l2) and torch.equal(l1, l2)
    # ... while a label inside the subset does change it
    y3 = y.clone()
    y3[idx] = (y3[idx] + 1) % 3
    l3, _ = m.supervised_loss(m.D, x, y3, 16, torch.Generator().manual_seed(5))
    assert not torch.equal(l1, l3)


def test_sgan_subset_is_checkpointed_and_kept_on_resume(tiny_images, tmp_path):
    data = tmp_path / "tiny.npz"
    np.savez(data, x=tiny_images.x.numpy(), y=tiny_images.y.numpy())
    over = {**FAST, **MODELS.get("sgan").tiny, "train.steps": 2}
    run = gankit.train("sgan", str(data), out=tmp_path / "r", overrides=over, progress=False)
    y = run.data.y
    ck = run.run_dir / "checkpoints" / "step_00000002"
    stored = load_file(ck / "family.safetensors")["labelled_idx"]
    assert torch.equal(stored, choose_labelled(y, 12, 3, seed=0))
    # the stored subset wins over a fresh draw: plant another balanced subset, resume
    planted = choose_labelled(y, 12, 3, seed=99)
    assert not torch.equal(planted, stored)
    save_file({"labelled_idx": planted}, ck / "family.safetensors")
    write_manifest(ck)  # a checkpoint that holds this subset, not a damaged one
    run2 = gankit.resume(run.run_dir, steps=4, progress=False)
    assert torch.equal(run2.model.labelled_idx.cpu(), planted)
    last = load_file(run.run_dir / "checkpoints" / "step_00000004" / "family.safetensors")
    assert torch.equal(last["labelled_idx"], planted)
    # G is unconditional; the trained classifier is reachable from the run
    g = gankit.load(run.run_dir)
    with pytest.raises(ConfigError):
        g.sample(2, labels=0)
    clf = gankit.load(run.run_dir).model
    assert not clf.training and clf.classify(tiny_images.x[:5]).shape == (5, 3)
    assert torch.equal(clf.labelled_idx, planted)
    assert torch.equal(clf.D.classes.weight, run2.model.D.classes.weight)


def test_sgan_rejects_too_few_labels(tiny_images):
    with pytest.raises(ConfigError, match="n_labels"):
        build("sgan", tiny_images, **{"model.n_labels": 2})


# --- AC-GAN ---------------------------------------------------------------------------------
def test_acgan_heads_losses_and_conditional_sampling(tiny_images):
    _, m = build("acgan", tiny_images)
    m.eval()  # per-sample outputs, so the hand computation below can batch differently
    real, c = tiny_images.x[:6], tiny_images.y[:6]
    score, logits = m.D(real)
    assert score.shape == (6, 1) and logits.shape == (6, 3)
    assert torch.equal(m.classify(real), logits)
    fake = m.generate(m.G, torch.randn(6, m.latent_dim), c)
    d_phase, g_phase = m.phases()
    ctx = stub_ctx(m, {"x": real, "y": c}, fake, c)
    ns = get_loss("nonsaturating")
    sr, lr = m.D(real)
    sf, lf = m.D(fake)
    # D: -(L_S + L_C); G: -(L_C - L_S) in the non-saturating form
    d_hand = ns.d_loss(sr.flatten(), sf.flatten()) + F.cross_entropy(lr, c) + F.cross_entropy(lf, c)
    g_hand = ns.g_loss(sf.flatten()) + F.cross_entropy(lf, c)
    assert d_phase.loss_fn(ctx)[0].item() == pytest.approx(d_hand.item(), rel=1e-5)
    assert g_phase.loss_fn(ctx)[0].item() == pytest.approx(g_hand.item(), rel=1e-5)
    s = TrainedModel(m, torch.device("cpu"))
    assert not torch.equal(s.sample(4, seed=1, labels=0), s.sample(4, seed=1, labels=2))
    with pytest.raises(ConfigError):
        s.sample(2, labels=3)


def test_acgan_generator_learns_class_recognisable_fakes(tiny_images):
    """20 steps on separable data: D's final classifier, confident on real data, recognises the
    class of the final G's fakes better than of the untrained G's fakes (and above chance)."""
    import copy

    cfg, m = build("acgan", tiny_images, **{"train.batch_size": 16, "optim.lr_g": 2e-3,
                                            "optim.lr_d": 2e-3})
    G0 = copy.deepcopy(m.G)
    Trainer(cfg, m, tiny_images, None, []).fit(20)
    g = torch.Generator().manual_seed(0)
    z, c = torch.randn(48, m.latent_dim, generator=g), torch.arange(48) % 3
    with torch.no_grad():
        assert F.cross_entropy(m.classify(tiny_images.x), tiny_images.y).item() < 0.3
        logits = {name: m.classify(G(z, c)) for name, G in (("init", G0), ("final", m.G))}
    ce = {k: F.cross_entropy(v, c).item() for k, v in logits.items()}
    acc = {k: (v.argmax(1) == c).float().mean().item() for k, v in logits.items()}
    assert ce["final"] < ce["init"] - 0.05
    assert acc["final"] > 1 / 3 + 0.1


# --- InfoGAN --------------------------------------------------------------------------------
def test_infogan_optimizers_own_disjoint_parameters(tiny_images):
    cfg, m = build("infogan", tiny_images)
    tr = Trainer(cfg, m, tiny_images, None, [])
    assert set(tr.opts) == {"G", "D", "Q"}
    owned = {k: {id(p) for grp in o.param_groups for p in grp["params"]} for k, o in tr.opts.items()}
    assert not (owned["G"] & owned["D"]) and not (owned["G"] & owned["Q"])
    assert not (owned["D"] & owned["Q"])  # the shared body belongs to D alone
    assert owned["D"] == {id(p) for p in m.D.parameters()}  # body + real/fake head
    assert owned["Q"] == {id(p) for p in m.Q.parameters()}  # the Q head only
    assert {id(p) for p in m.D.features.parameters()} <= owned["D"]
    assert owned["G"] | owned["D"] | owned["Q"] == {id(p) for p in m.parameters()}
    assert [ph.opts for ph in tr.phases] == [("D",), ("G", "Q")]
    assert tr.opts["Q"].param_groups[0]["lr"] == cfg.optim.lr_d  # Q is D-side
    assert cfg.optim.lr_g == 1e-3 and cfg.optim.lr_d == 2e-4  # Chen et al. 2016 appendix


def test_info_nll_matches_hand_computed():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.1, 0.3, 0.2]])
    cat = torch.tensor([0, 2])
    mu = torch.tensor([[0.5, -0.2], [0.0, 0.9]])
    cont = torch.tensor([[0.3, -1.0], [0.7, 0.1]])
    log_std = torch.tensor([[0.0, -0.5], [0.3, 0.2]])
    ce = -(torch.log_softmax(logits, 1)[torch.arange(2), cat]).mean()
    for ls in (torch.zeros_like(mu), log_std):
        nll = -torch.distributions.Normal(mu, ls.exp()).log_prob(cont).sum(1).mean()
        l_cat, l_cont = info_nll((logits, mu, ls), cat, cont)
        assert l_cat.item() == pytest.approx(ce.item(), rel=1e-6)
        assert l_cont.item() == pytest.approx(nll.item(), rel=1e-6)


def test_infogan_g_phase_loss_is_adversarial_plus_info(tiny_images):
    _, m = build("infogan", tiny_images, **{"model.lambda_info": 0.5, "model.learn_std": True})
    m.eval()
    noise = torch.randn(5, m.noise_dim)
    cat, cont = torch.tensor([0, 3, 9, 3, 1]), torch.rand(5, 2) * 2 - 1
    z = m.latent_from(noise, cat, cont)
    n2, c2, k2 = m.split_latent(z)
    assert torch.equal(n2, noise) and torch.equal(c2, cat) and torch.equal(k2, cont)
    fake = m.G(z)
    ctx = stub_ctx(m, {"x": tiny_images.x[:5]}, fake, None, z)
    loss, stats = m.phases()[-1].loss_fn(ctx)
    h = m.D.features(fake).flatten(1)
    cat_logits, mu, log_std = m.Q(h)
    hand_info = F.cross_entropy(cat_logits, cat) - torch.distributions.Normal(
        mu, log_std.exp()).log_prob(cont).sum(1).mean()
    hand = get_loss("nonsaturating").g_loss(m.D.head(h).flatten()) + 0.5 * hand_info
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    assert stats["info/mi_cat_lb"].item() == pytest.approx(
        math.log(10) - F.cross_entropy(cat_logits, cat).item(), abs=1e-5)


def test_infogan_code_api_and_no_labels(tiny_images):
    _, m = build("infogan", tiny_images)
    m.eval()
    z = m.sample_latent(64, torch.Generator().manual_seed(0))
    assert z.shape == (64, 8 + 10 + 2) and m.latent_dim == 20
    onehot = z[:, 8:18]
    assert torch.equal(onehot.sum(1), torch.ones(64)) and set(onehot.unique().tolist()) == {0.0, 1.0}
    assert z[:, 18:].abs().max() <= 1
    cat, cont = m.sample_codes(4, cat=3, cont=[0.5, -0.5])
    assert cat.tolist() == [3] * 4 and torch.equal(cont, torch.tensor([[0.5, -0.5]] * 4))
    noise = torch.randn(4, m.noise_dim)
    with torch.no_grad():
        a = m.generate_with_codes(m.G, noise, cat=1, cont=0.0)
        b = m.generate_with_codes(m.G, noise, cat=7, cont=0.0)
        assert torch.equal(a, m.generate_with_codes(m.G, noise, cat=1, cont=0.0))
    assert not torch.equal(a, b)  # the categorical code changes the image for the same noise
    with pytest.raises(ConfigError):
        m.sample_codes(2, cat=10)
    s = TrainedModel(m, torch.device("cpu"))
    assert s.sample(3, seed=0).shape == (3, 1, 16, 16)
    with pytest.raises(ConfigError, match="unconditional"):
        s.sample(3, labels=1)


# --- SS-GAN ---------------------------------------------------------------------------------
def test_rotate4_labels_and_rot90_direction():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float32).view(2, 1, 3, 3)
    xr, r = rotate4(x)
    assert xr.shape == (8, 1, 3, 3) and r.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    H = W = 3
    for i in range(H):
        for j in range(W):
            assert torch.equal(xr[2:4, :, i, j], x[:, :, j, W - 1 - i])  # 90 deg counter-clockwise
            assert torch.equal(xr[4:6, :, i, j], x[:, :, H - 1 - i, W - 1 - j])  # 180
            assert torch.equal(xr[6:8, :, i, j], x[:, :, H - 1 - j, i])  # 270
    assert torch.equal(xr[:2], x)
    # the top-right pixel of an upright image is top-left after a 90 degree turn
    assert xr[2, 0, 0, 0] == x[0, 0, 0, 2]


def test_ssgan_losses_use_4N_rotations_of_real_for_D_and_of_fakes_for_G(tiny_images):
    _, m = build("ssgan", tiny_images)
    m.eval()
    with torch.no_grad():  # larger head weights than DCGAN's init, so real/fake terms differ
        m.D.rotation.weight.normal_(0.0, 1.0)
    real = tiny_images.x[:5]
    fake = m.G(torch.randn(5, m.latent_dim)).detach()
    seen = []
    hook = m.D.rotation.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[0]))
    ctx = stub_ctx(m, {"x": real}, fake)
    d_phase, g_phase = m.phases()
    seen.clear()
    d_loss, d_stats = d_phase.loss_fn(ctx)
    assert 20 in seen  # the rotation head saw all 4 x 5 rotated images in one batch
    g_loss, _ = g_phase.loss_fn(ctx)
    hook.remove()
    ns = get_loss("nonsaturating")

    def rot_ce(x):
        xr, r = rotate4(x)
        return F.cross_entropy(m.D(xr)[1], r)

    up = lambda x: m.D(x)[0].flatten()
    d_hand = ns.d_loss(up(real), up(fake)) + 1.0 * rot_ce(real)  # beta = 1, real only
    g_hand = ns.g_loss(up(fake)) + 0.2 * rot_ce(fake)  # alpha = 0.2, fakes
    assert d_loss.item() == pytest.approx(d_hand.item(), rel=1e-5)
    assert g_loss.item() == pytest.approx(g_hand.item(), rel=1e-5)
    assert d_stats["loss/D/rot"].item() == pytest.approx(rot_ce(real).item(), rel=1e-5)
    assert rot_ce(real).item() != pytest.approx(rot_ce(fake).item(), rel=1e-3)  # distinguishable
