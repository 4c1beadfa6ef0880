"""Diffusion and score models: DDPM (Ho et al. 2020) with DDIM sampling (Song et al. 2021) and
the variational bound, NCSN (Song & Ermon 2019) with denoising score matching (Vincent 2011),
and the score-field theory figure. Closed forms of the forward process and its posterior, the
samplers against each other and against Algorithm 2 by hand, the bound's KL terms against
torch.distributions, the DSM optimum on a Gaussian, the CLI, errors and an exact resume."""

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import run_cli
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets
from test_theory import run_checked
from torch.distributions import Normal, kl_divergence

import gankit
from gankit.config import resolve_config
from gankit.errors import ConfigError
from gankit.likelihood import bits_per_dim
from gankit.models import ddpm as D
from gankit.models import ncsn as S

TINY = {"model.timesteps": 20, "model.width": 8, "model.levels": 2, "train.doctor": False,
        "train.log_every": 1}


def build(ds, name="ddpm", **model):
    base = {"ddpm": {"timesteps": 20, "width": 8, "levels": 2, "hidden": 16, "depth": 1},
            "ncsn": {"width": 8, "levels": 2, "num_scales": 4, "hidden": 16, "depth": 1,
                     "steps": 2}}[name]
    cfg = resolve_config(name, {"model": {**base, **model}})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fam = (D.DDPM if name == "ddpm" else S.NCSN)(cfg, ds.describe())
    # a random, non-zero network (the output layer starts at zero)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for p in fam.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return fam.eval()


# --- the forward process and its posterior -------------------------------------------------------
def test_schedule_is_the_papers_and_marginals_compose_stepwise():
    sc = D.Schedule(1000, 1e-4, 0.02)
    s = SimpleNamespace(**{k: getattr(sc, k).tolist() for k in ("betas", "alphas", "abar")})
    assert s.betas[1] == pytest.approx(1e-4) and s.betas[1000] == pytest.approx(0.02)
    assert s.abar[1000] == pytest.approx(4.036e-5, rel=1e-3)  # x_T is almost pure noise
    # composing q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t) t times: mean coefficient
    # m_t = sqrt(alpha_t) m_{t-1}, variance v_t = alpha_t v_{t-1} + beta_t
    m, v = 1.0, 0.0
    for t in range(1, 1001):
        m, v = math.sqrt(s.alphas[t]) * m, s.alphas[t] * v + s.betas[t]
        if t in (1, 10, 500, 1000):
            assert m == pytest.approx(math.sqrt(s.abar[t]), rel=1e-10)
            assert v == pytest.approx(1 - s.abar[t], rel=1e-10)


def test_q_sample_has_the_closed_form_mean_and_variance():
    s = D.Schedule(1000, 1e-4, 0.02)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 0.7, dtype=torch.float64)
    for t in (1, 100, 700):
        tt = torch.full((len(x0),), t)
        xt = s.q_sample(x0, tt, torch.randn(x0.shape, generator=g, dtype=torch.float64))
        ab = s.abar[t].item()
        se = math.sqrt((1 - ab) / len(x0))
        assert abs(xt.mean().item() - math.sqrt(ab) * 0.7) < 5 * se
        assert xt.var().item() == pytest.approx(1 - ab, rel=0.02)


