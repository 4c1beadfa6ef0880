"""The GMM family (scikit-learn's EM through the Trainer), the Box 2 intensity fit and the
sampling lab: the same fit as scikit-learn, exact densities (against score_samples, a
closed-form Gaussian mixture on the image space, numerical integration and autograd
Jacobians), independence of per-pixel samples, exact resume, CLI, one-line errors; KS-tested
samplers, the envelope constant and an effective sample size with a known answer."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_images
from helpers import cli_output, run_cli
from scipy import stats
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed

import gankit
from gankit.errors import ConfigError
from gankit.likelihood import dequantize
from gankit.models.gmm import DEQUANT_SEED_OFFSET

SEED = 5
# scikit-learn warns that a fit of a few iterations at tol=0 has not converged: it is meant not to
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def train(ds, tmp_path, name="run", steps=4, **model):
    over = {f"model.{k}": v for k, v in model.items()}
    return gankit.train("gmm", ds, out=tmp_path / name, progress=False,
                        overrides={"train.steps": steps, "train.seed": SEED,
                                   "train.batch_size": 8, "train.log_every": 1, **over})


def train_y(ds):
    """The dequantised training split exactly as the family draws it."""
    g = torch.Generator().manual_seed(SEED + DEQUANT_SEED_OFFSET)
    return dequantize(ds.x.to(torch.float64), g)


@pytest.fixture(scope="module")
def images():
    return make_tiny_images()


@pytest.fixture(scope="module")
def pca_run(images, tmp_path_factory):
    return train(images, tmp_path_factory.mktemp("pca"), k=3, components=5, space="pca")


@pytest.fixture(scope="module")
def pixel_run(images, tmp_path_factory):
    return train(images, tmp_path_factory.mktemp("pix"), k=2, space="pixels")


# --- the same fit as scikit-learn ---------------------------------------------------------------
def test_points_fit_is_scikit_learns_em(tiny_points, tmp_path):
    from sklearn.mixture import GaussianMixture

    run = train(tiny_points, tmp_path, steps=6, k=8)
    gm = GaussianMixture(8, tol=0.0, max_iter=6, random_state=SEED).fit(
        tiny_points.x.double().numpy())
    m = run.model
    np.testing.assert_allclose(m.weights[0].numpy(), gm.weights_, rtol=1e-12)
    np.testing.assert_allclose(m.means[0].numpy(), gm.means_, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.covariances[0].numpy(), gm.covariances_, rtol=1e-10)
    x = tiny_points.x[:50]
    lp = m.log_prob(x.double())
    np.testing.assert_allclose(lp.numpy(), gm.score_samples(x.double().numpy()), rtol=1e-12)
    # a density in the plane: it integrates to 1 (ring8's modes lie on the unit circle)
    t = torch.linspace(-2, 2, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(t, t)
    mass = m.log_prob(grid).exp().sum() * (t[1] - t[0]) ** 2
    assert abs(mass.item() - 1) < 1e-3


def test_pca_fit_and_density_are_scikit_learns_plus_the_residual(pca_run, images):
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    m, y = pca_run.model, train_y(images)
    flat = y.reshape(len(y), -1).numpy()
    pca = PCA(5, svd_solver="full", whiten=True).fit(flat)
    codes = pca.transform(flat)
    gm = GaussianMixture(3, tol=0.0, max_iter=4, random_state=SEED).fit(codes)
    np.testing.assert_allclose(m.weights[0].numpy(), gm.weights_, rtol=1e-8)
    np.testing.assert_allclose(m.means[0].numpy(), gm.means_, rtol=1e-7, atol=1e-9)
    # log p(y) = score_samples(code) - sum log s_j + log N(residual; 0, sigma^2 I_{D-C})
    x = images.x[:6]
    yy = dequantize(x.double(), torch.Generator().manual_seed(1))
    lp = m.log_prob(x, generator=torch.Generator().manual_seed(1)).numpy()
    f = yy.reshape(6, -1).numpy()
    c = pca.transform(f)
    r = (f - pca.mean_) - (f - pca.mean_) @ pca.components_.T @ pca.components_
    D, C, var = f.shape[1], 5, pca.noise_variance_
    want = (gm.score_samples(c) - 0.5 * np.log(pca.explained_variance_).sum()
            - 0.5 * (D - C) * np.log(2 * np.pi * var) - 0.5 * (r ** 2).sum(1) / var)
    np.testing.assert_allclose(lp, want, rtol=1e-7)
    # ... which is a Gaussian mixture on the image space R^D, in closed form:
    # N(y; m + A mu_k, A Sigma_k A^T + sigma^2 (I - W^T W)), A = W^T diag(s)
    A = pca.components_.T * np.sqrt(pca.explained_variance_)
    P = np.eye(D) - pca.components_.T @ pca.components_
    comp = [np.log(w) + stats.multivariate_normal(pca.mean_ + A @ mu, A @ S @ A.T + var * P
                                                  ).logpdf(f)
            for w, mu, S in zip(gm.weights_, gm.means_, gm.covariances_)]
    np.testing.assert_allclose(lp, np.logaddexp.reduce(np.stack(comp), 0), rtol=1e-6)
    assert m.likelihood() == {"space": "dequantized", "kind": "exact"}


def test_pixel_density_is_per_pixel_score_samples_plus_the_logit_jacobian(pixel_run, images):
    from sklearn.mixture import GaussianMixture

    m, y = pixel_run.model, train_y(images)
    alpha = m.p.alpha
    flat = y.reshape(len(y), -1)
    z = torch.logit(alpha + (1 - 2 * alpha) * flat).numpy()
    x = images.x[:4]
    yy = dequantize(x.double(), torch.Generator().manual_seed(2)).reshape(4, -1)
    lp = m.log_prob(x, generator=torch.Generator().manual_seed(2))
    # the Jacobian of y -> logit(alpha + (1 - 2 alpha) y), by autograd
    yg = yy.clone().requires_grad_(True)
    (dz,) = torch.autograd.grad(torch.logit(alpha + (1 - 2 * alpha) * yg).sum(), yg)
    want = torch.log(dz).sum(1).numpy()
    zz = torch.logit(alpha + (1 - 2 * alpha) * yy).numpy()
    for i in range(0, flat.shape[1], 37):  # every 37th pixel's own fit, as scikit-learn's
        gm = GaussianMixture(2, tol=0.0, max_iter=4, random_state=SEED).fit(z[:, i:i + 1])
        np.testing.assert_allclose(m.means[i].numpy(), gm.means_, rtol=1e-9, atol=1e-12)
    sk = np.zeros(4)
    for i in range(flat.shape[1]):
        sk += m.sklearn_mixture(i, warm=True).score_samples(zz[:, i:i + 1])
    np.testing.assert_allclose(lp.numpy(), sk + want, rtol=1e-10)
    # each pixel's density integrates to ~1 over [0, 1] (the mass beyond the logit's squeeze
    # is all that is missing)
    t = np.linspace(0, 1, 400001)[1:-1]
    sq = alpha + (1 - 2 * alpha) * t
    jac = math.log(1 - 2 * alpha) - np.log(sq) - np.log1p(-sq)
    for i in (0, 100, 200):
        dens = np.exp(m.sklearn_mixture(i, warm=True).score_samples(
            np.log(sq / (1 - sq))[:, None]) + jac)
        mass = float(dens.sum() * (t[1] - t[0]))
        assert 0.99 < mass <= 1.0 + 1e-3, (i, mass)


def test_logged_nll_is_the_training_data_density_and_never_rises(images, tmp_path):
    run6 = train(images, tmp_path, "six", steps=6, k=2, components=4)
    run5 = train(images, tmp_path, "five", steps=5, k=2, components=4)
    nll = [r["loss/nll"] for r in run6.metrics() if "loss/nll" in r]
    assert len(nll) == 6 and all(b <= a + 1e-3 for a, b in itertools.pairwise(nll))  # EM
    # step 6 logs the dequantised training split's mean log-density under step 5's parameters
    m, y = run5.model, train_y(images)
    with torch.no_grad():
        lp = torch.logsumexp(m.component_log_prob(m.to_mixture(y)), -1).sum(1) + m.log_jacobian(y)
    assert nll[-1] == pytest.approx(-lp.mean().item(), rel=1e-6)
    assert run6.model.em_steps.item() == 6


# --- samples --------------------------------------------------------------------------------------
def neighbour_corr(x):
    a, b = x[..., :, 1:].flatten(), x[..., :, :-1].flatten()
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def test_per_pixel_samples_are_spatially_independent_pca_samples_are_not(pixel_run, pca_run):
    s_pix = pixel_run.generator.sample(400, seed=0)
    s_pca = pca_run.generator.sample(400, seed=0)
    # pixel values are independent across pixels: centred per pixel, neighbours uncorrelated
    c = s_pix - s_pix.mean(0, keepdim=True)
    assert abs(neighbour_corr(c)) < 0.05
    c = s_pca - s_pca.mean(0, keepdim=True)
    assert neighbour_corr(c) > 0.3  # the class bands are whole rows
    levels = (s_pix + 1) * 127.5
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)  # 8-bit grey levels
    assert torch.equal(s_pca, pca_run.generator.sample(400, seed=0))
    # the pca mode's full draw adds the residual noise outside the principal subspace
    full = pca_run.generator.sample(400, seed=0, mean=False)
    assert (full - s_pca).abs().mean() > 0


def test_sampled_mixture_matches_its_weights_and_means(tiny_points, tmp_path):
    run = train(tiny_points, tmp_path, steps=10, k=8)
    m = run.model
    x = run.generator.sample(20000, seed=1).double()
    resp = m.encode(x).double()  # [N, K] responsibilities
    assert resp.shape == (20000, 8)
    torch.testing.assert_close(resp.sum(1), torch.ones(20000, dtype=torch.float64), atol=1e-5,
                               rtol=0)
    frac = torch.bincount(resp.argmax(1), minlength=8).double() / 20000.0
    assert torch.allclose(frac, m.weights[0], atol=0.02)
    torch.testing.assert_close(x.mean(0), (m.weights[0] @ m.means[0]), atol=0.03, rtol=0)


# --- resume, CLI, errors --------------------------------------------------------------------------
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    # the per-pixel mode (one scikit-learn fit per pixel and step) on 6x6 crops: slow enough
    # per step to be killed mid-run, quick in all
    ds = make_tiny_images()
    np.savez(tmp_path / "tiny.npz", x=ds.x[:, :, 5:11, 5:11].numpy(), y=ds.y.numpy())
    args = ["gmm", "--data", str(tmp_path / "tiny.npz"), "--steps", "24", "--batch-size", "8",
            "--no-progress", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.keep_ckpts=10", "--set", "model.space=pixels", "--set", "model.k=3"]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert a["family.means"].shape == (36, 3, 1) and a["family.em_steps"].item() == 24
    assert_identical(a, b)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    code = run_cli("train", "gmm", "--data", "digits", "--steps", "5", "--no-progress",
                   "--out", out, "--set", "model.k=4", "--set", "model.components=10")
    assert code == 0
    return out


def test_sample_and_eval_from_the_cli(cli_run, tmp_path, capsys):
    code, _, err = cli_output(capsys, "sample", cli_run, "--n", "16", "--out",
                              tmp_path / "s.npy")
    assert code == 0, err
    s = np.load(tmp_path / "s.npy")
    assert s.shape == (16, 1, 8, 8) and s.min() >= -1 and s.max() <= 1
    code, _, err = cli_output(capsys, "sample", cli_run, "--n", "4", "--out",
                              tmp_path / "t.npy", "--option", "mean=false")
    assert code == 0, err
    code, _, err = cli_output(capsys, "sample", cli_run, "--n", "4", "--out",
                              tmp_path / "u.npy", "--option", "steps=3")
    assert code == 2 and len(err) == 1 and "no option(s) steps" in err[0]
    code, _, err = cli_output(capsys, "eval", cli_run, "--n", "300", "--metrics", "fid",
                              "--out", tmp_path / "eval.json")
    assert code == 0, err
    rec = json.loads((tmp_path / "eval.json").read_text())
    assert rec["results"]["fid"] > 0 and math.isfinite(rec["results"]["fid"])
    assert rec["protocol"]["n_fake"] == 300


@pytest.mark.parametrize(("data", "over", "msg"), [
    ("points", {"model.space": "pca"}, "holds points"),
    ("images", {"model.components": 256}, "model.components must lie in"),
    ("images", {"model.k": 0}, "model.k"),
    ("images", {"model.alpha": 0.7}, "model.alpha"),
    ("images", {"optim.lr": 0.1}, "fitted by EM, with no loss to optimise: optim.lr"),
    ("images", {"loss.name": "wgan"}, "loss.name"),
    ("images", {"tricks.d_dropout": 0.3}, "plays no adversarial game"),
])
def test_bad_configs_are_one_line_errors(data, over, msg, tiny_points, tmp_path):
    ds = tiny_points if data == "points" else make_tiny_images()
    with pytest.raises(ConfigError, match=msg) as e:
        gankit.train("gmm", ds, out=tmp_path / "r", progress=False,
                     overrides={"train.steps": 1, **over})
    assert "\n" not in str(e.value)


def test_bad_calls_are_one_line_errors(pixel_run, pca_run):
    g, m = pixel_run.generator, pca_run.model
    for fn, msg in ((lambda: g.sample(2, mean=True), "option mean is for model.space=pca"),
                    (lambda: g.encode(torch.zeros(2, 1, 16, 16), codes=True), "codes=True"),
                    (lambda: g.log_prob(torch.zeros(2, 1, 8, 8)), "shape"),
                    (lambda: pca_run.generator.sample(2, truncation=1.0), "no option")):
        with pytest.raises(ConfigError, match=msg) as e:
            fn()
        assert "\n" not in str(e.value)
    assert m.encode(torch.zeros(3, 1, 16, 16), codes=True).shape == (3, 5)
    fresh = type(m)(m.cfg, m.info)
    with pytest.raises(ConfigError, match="not fitted"):
        fresh.log_prob(torch.zeros(2, 1, 16, 16))


# --- the theory lab: Box 2's intensity fit and the sampling lab -----------------------------------
def test_four_component_fit_recovers_the_tissue_intensities():
    from gankit.data.phantoms import CONTRASTS
    from gankit.theory.mixtures import fit_intensities, mr_voxels

    img, labs, body = mr_voxels(n=3, size=64)
    fit = fit_intensities(img[body].astype(np.float64), 4)
    truth = sorted(CONTRASTS["mr"][t] for t in set(labs[body].tolist()))
    assert len(truth) == 4
    np.testing.assert_allclose(fit["means"], truth, atol=0.005)
    np.testing.assert_allclose(fit["sds"], 0.03, atol=0.004)  # the phantom's noise
    lab = labs[body]
    frac = sorted((np.mean(lab == t), CONTRASTS["mr"][t]) for t in set(lab.tolist()))
    by_mean = [f for f, _ in sorted(frac, key=lambda p: p[1])]  # tissue fractions by intensity
    np.testing.assert_allclose(fit["weights"], by_mean, atol=0.01)


def test_gmm_intensities_experiment(tmp_path):
    from gankit import theory

    r = theory.run("gmm-intensities", tmp_path)
    n = r["numbers"]
    assert n["max_abs_mean_error"] < 0.005 and n["voxel_classification_accuracy"] > 0.98
    np.testing.assert_allclose(n["fitted_weights"], n["true_fractions"], atol=0.01)
    assert abs(n["neighbour_correlation_voxelwise_sample"]) < 0.05
    assert n["neighbour_correlation_phantom"] > 0.8
    assert (tmp_path / "gmm-intensities.png").stat().st_size > 10000
    assert "seed" not in r["explanation"].lower()


def test_samplers_pass_ks_and_a_too_small_envelope_is_detected():
    from gankit.theory import sampling as S

    rng = np.random.default_rng(1)
    assert S.ks(S.inverse_cdf_sample(5000, rng))["ks_p_value"] > 0.01
    M, x_star = S.envelope_constant()
    # M = sup p/q against a brute-force grid, reached near the larger mode
    grid = np.linspace(-10, 10, 2_000_001)
    assert M == pytest.approx(np.max(S.target_pdf(grid) / S.proposal_pdf(grid)), rel=1e-9)
    assert M >= np.max(S.target_pdf(grid) / S.proposal_pdf(grid))
    assert S.target_pdf(x_star) / S.proposal_pdf(x_star) == pytest.approx(M, rel=1e-12)
    draws, rate, worst = S.rejection_sample(5000, rng, M)
    assert S.ks(draws)["ks_p_value"] > 0.01 and worst <= 1 + 1e-9
    assert rate == pytest.approx(1 / M, abs=0.015)  # acceptance rate 1/M
    bad, bad_rate, bad_worst = S.rejection_sample(5000, rng, M / 2)
    assert bad_worst > 1 and S.ks(bad)["ks_p_value"] < 1e-6 and bad_rate > rate
    chain, acc = S.metropolis_hastings(20000, rng)
    kept = chain[1000:]
    ess = S.effective_sample_size(kept)
    assert 0.2 < acc < 0.9 and 500 < ess < len(kept)
    assert S.ks(kept[::math.ceil(len(kept) / ess)])["ks_p_value"] > 0.01


def test_effective_sample_size_of_an_ar1_chain():
    # x_t = rho x_{t-1} + e_t has integrated autocorrelation time (1 + rho) / (1 - rho)
    rng = np.random.default_rng(0)
    n, rho = 200000, 0.8
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = rho * x[t - 1] + e[t]
    assert S_ess(x) == pytest.approx(n * (1 - rho) / (1 + rho), rel=0.1)
    assert S_ess(rng.standard_normal(n)) == pytest.approx(n, rel=0.05)


def S_ess(x):
    from gankit.theory.sampling import effective_sample_size

    return effective_sample_size(x)


def test_sampling_experiment(tmp_path):
    from gankit import theory

    r = theory.run("sampling", tmp_path)
    n = r["numbers"]
    for k in ("inverse_cdf", "rejection", "metropolis_hastings"):
        assert n[k]["passes"] and n[k]["ks_p_value"] > 0.01, k
    assert not n["rejection_wrong_envelope"]["passes"]
    assert n["rejection_wrong_envelope"]["envelope_violated"]
    assert n["rejection"]["M"] > 1 and "M = sup p/q" in r["explanation"]


def test_onnx_export_is_a_one_line_refusal(pca_run, tmp_path):
    # a mixture samples with no network (component choice, Cholesky factors): nothing to export
    from gankit.export import export_onnx
    from gankit.models.base import CapabilityError

    with pytest.raises(CapabilityError, match="no sampling network") as e:
        export_onnx(pca_run.generator, tmp_path / "g.onnx")
    assert "\n" not in str(e.value)
