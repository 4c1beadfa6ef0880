"""Fast tier: the loss-variant families (wgan, wgan-gp, lsgan, dragan, sngan, fgan, spheregan) and
the f-GAN losses, each checked on the properties that define it."""

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import stub_ctx
from torch import nn

import gankit
from gankit.config import resolve_config
from gankit.data.base import Dataset
from gankit.errors import ConfigError
from gankit.losses.fgan import DIVERGENCES, variational_bound
from gankit.models import get_family
from gankit.models.sngan import DBlock, GBlock
from gankit.models.spheregan import (
    geodesic_moments,
    inverse_stereographic,
    north_pole_distance,
    sphere_d_loss,
    sphere_g_loss,
)
from gankit.registry import LOSSES, MODELS

FAST = {"train.log_every": 1, "train.ckpt_every": 100, "train.sample_every": 100,
        "train.batch_size": 8, "train.ema": False}
TINY = {"wgan": {"model.width": 8}, "wgan-gp": {"model.width": 8}, "lsgan": {"model.width": 8},
        "dragan": {"model.width": 8}, "fgan": {"model.width": 8},
        "sngan": {"model.g_width": 8, "model.d_width": 8},
        "spheregan": {"model.width": 8, "model.sphere_dim": 16}}
PTS = {"model.g_hidden": 16, "model.d_hidden": 16}


@pytest.fixture(autouse=True)
def _one_thread():
    """These networks are tiny: on a shared 2-core machine one intra-op thread runs their steps
    10-20x faster than two (measured: SNGAN 16x16 step 43 ms vs 844 ms under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train(name, ds, tmp_path, points=False, **extra):
    over = {**FAST, **(PTS if points else TINY[name]), "train.steps": 2, **extra}
    return gankit.train(name, ds, out=tmp_path / name, overrides=over, progress=False)


def build(name, ds, **over):
    """The family built from its resolved config, without training."""
    layers = [{"model": {"name": name}}]
    for k, v in over.items():
        sec, key = k.split(".")
        layers.append({sec: {key: v}})
    cfg = resolve_config(name, *layers)
    torch.manual_seed(0)
    return get_family(name)(cfg, ds.describe())


def fake_ctx(model, real, fake):
    """The part of the Trainer's StepContext the adversarial phases read."""
    return stub_ctx(model, {"x": real}, fake)


def d_steps(run):
    return {float(s["step"]) for s in run.trainer.opts["D"].state_dict()["state"].values()}


def g_steps(run):
    return {float(s["step"]) for s in run.trainer.opts["G"].state_dict()["state"].values()}


def images(n=8, size=16, c=1):
    return Dataset("img", torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(1))
                   * 2 - 1)


@pytest.mark.parametrize("name", ["wgan", "wgan-gp", "lsgan", "dragan", "fgan", "sngan",
                                  "spheregan"])
def test_listed_with_paper_description(name):
    desc = MODELS.entry(name).description
    assert "20" in desc and len(desc) > 30  # cites the paper's year


@pytest.mark.parametrize("name", ["wgan", "wgan-gp", "lsgan", "dragan", "fgan", "sngan",
                                  "spheregan"])
def test_points_use_mlps(name, tiny_points):
    m = build(name, tiny_points)
    assert m.latent_dim == 2
    convs = [x for x in [*m.G.modules(), *m.D.modules()] if isinstance(x, nn.Conv2d)]
    assert not convs
    x = m.generate(m.G.eval(), torch.randn(5, 2))
    assert x.shape == (5, 2)


# --- WGAN ---------------------------------------------------------------------------------------
def test_wgan_clips_uses_rmsprop_and_five_critic_steps(tiny_images, tmp_path):
    run = train("wgan", tiny_images, tmp_path)
    assert run.cfg.loss.name == "wasserstein" and run.cfg.loss.clip == 0.01
    assert max(p.abs().max().item() for p in run.model.D.parameters()) <= 0.01 + 1e-7
    for k in ("G", "D"):
        opt = run.trainer.opts[k]
        assert isinstance(opt, torch.optim.RMSprop) and opt.param_groups[0]["lr"] == 5e-5
    assert d_steps(run) == {10.0} and g_steps(run) == {2.0}  # n_critic = 5, 2 G steps
    # the paper's DCGAN critic keeps batch norm; no sigmoid: the score is unbounded
    assert any(isinstance(m, nn.BatchNorm2d) for m in run.model.D.modules())
    last = run.metrics()[-1]
    assert last["wasserstein/estimate"] == pytest.approx(last["D/real"] - last["D/fake"], abs=1e-6)
    assert last["wasserstein/estimate"] == pytest.approx(-last["loss/D"], abs=1e-6)