def test_posterior_coefficients_are_bayes_rule():
    s = D.Schedule(50, 1e-3, 0.2)
    g = torch.Generator().manual_seed(1)
    x0, xt = torch.randn(5, 3, generator=g, dtype=torch.float64), \
        torch.randn(5, 3, generator=g, dtype=torch.float64)
    for t in range(2, 51, 7):
        ab_prev, a, b = s.abar[t - 1], s.alphas[t], s.betas[t]
        # prior q(x_{t-1}|x_0) = N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}), likelihood
        # q(x_t|x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t): multiply the Gaussians
        prec = 1 / (1 - ab_prev) + a / b
        mean = (ab_prev.sqrt() * x0 / (1 - ab_prev) + a.sqrt() * xt / b) / prec
        m, var = s.q_posterior(x0, xt, torch.full((5,), t))
        torch.testing.assert_close(m, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(var, torch.full_like(var, float(1 / prec)), rtol=1e-10,
                                   atol=0)
        # the predicted x_0 inverts q_sample
        eps = torch.randn(5, 3, generator=g, dtype=torch.float64)
        xs = s.q_sample(x0, torch.full((5,), t), eps)
        torch.testing.assert_close(s.predict_x0(xs, torch.full((5,), t), eps), x0)


# --- samplers --------------------------------------------------------------------------------------
def test_ddim_eta0_is_deterministic_and_eta1_is_the_ancestral_chain(tiny_points):
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    m = build(tiny_points, variance="beta_tilde")
    with torch.no_grad():
        a = m.reverse(x_T, "ddim", 20, 0.0, False, torch.Generator().manual_seed(1))
        b = m.reverse(x_T, "ddim", 20, 0.0, False, torch.Generator().manual_seed(2))
        assert torch.equal(a, b)  # no noise is drawn
        for steps in (20, 7):  # all T steps, and a sub-sequence
            anc = m.reverse(x_T, "ancestral", steps, 0.0, False, torch.Generator().manual_seed(3))
            ddim = m.reverse(x_T, "ddim", steps, 1.0, False, torch.Generator().manual_seed(3))
            torch.testing.assert_close(ddim, anc, rtol=1e-4, atol=1e-5)
        assert not torch.allclose(anc, a, atol=1e-2)  # the noise matters
    # the ancestral chain with T steps is Algorithm 2 of Ho et al., written out by hand
    m = build(tiny_points)  # sigma_t^2 = beta_t
    s, g = m.sched, torch.Generator().manual_seed(4)
    with torch.no_grad():
        x = x_T.clone()
        for t in range(20, 0, -1):
            e = m.eps(x, torch.full((64,), float(t)))
            x = (x - s.betas[t] / math.sqrt(1 - s.abar[t]) * e) / math.sqrt(s.alphas[t])
            if t > 1:
                x = x + math.sqrt(s.betas[t]) * torch.randn(x.shape, generator=g)
        got = m.reverse(x_T, "ancestral", 20, 0.0, False, torch.Generator().manual_seed(4))
    torch.testing.assert_close(got, x.float(), rtol=1e-4, atol=1e-4)


def test_subsequences():
    assert D.subsequence(1000, 1000) == list(range(1, 1001))
    assert D.subsequence(1000, 1) == [1000]
    for steps in (2, 10, 50, 333, 999):
        tau = D.subsequence(1000, steps)
        assert len(tau) == steps and tau[0] == 1 and tau[-1] == 1000
        assert all(b > a for a, b in itertools.pairwise(tau))


# --- the variational bound ------------------------------------------------------------------------
def test_vlb_terms_are_gaussian_kls(tiny_points):
    m = build(tiny_points)
    x0 = tiny_points.x[:6]
    s = m.sched
    with torch.no_grad():
        # L_T
        abT = s.abar[20]
        want = kl_divergence(Normal(abT.sqrt() * x0.double(), (1 - abT).sqrt()),
                             Normal(0.0, 1.0)).sum(1)
        torch.testing.assert_close(m.prior_term(x0), want)
        # L_{t-1} with the same draw of x_t
        t = torch.tensor([2, 5, 9, 13, 17, 20])
        got = m.kl_term(x0, t, torch.Generator().manual_seed(5))
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
        xt = s.q_sample(x0, t, eps)
        x0_hat = s.predict_x0(xt, t, m.eps(xt, t.float())).double()
        c0, ct = s.coef_x0[t][:, None], s.coef_xt[t][:, None]
        q = Normal(c0 * x0.double() + ct * xt.double(), s.beta_tilde[t][:, None].sqrt())
        p = Normal(c0 * x0_hat + ct * xt.double(), s.betas[t][:, None].sqrt())
        torch.testing.assert_close(got, kl_divergence(q, p).sum(1))
        assert torch.all(got >= 0)


def test_discretized_decoder_is_a_distribution_over_256_levels():
    k = torch.arange(256, dtype=torch.float64)
    x = k / 127.5 - 1
    for mean, scale in ((0.0, 0.01), (0.3, 0.2), (-0.99, 0.003), (1.7, 0.05)):
        lp = D.discretized_gaussian_log_likelihood(x, torch.tensor(mean), torch.tensor(scale))
        assert torch.exp(lp).sum().item() == pytest.approx(1.0, abs=1e-9)
        # an interior bin is the Gaussian's mass on [x - 1/255, x + 1/255]
        n = Normal(torch.tensor(mean, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64))
        i = 150
        mass = n.cdf(x[i] + 1 / 255) - n.cdf(x[i] - 1 / 255)
        if mass > 1e-300:
            assert lp[i].item() == pytest.approx(math.log(mass), rel=1e-6)
    # far in a tail, where 1 - Phi underflows in the naive difference, it stays finite
    lp = D.discretized_gaussian_log_likelihood(torch.tensor([0.5]), torch.tensor(-0.5),
                                               torch.tensor(0.01))
    assert torch.isfinite(lp).all() and lp.item() < -4000


def test_stratified_timesteps_are_unbiased_and_exact_when_complete():
    T = 30
    f = torch.arange(T + 1, dtype=torch.float64) ** 1.5  # any function of t
    exact = f[2:].sum()
    for k in (1, 4, 7, 29):
        strata = D.stratified_timesteps(T, k, 1, torch.Generator().manual_seed(0))
        assert sum(size for _, size in strata) == T - 1
        # the strata partition {2..T}: the expectation of size * f(t) per stratum is its sum
        lo = 2
        expect = 0.0
        for _, size in strata:
            expect += f[lo:lo + size].sum()
            lo += size
        assert expect == pytest.approx(exact.item())
    g = torch.Generator().manual_seed(1)
    draws = [sum(size * f[t].sum() for t, size in D.stratified_timesteps(T, 4, 1000, g)) / 1000
             for _ in range(20)]
    assert np.mean(draws) == pytest.approx(exact.item(), rel=0.01)
    complete = D.stratified_timesteps(T, 29, 3, g)
    assert [t.tolist() for t, _ in complete] == [[t] * 3 for t in range(2, T + 1)]


def test_log_prob_is_the_negative_bound_in_the_dequantized_space(tiny_images):
    m = build(tiny_images, timesteps=12)
    x = tiny_images.x[:3]
    with torch.no_grad():
        lp = m.log_prob(x, generator=torch.Generator().manual_seed(0), timesteps=11)
        terms = m.vlb_terms(x, 11, torch.Generator().manual_seed(0))
    L = terms["prior"] + terms["diffusion"] + terms["decoder"]
    d = 256
    torch.testing.assert_close(lp.double(), -L + d * math.log(256))
    # bits/dim of the dequantized density = -log P(x) / (D ln 2) of the 8-bit image
    assert bits_per_dim(lp, d, "dequantized") == pytest.approx(
        (L / (d * math.log(2))).mean().item(), rel=1e-6)
    assert m.likelihood() == {"space": "dequantized", "kind": "lower-bound"}
    assert build(tiny_images).likelihood()["space"] == "dequantized"
    # -log P >= 0 for a probability: the bound never exceeds 8 bits/dim x 0 ... i.e. L > 0
    assert torch.all(L > 0)


def test_the_bound_of_the_exact_denoiser_on_gaussian_data_is_tight(tiny_points):
    """Data N(0, s0^2 I) with the exact noise predictor E[eps | x_t] = sqrt(1 - abar_t) x_t /
    (abar_t s0^2 + 1 - abar_t): with sigma_t^2 = beta_t and T = 1000 the bound -L, summed over
    every t, comes within a few hundredths of a nat of the exact log-density and not above it;
    with the posterior variance beta~_t it is valid but looser (Ho et al. §3.2: beta_t suits
    x_0 ~ N(0, I), beta~_t a deterministic x_0)."""
    s0 = 0.5
    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)) * s0
    true = (-0.5 * (x / s0) ** 2 - math.log(s0) - 0.5 * math.log(2 * math.pi)).sum(1)
    gaps = {}
    for var in ("beta", "beta_tilde"):
        cfg = resolve_config("ddpm", {"model": {"hidden": 8, "depth": 1, "variance": var}})
        m = D.DDPM(cfg, tiny_points.describe()).eval()
        ab = m.sched.abar

        class Exact(torch.nn.Module):
            def forward(self, xt, t, ab=ab):
                a = ab[t.long()].float()[:, None]
                return (1 - a).sqrt() * xt / (a * s0**2 + 1 - a)

        m.eps = Exact()
        with torch.no_grad():
            lp = m.log_prob(x, generator=torch.Generator().manual_seed(1), timesteps=999)
        d = (true - lp).double()
        gaps[var] = (d.mean().item(), d.std().item() / math.sqrt(len(d)))
    gap, se = gaps["beta"]
    assert -3 * se < gap < 0.08, gaps  # measured 0.008 +- 0.022
    assert gaps["beta_tilde"][0] > gap + 0.5, gaps  # measured 1.15


