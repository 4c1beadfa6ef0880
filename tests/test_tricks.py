"""Stabilisation tricks (gankit.tricks, tricks.* config): each checked for what defines it."""

import json
import math

import pytest
import torch
from helpers import stub_ctx
from safetensors.torch import load_file
from torch import nn

import gankit
from gankit.config import resolve_config
from gankit.errors import ConfigError
from gankit.losses import get_loss
from gankit.models.base import Phase
from gankit.models.dcgan import DCGAN, DCDiscriminator
from gankit.models.gan import MLPDiscriminator
from gankit.nn.augment import cutout, diff_augment, translation
from gankit.nn.minibatch import MinibatchDiscrimination, MinibatchStdDev
from gankit.registry import MODELS
from gankit.train.checkpoint import latest_checkpoint
from gankit.train.trainer import Trainer
from gankit.tricks import (
    AccuracyMonitor,
    HistoricalAverage,
    Tricks,
    consensus_surrogate,
    feature_matching_loss,
    instance_noise_sigma,
    orthogonal_penalty,
    smoothed_bce_d_loss,
)

FAST = {"train.log_every": 1, "train.ckpt_every": 2, "train.sample_every": 100,
        "train.batch_size": 8, "train.ema_decay": 0.9, "train.steps": 2}
def small(name):
    return MODELS.get(name).tiny


def tiny(name, ds, tmp_path=None, **extra):
    over = {**FAST, **small(name), **extra}
    if tmp_path is None:
        return gankit.train(name, ds, save=False, progress=False, overrides=over)
    return gankit.train(name, ds, out=tmp_path, progress=False, overrides=over)


def resume(run_dir, ds, steps):
    """gankit.resume for an in-memory dataset: rebuild from config.json, load, train on."""
    cfg = resolve_config("dcgan", json.loads((run_dir / "config.json").read_text()))
    cfg.train.steps = steps
    torch.manual_seed(cfg.train.seed)
    model = DCGAN(cfg, ds.describe())
    tr = Trainer(cfg, model, ds, run_dir)
    tr.load_checkpoint(latest_checkpoint(run_dir))
    tr.fit()
    return tr


def opt_steps(run, key):
    return [float(s["step"]) for s in run.trainer.opts[key].state_dict()["state"].values()]


def dcgan_model(tiny_images, **tricks):
    cfg = resolve_config("dcgan", {"model": {"width": 8}, "tricks": tricks})
    torch.manual_seed(0)
    return DCGAN(cfg, tiny_images.describe())


# --- config ----------------------------------------------------------------------------------
def test_tricks_config_section_and_errors():
    cfg = resolve_config("dcgan", {"tricks": {"label_smoothing": 0.1,
                                              "diffaugment": "color, cutout"}})
    assert cfg.tricks.label_smoothing == 0.1 and cfg.tricks.diffaugment == "color,cutout"
    assert cfg.to_dict()["tricks"]["d_every"] == 1  # saved in config.json
    with pytest.raises(ConfigError, match="did you mean 'label_smoothing'"):
        resolve_config("dcgan", {"tricks": {"label_smothing": 0.1}})
    with pytest.raises(ConfigError, match="did you mean 'translation'"):
        resolve_config("dcgan", {"tricks": {"diffaugment": "color,translaton"}})
    with pytest.raises(ConfigError, match="tricks.minibatch_stddev"):
        resolve_config("dcgan", {"tricks": {"minibatch_stddev": 1}})
    with pytest.raises(ConfigError, match="probabilistic loss"):
        resolve_config("dcgan", {"tricks": {"label_smoothing": 0.1}, "loss": {"name": "hinge"}})
    with pytest.raises(ConfigError, match="optim.n_critic"):
        resolve_config("dcgan", {"tricks": {"consensus": 0.1}, "optim": {"n_critic": 2}})
    with pytest.raises(ConfigError, match="fp16"):
        resolve_config("dcgan", {"tricks": {"freeze_d_when_acc_above": 0.9},
                                 "train": {"amp": "fp16"}})