# --- WGAN-GP ------------------------------------------------------------------------------------
def test_wgan_gp_penalty_and_no_batchnorm_in_critic(tiny_images, tmp_path):
    run = train("wgan-gp", tiny_images, tmp_path, **{"optim.n_critic": 2})
    c = run.cfg
    assert (c.loss.name, c.loss.gp, c.loss.lambda_gp) == ("wasserstein", "wgan-gp", 10.0)
    assert resolve_config("wgan-gp").optim.n_critic == 5
    opt = run.trainer.opts["D"]
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == 1e-4 and opt.param_groups[0]["betas"] == (0.0, 0.9)
    D = run.model.D
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules())
    assert any(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in D.modules())
    last = run.metrics()[-1]
    assert last["loss/D/wgan-gp"] >= 0 and "wasserstein/estimate" in last
    assert d_steps(run) == {4.0}
    with pytest.raises(ConfigError):
        resolve_config("wgan-gp", {"model": {"d_norm": "batchnorm"}})


def test_wgan_gp_critic_scores_each_sample_independently(tiny_images):
    """The per-sample penalty needs D(x_i) independent of the batch (why BN is dropped)."""
    m = build("wgan-gp", tiny_images, **{"model.width": 8})
    x = tiny_images.x[:6]
    m.D.train()
    torch.testing.assert_close(m.D(x)[:2], m.D(x[:2]), rtol=1e-5, atol=1e-6)
    bn = build("wgan", tiny_images, **{"model.width": 8}).D.train()  # BN critic: batch-coupled
    assert not torch.allclose(bn(x)[:2], bn(x[:2]), atol=1e-6)


def test_wgan_gp_penalty_weight_and_betas_depend_on_the_data(tiny_images, tiny_points):
    """Algorithm 1's lambda = 10, betas (0, 0.9) on images; the released toy code's lambda = 0.1,
    betas (0.5, 0.9) on points; a value the user sets wins on both, even the other default."""
    def settings(m):
        c = m.cfg
        return c.loss.lambda_gp, c.optim.betas_g, c.optim.betas_d

    assert settings(build("wgan-gp", tiny_images, **{"model.width": 8})) == \
        (10.0, (0.0, 0.9), (0.0, 0.9))
    m = build("wgan-gp", tiny_points)
    assert settings(m) == (0.1, (0.5, 0.9), (0.5, 0.9))
    # the resolved config records them: rebuilding from it (resume, load) gives the same run
    again = resolve_config("wgan-gp", m.cfg.to_dict())
    assert (again.loss.lambda_gp, again.optim.betas_d) == (0.1, (0.5, 0.9))
    user = build("wgan-gp", tiny_points, **{"loss.lambda_gp": 10.0, "optim.betas_d": (0.0, 0.9)})
    assert settings(user) == (10.0, (0.5, 0.9), (0.0, 0.9))
    img = build("wgan-gp", tiny_images, **{"model.width": 8, "loss.lambda_gp": 0.1})
    assert settings(img) == (0.1, (0.0, 0.9), (0.0, 0.9))


@pytest.mark.slow
def test_wgan_gp_learns_ring8_with_point_defaults():
    """The family's own point settings (networks, lr, lambda = 0.1, betas (0.5, 0.9), 5 critic
    steps; batch 64) put samples on all 8 ring modes in 600 G steps (about 30 s on one thread;
    measured over seeds 0-2: >= 53 of 2,500 samples within 10 sigma of every mode, 44-60 % of
    all samples). With the former image settings on points (lambda = 10, betas (0, 0.9)) G was
    still a cloud: 1 mode by this count, 2.9 % of samples within 10 sigma (seed 0)."""
    from gankit.metrics.modes import mode_stats

    run = gankit.train("wgan-gp", "ring8", steps=600, save=False, progress=False,
                       overrides={"train.ema": False, "train.doctor": False,
                                  "train.log_every": 300})
    assert run.cfg.loss.lambda_gp == 0.1
    x = run.generator.sample(2500, seed=0)
    info = run.data.info
    near = mode_stats(x, info["centers"], info["sigma"], n_sigma=10, min_count=20)
    assert near["modes_covered"] >= 7
    assert near["high_quality_frac"] >= 0.3
    assert mode_stats(x, info["centers"], info["sigma"])["modes_covered"] >= 6  # 3 sigma, PacGAN