# --- denoising score matching ---------------------------------------------------------------------
def test_dsm_optimum_on_a_gaussian_is_its_blurred_score():
    """For x ~ N(mu, s0^2), the DSM objective at level sigma is minimised by the score of
    N(mu, s0^2 + sigma^2): s(x) = -(x - mu) / (s0^2 + sigma^2) (Vincent 2011)."""
    g = torch.Generator().manual_seed(0)
    mu, s0, sigma, n = 1.5, 0.5, 0.8, 400_000
    x = mu + s0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    xn = x + sigma * z
    var = s0**2 + sigma**2
    # the linear score a x + b that minimises the loss, by least squares on -z / sigma
    A = torch.cat([xn, torch.ones_like(xn)], 1)
    a, b = torch.linalg.lstsq(A, -z / sigma).solution.flatten().tolist()
    assert a == pytest.approx(-1 / var, rel=0.01) and b == pytest.approx(mu / var, rel=0.02)

    def loss(a_, b_):
        return S.dsm_loss(a_ * xn + b_, z, torch.tensor(sigma)).mean().item()

    best = loss(-1 / var, mu / var)
    for da, db in ((0.05, 0), (-0.05, 0), (0, 0.05), (0, -0.05)):
        assert loss(-1 / var + da, mu / var + db) > best
    # the minimum is 0.5 sigma^2 E||s* - (-z/sigma)||^2 = 0.5 (1 - sigma^2 / var) per dim
    assert best == pytest.approx(0.5 * (1 - sigma**2 / var), rel=0.01)


