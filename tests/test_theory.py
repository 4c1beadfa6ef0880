"""The theory lab reproduces the seeds' worked arguments (``gankit.theory``).

Each test runs one experiment into ``tmp_path`` and checks its numbers against the value the seed
states or the analytic one, to a stated tolerance, plus the PNG and JSON it writes.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from gankit import theory
from gankit.errors import ConfigError

ALL = [
    "earth-mover",
    "gan-vs-wgan-gradient",
    "gmm-intensities",
    "js-saturation",
    "kl-discrete",
    "kl-gaussian",
    "optimal-discriminator",
    "sampling",
    "saturating-gradients",
    "score-field",
]


def run_checked(name: str, out: Path) -> dict:
    """Run one experiment and check the files it leaves behind; return its numbers."""
    result = theory.run(name, out)
    png, js = out / f"{name}.png", out / f"{name}.json"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        im.verify()  # raises on a truncated/corrupt file
    with Image.open(png) as im:
        assert im.size[0] >= 400 and im.size[1] >= 200
    assert json.loads(js.read_text()) == result
    assert result["name"] == name
    assert result["explanation"] and result["reference"] and result["assumptions"]
    ref = result["reference"]  # cited by name (a chapter, the lecture, papers), never file numbers
    assert re.search(r"\((19|20)\d\d\)|et al\. (19|20)\d\d|lecture", ref)  # author (year)
    assert not re.search(r"\b00[0-4]\b|seed", ref.lower())
    return result["numbers"]


def test_registry_names_and_unknown_name(tmp_path: Path) -> None:
    assert theory.names() == ALL
    with pytest.raises(ConfigError, match="did you mean 'earth-mover'"):
        theory.run("earth-mover2", tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written for a bad name


# ---- earth-mover: seed 000 §3.6.1, Figure 15, D_W = 7 ------------------------------------------


def test_earth_mover_is_seven(tmp_path: Path) -> None:
    n = run_checked("earth-mover", tmp_path)
    assert n["dw_lp"] == pytest.approx(7.0, abs=1e-9)
    assert n["dw_scipy_times_total"] == pytest.approx(n["dw_lp"], abs=1e-9)
    assert n["dw_lp_q_to_p"] == pytest.approx(7.0, abs=1e-9)  # a distance: symmetric
    assert n["dw_cdf_closed_form"] == pytest.approx(7.0, abs=1e-9)
    # The seed's own plan (two p4 -> p1, one p4 -> p3) is feasible and optimal.
    assert n["seed_plan_is_valid"] and n["seed_plan_cost"] == pytest.approx(7.0)
    plan = np.array(n["lp_plan"])
    np.testing.assert_allclose(plan.sum(1), n["p_piles"], atol=1e-9)
    np.testing.assert_allclose(plan.sum(0), n["q_piles"], atol=1e-9)


def test_earth_mover_lp_simple_cases() -> None:
    from gankit.theory.earth_mover import earth_mover_lp

    pos = np.arange(4.0)
    assert earth_mover_lp(np.ones(4), np.ones(4), pos)[0] == pytest.approx(0.0, abs=1e-12)
    # all mass one unit: 3 shovelfuls moved 3 piles = 9
    cost, plan = earth_mover_lp(np.array([3.0, 0, 0, 0]), np.array([0, 0, 0, 3.0]), pos)
    assert cost == pytest.approx(9.0)
    assert plan[0, 3] == pytest.approx(3.0)


# ---- js-saturation: seed 002 Fig. 3 ---------------------------------------------------------


def test_js_saturates_at_log2(tmp_path: Path) -> None:
    n = run_checked("js-saturation", tmp_path)
    assert n["js"]["0"] == pytest.approx(0.0, abs=1e-9)
    assert n["js"]["80"] == pytest.approx(math.log(2), abs=1e-6)
    js = np.array(n["js_curve"])
    assert np.all(np.diff(js) >= -1e-12) and n["js_monotone"]
    assert np.all(js <= math.log(2) + 1e-9)
    # Seed: "the gradient of the JS divergence vanishes after a mean of 30".
    assert 25.0 <= n["mu_where_djs_below_1e-3"] <= 40.0
    assert n["djs_dmu"]["10"] > 1e-2
    assert n["djs_dmu"]["80"] < 1e-6
    # KL = mu^2 / (2 sigma^2) and W1 = |mu| keep growing.
    assert n["max_abs_kl_error"] < 1e-6 and n["kl"]["80"] == pytest.approx(128.0, rel=1e-6)
    assert n["max_abs_w1_error"] < 1e-6 and n["w1"]["80"] == pytest.approx(80.0, rel=1e-6)


def test_js_unit_variance_closed_form_limits() -> None:
    from gankit.theory.divergences import gaussian_shift_divergences

    far = gaussian_shift_divergences(80.0, sigma=1.0)
    assert far["js"] == pytest.approx(math.log(2), abs=1e-9)
    assert far["kl"] == pytest.approx(80.0**2 / 2, rel=1e-6)
    near = gaussian_shift_divergences(0.1, sigma=1.0)
    # For a small shift JS ~ mu^2 / 8 (a quarter of the KL, which is symmetric to 2nd order).
    assert near["js"] == pytest.approx(0.1**2 / 8, rel=1e-2)


# ---- kl-gaussian: seed 000 Fig. 12, seed 002 Fig. 4 -------------------------------------------


def test_forward_kl_matches_moments_reverse_kl_picks_a_mode(tmp_path: Path) -> None:
    n = run_checked("kl-gaussian", tmp_path)
    mm = n["moment_matching"]
    # analytic mixture moments: mean 0.9, var = 1 + 9 - 0.81
    assert mm["mean"] == pytest.approx(0.9) and mm["std"] == pytest.approx(math.sqrt(9.19))
    assert n["forward_fit"]["mean"] == pytest.approx(mm["mean"], abs=1e-3)
    assert n["forward_fit"]["std"] == pytest.approx(mm["std"], abs=1e-3)
    # reverse KL sits on the heavier mode N(3, 1)
    assert n["reverse_fit"]["mean"] == pytest.approx(3.0, abs=0.1)
    assert n["reverse_fit"]["std"] == pytest.approx(1.0, abs=0.1)
    # each fit is the better one under its own divergence, and worse under the other
    assert n["forward_fit"]["kl_pq"] < n["reverse_fit"]["kl_pq"]
    assert n["reverse_fit"]["kl_qp"] < n["forward_fit"]["kl_qp"]
    # the lighter mode is a worse local minimum of reverse KL
    assert any(abs(m["mean"] + 3.0) < 0.1 for m in n["reverse_local_minima"])
    assert all(m["kl_qp"] > n["reverse_fit"]["kl_qp"] for m in n["reverse_local_minima"])


# ---- kl-discrete: seed 000 Box 3, §3.2.3 ----------------------------------------------------


def test_discrete_kl_box3_and_preferences(tmp_path: Path) -> None:
    n = run_checked("kl-discrete", tmp_path)
    box = n["box3"]
    # The seed: forward .0801 < reverse .0899; asymmetric.
    assert box["forward_log10"] < box["reverse_log10"]
    assert box["forward_log10"] == pytest.approx(0.0801, abs=3e-3)
    assert box["reverse_log10"] == pytest.approx(0.0899, abs=3e-3)
    assert box["forward_nats"] == pytest.approx(box["forward_log10"] * math.log(10), rel=1e-12)
    # Seed: forward KL overestimates (covers), reverse KL drops a mode.
    assert n["forward_prefers"] == "cover" and n["reverse_prefers"] == "mode"
    assert n["forward_kl_nats"]["mode"] > 5 * n["forward_kl_nats"]["cover"]


def test_kl_discrete_basics() -> None:
    from gankit.theory.kl import kl_discrete

    p = np.array([0.2, 0.3, 0.5])
    assert kl_discrete(p, p) == 0.0
    assert kl_discrete(p, np.array([0.5, 0.5, 0.0])) == math.inf  # Q misses P's mass
    assert kl_discrete(np.array([0.5, 0.5, 0.0]), p) == pytest.approx(
        0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.3)
    )


# ---- gan-vs-wgan-gradient: seed 002 Fig. 15 ------------------------------------------------


def test_gan_discriminator_saturates_wgan_critic_does_not(tmp_path: Path) -> None:
    n = run_checked("gan-vs-wgan-gradient", tmp_path)
    assert n["mean_D_on_fake"] < 1e-2  # D confidently rejects the fakes
    assert n["mean_abs_dD_dx_fake"] < 1e-2
    assert n["mean_abs_grad_saturating_G_loss_fake"] < 1e-2
    assert n["mean_abs_critic_grad_fake"] > 0.5 and n["min_abs_critic_grad_fake"] > 0.3
    assert n["critic_over_D_grad_ratio"] > 100  # orders of magnitude
    assert n["critic_linear_fit_r2"] > 0.99 and n["critic_linear_fit_slope"] < 0
    assert n["analytic_Dstar_mean_abs_grad_fake"] < 1e-9
    # the non-saturating loss -log D keeps a usable gradient on the same discriminator
    assert n["mean_abs_grad_nonsaturating_G_loss_fake"] > 0.1


def test_discriminator_training_is_deterministic() -> None:
    from gankit.theory.discriminators import train_gan_discriminator

    a, b = train_gan_discriminator(0), train_gan_discriminator(0)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


# ---- optimal-discriminator: seed 000 §3.4 Eq. 6-7 --------------------------------------------


def test_trained_discriminator_recovers_dstar(tmp_path: Path) -> None:
    n = run_checked("optimal-discriminator", tmp_path)
    lo, hi = n["region"]
    assert lo < -2 and hi > 2  # the overlap region is not trivially small
    assert n["max_abs_error"] < 0.04
    assert n["mean_abs_error"] < 0.015
    # Eq. 7: J(G, D*) = 2 JS - log 4, and D* maximises J so no trained D beats it.
    assert n["J_optimal_D"] == pytest.approx(n["two_js_minus_log4"], abs=1e-6)
    assert n["J_trained_D"] <= n["J_optimal_D"] + 1e-9
    assert n["J_trained_D"] == pytest.approx(n["J_optimal_D"], abs=5e-3)


# ---- saturating-gradients: seed 000 §3.4, Goodfellow et al. 2014 §3 ----------------------


def test_saturating_vs_nonsaturating_gradients(tmp_path: Path) -> None:
    n = run_checked("saturating-gradients", tmp_path)
    t = n["table"]
    for key, row in t.items():
        d = float(key)
        # d/dl log(1 - sigmoid(l)) = d/dl -softplus(l) = -sigmoid(l) = -D
        assert row["grad_sat_logit"] == pytest.approx(-d, rel=1e-9)
        # d/dl -log sigmoid(l) = d/dl softplus(-l) = -(1 - D)
        assert row["grad_ns_logit"] == pytest.approx(-(1 - d), rel=1e-9)
    assert abs(t["0.001"]["grad_sat_logit"]) == pytest.approx(1e-3)
    assert t["0.001"]["ratio_ns_over_sat"] == pytest.approx(999.0)
    assert t["0.5"]["grad_sat_logit"] == pytest.approx(t["0.5"]["grad_ns_logit"])  # same at D=1/2
    assert n["max_abs_error_vs_analytic"] < 1e-12


def test_generator_loss_gradients_against_finite_differences() -> None:
    from gankit.theory.saturation import generator_loss_gradients

    d = np.array([1e-3, 0.2, 0.5, 0.9])
    g = generator_loss_gradients(d)
    logit = torch.logit(torch.as_tensor(d, dtype=torch.float64))
    h = 1e-6
    fd_sat = (-F.softplus(logit + h) + F.softplus(logit - h)) / (2 * h)
    fd_ns = (F.softplus(-(logit + h)) - F.softplus(-(logit - h))) / (2 * h)
    np.testing.assert_allclose(g["grad_sat_logit"], fd_sat.numpy(), rtol=1e-6)
    np.testing.assert_allclose(g["grad_ns_logit"], fd_ns.numpy(), rtol=1e-6)