# --- LSGAN --------------------------------------------------------------------------------------
def test_lsgan_uses_least_squares_01_coding(tiny_images, tmp_path):
    m = build("lsgan", tiny_images, **{"model.width": 8})
    assert m.cfg.loss.name == "lsgan" and m.cfg.optim.betas_d == (0.5, 0.999)
    assert m.cfg.optim.lr_g == 2e-4
    real, fake = tiny_images.x[:8], tiny_images.x[8:16] * 0.5
    d_phase, g_phase = m.phases()[0], m.phases()[-1]
    loss_d, _ = d_phase.loss_fn(fake_ctx(m, real, fake))
    loss_g, _ = g_phase.loss_fn(fake_ctx(m, real, fake))
    dr, df = m.D(real).squeeze(1), m.D(fake).squeeze(1)  # linear output, no sigmoid
    assert loss_d.item() == pytest.approx((0.5 * (dr - 1) ** 2 + 0.5 * df ** 2).mean().item(),
                                          rel=1e-5)
    assert loss_g.item() == pytest.approx((0.5 * (df - 1) ** 2).mean().item(), rel=1e-5)
    lsq = LOSSES.get("lsgan")
    assert lsq.d_loss(torch.ones(3), torch.zeros(3)).item() == 0  # b = 1 real, a = 0 fake
    assert lsq.g_loss(torch.ones(3)).item() == 0  # c = 1


# --- DRAGAN -------------------------------------------------------------------------------------
def test_dragan_penalty_is_around_real_data_only(tiny_points):
    m = build("dragan", tiny_points, **PTS)
    assert (m.cfg.loss.name, m.cfg.loss.gp, m.cfg.loss.lambda_gp) == ("nonsaturating", "dragan",
                                                                       10.0)
    real = tiny_points.x[:16]
    d_step = m.phases()[0].loss_fn
    out = []
    for fake in (torch.zeros(16, 2), torch.full((16, 2), 50.0)):
        torch.manual_seed(3)  # same perturbation of the real data
        loss, stats = d_step(fake_ctx(m, real, fake))
        assert loss.item() == pytest.approx(stats["loss/D"].item()
                                            + 10 * stats["loss/D/dragan"].item(), rel=1e-5)
        bce = F.softplus(-m.D(real)).mean() + F.softplus(m.D(fake)).mean()
        assert stats["loss/D"].item() == pytest.approx(bce.item(), rel=1e-5)
        out.append(stats["loss/D/dragan"].item())
    assert out[0] == pytest.approx(out[1], rel=1e-6)  # the fakes do not enter the penalty
    conv = build("dragan", images(), **{"model.width": 8})
    assert not any(isinstance(x, nn.BatchNorm2d) for x in conv.D.modules())


# --- SNGAN --------------------------------------------------------------------------------------
def test_sngan_every_d_layer_spectrally_normalised(tiny_images):
    m = build("sngan", tiny_images, **{"model.g_width": 8, "model.d_width": 8})
    assert m.cfg.loss.name == "hinge" and m.cfg.optim.n_critic == 5
    assert m.cfg.optim.betas_d == (0.0, 0.9) and m.cfg.optim.lr_d == 2e-4
    layers = [x for x in m.D.modules() if isinstance(x, (nn.Conv2d, nn.Linear))]
    assert len(layers) >= 7
    assert all(nn.utils.parametrize.is_parametrized(x, "weight") for x in layers)
    assert not any(isinstance(x, nn.modules.batchnorm._BatchNorm) for x in m.D.modules())
    assert not any(nn.utils.parametrize.is_parametrized(x) for x in m.G.modules())
    m.D.train()
    with torch.no_grad():
        for _ in range(20):  # one power iteration per training-mode forward
            m.D(tiny_images.x[:4])
    for x in layers:
        w = x.weight  # the normalised weight W / sigma(W)
        sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=2e-2), x
        raw = x.parametrizations.weight.original
        assert torch.linalg.matrix_norm(raw.reshape(raw.shape[0], -1), ord=2).item() != \
            pytest.approx(1.0, abs=2e-2)  # the normalisation did something