def test_ncsn_phase_loss_by_hand_and_sigmas(tiny_points):
    m = build(tiny_points, "ncsn", sigma_max=4.0, sigma_min=0.04, num_scales=3)
    torch.testing.assert_close(m.sigmas, torch.tensor([4.0, 0.4, 0.04], dtype=torch.float64))
    x = tiny_points.x[:8]
    ctx = SimpleNamespace(batch={"x": x}, generator=torch.Generator().manual_seed(3),
                          net={"s": m.s}.__getitem__)
    with torch.no_grad():
        loss, st = m.dsm_phase(ctx)
        g = torch.Generator().manual_seed(3)
        i = torch.randint(0, 3, (8,), generator=g)
        sig = m.sigmas[i].float()[:, None]
        z = torch.randn(x.shape, generator=g)
        pos = 1000 * (math.log(4.0) - torch.log(sig.double().flatten())) / math.log(100)
        s = m.s(x + sig * z, pos.float()) / sig
        hand = (0.5 * ((sig * s + z) ** 2).sum(1)).mean()
    torch.testing.assert_close(loss, hand)
    assert st["loss/dsm"] == loss


def test_langevin_with_the_exact_score_samples_a_gaussian(tiny_points):
    """Annealed Langevin dynamics with the exact blurred score of N(mu, s0^2 I) ends at
    N(mu, (s0^2 + sigma_L^2) I) (checked by KS tests per coordinate)."""
    from scipy import stats

    m = build(tiny_points, "ncsn", sigma_max=3.0, sigma_min=0.05, num_scales=8)
    mu, s0 = torch.tensor([0.5, -1.0]), 0.3

    class Exact(torch.nn.Module):
        def forward(self, x, pos):  # s * sigma, as the network's output is divided by sigma
            sigma = torch.exp(math.log(3.0) - pos.double() / 1000 * math.log(60)).float()[:, None]
            return -(x - mu) / (s0**2 + sigma**2) * sigma

    x = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0)) * 3
    with torch.no_grad():
        out = m.langevin(Exact(), x, 60, 2e-3, False, torch.Generator().manual_seed(1))
    sd = math.sqrt(s0**2 + 0.05**2)
    for j in range(2):
        assert stats.kstest(out[:, j].numpy(), "norm", args=(mu[j].item(), sd)).pvalue > 0.001