# --- one-sided label smoothing -----------------------------------------------------------------
def test_label_smoothing_is_bce_with_real_target_0_9():
    r, f = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.5, -3.0])
    s = torch.sigmoid
    hand = -(0.9 * torch.log(s(r)) + 0.1 * torch.log(1 - s(r))).mean() - torch.log(1 - s(f)).mean()
    assert smoothed_bce_d_loss(r, f, 0.1).item() == pytest.approx(hand.item(), rel=1e-6)
    # s = 0 is the ordinary D loss; the fake target stays 0 (one-sided)
    assert smoothed_bce_d_loss(r, f, 0.0).item() == pytest.approx(
        get_loss("nonsaturating").d_loss(r, f).item(), rel=1e-6)
    # the real logit's optimum moves from +inf to logit(0.9): the gradient vanishes there
    l = torch.tensor([math.log(0.9 / 0.1), 8.0], requires_grad=True)
    (g,) = torch.autograd.grad(smoothed_bce_d_loss(l, torch.tensor([-50.0]), 0.1), l)
    assert abs(g[0].item()) < 1e-6 and g[1].item() > 0  # overconfidence is now penalised


def test_label_smoothing_reaches_the_d_phase(tiny_images):
    m = dcgan_model(tiny_images, label_smoothing=0.2)
    tk = Tricks(m, get_loss("nonsaturating"))
    r, f = torch.randn(5), torch.randn(5)
    assert torch.equal(tk.d_loss(r, f), smoothed_bce_d_loss(r, f, 0.2))


# --- instance noise ----------------------------------------------------------------------------
def test_instance_noise_follows_the_annealing_schedule(tiny_images):
    assert instance_noise_sigma(0, 0.5, 100) == 0.5
    assert instance_noise_sigma(50, 0.5, 100) == pytest.approx(0.25)
    assert instance_noise_sigma(100, 0.5, 100) == 0.0
    assert instance_noise_sigma(1000, 0.5, 100) == 0.0
    assert instance_noise_sigma(1000, 0.5, 0) == 0.5  # no annealing: constant
    tk = Tricks(dcgan_model(tiny_images, instance_noise=0.5, instance_noise_anneal=100),
                get_loss("nonsaturating"))
    x = torch.zeros(64, 1, 16, 16)
    torch.manual_seed(0)
    assert tk.d_input(x, 0).std().item() == pytest.approx(0.5, rel=0.05)
    assert tk.d_input(x, 50).std().item() == pytest.approx(0.25, rel=0.05)
    state = torch.get_rng_state()
    assert tk.d_input(x, 100) is x  # sigma 0: untouched, and no random numbers drawn
    assert torch.equal(torch.get_rng_state(), state)


# --- feature matching --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dc", "mlp"])
def test_discriminators_expose_penultimate_features(kind):
    torch.manual_seed(0)
    if kind == "dc":
        D = DCDiscriminator(1, 16, 8, 64, mbstd_group=2, mbdisc_kernels=3)
        width = 16 * 4 * 4
    else:
        D = MLPDiscriminator((1, 16, 16), 32, 2, 0.0, mbstd_group=2, mbdisc_kernels=3)
        width = 32
    x = torch.randn(6, 1, 16, 16)
    f = D.features(x)
    assert f.shape == (6, width)
    head = D.head if kind == "dc" else D.net[-1]
    assert head.in_features == width + (16 if kind == "dc" else 1) + 3  # + mbstd + mbdisc
    assert torch.equal(D(x), head(D.batch_layers(f)))  # forward is built on features


def test_feature_matching_loss_is_squared_distance_of_feature_means(tiny_images):
    fr, ff = torch.randn(8, 5), torch.randn(8, 5, requires_grad=True)
    hand = ((fr.mean(0) - ff.mean(0)) ** 2).sum()
    assert feature_matching_loss(fr, ff).item() == pytest.approx(hand.item(), rel=1e-6)
    # in the G loss: D's features of real and fake batches, real treated as constant
    m = dcgan_model(tiny_images, feature_matching=True).eval()
    tk = Tricks(m, get_loss("nonsaturating"))
    real, fake = tiny_images.x[:8], torch.randn(8, 1, 16, 16).clamp(-1, 1).requires_grad_()
    loss = tk.g_loss(m.D, real, None, fake, None, step=0)[0]
    with torch.no_grad():
        hand = ((m.D.features(real).mean(0) - m.D.features(fake).mean(0)) ** 2).sum()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    (g,) = torch.autograd.grad(loss, fake)
    assert g.abs().sum() > 0