def test_sngan_resnet_scales_with_resolution():
    m = build("sngan", images(2, 32, 3), **{"model.g_width": 8, "model.d_width": 8})
    # Miyato et al.'s CIFAR-10 ResNet: 3 up-blocks 4 -> 32; D 32 -> 16 -> 8 then 2 blocks
    assert sum(isinstance(b, GBlock) for b in m.G.modules()) == 3
    downs = [b.down for b in m.D.modules() if isinstance(b, DBlock)]
    assert downs == [True, True, False, False]
    assert m.latent_dim == 128
    x = m.G.eval()(torch.randn(2, 128))
    assert x.shape == (2, 3, 32, 32) and x.abs().max() <= 1
    assert m.D(x).shape == (2, 1)
    m16 = build("sngan", images(2, 16), **{"model.g_width": 8, "model.d_width": 8})
    assert [b.down for b in m16.D.modules() if isinstance(b, DBlock)] == [True, False, False]


def test_sngan_takes_five_d_steps_per_g_step(tiny_images):
    run = gankit.train("sngan", tiny_images, steps=1, save=False, progress=False,
                       overrides={**FAST, **TINY["sngan"]})
    assert d_steps(run) == {5.0} and g_steps(run) == {1.0}
    assert all(math.isfinite(v) for v in run.trainer.pop_stats().values())


