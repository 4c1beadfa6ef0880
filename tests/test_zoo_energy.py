"""BEGAN, EBGAN and unrolled GAN: controller, energies, pulling-away term, functional unrolling."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import gankit
from gankit.config import resolve_config
from gankit.data.builtin import _toy
from gankit.errors import ConfigError
from gankit.metrics.modes import mode_stats
from gankit.models import get_family
from gankit.models.began import began_k_update, convergence_measure
from gankit.models.ebgan import margin_loss, pulling_away
from gankit.models.unrolled import UnrollOptimizer, unroll

FAST = {"train.log_every": 1, "train.ckpt_every": 2, "train.sample_every": 100,
        "train.batch_size": 8, "train.ema": False}
TINY_AE = {"model.width": 8, "model.h_dim": 8}


def train(name, data, tmp_path, **over):
    return gankit.train(name, data, out=tmp_path / "run", progress=False,
                        overrides={**FAST, **over})


# --- BEGAN ---------------------------------------------------------------------------------
def test_began_k_update_formula_and_clipping():
    k = began_k_update(torch.tensor(0.5), torch.tensor(0.2), torch.tensor(0.05), 0.5, 1e-3)
    assert k.item() == pytest.approx(0.5 + 1e-3 * (0.5 * 0.2 - 0.05), abs=1e-7)  # 0.50005
    k = began_k_update(torch.tensor(0.5), torch.tensor(0.2), torch.tensor(0.3), 0.5, 1e-3)
    assert k.item() == pytest.approx(0.5 - 1e-3 * 0.2, abs=1e-7)  # D too good on fakes: k falls
    assert began_k_update(torch.tensor(0.9999), torch.tensor(1.0), torch.tensor(0.0), 1.0, 0.01).item() == 1.0
    assert began_k_update(torch.tensor(1e-4), torch.tensor(0.0), torch.tensor(1.0), 1.0, 0.01).item() == 0.0
    assert convergence_measure(torch.tensor(0.2), torch.tensor(0.05), 0.5).item() == pytest.approx(0.25)
    assert convergence_measure(torch.tensor(0.2), torch.tensor(0.3), 0.5).item() == pytest.approx(0.4)


def test_began_training_follows_the_equilibrium_equations(tiny_points, tmp_path):
    # k_0 = 0.5 and a large gain so each step moves k visibly, without reaching a clip bound.
    # (Points keep this fast; the image networks are exercised by test_core.)
    run = train("began", tiny_points, tmp_path, **TINY_AE, **{
        "train.steps": 3, "model.k_init": 0.5, "model.lambda_k": 0.1, "model.gamma": 0.7})
    rows = run.metrics()
    k = 0.5
    for r in rows:
        lx, lg = r["began/L_real"], r["began/L_fake"]
        assert r["D/real"] == pytest.approx(-lx) and r["D/fake"] == pytest.approx(-lg)
        assert r["began/k"] == pytest.approx(k, abs=1e-6)  # the k_t used in this step's L_D
        assert r["loss/D"] == pytest.approx(lx - k * lg, rel=1e-5)
        assert r["began/M"] == pytest.approx(lx + abs(0.7 * lx - lg), rel=1e-5)
        k = min(max(k + 0.1 * (0.7 * lx - lg), 0.0), 1.0)
    assert k != 0.5
    assert run.model.D.k.item() == pytest.approx(k, abs=1e-6)


def test_began_k_is_clipped_in_training(tiny_points, tmp_path):
    run = train("began", tiny_points, tmp_path, **TINY_AE, **{
        "train.steps": 1, "model.k_init": 0.5, "model.lambda_k": 1e4})
    r = run.metrics()[0]
    bal = 0.5 * r["began/L_real"] - r["began/L_fake"]
    assert run.model.D.k.item() == (1.0 if bal > 0 else 0.0)


def test_began_k_is_checkpointed_and_resumes_exactly(tmp_path):
    over = {**FAST, **TINY_AE, "train.steps": 2, "model.k_init": 0.3, "model.lambda_k": 0.05}
    a = gankit.train("began", "ring8", out=tmp_path / "a", progress=False, overrides=over)
    k2 = a.model.D.k.clone()
    assert k2.item() != 0.3
    ck = a.run_dir / "checkpoints" / "step_00000002"
    assert torch.equal(load_file(ck / "D.safetensors")["k"], k2)
    same = gankit.resume(a.run_dir, progress=False)  # nothing left to train: just reload
    assert torch.equal(same.model.D.k, k2)
    cont = gankit.resume(a.run_dir, steps=3, progress=False)
    ref = gankit.train("began", "ring8", out=tmp_path / "b", progress=False,
                       overrides={**over, "train.steps": 3})
    assert torch.equal(cont.model.D.k, ref.model.D.k)
    assert not torch.equal(ref.model.D.k, k2)


# --- EBGAN ---------------------------------------------------------------------------------
def test_ebgan_margin_loss():
    e_real = torch.tensor([0.1, 0.3])
    e_fake = torch.tensor([0.5, 0.7], requires_grad=True)  # both at or above m = 0.5
    loss = margin_loss(e_real, e_fake, 0.5)
    assert loss.item() == pytest.approx(0.2)  # only the real term remains
    (g,) = torch.autograd.grad(loss, e_fake)
    assert torch.equal(g, torch.zeros(2))  # D gets no push from fakes already above the margin
    assert margin_loss(e_real, torch.tensor([0.2, 0.6]), 0.5).item() == pytest.approx(0.2 + 0.15)


def test_ebgan_pulling_away_term():
    s = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    # cos^2: (1,2) = 1/2, (1,3) = 0, (2,3) = 1/2; each pair twice over N(N-1) = 6
    assert pulling_away(s).item() == pytest.approx(2 * (0.5 + 0.0 + 0.5) / 6)
    assert pulling_away(3.7 * s).item() == pytest.approx(1 / 3)  # scale invariant
    assert pulling_away(torch.eye(3)).item() == pytest.approx(0.0, abs=1e-7)
    assert pulling_away(torch.ones(4, 5)).item() == pytest.approx(1.0)  # collapsed embeddings


def test_ebgan_training_losses(tiny_points, tmp_path):
    run = train("ebgan", tiny_points, tmp_path, **TINY_AE, **{"train.steps": 2})
    for r in run.metrics():
        assert r["loss/G"] == pytest.approx(r["loss/G/energy"] + 0.1 * r["ebgan/pt"], rel=1e-5)
        assert 0 <= r["ebgan/pt"] <= 1
        assert r["D/real"] == pytest.approx(-r["ebgan/E_real"])
    # margin 0: every fake is "above the margin", so L_D is the real energy alone
    run = gankit.train("ebgan", tiny_points, out=tmp_path / "m0", progress=False, overrides={
        **FAST, **TINY_AE, "train.steps": 1, "model.margin": 0.0, "model.pull_away": False})
    r = run.metrics()[0]
    assert r["loss/D"] == pytest.approx(r["ebgan/E_real"], rel=1e-6)
    assert "loss/G/pt" not in r and r["loss/G"] == pytest.approx(r["loss/G/energy"])


# --- unrolled ------------------------------------------------------------------------------
def build(data, **model):
    cfg = resolve_config("unrolled", {"model": model})
    torch.manual_seed(0)
    return get_family("unrolled")(cfg, data.describe())


def g_grads(m, loss):
    return torch.autograd.grad(loss, list(m.G.parameters()), retain_graph=True)


def test_unrolled_k0_is_the_plain_nonsaturating_loss(tiny_points):
    m = build(tiny_points, unroll_steps=0)
    real = tiny_points.x[:16]
    fake = m.G(m.sample_latent(16))
    loss, _ = m.unrolled_g_loss(m.D, real, fake)
    assert torch.equal(loss, F.softplus(-m.D(fake).squeeze(1)).mean())
    # K steps of size 0 leave D where it is: the same loss and the same G gradient
    m5 = build(tiny_points, unroll_steps=5, unroll_optimizer="sgd", unroll_lr=0.0)
    loss5, _ = m5.unrolled_g_loss(m.D, real, fake)
    assert loss5.item() == pytest.approx(loss.item(), rel=1e-6)
    for a, b in zip(g_grads(m, loss), g_grads(m, loss5)):
        assert torch.allclose(a, b, atol=1e-7)


def test_unrolling_changes_the_generator_gradient(tiny_points):
    m = build(tiny_points, unroll_steps=5, unroll_lr=0.05)
    real = tiny_points.x[:16]
    fake = m.G(m.sample_latent(16))
    g0 = g_grads(m, m.unrolled_g_loss(m.D, real, fake, steps=0)[0])
    g5 = g_grads(m, m.unrolled_g_loss(m.D, real, fake)[0])
    g5_stop = g_grads(m, m.unrolled_g_loss(m.D, real, fake, backprop=False)[0])
    diff = lambda a, b: max((x - y).abs().max().item() for x, y in zip(a, b))
    assert diff(g0, g5) > 1e-4
    assert diff(g5, g5_stop) > 1e-5  # the second-order term through the unrolled updates
    assert all(torch.isfinite(g).all() for g in g5)


@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_unrolled_updates_match_torch_optimizers(tiny_points, kind):
    """The functional K-step copy equals a deep copy of D stepped by torch.optim K times,
    including Adam warm-started from the real optimizer's moments."""
    m = build(tiny_points)
    D, loss = m.D, m.loss
    real, fake = tiny_points.x[:16], m.G(m.sample_latent(16)).detach()
    make = (lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.5, 0.999))) if kind == "adam" \
        else (lambda ps: torch.optim.SGD(ps, lr=1e-2))
    opt = make(D.parameters())
    for _ in range(2):  # give the real optimizer some history
        opt.zero_grad()
        loss.d_loss(D(real).squeeze(1), D(fake).squeeze(1)).backward()
        opt.step()
    ref = copy.deepcopy(D)
    ref_opt = make(ref.parameters())
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for _ in range(3):
        ref_opt.zero_grad()
        loss.d_loss(ref(real).squeeze(1), ref(fake).squeeze(1)).backward()
        ref_opt.step()
    m.p.unroll_optimizer = kind
    uo = m.surrogate_optimizer(SimpleNamespace(tr=SimpleNamespace(opts={"D": opt})))
    if kind == "sgd":
        uo = UnrollOptimizer("sgd", lr=1e-2)
    before = {n: p.detach().clone() for n, p in D.named_parameters()}

    def d_loss(params, buffers):
        f = lambda x: torch.func.functional_call(D, (params, buffers), (x,)).squeeze(1)
        return loss.d_loss(f(real), f(fake))

    params, _ = unroll(D, d_loss, 3, uo, backprop=True)
    for n, p in ref.named_parameters():
        assert torch.allclose(params[n], p, atol=1e-6, rtol=1e-5), n
        assert torch.equal(dict(D.named_parameters())[n], before[n])  # D itself never moves