# --- minibatch discrimination / minibatch stddev -----------------------------------------------
def test_minibatch_discrimination_shape_and_similarity():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(10, kernels=4, kernel_dim=3)
    same = torch.randn(1, 10).expand(6, 10)
    distinct = torch.randn(6, 10) * 5
    o_same, o_dist = layer(same)[:, 10:], layer(distinct)[:, 10:]
    assert layer(distinct).shape == (6, 14)
    assert torch.equal(layer(distinct)[:, :10], distinct)  # the input passes through
    assert torch.allclose(o_same, torch.full((6, 4), 6.0))  # exp(0) summed over the batch
    assert (o_dist >= 1 - 1e-6).all() and (o_dist < o_same).all()


def test_minibatch_stddev_appends_the_group_std():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4)
    y = MinibatchStdDev(4)(x)
    assert y.shape == (8, 4, 4, 4) and torch.equal(y[:, :3], x)
    for i in range(8):
        group = x[i % 2::2]  # sample i is in group i % (N / G) = i % 2
        hand = (group.var(0, unbiased=False) + 1e-8).sqrt().mean()
        assert torch.allclose(y[i, 3], hand.expand(4, 4), atol=1e-6)
    # vectors [N, F] -> [N, F + 1]; a batch of 6 with group 4 falls back to groups of 3
    v = torch.randn(6, 5)
    out = MinibatchStdDev(4)(v)
    assert out.shape == (6, 6)
    hand = (v[0::2].var(0, unbiased=False) + 1e-8).sqrt().mean()
    assert out[0, 5].item() == pytest.approx(hand.item(), rel=1e-5)
    assert MinibatchStdDev(4)(torch.ones(4, 5))[:, 5].max() < 1e-3  # identical samples: ~0


# --- historical averaging ----------------------------------------------------------------------
def test_historical_average_is_the_mean_of_past_weights_and_penalty_zero_at_it():
    net = nn.Linear(3, 2)
    h = HistoricalAverage(net)
    assert h.penalty(net).item() == 0.0
    seen = [torch.cat([p.detach().flatten() for p in net.parameters()])]
    for _ in range(3):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        h.update(net)
        seen.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    mean = torch.stack(seen).mean(0)
    avg = torch.cat([a.flatten() for a in h.averages()])
    assert torch.allclose(avg, mean, atol=1e-6)
    assert h.penalty(net).item() == pytest.approx(((seen[-1] - mean) ** 2).sum().item(), rel=1e-5)
    with torch.no_grad():  # at the mean the penalty vanishes
        for p, a in zip(net.parameters(), h.averages()):
            p.copy_(a)
    assert h.penalty(net).item() == 0.0


# --- dropout in D --------------------------------------------------------------------------------
def test_d_dropout_is_active_in_training_only(tiny_images):
    torch.manual_seed(0)
    x = tiny_images.x[:4]
    for D in (DCDiscriminator(1, 16, 8, 64, dropout=0.5),
              MLPDiscriminator((1, 16, 16), 32, 2, 0.0)):
        if isinstance(D, MLPDiscriminator):
            D.add_tricks(dropout=0.5)
        D.eval()  # BN and dropout off: deterministic
        assert torch.equal(D(x), D(x))
        D.train()
        assert not torch.equal(D(x), D(x))
    m = dcgan_model(tiny_images, d_dropout=0.3)
    assert m.D.features.dropout == 0.3