# --- f-GAN --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,t,value", [
    ("kl", 0.0, math.exp(-1)), ("kl", 1.0, 1.0),
    ("rkl", -1.0, -1.0), ("rkl", -0.5, -1 + math.log(2)),
    ("pearson", 2.0, 3.0), ("pearson", -2.0, -1.0),
    ("hellinger", 0.5, 1.0), ("hellinger", -1.0, -0.5),
    ("js", 0.0, 0.0), ("js", math.log(1.5), math.log(2)),
    ("tv", 0.3, 0.3), ("tv", -0.5, -0.5),
])
def test_fgan_conjugates_hand_computed(name, t, value):
    div = DIVERGENCES[name]
    assert div.f_star(torch.tensor(t, dtype=torch.float64)).item() == pytest.approx(value)
    assert div.f(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(0.0)  # f(1) = 0


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_fgan_conjugate_is_the_fenchel_sup(name):
    """f*(t) = sup_u ut - f(u) over u > 0 for t in the range of f' (where the sup is attained, at
    u0 with f'(u0) = t), and Fenchel-Young f*(t) >= ut - f(u) on a grid, everywhere in dom f*."""
    div = DIVERGENCES[name]
    grid = torch.logspace(-4, 4, 4001, dtype=torch.float64)
    u0 = torch.logspace(-1.5, 1.5, 9, dtype=torch.float64)
    if name == "tv":  # f' is +-1/2 off u = 1; the subgradient at u = 1 spans [-1/2, 1/2]
        u0, t0 = torch.ones(9, dtype=torch.float64), torch.linspace(-0.5, 0.5, 9,
                                                                    dtype=torch.float64)
    else:
        t0 = div.f_prime(u0)
    u = torch.cat([grid, u0])
    vals = t0[:, None] * u[None, :] - div.f(u)[None, :]  # [T, U]
    torch.testing.assert_close(div.f_star(t0), vals.max(1).values, rtol=1e-9, atol=1e-9)
    lo, hi = div.dom
    t = torch.linspace(max(lo, -6.0) + 1e-3, min(hi, 6.0) - 1e-3, 25, dtype=torch.float64)
    vals = t[:, None] * u[None, :] - div.f(u)[None, :]
    assert (div.f_star(t) >= vals.max(1).values - 1e-9).all()


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_fgan_safe_forms_match_table_2(name):
    div = DIVERGENCES[name]
    v = torch.linspace(-6, 6, 101, dtype=torch.float64)
    t = div.activation(v)
    lo, hi = div.dom
    assert ((t >= lo) & (t <= hi)).all()  # g_f maps into dom f*
    torch.testing.assert_close(div.conj_act(v), div.f_star(t), rtol=1e-9, atol=1e-9)


def _discrete():
    p = torch.tensor([0.5, 0.25, 0.125, 0.125], dtype=torch.float64)
    q = torch.tensor([0.125, 0.25, 0.25, 0.375], dtype=torch.float64)
    return p, q


def _kl(a, b):
    return (a * torch.log(a / b)).sum()


def _true_divergences(p, q):
    m = (p + q) / 2
    kl = _kl
    return {"kl": kl(p, q), "rkl": kl(q, p), "pearson": ((p - q) ** 2 / q).sum(),
            "hellinger": ((p.sqrt() - q.sqrt()) ** 2).sum(), "js": kl(p, m) + kl(q, m),
            "tv": 0.5 * (p - q).abs().sum()}


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_fgan_bound_is_tight_at_the_optimal_critic_discrete(name):
    div = DIVERGENCES[name]
    p, q = _discrete()
    t_star = div.f_prime(p / q)  # T*(x) = f'(p(x)/q(x))
    bound = (p * t_star).sum() - (q * div.f_star(t_star)).sum()
    assert bound.item() == pytest.approx(_true_divergences(p, q)[name].item(), rel=1e-9)
    # any other critic gives a smaller value (the bound is a lower bound)
    g = torch.Generator().manual_seed(0)
    lo, hi = div.dom
    for _ in range(5):
        t = (t_star + 0.2 * torch.randn(4, generator=g, dtype=torch.float64)).clamp(
            max(lo, -1e9) + 1e-6, min(hi, 1e9) - 1e-6)
        other = (p * t).sum() - (q * div.f_star(t)).sum()
        assert other.item() <= bound.item() + 1e-12


def _inverse_activation(name, t):
    return {"kl": lambda: t, "pearson": lambda: t, "rkl": lambda: -torch.log(-t),
            "hellinger": lambda: -torch.log1p(-t), "js": lambda: torch.logit(torch.exp(t) / 2),
            "tv": lambda: torch.atanh(2 * t)}[name]()


@pytest.mark.parametrize("name", list(DIVERGENCES))
def test_fgan_loss_at_optimal_critic_is_minus_divergence(name):
    """The registered d_loss over samples (batch means), with D's raw output chosen so that
    g_f(v) = T*, equals -D_f for p = [4, 2, 1, 1]/8, q = [1, 2, 2, 3]/8."""
    div = DIVERGENCES[name]
    p, q = _discrete()
    xs_real = torch.tensor([0, 0, 0, 0, 1, 1, 2, 3])  # 8 samples with frequencies p
    xs_fake = torch.tensor([0, 1, 1, 2, 2, 3, 3, 3])  # frequencies q
    v = _inverse_activation(name, div.f_prime(p / q))  # raw critic output per support point
    loss = LOSSES.get(f"fgan-{name}")
    d = loss.d_loss(v[xs_real], v[xs_fake])
    assert d.item() == pytest.approx(-_true_divergences(p, q)[name].item(), rel=1e-7, abs=1e-12)
    assert variational_bound(div, v[xs_real], v[xs_fake]).item() == pytest.approx(-d.item())


def _normal_logpdf(x, mu, s):
    return -0.5 * ((x - mu) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


@pytest.mark.parametrize("name", ["kl", "rkl", "hellinger"])
def test_fgan_bound_is_tight_for_gaussians(name):
    """P = N(0, 1), Q = N(1, 1.5^2): the bound at T* (quadrature on a grid) = closed form."""
    div = DIVERGENCES[name]
    x = torch.linspace(-15, 16, 200001, dtype=torch.float64)
    dx = x[1] - x[0]
    p, q = _normal_logpdf(x, 0.0, 1.0).exp(), _normal_logpdf(x, 1.0, 1.5).exp()
    keep = (p > 1e-300) & (q > 1e-300)
    x, p, q = x[keep], p[keep], q[keep]
    t = div.f_prime(p / q)
    bound = ((p * t).sum() - (q * div.f_star(t)).sum()) * dx
    m1, s1, m2, s2 = 0.0, 1.0, 1.0, 1.5

    def kl(ma, sa, mb, sb):  # KL(N(ma, sa^2) || N(mb, sb^2))
        return math.log(sb / sa) + (sa**2 + (ma - mb) ** 2) / (2 * sb**2) - 0.5

    bc = math.sqrt(2 * s1 * s2 / (s1**2 + s2**2)) * math.exp(-(m1 - m2) ** 2
                                                              / (4 * (s1**2 + s2**2)))
    true = {"kl": kl(m1, s1, m2, s2), "rkl": kl(m2, s2, m1, s1), "hellinger": 2 * (1 - bc)}[name]
    assert bound.item() == pytest.approx(true, rel=1e-5)


def test_fgan_js_is_the_gan_loss_shifted():
    """With sigmoid(v) = D(x), fgan-js = the non-saturating GAN up to constants (log 2 terms)."""
    r, f = torch.tensor([2.0, -1.0, 0.3]), torch.tensor([0.5, -3.0, 1.0])
    js, ns = LOSSES.get("fgan-js"), LOSSES.get("nonsaturating")
    assert js.d_loss(r, f).item() == pytest.approx(ns.d_loss(r, f).item() - 2 * math.log(2))
    assert js.g_loss(f).item() == pytest.approx(ns.g_loss(f).item() - math.log(2))
    assert js.probabilistic


def test_fgan_losses_are_finite_for_extreme_critic_outputs():
    v = torch.tensor([-80.0, -20.0, 0.0, 20.0, 80.0], requires_grad=True)
    for name in ("js", "rkl", "hellinger", "tv"):
        loss = LOSSES.get(f"fgan-{name}")
        d = loss.d_loss(v.clamp(max=20), v.clamp(min=-20)) + loss.g_loss(v.clamp(min=-20))
        (g,) = torch.autograd.grad(d, v)
        assert torch.isfinite(d) and torch.isfinite(g).all(), name


def test_fgan_divergence_choice_sets_the_loss(tiny_points):
    assert build("fgan", tiny_points).cfg.loss.name == "fgan-js"  # default
    m = build("fgan", tiny_points, **{"model.divergence": "kl"})
    assert m.cfg.loss.name == "fgan-kl" and m.divergence == "kl"
    m = build("fgan", tiny_points, **{"loss.name": "fgan-pearson"})
    assert m.cfg.model["divergence"] == "pearson"
    with pytest.raises(ConfigError, match="model.divergence"):
        build("fgan", tiny_points, **{"loss.name": "hinge"})
    with pytest.raises(ConfigError):
        build("fgan", tiny_points, **{"model.divergence": "jeffrey"})


@pytest.mark.parametrize("div", ["kl", "rkl", "pearson", "hellinger", "tv"])
def test_fgan_trains_with_each_divergence(div, tiny_points, tmp_path):
    run = train("fgan", tiny_points, tmp_path, points=True, **{"model.divergence": div})
    assert run.cfg.loss.name == f"fgan-{div}"
    assert all(math.isfinite(run.metrics()[-1][k]) for k in ("loss/D", "loss/G"))
    g = gankit.load(run.run_dir)  # the saved config rebuilds the same family
    assert g.model.cfg.loss.name == f"fgan-{div}"


# --- SphereGAN ----------------------------------------------------------------------------------
def test_inverse_stereographic_projection_geometry():
    p = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)) * 3
    q = inverse_stereographic(p)
    assert q.shape == (64, 6)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(64))  # on the unit sphere S^5
    d = north_pole_distance(q)
    assert (d >= 0).all() and (d <= math.pi).all()
    torch.testing.assert_close(d, torch.arccos(q[:, -1].clamp(-1, 1)), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(d, 2 * torch.atan(1 / p.norm(dim=1)))
    special = inverse_stereographic(torch.tensor([[0.0, 0.0], [1.0, 0.0], [1e4, 0.0]]))
    torch.testing.assert_close(north_pole_distance(special),
                               torch.tensor([math.pi, math.pi / 2, 2e-4]), atol=1e-6, rtol=1e-4)
    m = geodesic_moments(q, 3)
    torch.testing.assert_close(m, torch.stack([d, d**2, d**3], 1))


def test_spheregan_objective_hand_computed():
    m_real = torch.tensor([[1.0, 1.0, 1.0], [2.0, 4.0, 8.0]])
    m_fake = torch.tensor([[0.5, 0.25, 0.125], [3.0, 9.0, 27.0]])
    # D maximises sum_r E[d^r(real)] - E[d^r(fake)] = (3 + 14)/2 - (0.875 + 39)/2
    s_real, s_fake = m_real.sum(1), m_fake.sum(1)  # the family's d_score
    assert sphere_d_loss(s_real, s_fake).item() == pytest.approx((0.875 + 39) / 2 - 17 / 2)
    assert sphere_g_loss(s_fake).item() == pytest.approx(-(0.875 + 39) / 2)


def test_spheregan_critic_maps_to_sphere_without_lipschitz_constraint(tiny_images, tmp_path):
    m = build("spheregan", tiny_images, **{"model.width": 8})
    assert m.sphere_dim == 1024 and m.p.moments == 3  # the paper's n and R
    q = m.D(tiny_images.x[:6])
    assert q.shape == (6, 1025)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(6))
    s = m.discriminate(m.D, tiny_images.x[:6])
    assert s.shape == (6,) and (s >= 0).all() and (s <= math.pi + math.pi**2 + math.pi**3).all()
    c = m.cfg
    assert c.loss.gp is None and c.loss.clip is None
    assert not any(nn.utils.parametrize.is_parametrized(x) for x in m.D.modules())
    assert c.optim.lr_d == 1e-4 and c.optim.betas_d == (0.0, 0.9)
    for bad in ({"loss.gp": "wgan-gp"}, {"loss.clip": 0.01}, {"loss.name": "hinge"}):
        with pytest.raises(ConfigError, match="Lipschitz"):
            build("spheregan", tiny_images, **{"model.width": 8}, **bad)
    run = train("spheregan", tiny_images, tmp_path)
    last = run.metrics()[-1]
    assert 0 <= last["sphere/dist_real"] <= math.pi and 0 <= last["sphere/dist_fake"] <= math.pi
    assert last["loss/D"] == pytest.approx(last["D/fake"] - last["D/real"], abs=1e-5)