# --- options and errors ---------------------------------------------------------------------------
def test_sampling_options_and_one_line_errors(tiny_images, tiny_points):
    m = build(tiny_images)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        x = m.sample(3, generator=g, sampler="ddim", steps=4)
        assert x.shape == (3, 1, 16, 16) and x.min() >= -1 and x.max() <= 1
    # training-time grids: deterministic DDIM with min(T, 50) steps, not T ancestral steps
    grid, _ = m.preview(tiny_images, 4, seed=0)
    assert torch.equal(grid, m.draw(4, 0, sampler="ddim", steps=20))
    assert not torch.equal(grid, m.draw(4, 0))
    with torch.no_grad():
        cases = [({"sampler": "euler"}, "unknown sampler 'euler'"),
                 ({"steps": 21}, r"steps must be an integer in \[1, T = 20\]"),
                 ({"steps": 0}, "steps must be"),
                 ({"sampler": "ddim", "eta": -1}, "eta must be"),
                 ({"eta": 0.5}, "eta applies to sampler=ddim"),
                 ({"truncation": 1.0}, "no sampling option")]
        for opts, msg in cases:
            with pytest.raises(ConfigError, match=msg) as e:
                m.sample(2, generator=g, **opts)
            assert "\n" not in str(e.value)
        with pytest.raises(ConfigError, match="timesteps must be a positive integer"):
            m.log_prob(tiny_images.x[:2], timesteps=0)
        with pytest.raises(ConfigError, match="no log_prob option"):
            m.log_prob(tiny_images.x[:2], k=5)
        with pytest.raises(ConfigError, match="shape"):
            m.log_prob(torch.zeros(2, 1, 8, 8))
        n = build(tiny_points, "ncsn")
        for opts, msg in (({"steps": 0}, "steps"), ({"eps": 0}, "eps must be"),
                          ({"denoise": 1}, "denoise must be"), ({"sampler": "ddim"}, "no sampling")):
            with pytest.raises(ConfigError, match=msg):
                n.sample(2, generator=g, **opts)


