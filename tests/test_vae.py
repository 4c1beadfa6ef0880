"""The VAE family (Kingma & Welling 2014): densities against hand computations, the phase loss
against a by-hand negative ELBO with the same noise, the IWAE bound (Burda et al. 2016), the
capabilities through a saved run, refused configurations, and a short real training."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import stats

import gankit
from gankit.cli import main
from gankit.config import resolve_config
from gankit.errors import ConfigError
from gankit.likelihood import bits_per_dim, dequantize
from gankit.models import vae as V
from gankit.models.base import CapabilityError

TINY = {"model.hidden": 16, "model.latent_dim": 4, "train.doctor": False, "train.log_every": 1}


def build(ds, **model):
    cfg = resolve_config("vae", {"model": {"hidden": 16, "latent_dim": 4, **model}})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return V.VAE(cfg, ds.describe())


def ctx_for(model, x, seed):
    """The part of the StepContext the ELBO phase reads."""
    nets = model.networks()
    return SimpleNamespace(batch={"x": x}, generator=torch.Generator().manual_seed(seed),
                           net=nets.__getitem__, n=len(x), device=torch.device("cpu"))


# --- densities ------------------------------------------------------------------------------------
def test_analytic_kl_matches_monte_carlo_and_vanishes_at_the_prior():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 5, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 5, generator=g, dtype=torch.float64) * 0.5
    kl = V.gaussian_kl(mu, logvar)
    # KL = E_q[log q(z) - log p(z)], 400k samples per row
    eps = torch.randn(400_000, 3, 5, generator=g, dtype=torch.float64)
    z = mu + (0.5 * logvar).exp() * eps
    log_q = V.log_normal(z, mu, 0.5 * logvar)
    log_p = V.log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
    mc = (log_q - log_p).mean(0)
    se = (log_q - log_p).std(0) / math.sqrt(len(eps))
    assert torch.all((kl - mc).abs() < 5 * se), (kl, mc, se)
    assert kl.min() > 0.1  # not trivially zero
    assert torch.equal(V.gaussian_kl(torch.zeros(2, 7), torch.zeros(2, 7)), torch.zeros(2))


def test_reconstruction_log_likelihoods_equal_hand_computations():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 10, generator=g, dtype=torch.float64) * 3
    x = torch.bernoulli(torch.full((4, 10), 0.5, dtype=torch.float64), generator=g)
    p = torch.sigmoid(logits).numpy()
    hand = np.sum(np.where(x.numpy() == 1, np.log(p), np.log(1 - p)), axis=1)
    np.testing.assert_allclose(V.bernoulli_log_lik(x, logits).numpy(), hand, rtol=1e-12)
    mean = torch.rand(4, 10, generator=g, dtype=torch.float64)
    log_sigma = torch.randn(10, generator=g, dtype=torch.float64).expand(4, 10)
    y = torch.rand(4, 10, generator=g, dtype=torch.float64)
    hand = stats.norm.logpdf(y.numpy(), mean.numpy(), np.exp(log_sigma.numpy())).sum(1)
    np.testing.assert_allclose(V.gaussian_log_lik(y, mean, log_sigma).numpy(), hand, rtol=1e-12)


# --- the phase loss -------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["bernoulli", "gaussian-images", "gaussian-points"])
def test_phase_loss_is_the_negative_elbo_by_hand(case, tiny_images, tiny_points):
    ds = tiny_points if case == "gaussian-points" else tiny_images
    model = build(ds, decoder="bernoulli" if case == "bernoulli" else "gaussian")
    x = ds.x[:6]
    with torch.no_grad():
        loss, st = model.elbo_loss(ctx_for(model, x, seed=7))
        g = torch.Generator().manual_seed(7)  # the same draws in the same order, by hand
        if case == "bernoulli":
            t = torch.bernoulli((x + 1) / 2, generator=g)  # dynamic binarisation
            enc_in = 2 * t - 1
        elif case == "gaussian-images":
            levels = ((x + 1) * 127.5).round()
            t = (levels + torch.rand(x.shape, generator=g)) / 256  # dequantised, in [0, 1)
            enc_in = 2 * t - 1
        else:
            t = enc_in = x
        h = torch.tanh(model.E.net[0](enc_in.flatten(1)))
        mu, logvar = model.E.net[2](h).chunk(2, 1)
        eps = torch.randn(mu.shape, generator=g)
        z = mu + torch.exp(logvar / 2) * eps
        out = model.dec.body[2](torch.tanh(model.dec.body[0](z))).double()
        t = t.flatten(1).double()
        if case == "bernoulli":
            q = torch.sigmoid(out)
            rec = (t * q.log() + (1 - t) * (1 - q).log()).sum(1)
        else:
            m = torch.sigmoid(out) if case == "gaussian-images" else out
            s = model.dec.log_sigma.flatten().double().exp()
            rec = (-0.5 * torch.log(2 * math.pi * s**2) - (t - m) ** 2 / (2 * s**2)).sum(1)
        kl = 0.5 * (mu.double() ** 2 + logvar.double().exp() - 1 - logvar.double()).sum(1)
    assert torch.isclose(loss.double(), -(rec - kl).mean(), rtol=1e-5)
    assert torch.isclose(st["loss/rec"].double(), -rec.mean(), rtol=1e-5)
    assert torch.isclose(st["loss/kl"].double(), kl.mean(), rtol=1e-5)
    assert torch.isclose(st["loss/elbo"], st["loss/rec"] + st["loss/kl"])


@pytest.mark.parametrize("decoder", ["bernoulli", "gaussian"])
def test_gradients_reach_encoder_and_decoder(decoder, tiny_images):
    model = build(tiny_images, decoder=decoder)
    loss, _ = model.elbo_loss(ctx_for(model, tiny_images.x[:8], seed=0))
    loss.backward()
    for name, net in model.networks().items():
        for pname, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (name, pname)
    assert model.dec.log_sigma is not None or decoder == "bernoulli"


# --- the importance-weighted bound ----------------------------------------------------------------
def test_iwae_with_one_sample_is_the_elbo_with_the_same_noise(tiny_images):
    model = build(tiny_images).eval()
    x = tiny_images.x[:5]
    with torch.no_grad():
        t = model.binarize(x)
        mu, logvar = model.posterior(model.E, t)
        iw1 = model.iwae_bound(t, 1, torch.Generator().manual_seed(3))
        eps = torch.randn((1, *mu.shape), generator=torch.Generator().manual_seed(3))[0]
        z = mu + (logvar / 2).exp() * eps
        rec = model.rec_log_lik(model.dec, z, t)
        log_p = V.log_normal(z, torch.zeros_like(z), torch.zeros_like(z))
        log_q = V.log_normal(z, mu, logvar / 2)
        torch.testing.assert_close(iw1, rec + log_p - log_q)  # the one-sample ELBO, same eps
        # the analytic-KL ELBO of log_prob(k=1) uses the same eps the same way ...
        elbo = model.log_prob(x, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(elbo, rec - V.gaussian_kl(mu, logvar))
        # ... and both estimate the same ELBO: their means over 4000 draws agree
        g = torch.Generator().manual_seed(4)
        a = torch.stack([model.iwae_bound(t, 1, g) for _ in range(4000)])
        b = torch.stack([model.log_prob(x, generator=g) for _ in range(4000)])
        se = (a.var(0) / 4000 + b.var(0) / 4000).sqrt()
        assert torch.all((a.mean(0) - b.mean(0)).abs() < 5 * se)


def test_iwae_streams_chunks_exactly(tiny_images, monkeypatch):
    model = build(tiny_images).eval()
    t = model.binarize(tiny_images.x[:4])
    monkeypatch.setattr(V, "IW_CHUNK_ROWS", 4)  # one sample (of 4 images) per chunk
    with torch.no_grad():
        got = model.iwae_bound(t, 9, torch.Generator().manual_seed(5))
        mu, logvar = model.posterior(model.E, t)
        g = torch.Generator().manual_seed(5)
        lw = torch.cat([model.log_weights(t, mu, logvar, 1, g) for _ in range(9)])  # [9, 4]
    torch.testing.assert_close(got, torch.logsumexp(lw, 0) - math.log(9))


@pytest.fixture(scope="module")
def mnist_run():
    """A tiny MLP VAE (128 tanh units, 8 latents) trained 300 steps on MNIST-5k (~2 s)."""
    from gankit.data import load_data

    ds = load_data("mnist5k")
    run = gankit.train("vae", ds, steps=300, save=False, progress=False,
                       overrides={"train.doctor": False, "model.hidden": 128,
                                  "model.latent_dim": 8, "train.log_every": 300})
    return run, ds


def test_training_beats_the_independent_pixel_model(mnist_run):
    run, ds = mnist_run
    untrained = build(ds, hidden=128, latent_dim=8)
    before = untrained.infer("log_prob", ds.x_test, seed=0).mean().item()
    after = run.generator.log_prob(ds.x_test, seed=0).mean().item()
    # the best factorised Bernoulli model (train-set pixel means) on the same binarised test set
    p = ((ds.x + 1) / 2).mean(0).clamp(1e-3, 1 - 1e-3)
    xb = run.model.binarize(ds.x_test)
    pixels = (xb * p.log() + (1 - xb) * (1 - p).log()).flatten(1).sum(1).mean().item()
    assert before < -500  # about 784 log 2 at initialisation
    assert after > before + 300, (before, after)
    assert after > pixels + 20, (after, pixels)  # the latent code is used (measured: -172, -209)
    log = run.trainer.last_log
    assert log["loss/elbo"] == pytest.approx(log["loss/rec"] + log["loss/kl"], rel=1e-5)


def test_iwae_bound_is_tighter_on_a_trained_model(mnist_run):
    run, ds = mnist_run
    x = ds.x_test[:200]
    elbo = run.generator.log_prob(x, seed=1)
    iwae = run.generator.log_prob(x, seed=1, k=64)
    assert iwae.shape == (200,) and torch.isfinite(iwae).all()
    assert iwae.mean() > elbo.mean() + 1.0, (iwae.mean(), elbo.mean())  # measured: ~6 nats


def test_dynamic_training_and_fixed_evaluation_binarisation(tiny_images):
    model = build(tiny_images)
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    b = model.binarize(x)
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(b[10:11], model.binarize(x[10:11]))  # independent of the batching
    assert torch.equal(model.binarize(x), b)  # fixed
    binary = (torch.rand(8, 1, 16, 16) > 0.5).float() * 2 - 1
    assert torch.equal(model.binarize(binary), (binary + 1) / 2)  # binary images unchanged
    grey = torch.zeros(4000, 1, 16, 16)  # p = 0.5: half the thresholds are below it
    assert abs(model.binarize(grey).mean().item() - 0.5) < 0.2
    g = torch.Generator().manual_seed(0)
    d1 = model.train_target(grey, g)
    assert abs(d1.mean().item() - 0.5) < 0.01 and not torch.equal(d1, model.train_target(grey, g))


def test_dequantisation_stays_in_each_grey_levels_bin():
    levels = torch.arange(256.0).view(1, 1, 16, 16)
    y = dequantize(levels / 127.5 - 1, torch.Generator().manual_seed(0))
    assert torch.equal((y * 256).floor(), levels)
    assert y.min() >= 0 and y.max() < 1


# --- capabilities through a saved run -------------------------------------------------------------
@pytest.fixture
def saved_run(tiny_images, tmp_path):
    return gankit.train("vae", tiny_images, out=tmp_path / "vae", progress=False,
                        overrides={**TINY, "train.steps": 3, "train.batch_size": 8})


def test_capabilities_through_load(saved_run, tiny_images):
    g, live = gankit.load(saved_run.run_dir), saved_run.generator
    x = tiny_images.x[:5]
    s = g.sample(7, seed=3)
    assert s.shape == (7, 1, 16, 16) and s.min() >= -1 and s.max() <= 1
    assert torch.equal(s, g.sample(7, seed=3)) and torch.equal(s, live.sample(7, seed=3))
    assert not torch.equal(s, g.sample(7, seed=4))
    drawn = g.sample(7, seed=3, mean=False)
    assert set(drawn.unique().tolist()) <= {-1.0, 1.0}  # binary pixels
    lp = g.log_prob(x, seed=0)
    assert lp.shape == (5,) and torch.all(lp < 0) and torch.equal(lp, live.log_prob(x, seed=0))
    assert g.log_prob(x, seed=0, k=5).shape == (5,)
    z = g.encode(x)
    with torch.no_grad():
        mu, _ = g.model.posterior(g.model.E, g.model.binarize(x))
    assert z.shape == (5, 4) and torch.equal(z, mu)
    dec = g.decode(z)
    assert dec.shape == (5, 1, 16, 16) and torch.equal(dec, live.decode(z))
    with torch.no_grad():
        assert torch.allclose(dec, torch.sigmoid(g.model.dec(z)) * 2 - 1)
    with pytest.raises(ConfigError, match="shape"):
        g.log_prob(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="codes must have shape"):
        g.decode(torch.zeros(2, 3))
    with pytest.raises(ConfigError, match="positive integer"):
        g.log_prob(x, k=0)


def test_translate_is_a_one_line_capability_error(saved_run, tmp_path, capsys):
    g = gankit.load(saved_run.run_dir)
    with pytest.raises(CapabilityError) as e:
        g.translate(torch.zeros(2, 1, 16, 16))
    msg = str(e.value)
    assert "\n" not in msg and "cannot translate" in msg and "log_prob" in msg
    np.save(tmp_path / "in.npy", np.zeros((2, 1, 16, 16), np.float32))
    with pytest.raises(SystemExit) as ex:
        main(["translate", str(saved_run.run_dir), "--input", str(tmp_path / "in.npy"),
              "--out", str(tmp_path / "out.npy")])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "cannot translate" in err and "Traceback" not in err


def test_points_with_a_gaussian_decoder(tiny_points, tmp_path):
    run = gankit.train("vae", tiny_points, out=tmp_path / "pts", progress=False,
                       overrides={**TINY, "train.steps": 20, "train.batch_size": 64})
    assert run.model.decoder == "gaussian"
    g = gankit.load(run.run_dir)
    x = g.sample(50, seed=0)
    assert x.shape == (50, 2) and torch.isfinite(x).all()
    assert not torch.equal(x, g.sample(50, seed=0, mean=True))  # default draws p(x|z)
    lp = g.log_prob(tiny_points.x[:10], seed=0)
    assert lp.shape == (10,) and torch.isfinite(lp).all()
    assert g.encode(tiny_points.x[:10]).shape == (10, 4)


def test_unsupported_combinations_are_refused(tiny_points, tiny_images, tmp_path):
    cases = [(tiny_points, {"model.decoder": "bernoulli"}, "holds points, use model.decoder"),
             (tiny_points, {"model.arch": "conv"}, "needs images"),
             (tiny_images, {"tricks.d_dropout": 0.3}, "plays no adversarial game"),
             (tiny_images, {"loss.gp": "r1"}, "trains no discriminator: loss.gp"),
             (tiny_images, {"optim.lr_g": 1e-4}, "trains no discriminator: optim.lr_g"),
             (tiny_images, {"model.decoder": "poisson"}, "model.decoder")]
    for i, (ds, over, msg) in enumerate(cases):
        with pytest.raises(ConfigError, match=msg):
            gankit.train("vae", ds, out=tmp_path / str(i), progress=False,
                         overrides={**TINY, "train.steps": 1, **over})


def test_conv_architecture_and_gaussian_images(tiny_images):
    model = build(tiny_images, arch="conv", width=8, decoder="gaussian", sigma="global")
    assert model.dec.log_sigma.shape == (1,)
    x = tiny_images.x[:3]
    with torch.no_grad():
        assert model.encode(x).shape == (3, 4)
        s = model.sample(3, generator=torch.Generator().manual_seed(0), mean=False)
        # a draw of the dequantised density, returned as its 8-bit grey level
        levels = (s + 1) * 127.5
        torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
        lp = model.log_prob(x, generator=torch.Generator().manual_seed(0), k=3)
    assert lp.shape == (3,) and torch.isfinite(lp).all()


def test_bits_per_dim_converts_each_likelihood_space():
    import math

    d = 784
    # a binary model putting probability 1/2 on every pixel: exactly 1 bit per dimension
    assert bits_per_dim(torch.full((3,), d * math.log(0.5)), d, "binary") == pytest.approx(1.0)
    # a uniform density on [0, 1]^D (log p = 0) of dequantised 8-bit data: 8 bits per dimension
    assert bits_per_dim(torch.zeros(3), d, "dequantized") == pytest.approx(8.0)
    assert math.isnan(bits_per_dim(torch.zeros(3), 2, "continuous"))
    with pytest.raises(ConfigError, match="unknown likelihood space"):
        bits_per_dim(torch.zeros(3), 2, "bits")


def test_the_vae_declares_what_its_log_prob_measures(tiny_images, tiny_points):
    for decoder, space in (("bernoulli", "binary"), ("gaussian", "dequantized")):
        assert build(tiny_images, decoder=decoder).likelihood() == {"space": space,
                                                                    "kind": "lower-bound"}
    assert build(tiny_points).likelihood()["space"] == "continuous"