def test_g_phase_never_writes_the_real_discriminator(tiny_images, tmp_path):
    # DCGAN D with batch norm: parameters *and* running statistics must stay as they were
    run = gankit.train("unrolled", tiny_images, save=False, progress=False, overrides={
        **FAST, "model.width": 8, "model.unroll_steps": 3, "train.steps": 1})
    tr = run.trainer
    D, G = run.model.D, run.model.G
    d0 = {k: v.clone() for k, v in D.state_dict().items()}
    g0 = [p.detach().clone() for p in G.parameters()]
    assert any("running_mean" in k for k in d0)
    D.zero_grad(set_to_none=True)  # the gradients left by the D step
    g_phase = next(ph for ph in tr.phases if ph.name == "G")
    tr._run_phase(g_phase, keep_last=False)
    assert all(torch.equal(v, D.state_dict()[k]) for k, v in d0.items())
    assert all(p.grad is None for p in D.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(g0, G.parameters()))  # G did move
    assert math.isfinite(tr.pop_stats()["unrolled/loss_D_K"])


@pytest.mark.parametrize("name", ["began", "ebgan", "unrolled"])
def test_tricks_that_would_be_ignored_are_refused(name, tiny_points):
    cfg = resolve_config(name, {"tricks": {"feature_matching": True}})
    with pytest.raises(ConfigError, match="feature_matching"):
        get_family(name)(cfg, tiny_points.describe()).phases()