# --- DiffAugment ---------------------------------------------------------------------------------
def test_diffaugment_is_differentiable_and_changes_images():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 16, 16, requires_grad=True)
    y = diff_augment(x, "color,translation,cutout")
    assert y.shape == x.shape
    (g,) = torch.autograd.grad(y.square().sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    xi = torch.rand(16, 3, 16, 16) + 1  # strictly positive so zeros mark cut/padded pixels
    t = translation(xi)
    assert not torch.equal(t, xi)
    # a translated image is a shifted copy: every non-zero pixel comes from the original values
    assert torch.isin(t[t != 0], xi).all()
    c = cutout(xi)
    holes = (c == 0).all(1).flatten(1).sum(1)  # zeroed pixels per image
    assert (holes > 0).all() and (holes <= 64).all()  # at most an 8 x 8 square of 16 x 16
    assert torch.equal(c[c != 0], xi[c != 0])
    col = diff_augment(xi, "color")
    assert not torch.equal(col, xi)
    torch.manual_seed(1)
    a = diff_augment(xi, ["translation", "cutout"])
    torch.manual_seed(1)
    assert torch.equal(a, diff_augment(xi, ["translation", "cutout"]))  # global RNG: repeatable


def test_diffaugment_needs_images(tiny_points, tmp_path):
    with pytest.raises(ConfigError, match="augments images"):
        tiny("gan", tiny_points, **{"tricks.diffaugment": "color"})


# --- orthogonal regularisation -------------------------------------------------------------------
def test_orthogonal_penalty_zero_for_orthogonal_weights_and_matches_formula():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    lin = nn.Linear(8, 5, bias=False)
    with torch.no_grad():
        lin.weight.copy_(q[:5] * 3.0)  # orthogonal rows of any norm: off-diagonals are 0
    assert orthogonal_penalty(lin).item() == pytest.approx(0.0, abs=1e-4)

    def direct(w):
        gram = w @ w.T
        return (gram * (1 - torch.eye(len(w)))).pow(2).sum()

    for shape in [(4, 9), (9, 4)]:  # wide and tall (the tall one uses the small Gram matrix)
        lin = nn.Linear(shape[1], shape[0])
        assert orthogonal_penalty(lin).item() == pytest.approx(direct(lin.weight).item(), rel=1e-4)
    up = nn.ConvTranspose2d(6, 3, 4)  # weight [in, out, k, k]: output filters are dim 1
    w = up.weight.transpose(0, 1).flatten(1)
    assert orthogonal_penalty(up).item() == pytest.approx(direct(w).item(), rel=1e-4)
    G = nn.Sequential(nn.Linear(9, 4), nn.ReLU(), nn.Linear(4, 9))
    assert orthogonal_penalty(G).item() == pytest.approx(
        (direct(G[0].weight) + direct(G[2].weight)).item(), rel=1e-4)


# --- consensus optimisation ----------------------------------------------------------------------
def test_consensus_gradients_on_the_bilinear_game():
    # L_D = theta * phi, L_G = -theta * phi: v = (-phi, theta), 1/2 ||v||^2 = (phi^2 + theta^2)/2
    theta, phi = torch.tensor(0.7, requires_grad=True), torch.tensor(-1.3, requires_grad=True)
    gamma = 0.5
    surrogate, reg = consensus_surrogate([(-theta * phi, [theta]), (theta * phi, [phi])], gamma)
    surrogate.backward()
    assert reg.item() == pytest.approx(0.5 * (0.7 ** 2 + 1.3 ** 2))
    assert theta.grad.item() == pytest.approx(1.3 + gamma * 0.7)  # -phi + gamma theta
    assert phi.grad.item() == pytest.approx(0.7 + gamma * -1.3)  # theta + gamma phi


def test_consensus_phase_updates_both_networks_once_per_step(tiny_images):
    run = tiny("dcgan", tiny_images, **{"tricks.consensus": 0.1})
    assert [ph.name for ph in run.trainer.phases] == ["GD"]
    assert set(opt_steps(run, "G")) == {2.0} and set(opt_steps(run, "D")) == {2.0}


# --- D/G schedules and freezing ------------------------------------------------------------------
def test_d_every_runs_the_d_phase_every_k_steps(tiny_images):
    run = tiny("dcgan", tiny_images, **{"tricks.d_every": 2, "train.steps": 4})
    assert set(opt_steps(run, "D")) == {2.0} and set(opt_steps(run, "G")) == {4.0}


def test_frozen_d_is_never_stepped(tiny_images, tmp_path):
    torch.manual_seed(0)
    run = tiny("dcgan", tiny_images, tmp_path / "a", **{"tricks.freeze_d_when_acc_above": 0.0})
    # running accuracy starts at 0.5 > 0: frozen from step 0, so D's optimizer never moved
    assert opt_steps(run, "D") == [] and set(opt_steps(run, "G")) == {2.0}
    init = dcgan_model(tiny_images).D.state_dict()  # same seed: D's initial weights
    d = run.model.D.state_dict()
    assert all(torch.equal(d[k], init[k]) for k in d if "running" not in k and "batches" not in k)
    assert [r["D/frozen"] for r in run.metrics()] == [1.0, 1.0]
    assert all(0 <= r["D/acc"] <= 1 for r in run.metrics())  # still measured while frozen
    thawed = tiny("dcgan", tiny_images, **{"tricks.freeze_d_when_acc_above": 1.0})
    assert set(opt_steps(thawed, "D")) == {2.0}


def test_freeze_decision_is_taken_at_check_steps_only():
    mon = AccuracyMonitor(threshold=0.8, check_every=3, decay=0.0)
    decisions = []
    for step in range(7):
        decisions.append(mon.is_frozen(step))
        mon.observe(torch.tensor(1.0 if step < 4 else 0.0))  # decay 0: acc = last batch accuracy
    # step 0: acc 0.5 -> run; step 3: acc 1 -> frozen (held at 4, 5); step 6: acc 0 -> thawed
    assert decisions == [False, False, False, True, True, True, False]
    mon.load_state_dict(mon.state_dict())  # a resumed run reads the held decision back
    mon.frozen.fill_(1.0)
    mon.load_state_dict(mon.state_dict())
    assert mon.is_frozen(7) is True


# --- families and tricks -------------------------------------------------------------------------
def test_tricks_on_families_that_cannot_apply_them(tiny_images):
    info = tiny_images.describe()

    class OwnPhases(DCGAN):
        def phases(self):
            return [Phase("D", "D", lambda ctx: None), Phase("G", "G", lambda ctx: None)]

    cfg = resolve_config("dcgan", {"model": {"width": 8}, "tricks": {"label_smoothing": 0.1}})
    with pytest.raises(ConfigError, match="own phases.*tricks.label_smoothing"):
        OwnPhases(cfg, info).phases()

    class PlainD(OwnPhases):
        def __init__(self, cfg, info):
            super().__init__(cfg, info)
            self.D = DCDiscriminator(1, 16, 8, 64)  # built without the configured layers

    cfg = resolve_config("dcgan", {"model": {"width": 8}, "tricks": {"minibatch_stddev": 4}})
    with pytest.raises(ConfigError, match="tricks.minibatch_stddev"):
        PlainD(cfg, info)
    assert OwnPhases(cfg, info).D.mbstd is not None  # DCGAN builds D with them: fine
    G = nn.Sequential(nn.Linear(4, 256), nn.Tanh(), nn.Unflatten(1, (1, 16, 16)))
    D = nn.Sequential(nn.Flatten(), nn.Linear(256, 1))
    with pytest.raises(ConfigError, match="tricks.d_dropout"):
        gankit.GAN(G, D, latent_dim=4, tricks={"d_dropout": 0.2})
    with pytest.raises(ConfigError, match="tricks.minibatch_stddev"):  # not silently ignored
        gankit.train(gankit.GAN(G, D, latent_dim=4), tiny_images, steps=1, batch_size=8,
                     save=False, progress=False, overrides={"tricks.minibatch_stddev": 4})
    with pytest.raises(ConfigError, match="features"):
        gankit.train(gankit.GAN(G, D, latent_dim=4), tiny_images, steps=1, batch_size=8,
                     save=False, progress=False, overrides={"tricks.feature_matching": True})


def test_d_layers_added_in_place_for_default_phase_families(tiny_images):
    run = tiny("cgan", tiny_images, **{"tricks.minibatch_stddev": 4, "tricks.d_dropout": 0.2,
                                       "tricks.minibatch_discrimination": 4})
    D = run.model.D
    assert D.mbstd.group_size == 4 and D.mbdisc.kernels == 4 and D.features.dropout == 0.2
    assert set(opt_steps(run, "D")) == {2.0}  # the new layers were trained
    assert any(p is D.mbdisc.T for p in run.trainer.opts["D"].param_groups[0]["params"])


def test_default_discriminators_are_unchanged():
    keys = list(DCDiscriminator(1, 16, 8, 64).state_dict())
    assert keys[0] == "features.0.weight" and keys[-2:] == ["head.weight", "head.bias"]
    assert all(k.startswith(("features.", "head.")) for k in keys)
    assert all(k.startswith("net.") for k in MLPDiscriminator((2,), 8, 2, 0.0).state_dict())


# --- everything at once, saved, loaded and resumed ---------------------------------------------
COMBO = {"tricks.label_smoothing": 0.1, "tricks.instance_noise": 0.1,
         "tricks.instance_noise_anneal": 10, "tricks.minibatch_stddev": 4,
         "tricks.minibatch_discrimination": 4, "tricks.historical_averaging": 0.01,
         "tricks.d_dropout": 0.2, "tricks.diffaugment": "color,translation,cutout",
         "tricks.orthogonal_reg": 1e-4, "tricks.feature_matching": True, "loss.gp": "r1"}


def test_combined_tricks_train_save_load_and_resume_exactly(tiny_images, tmp_path):
    full = tiny("dcgan", tiny_images, tmp_path / "full", **{**COMBO, "train.steps": 3})
    last = full.metrics()[-1]
    for key in ("loss/D", "loss/G", "loss/D/hist", "loss/G/hist", "loss/G/ortho", "loss/D/r1"):
        assert math.isfinite(last[key]), key
    ck = full.run_dir / "checkpoints" / "step_00000003"
    fam = load_file(ck / "family.safetensors")  # historical averages are checkpointed
    assert {"tricks_state.hist.G.count", "tricks_state.hist.D.count"} <= set(fam)
    assert fam["tricks_state.hist.D.count"].item() == 4.0  # initial weights + 3 D steps
    x = gankit.load(full.run_dir).sample(4, seed=0)
    assert x.shape == (4, 1, 16, 16) and torch.equal(x, full.generator.sample(4, seed=0))
    # 2 steps, then resume to 3: bit-identical to the uninterrupted run
    part = tiny("dcgan", tiny_images, tmp_path / "part", **COMBO)
    resumed = resume(part.run_dir, tiny_images, 3)
    for a, b in ((full.model, resumed.model), (full.trainer.G_sample, resumed.G_sample)):
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
        assert not diff, diff


def test_freeze_state_resumes_exactly(tiny_images, tmp_path):
    over = {"tricks.freeze_d_when_acc_above": 0.6, "tricks.freeze_d_decay": 0.0,
            "tricks.d_every": 1, "optim.lr_d": 5e-3}
    full = tiny("dcgan", tiny_images, tmp_path / "full", **{**over, "train.steps": 4})
    part = tiny("dcgan", tiny_images, tmp_path / "part", **over)
    resumed = resume(part.run_dir, tiny_images, 4)
    sa, sb = full.model.state_dict(), resumed.model.state_dict()
    assert "tricks_state.monitors.D.acc" in sa
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    frozen = [r["D/frozen"] for r in full.metrics()]
    assert 0.0 in frozen and 1.0 in frozen, frozen  # the run both froze and thawed D


# --- tricks on the families with their own game terms ---------------------------------------------
FAMILY_SMALL = {k: MODELS.get(k).tiny
                for k in ("sgan", "acgan", "infogan", "ssgan", "began", "ebgan", "spheregan")}
PHASE_SET = {"tricks.instance_noise": 0.1, "tricks.instance_noise_anneal": 10,
             "tricks.diffaugment": "translation", "tricks.historical_averaging": 0.01,
             "tricks.orthogonal_reg": 1e-4, "tricks.d_every": 1}


@pytest.mark.parametrize("name", sorted(FAMILY_SMALL))
def test_phase_tricks_apply_to_every_family(name, tiny_images, tmp_path):
    """Families with auxiliary heads or their own objective play the game through
    adversarial_phases, so the phase-level tricks apply to them too (no refusal)."""
    run = tiny(name, tiny_images, tmp_path, **FAMILY_SMALL[name], **PHASE_SET)
    recs = run.metrics()
    assert recs and all(math.isfinite(r["loss/D"]) and math.isfinite(r["loss/G"]) for r in recs)
    assert all("loss/D/hist" in r and "loss/G/hist" in r and "loss/G/ortho" in r for r in recs)
    assert set(opt_steps(run, "D")) == {2.0} and set(opt_steps(run, "G")) == {2.0}


@pytest.mark.parametrize("name", sorted(FAMILY_SMALL))
def test_consensus_updates_every_player_of_a_family(name, tiny_images, tmp_path):
    """One joint phase over both players' full losses (family terms included); InfoGAN's Q is
    on G's side."""
    run = tiny(name, tiny_images, tmp_path, **FAMILY_SMALL[name], **{"tricks.consensus": 0.1})
    assert [p.name for p in run.model.phases()] == ["GD"]
    assert all(math.isfinite(r["loss/consensus"]) for r in run.metrics())
    for key in run.trainer.opts:  # G, D (and Q) each stepped twice
        assert set(opt_steps(run, key)) == {2.0}, key


def test_probabilistic_family_tricks_label_smoothing_and_freezing(tiny_images, tmp_path):
    for name in ("acgan", "ssgan", "infogan", "sgan"):
        run = tiny(name, tiny_images, tmp_path / name, **FAMILY_SMALL[name], **{
            "tricks.label_smoothing": 0.2, "tricks.freeze_d_when_acc_above": 0.0,
            "tricks.freeze_d_check_every": 1})
        assert [r["D/frozen"] for r in run.metrics()] == [1.0, 1.0], name  # acc >= 0 > 0.0
        assert not opt_steps(run, "D"), name  # a frozen D is never stepped
    with pytest.raises(ConfigError, match="threshold"):  # energies have no accuracy
        tiny("ebgan", tiny_images, **FAMILY_SMALL["ebgan"],
             **{"tricks.freeze_d_when_acc_above": 0.9})
    with pytest.raises(ConfigError, match="label_smoothing"):
        tiny("began", tiny_images, **FAMILY_SMALL["began"], **{"tricks.label_smoothing": 0.1})


def test_family_terms_see_d_input_of_the_tricks(tiny_images):
    """ACGAN's class head reads the same (noised) input as its real/fake head; SGAN's
    supervised batch is noised too."""
    cfg_over = {**FAST, **FAMILY_SMALL["acgan"], "tricks.instance_noise": 5.0}
    run = gankit.train("acgan", tiny_images, save=False, progress=False, overrides=cfg_over)
    m = run.model
    seen = []
    h1 = m.D.body.head.register_forward_hook(lambda mod, i, o: seen.append(("head", i[0])))
    h2 = m.D.classes.register_forward_hook(lambda mod, i, o: seen.append(("cls", i[0])))
    d_phase = m.phases()[0]
    real, c = tiny_images.x[:8], tiny_images.y[:8]
    fake = m.G(m.sample_latent(8), c).detach()
    ctx = stub_ctx(m, {"x": real, "y": c}, fake, c)
    d_phase.loss_fn(ctx)
    h1.remove()
    h2.remove()
    assert [k for k, _ in seen] == ["head", "cls", "head", "cls"]  # one pass, both heads
    assert torch.equal(seen[0][1], seen[1][1])
    with torch.no_grad():
        clean = m.D.body.batch_layers(m.D.features(real))
    assert (seen[0][1] - clean).abs().mean() > 0.1  # the heads saw the noised reals


def test_d_layer_tricks_on_multi_head_discriminators(tiny_images, tmp_path):
    for name in ("acgan", "ssgan", "infogan"):
        run = tiny(name, tiny_images, tmp_path / name, **FAMILY_SMALL[name], **{
            "tricks.minibatch_stddev": 4, "tricks.minibatch_discrimination": 3,
            "tricks.d_dropout": 0.2})
        body = getattr(run.model.D, "body", run.model.D)
        assert body.mbstd.group_size == 4 and body.mbdisc.kernels == 3, name
        assert body.features.dropout == 0.2, name
        assert set(opt_steps(run, "D")) == {2.0}, name
        assert all(math.isfinite(r["loss/D"]) for r in run.metrics())