def test_spheregan_on_points(tiny_points, tmp_path):
    run = train("spheregan", tiny_points, tmp_path, points=True)
    assert run.model.sphere_dim == 32
    assert run.generator.sample(10, seed=0).shape == (10, 2)
    q = run.model.D(tiny_points.x[:5])
    torch.testing.assert_close(q.norm(dim=1), torch.ones(5))


# --- short real trainings on ring8 ---------------------------------------------------------------
RING = {"model.g_hidden": 64, "model.d_hidden": 64, "model.g_layers": 3, "train.batch_size": 64,
        "train.ema": False, "train.log_every": 1000, "optim.lr_g": 1e-3, "optim.lr_d": 1e-3,
        "optim.n_critic": 1}


# wgan-gp and dragan are left out: with their penalties at lambda = 10 they need well over 300
# steps on ring8 (measured: still off the circle after 300-1500), too slow for this tier.
# wgan-gp's point settings (lambda = 0.1) have their own test above.
@pytest.mark.parametrize("name,extra", [
    ("wgan", {"optim.n_critic": 2, "optim.lr_g": 5e-4, "optim.lr_d": 5e-4}),
    ("lsgan", {}), ("fgan", {}), ("sngan", {}), ("spheregan", {}),
])
def test_learns_ring8_in_300_steps(name, extra):
    """300 G steps with 64-unit MLPs (~1 s): samples move from near the origin onto the circle
    and cover several of the 8 modes (measured over seeds 0-2: median |r - 1| <= 0.12, >= 3
    modes)."""
    from gankit.data.builtin import ring8_centers

    run = gankit.train(name, "ring8", steps=300, save=False, progress=False,
                       overrides={**RING, **extra})
    x = run.generator.sample(2000, seed=0)
    assert (x.norm(dim=1) - 1).abs().median() < 0.15
    d = torch.cdist(x, torch.tensor(ring8_centers(), dtype=x.dtype))
    hit = d.argmin(1)[d.min(1).values < 0.1]  # samples within 10 sigma of a mode
    assert int((torch.bincount(hit, minlength=8) >= 20).sum()) >= 3