@pytest.mark.slow
def test_unrolling_prevents_mode_collapse_on_ring8():
    """Metz et al. 2017 §3.1 / Fig. 1 in miniature, with the family's own point defaults (Adam
    1e-3, batch 512; about 35 s on one thread): after 1,500 steps the plain GAN (K = 0) has
    collapsed onto one mode, the 5-step unrolled GAN holds all 8 (measured, seed 0: >= 75
    samples on each). Under the former defaults (lr 1e-4, batch 64) K = 5 had not left its
    initial cloud after 1,000 steps (0 modes by this count, measured)."""
    ds = _toy("ring8", 4096, 0)
    covered = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these MLPs are overhead-bound: extra threads only add sync cost
    try:
        for k in (0, 5):
            run = gankit.train("unrolled", ds, save=False, progress=False, overrides={
                "model.unroll_steps": k, "train.steps": 1500, "train.log_every": 500,
                "train.ema": False, "train.doctor": False})
            o = run.cfg.optim
            assert (o.lr_g, o.lr_d, run.cfg.train.batch_size) == (1e-3, 1e-3, 512)
            x = run.generator.sample(2500, seed=0)
            # >= 10 of 2,500 samples within 10 sigma (0.1) of a centre: "on the mode" after a
            # short training (3-sigma precision needs ~4,000 steps: benchmarks/points_check.py)
            stats = mode_stats(x, ds.info["centers"], ds.info["sigma"], n_sigma=10, min_count=10)
            covered[k] = stats["modes_covered"]
    finally:
        torch.set_num_threads(threads)
    assert covered[0] <= 2
    assert covered[5] >= 7
