"""The RBM family (Hinton 2002 CD-k; Tieleman 2008 PCD; Salakhutdinov & Murray 2008 AIS): the
free energy and conditionals against brute-force sums over the joint, the free-energy loss's
gradient against the textbook CD statistics, exact enumeration of log Z, AIS against it, the
pseudo-likelihood against scikit-learn's BernoulliRBM on identical weights, a short real
training, the CLI (sample, eval, kill -9 resume with the persistent chain), one-line errors."""

import copy
import itertools
import math

import numpy as np
import pytest
import torch
from helpers import cli_output, run_cli
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets

import gankit
from gankit.errors import ConfigError
from gankit.models import rbm as R
from gankit.registry import MODELS

TINY = {**MODELS.get("rbm").tiny, "train.doctor": False, "train.log_every": 1,
        "train.batch_size": 8}


def random_rbm(D, H, scale=1.0, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    m = R.BernoulliRBM(D, H, chains=3).to(dtype)
    with torch.no_grad():
        m.W.normal_(0, scale)
        m.b.normal_(0, scale)
        m.c.normal_(0, scale)
    return m


def all_states(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


# --- the energy model -----------------------------------------------------------------------------
def test_free_energy_is_minus_log_of_the_joint_summed_over_h():
    m = random_rbm(5, 4)
    v, h = all_states(5), all_states(4)
    E = torch.stack([m.energy(v, hj.expand(len(v), 4)) for hj in h], 1)  # [32, 16]
    torch.testing.assert_close(m.free_energy(v), -torch.logsumexp(-E, 1), rtol=1e-12, atol=1e-12)
    # and the energy itself, written out term by term for one configuration
    W, b, c = m.W.detach(), m.b.detach(), m.c.detach()
    vi, hj = v[11], h[6]
    by_hand = -sum(b[i] * vi[i] for i in range(5)) - sum(c[j] * hj[j] for j in range(4)) \
        - sum(W[j, i] * vi[i] * hj[j] for i in range(5) for j in range(4))
    assert m.energy(vi[None], hj[None]).item() == pytest.approx(by_hand.item(), abs=1e-12)


def test_conditionals_are_the_joints_ratios():
    m = random_rbm(4, 3, seed=1)
    v, h = all_states(4), all_states(3)
    with torch.no_grad():
        logp = -torch.stack([m.energy(v, hj.expand(len(v), 3)) for hj in h], 1)  # [16, 8]
        p = torch.softmax(logp.flatten(), 0).view_as(logp)  # the joint p(v, h)
        # p(h_j = 1 | v) = sum_{h: h_j = 1} p(v, h) / p(v)
        p_h = (p @ h) / p.sum(1, keepdim=True)
        torch.testing.assert_close(p_h, torch.sigmoid(m.hidden_logits(v)), rtol=1e-10, atol=1e-12)
        p_v = (p.t() @ v) / p.sum(0)[:, None]
        torch.testing.assert_close(p_v, torch.sigmoid(m.visible_logits(h)), rtol=1e-10,
                                   atol=1e-12)


def test_free_energy_loss_gradient_is_the_textbook_cd_statistic():
    m = random_rbm(6, 4, scale=0.5, seed=2)
    g = torch.Generator().manual_seed(0)
    data = torch.bernoulli(torch.full((5, 6), 0.4, dtype=torch.float64), generator=g)
    neg = torch.bernoulli(torch.full((7, 6), 0.6, dtype=torch.float64), generator=g)
    loss = m.free_energy(data).mean() - m.free_energy(neg).mean()
    loss.backward()
    with torch.no_grad():
        ph_d, ph_m = torch.sigmoid(m.hidden_logits(data)), torch.sigmoid(m.hidden_logits(neg))
        # <h v^T>_data - <h v^T>_model (hidden units at their conditional means) ...
        dW = ph_d.t() @ data / 5 - ph_m.t() @ neg / 7
        db = data.mean(0) - neg.mean(0)
        dc = ph_d.mean(0) - ph_m.mean(0)
    # ... is the log-likelihood ascent direction: the loss's gradient is its negative
    torch.testing.assert_close(m.W.grad, -dW, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(m.b.grad, -db, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(m.c.grad, -dc, rtol=1e-12, atol=1e-14)


def test_pcd_advances_its_chain_and_cd_restarts_at_the_data():
    m = random_rbm(6, 4, seed=3, dtype=torch.float32)
    start = m.chain.clone()
    v = torch.ones(3, 6)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    _, st = R.rbm_loss(m, v, "pcd", 2, g1)
    want = m.sample_v(m.sample_h(start, g2), g2)
    want = m.sample_v(m.sample_h(want, g2), g2)  # two sweeps from the chain, same draws
    assert torch.equal(m.chain, want) and not torch.equal(m.chain, start)
    assert m.data_count.item() == 3 and torch.equal(m.data_sum, torch.full((6,), 3.0).double())
    before = m.chain.clone()
    R.rbm_loss(m, v, "cd", 1, g1)
    assert torch.equal(m.chain, before)  # CD leaves the persistent chain alone
    assert {"loss/cd", "rbm/recon", "rbm/neg_mean"} <= set(st)


# --- the partition function -----------------------------------------------------------------------
def test_exact_log_z_enumerates_either_layer_and_normalises():
    m = random_rbm(9, 12, seed=4)
    v = all_states(9)
    brute = torch.logsumexp(torch.stack([-m.energy(v, hj.expand(len(v), 12))
                                         for hj in all_states(12)], 1).flatten(), 0)
    log_z = R.exact_log_z(m)  # enumerates v (9 < 12)
    assert log_z == pytest.approx(brute.item(), abs=1e-9)
    t = R.BernoulliRBM(12, 9).double()  # the same model with the layers' roles swapped
    with torch.no_grad():
        t.W.copy_(m.W.t())
        t.b.copy_(m.c)
        t.c.copy_(m.b)
    assert R.exact_log_z(t) == pytest.approx(log_z, abs=1e-9)  # enumerates h (9 < 12)
    with torch.no_grad():
        total = torch.exp(-m.free_energy(v) - log_z).sum()
    assert total.item() == pytest.approx(1.0, abs=1e-12)  # probabilities sum to one
    with pytest.raises(ConfigError, match="at most 20 units"):
        R.exact_log_z(R.BernoulliRBM(21, 22))


def test_ais_agrees_with_exact_enumeration_within_three_standard_errors():
    m = random_rbm(40, 12, scale=0.6, seed=5)
    exact = R.exact_log_z(m)
    base = torch.logit(torch.linspace(0.2, 0.8, 40, dtype=torch.float64))
    r = R.annealed_importance_sampling(m, steps=2000, runs=100,
                                       generator=torch.Generator().manual_seed(0),
                                       base_logits=base)
    assert 0 < r.se < 0.2, r.se  # the estimate is informative
    assert abs(r.log_z - exact) < 3 * r.se, (r.log_z, exact, r.se)
    assert r.log_z_lo < exact < r.log_z_hi
    # the base-rate model's log Z_A = H log 2 + sum_i softplus(b_A_i)
    assert r.log_z_base == pytest.approx(12 * math.log(2) + float(torch.nn.functional.softplus(
        base).sum()), abs=1e-12)
    # with no weights and the base rates as biases every AIS weight is 1: log Z is exact
    z = R.BernoulliRBM(40, 12).double()
    with torch.no_grad():
        z.W.zero_()
        z.b.copy_(base)
    r0 = R.annealed_importance_sampling(z, steps=50, runs=10, base_logits=base)
    assert r0.log_z == pytest.approx(R.exact_log_z(z), abs=1e-9) and r0.se == pytest.approx(0)


def test_the_ais_schedule_is_the_papers():
    b = R.ais_betas(14_500)
    assert len(b) == 14_501 and b[0] == 0 and b[-1] == 1 and torch.all(b.diff() > 0)
    assert b[500] == pytest.approx(0.5) and b[4500] == pytest.approx(0.9)
    assert b.diff()[:500].mean() == pytest.approx(0.001)
    assert b.diff()[4500:].mean() == pytest.approx(1e-5)


# --- scikit-learn's pseudo-likelihood ---------------------------------------------------------------
def test_pseudo_likelihood_equals_sklearns_score_samples():
    from sklearn.neural_network import BernoulliRBM as SkRBM

    rng = np.random.RandomState(0)
    X = (rng.rand(60, 16) < np.linspace(0.1, 0.9, 16)).astype(np.float64)
    sk = SkRBM(n_components=6, n_iter=5, learning_rate=0.1, random_state=3).fit(X)
    m = R.BernoulliRBM(16, 6).double()
    with torch.no_grad():
        m.W.copy_(torch.from_numpy(sk.components_))
        m.b.copy_(torch.from_numpy(sk.intercept_visible_))
        m.c.copy_(torch.from_numpy(sk.intercept_hidden_))
    v = torch.from_numpy(X)
    torch.testing.assert_close(m.free_energy(v).detach(), torch.from_numpy(sk._free_energy(X)))
    # score_samples flips one pixel per sample, drawn from RandomState(random_state)
    index = torch.from_numpy(np.random.RandomState(3).randint(0, 16, 60))
    ours = m.pseudo_log_likelihood(v, index)
    np.testing.assert_allclose(ours.numpy(), sk.score_samples(X), rtol=1e-10)
    # in expectation over the flipped pixel it is the full pseudo-log-likelihood
    full = m.pseudo_log_likelihood(v)
    every = torch.stack([m.pseudo_log_likelihood(v, torch.full((60,), i)) for i in range(16)])
    torch.testing.assert_close(every.mean(0), full, rtol=1e-12, atol=1e-12)
    # ... which is a sum of log conditionals, each computed here from the free energies
    i = 7
    flipped = v.clone()
    flipped[:, i] = 1 - flipped[:, i]
    with torch.no_grad():
        fe, fe_i = m.free_energy(v), m.free_energy(flipped)
    direct = torch.log(torch.exp(-fe) / (torch.exp(-fe) + torch.exp(-fe_i)))
    torch.testing.assert_close(every[i] / 16, direct, rtol=1e-10, atol=1e-12)


# --- training on MNIST-5k -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mnist_run():
    """CD-1, 64 hidden units, 300 steps on MNIST-5k (~2 s)."""
    from gankit.data import load_data

    ds = load_data("mnist5k")
    run = gankit.train("rbm", ds, steps=300, save=False, progress=False,
                       overrides={"train.doctor": False, "model.hidden": 64,
                                  "train.log_every": 300})
    return run, ds


def test_training_beats_the_independent_pixel_model(mnist_run):
    run, ds = mnist_run
    x = ds.x_test[:500]
    ais = run.model.log_partition(steps=1000, runs=50)
    lp = run.generator.log_prob(x, steps=1000, runs=50).double()
    # the base-rate model (the training data's pixel means) on the same binarised test images
    v = run.model.visible(x).double()
    bA = run.model.rbm.base_logits().double()
    pixels = (v @ bA - torch.nn.functional.softplus(bA).sum()).mean().item()
    assert ais.se < 1.0, ais.se
    assert lp.mean().item() > pixels + 40, (lp.mean().item(), pixels)  # measured: ~ +60 nats
    assert lp.mean().item() < 0 and run.model.likelihood() == {"space": "binary",
                                                              "kind": "estimate"}
    # the estimate is cached: the same log Z whatever the batching
    torch.testing.assert_close(run.generator.log_prob(x[:7], steps=1000, runs=50), lp[:7].float())
    s = run.generator.sample(16, seed=0, steps=100)
    assert s.shape == (16, 1, 28, 28) and s.min() >= -1 and s.max() <= 1
    # Gibbs samples carry ink where the digits do: more in the centre than at the border
    centre, border = s[:, :, 10:18, 10:18].mean(), s[:, :, :3].mean()
    assert centre > border + 0.3, (centre, border)


# --- capabilities and the CLI -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rbm") / "run"
    code = run_cli("train", "rbm", "--data", "digits", "--steps", "6", "--batch-size", "16",
                   "--no-progress", "--out", out, *sets("rbm"))
    assert code == 0
    return out


def test_capabilities_of_a_saved_run(tiny_run):
    from gankit.data import load_data

    g = gankit.load(tiny_run)
    x = load_data("digits").x[:5]
    s = g.sample(6, seed=1, steps=5)
    assert s.shape == (6, 1, 8, 8) and torch.equal(s, g.sample(6, seed=1, steps=5))
    b = g.sample(6, seed=1, steps=5, mean=False)
    assert set(b.unique().tolist()) <= {-1.0, 1.0}
    lp = g.log_prob(x)  # 12 hidden units: exact by default
    assert g.model.likelihood()["kind"] == "exact"
    v = g.model.visible(x).double()
    with torch.no_grad():
        want = -copy.deepcopy(g.model.rbm).double().free_energy(v) - g.model.exact_log_z()
    torch.testing.assert_close(lp.double(), want, rtol=1e-5, atol=1e-4)
    ais = g.log_prob(x, exact=False, steps=300, runs=20)
    assert torch.allclose(ais - lp, (ais - lp)[0].expand(5), atol=1e-4)  # differ by log Z only
    h = g.encode(x)
    assert h.shape == (5, 12) and g.decode(h).shape == (5, 1, 8, 8)


def test_sample_and_eval_commands(tiny_run, tmp_path, capsys):
    code, _, err = cli_output(capsys, "sample", tiny_run, "--n", "8", "--out",
                                tmp_path / "s.npy", "--option", "steps=7")
    assert code == 0 and not err
    got = np.load(tmp_path / "s.npy")
    assert np.allclose(got, gankit.load(tiny_run).sample(8, seed=0, steps=7).numpy())
    code, _, err = cli_output(capsys, "sample", tiny_run, "--n", "2", "--out",
                              tmp_path / "t.npy", "--option", "temperature=2")
    assert code == 2 and len(err) == 1 and "no sampling option(s) temperature" in err[0]
    code, _, err = cli_output(capsys, "eval", tiny_run, "--n", "60", "--metrics", "fid,pr",
                                "--out", tmp_path / "eval.json")
    assert code == 0
    import json

    res = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert res["fid"] > 0 and 0 <= res["precision"] <= 1


def test_pcd_resumes_bit_identically_after_sigkill(tmp_path):
    args = ["rbm", "--data", "digits", "--steps", "24", "--batch-size", "16", "--no-progress",
            "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.keep_ckpts=10", *sets("rbm")]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    chain = [k for k in a if k.endswith("chain")]
    assert chain and a[chain[0]].shape == (16, 64)  # the persistent chain is checkpointed
    assert_identical(a, b)


def test_errors_are_one_line(tmp_path, tiny_images, tiny_points):
    cases = [(tiny_points, {}, "trains on images"),
             (tiny_images, {"model.k": 0}, "model.k"),
             (tiny_images, {"model.chains": 0}, "model.chains"),
             (tiny_images, {"model.method": "gibbs"}, "model.method"),
             (tiny_images, {"loss.gp": "r1"}, "trains no discriminator: loss.gp"),
             (tiny_images, {"optim.lr_d": 1e-3}, "trains no discriminator: optim.lr_d")]
    for i, (ds, over, msg) in enumerate(cases):
        with pytest.raises(ConfigError, match=msg) as e:
            gankit.train("rbm", ds, out=tmp_path / str(i), progress=False,
                         overrides={**TINY, "train.steps": 1, **over})
        assert "\n" not in str(e.value)
    run = gankit.train("rbm", tiny_images, save=False, progress=False,
                       overrides={**TINY, "train.steps": 1, "model.hidden": 30})
    g = run.generator
    for call, msg in [(lambda: g.log_prob(torch.zeros(2, 1, 8, 8)), "must have shape"),
                      (lambda: g.log_prob(tiny_images.x[:2], exact=True), "at most 20 units"),
                      (lambda: g.log_prob(tiny_images.x[:2], runs=1), "runs must be"),
                      (lambda: g.log_prob(tiny_images.x[:2], beta=1), "no log_prob option"),
                      (lambda: g.sample(2, steps=0), "steps must be"),
                      (lambda: g.decode(torch.zeros(2, 3)), "codes must have shape")]:
        with pytest.raises(ConfigError, match=msg) as e:
            call()
        assert "\n" not in str(e.value)


# --- the DBN (Hinton, Osindero & Teh 2006) ------------------------------------------------------------
DBN_TINY = {**MODELS.get("dbn").tiny, "train.doctor": False, "train.log_every": 1,
            "train.batch_size": 8}


def test_dbn_trains_one_layer_after_another(tiny_images):
    from gankit.train.trainer import Callback

    class Keep(Callback):
        def __init__(self):
            self.states = {}

        def on_step_end(self, tr):
            self.states[tr.step] = {k: copy.deepcopy(n.state_dict())
                                    for k, n in tr.nets.items()}

    keep = Keep()
    run = gankit.train("dbn", tiny_images, save=False, progress=False, callbacks=[keep],
                       overrides={**DBN_TINY, "train.steps": 6, "model.layer_steps": [3]})
    s = keep.states
    changed = [{k: not torch.equal(s[t][k]["W"], s[t - 1][k]["W"]) for k in ("rbm1", "rbm2")}
               for t in range(2, 7)]
    # rbm1 learns during steps 0-2 only, rbm2 during steps 3-5 only
    assert [c["rbm1"] for c in changed] == [True, True, False, False, False]
    assert [c["rbm2"] for c in changed] == [False, False, True, True, True]
    top = run.model.rbm2
    assert top.data_count.item() == 3 * 8  # it saw 3 batches of layer-1 activities ...
    assert set(top.chain.unique().tolist()) <= {0.0, 1.0} and top.chain.shape == (8, 10)
    assert top.data_sum.max() <= 24 and top.visible == 10  # ... of the 10 hidden units


def enumerate_log_p(model, v):
    """log p(v) of a two-layer DBN, summing h1 (at most ~12 units) out exactly."""
    r1, r2 = (copy.deepcopy(r).double() for r in model.rbms)
    h1 = all_states(r1.hidden)  # [S, H1]
    log_top = -r2.free_energy(h1) - R.exact_log_z(r2)  # [S]
    logits = r1.visible_logits(h1)  # [S, D]
    log_lik = v.double() @ logits.t() - torch.nn.functional.softplus(logits).sum(-1)  # [N, S]
    return torch.logsumexp(log_lik + log_top, 1)


def test_dbn_bounds_against_the_enumerated_likelihood(tiny_images):
    from gankit.config import parse_overrides, resolve_config
    from gankit.models.dbn import DBN

    cfg = resolve_config("dbn", parse_overrides([f"{k}={v}" for k, v in DBN_TINY.items()]))
    torch.manual_seed(0)
    model = DBN(cfg, tiny_images.describe()).eval()
    with torch.no_grad():  # weights large enough for an uncertain posterior q(h1 | v)
        for p in model.parameters():
            p.normal_(0, 0.3)
    x = tiny_images.x[:6]
    with torch.no_grad():
        exact = enumerate_log_p(model, model.visible(x))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        one = torch.stack([model.log_prob(x, generator=g).double() for _ in range(400)])
        iw = model.log_prob(x, generator=g, k=4000).double()
    elbo, se = one.mean(0), one.std(0) / 20
    assert torch.all(elbo < exact + 3 * se), (elbo, exact)  # a lower bound ...
    assert torch.all(exact - elbo > 0.05)  # ... not a tight one with one sample
    # the importance-weighted bound with k = 4000 is near the exact value (its estimate may
    # exceed it by its noise): measured gaps 1.4-5.4 nats for the bound, < 0.21 with k = 4000
    assert torch.all((iw - exact).abs() < 0.25 * (exact - elbo)), (iw, exact, elbo)
    assert model.likelihood() == {"space": "binary", "kind": "lower-bound"}


def test_a_one_layer_dbn_is_an_rbm(tiny_images):
    run = gankit.train("dbn", tiny_images, save=False, progress=False,
                       overrides={**DBN_TINY, "train.steps": 5, "model.layers": [9],
                                  "model.layer_steps": []})
    m = run.model
    x = tiny_images.x[:4]
    with torch.no_grad():
        want = -m.rbm1.free_energy(m.visible(x)).double() - R.exact_log_z(m.rbm1)
    torch.testing.assert_close(m.log_prob(x, k=3).double(), want, rtol=1e-5, atol=1e-4)


def test_dbn_samples_and_cli(tmp_path, capsys):
    out = tmp_path / "dbn"
    code = run_cli("train", "dbn", "--data", "digits", "--steps", "6", "--batch-size", "16",
                   "--no-progress", "--out", out, *sets("dbn"))
    assert code == 0
    g = gankit.load(out)
    s = g.sample(5, seed=2, steps=3)
    assert s.shape == (5, 1, 8, 8) and torch.equal(s, g.sample(5, seed=2, steps=3))
    assert set(g.sample(5, seed=2, mean=False).unique().tolist()) <= {-1.0, 1.0}
    code, _, err = cli_output(capsys, "sample", out, "--n", "4", "--out", tmp_path / "s.npy",
                              "--option", "steps=4")
    assert code == 0 and not err
    assert np.allclose(np.load(tmp_path / "s.npy"), g.sample(4, seed=0, steps=4).numpy())
    assert g.encode(torch.zeros(3, 1, 8, 8)).shape == (3, 6)
    for over, msg in [({"model.layer_steps": [2, 2]}, "1 integers >= 1 for 2 layers"),
                      ({"model.layer_steps": [50]}, "leave no step for the top layer"),
                      ({"model.layers": []}, "model.layers")]:
        with pytest.raises(ConfigError, match=msg) as e:
            gankit.train("dbn", load_tiny(), save=False, progress=False,
                         overrides={**DBN_TINY, "train.steps": 10, **over})
        assert "\n" not in str(e.value)


def load_tiny():
    from conftest import make_tiny_images

    return make_tiny_images()


def test_dbn_resumes_bit_identically_across_its_layer_boundary(tmp_path):
    # layer 2 starts at step 12: the kill (after the step-8 checkpoint) falls in layer 1's stage
    args = ["dbn", "--data", "digits", "--steps", "24", "--batch-size", "16", "--no-progress",
            "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.keep_ckpts=10", *sets("dbn"), "--set", "model.layer_steps=[12]"]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert sum(k.endswith("chain") for k in a) == 2
    assert_identical(a, b)