def test_bad_configs_are_refused(tiny_images, tiny_points, tmp_path):
    cases = [("ddpm", tiny_images, {"model.beta_end": 1e-5}, "beta_start/beta_end"),
             ("ddpm", tiny_points, {"model.arch": "unet"}, "needs images"),
             ("ddpm", tiny_images, {"model.sampler": "euler"}, "model.sampler"),
             ("ddpm", tiny_images, {"model.sample_steps": 50}, "sample_steps must be"),
             ("ddpm", tiny_images, {"model.levels": 6}, "divisible by 32"),
             ("ddpm", tiny_images, {"loss.gp": "r1"}, "trains no discriminator"),
             ("ncsn", tiny_images, {"model.sigma_min": 2.0}, "sigma_min and sigma_max"),
             ("ncsn", tiny_images, {"tricks.d_dropout": 0.3}, "plays no adversarial game")]
    for i, (name, ds, over, msg) in enumerate(cases):
        with pytest.raises(ConfigError, match=msg):
            gankit.train(name, ds, out=tmp_path / str(i), progress=False,
                         overrides={**TINY, "train.steps": 1, **over}
                         if name == "ddpm" else {"train.steps": 1, **over})


# --- the CLI, eval, resume ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddpm") / "run"
    code = run_cli("train", "ddpm", "--data", "ring8", "--steps", "3", "--batch-size", "16",
                   "--no-progress", "--out", out, *sets("ddpm"))
    assert code == 0
    return out


def test_cli_sample_with_options_and_eval(ring_run, tmp_path, capsys):
    g = gankit.load(ring_run)
    for opts in (["steps=3", "sampler=ddim"], ["steps=20"], ["sampler=ddim", "eta=1.0"]):
        dest = tmp_path / f"{'-'.join(opts)}.npy"
        args = [a for o in opts for a in ("--option", o)]
        assert run_cli("sample", ring_run, "--n", "10", "--out", dest, *args) == 0
        kw = {k: (float(v) if k == "eta" else int(v) if v.isdigit() else v)
              for k, v in (o.split("=") for o in opts)}
        np.testing.assert_array_equal(np.load(dest), g.sample(10, seed=0, **kw).numpy())
    a, b = np.load(tmp_path / "steps=3-sampler=ddim.npy"), np.load(tmp_path / "steps=20.npy")
    assert not np.array_equal(a, b)
    capsys.readouterr()
    assert run_cli("sample", ring_run, "--out", tmp_path / "x.npy", "--option", "steps=50") == 2
    err = capsys.readouterr().err
    assert "steps must be an integer in [1, T = 20]" in err and "Traceback" not in err
    assert run_cli("eval", ring_run, "--n", "200", "--out", tmp_path / "eval.json") == 0
    import json

    res = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert res["n_modes"] == 8 and 0 <= res["modes_covered"] <= 8
    assert set(res) >= {"modes_covered", "high_quality_frac", "precision", "recall"}


@pytest.mark.parametrize("name", ["ddpm", "ncsn"])
def test_resume_after_sigkill_is_bit_identical(name, tmp_path):
    args = [name, "--data", "digits", "--steps", "24", "--batch-size", "8", "--no-progress",
            "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.sample_every=100", "--set", "train.keep_ckpts=10", *sets(name)]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    net = "eps" if name == "ddpm" else "s"
    assert any(k.startswith(f"{net}.") for k in a) and any(k.startswith(f"{net}_ema") for k in a)
    assert_identical(a, b)


# --- the theory figure ----------------------------------------------------------------------------
def test_score_field_theory(tmp_path):
    n = run_checked("score-field", tmp_path)
    assert n["score_vs_finite_differences_max_abs"] < 1e-5
    a, p = n["annealed"], n["plain"]
    # annealed Langevin: the mixture (mode mass 0.8, KS along and across the modes)
    assert abs(a["heavy_mode_mass"] - 0.8) < 0.02 and a["binomial_p"] > 0.01
    assert a["ks_along_p"] > 0.01 and a["ks_across_p"] > 0.01
    # plain Langevin keeps the uniform start's 50/50 split
    assert abs(p["heavy_mode_mass"] - 0.5) < 0.05 and p["ks_along_p"] < 1e-10
