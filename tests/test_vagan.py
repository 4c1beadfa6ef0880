"""VA-GAN (Baumgartner et al. 2018): the vagan-squares task and its ground truth, the critic's
burst schedule, the objective (y = x + M(x), the L1 term, the WGAN-GP critic), the attribution
maths (saliency, integrated gradients, NCC), `gankit attribute` and an exact resume after
SIGKILL."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_images
from helpers import cli_output, run_cli
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets
from torch import nn

import gankit
from gankit.commands_attribute import displayable
from gankit.config import parse_overrides, resolve_config
from gankit.data import load_data
from gankit.data.attribution_tasks import SQUARES, square_images
from gankit.errors import ConfigError, DataError
from gankit.games.phase import Burst, Phase
from gankit.metrics.attribution import (
    gradient_saliency,
    integrated_gradients,
    mass_fractions,
    ncc,
)
from gankit.models.vagan import VAGAN
from gankit.registry import MODELS

TINY = MODELS.get("vagan").tiny


def build(ds, **over):
    cfg = resolve_config("vagan", parse_overrides([f"{k}={v}" for k, v in
                                                   {**TINY, **over}.items()]))
    return VAGAN(cfg, ds.describe())


@pytest.fixture(scope="module")
def squares():
    return load_data("vagan-squares")


# -- the data -----------------------------------------------------------------------------------
def test_squares_lie_exactly_where_the_parts_say():
    """With an effect 100x the background's std, every patient pixel above mid-grey is a square
    pixel and vice versa; the centre square is the centre 12x12 block, the second one sits
    (+18, +18) (subtype A) or (-18, -18) (subtype B) from the centre, jittered by <= 3 px."""
    x, y, parts = square_images(2, 6, seed=3, effect=5000.0)
    assert y.tolist() == [0, 0, 1, 1, 1, 1, 1, 1]
    half, off, jit, c = SQUARES["half"], SQUARES["offset"], SQUARES["jitter"], 32
    for i in range(2, 8):
        assert np.array_equal(x[i] > 0, parts[i] > 0)
        centre = np.argwhere(parts[i, 0] == 1)
        assert centre.min(0).tolist() == [c - half] * 2 and centre.max(0).tolist() == [c + half - 1] * 2
        second = np.argwhere(parts[i, 0] == 2)
        assert len(second) == len(centre) == (2 * half) ** 2
        sign = 1 if i < 5 else -1  # the first half of the patients is subtype A
        shift = second.mean(0) + 0.5 - c - sign * off  # the square's centre minus its position
        assert (np.abs(shift) <= jit).all(), shift


def test_healthy_images_carry_no_effect():
    """The healthy images are the same noise whatever the effect size: nothing is added to them;
    their masks are empty."""
    a, _, pa = square_images(4, 4, seed=1, effect=100.0)
    b, _, _ = square_images(4, 4, seed=1, effect=3000.0)
    assert np.array_equal(a[:4], b[:4]) and not pa[:4].any()
    assert not np.array_equal(a[4:], b[4:])
    assert a.min() == -1.0 and a.max() == 1.0  # each image spans [-1, 1]


def test_builtin_split_masks_and_determinism(squares):
    ds = squares
    assert ds.x.shape == (3200, 1, 64, 64) and ds.x_test.shape == (800, 1, 64, 64)
    assert int(ds.y.sum()) == 1600 and int(ds.y_test.sum()) == 400
    m, parts, sub = ds.info["masks_test"], ds.info["parts_test"], ds.info["subtype_test"]
    assert m.dtype == torch.bool and m.shape == ds.x_test.shape
    assert not m[ds.y_test == 0].any()
    assert (m[ds.y_test == 1].flatten(1).sum(1) == 2 * 144).all()
    assert torch.equal(m, parts > 0) and torch.equal(sub > 0, ds.y_test.bool())
    assert torch.bincount(sub).tolist() == [400, 200, 200]  # stratified by subtype
    # the effect is what makes patients brighter on their masks
    pat = ds.x_test[ds.y_test == 1]
    mp = m[ds.y_test == 1]
    assert pat[mp].mean() > pat[~mp].mean() + 0.3
    # no image is in both splits; the generator is deterministic
    assert not set(map(bytes, ds.x.flatten(1)[:, :64].numpy())) & \
        set(map(bytes, ds.x_test.flatten(1)[:, :64].numpy()))
    assert all(np.array_equal(u, v) for u, v in zip(square_images(2, 2, seed=9),
                                                    square_images(2, 2, seed=9)))


# -- the critic schedule --------------------------------------------------------------------------
def test_burst_sets_the_critic_steps_of_each_generator_step():
    """The WGAN schedule VA-GAN uses: 100 critic steps at the first 25 generator steps and every
    100th, 5 otherwise."""
    ph = Phase("D", "D", lambda ctx: (None, {}), repeat=5, burst=Burst(100, 25, 100))
    got = {t: ph.repeats(t) for t in (0, 1, 24, 25, 26, 99, 100, 101, 199, 200, 1000)}
    assert got == {0: 100, 1: 100, 24: 100, 25: 5, 26: 5, 99: 5, 100: 100, 101: 5, 199: 5,
                   200: 100, 1000: 100}
    assert Phase("G", "G", ph.loss_fn, repeat=3).repeats(0) == 3  # no burst: repeat
    assert [Burst(7, 2).at(t) for t in range(4)] == [True, True, False, False]
    with pytest.raises(ValueError, match="burst"):
        Burst(0)
    with pytest.raises(ValueError, match="burst"):
        Burst(5, 1, 0)
    m = build(make_tiny_images())
    d = m.phases()[0]
    assert (d.name, d.repeat, d.burst, d.fresh) == ("D", 1, Burst(2, 1, 3), True)
    paper = VAGAN(resolve_config("vagan", {}), load_data_info())
    assert paper.phases()[0].repeat == 5 and paper.burst() == Burst(100, 25, 100)


def load_data_info():
    return {"name": "squares", "shape": [1, 64, 64], "num_classes": 2, "is_image": True,
            "kind": "images"}


def test_trainer_runs_the_burst_counts(tmp_path):
    """7 steps of the tiny config (1 critic step, bursts of 2 at step 0 and every 3rd): the
    critic's optimizer steps 2+1+1+2+1+1+2 = 10 times, the map generator's 7 times."""
    run = gankit.train("vagan", make_tiny_images(), out=tmp_path / "run", progress=False,
                       overrides={**TINY, "train.steps": 7, "train.batch_size": 4,
                                  "train.log_every": 1})
    steps = {k: {int(s["step"]) for s in opt.state.values()}
             for k, opt in run.trainer.opts.items()}
    assert steps == {"D": {10}, "M": {7}}


# -- the objective --------------------------------------------------------------------------------
class LinearCritic(nn.Module):
    """D(x) = <w, x> per image, as a 1x1 logit map: its input gradient is w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = nn.Parameter(w)

    def forward(self, x):
        return (x * self.w).sum((1, 2, 3)).view(-1, 1, 1, 1)


class ConstantMap(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.expand_as(x)


def test_map_step_judges_x_plus_map_and_adds_the_l1_term():
    """L_M = -E[D(x + M(x))] + 100 mean|M(x)|, with a linear critic and a constant map."""
    model = build(make_tiny_images())
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1, 1, 16, 16, generator=g)
    patient = torch.rand(3, 1, 16, 16, generator=g) * 2 - 1
    m = torch.randn(1, 1, 16, 16, generator=g) * 0.1
    nets = {"D": LinearCritic(w), "M": ConstantMap(m)}
    ctx = SimpleNamespace(batch={"patient": patient, "healthy": -patient}, net=nets.__getitem__)
    loss, stats = model.phases()[1].loss_fn(ctx)
    adv = -((patient + m) * w).sum((1, 2, 3)).mean()
    l1 = m.abs().mean()
    assert model.p.lambda_l1 == 100.0  # the paper's weight by default
    assert torch.allclose(stats["M/l1"], l1) and torch.allclose(stats["loss/M/adv"], adv)
    assert torch.allclose(loss, adv + 100.0 * l1, rtol=1e-6, atol=1e-5)


def test_critic_step_compares_healthy_with_x_plus_map():
    """L_D = E[D(x_p + M(x_p))] - E[D(x_h)] + 10 (||w|| - 1)^2 for a linear critic (its gradient
    norm is ||w|| at every interpolate)."""
    model = build(make_tiny_images())
    g = torch.Generator().manual_seed(1)
    w = torch.randn(1, 1, 16, 16, generator=g) * 0.05
    healthy = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
    patient = torch.rand(4, 1, 16, 16, generator=g) * 2 - 1
    m = torch.full((1, 1, 16, 16), -0.25)
    nets = {"D": LinearCritic(w), "M": ConstantMap(m)}
    ctx = SimpleNamespace(batch={"patient": patient, "healthy": healthy}, net=nets.__getitem__)
    loss, stats = model.phases()[0].loss_fn(ctx)
    d_h = (healthy * w).sum((1, 2, 3)).mean()
    d_y = ((patient + m) * w).sum((1, 2, 3)).mean()
    gp = (w.norm() - 1) ** 2
    assert torch.allclose(stats["wasserstein/estimate"], d_h - d_y, atol=1e-6)
    assert torch.allclose(stats["loss/D/gp"], gp, atol=1e-5)
    assert torch.allclose(loss, d_y - d_h + 10.0 * gp, atol=1e-4)


def test_attribute_returns_the_map_and_networks_follow_the_paper():
    ds = make_tiny_images()
    model = build(ds)
    assert not any(isinstance(mod, nn.BatchNorm2d) for mod in model.D.modules())  # WGAN-GP critic
    x = ds.x[:5]
    with torch.no_grad():
        assert torch.equal(model.attribute(x), model.M(x))
    with pytest.raises(DataError, match=r"\[N, 1, 16, 16\]"):
        model.attribute(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="no class labels"):
        from gankit.data.base import Dataset

        build(Dataset("nolabels", ds.x))
    with pytest.raises(ConfigError, match="class 5"):
        build(ds, **{"model.patient": 5})
    with pytest.raises(ConfigError, match="WGAN-GP"):
        build(ds, **{"loss.name": "hinge"})
    assert model.source_options() == {"streams": {"healthy": [0], "patient": [1]}}


# -- attribution maths ----------------------------------------------------------------------------
def quadratic(x):
    """f(x) = sum(a * x^2) + <b, x> per image: known gradients and integrals."""
    g = torch.Generator().manual_seed(5)
    a = torch.rand(x.shape[1:], generator=g)
    b = torch.randn(x.shape[1:], generator=g)
    return (a * x ** 2 + b * x).flatten(1).sum(1)


def test_integrated_gradients_are_complete_and_exact_for_linear_scores():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 5, 5, generator=g) * 2 - 1
    base = torch.full_like(x, -0.5)
    ig = integrated_gradients(quadratic, x, base, steps=32)
    # completeness (Sundararajan et al. 2017, Prop. 1): sum of attributions = f(x) - f(x')
    assert torch.allclose(ig.flatten(1).sum(1), quadratic(x) - quadratic(base), atol=1e-4)
    # a linear score: IG = (x - x') * w exactly, for any number of steps
    w = torch.randn(2, 5, 5, generator=g)
    lin = integrated_gradients(lambda v: (v * w).flatten(1).sum(1), x, 0.0, steps=3)
    assert torch.allclose(lin, x * w, atol=1e-6)


def test_gradient_saliency_is_the_largest_absolute_gradient_over_channels():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 6, 6, generator=g)
    w = torch.randn(3, 6, 6, generator=g)
    s = gradient_saliency(lambda v: (v * w).flatten(1).sum(1), x)
    assert s.shape == (4, 1, 6, 6)
    assert torch.allclose(s, w.abs().amax(0, keepdim=True).expand(4, 1, 6, 6))
    with pytest.raises(DataError, match="one value per image"):
        gradient_saliency(lambda v: v.sum(), x)


def test_ncc_is_a_correlation_invariant_to_affine_intensity_changes():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    b = torch.randn(5, 1, 8, 8, generator=g, dtype=torch.float64)
    assert torch.allclose(ncc(a, a), torch.ones(5, dtype=torch.float64))
    assert torch.allclose(ncc(a, -a), -torch.ones(5, dtype=torch.float64))
    assert torch.allclose(ncc(3.0 * a + 7.0, b), ncc(a, b))
    assert torch.allclose(ncc(a, 0.5 * b - 2.0), ncc(a, b))
    ref = [np.corrcoef(a[i].flatten(), b[i].flatten())[0, 1] for i in range(5)]
    assert np.allclose(ncc(a, b).numpy(), ref)
    assert ncc(torch.ones(1, 4), torch.arange(4.0)[None]).item() == 0.0  # a constant map
    with pytest.raises(DataError):
        ncc(a, b[:, :, :4])


def test_mass_fractions_split_the_absolute_mass_over_regions():
    m = torch.tensor([[[[1.0, -2.0], [3.0, -4.0]]]])
    parts = torch.tensor([[[[0, 1], [2, 2]]]])
    assert torch.allclose(mass_fractions(m, parts, 3),
                          torch.tensor([[0.1, 0.2, 0.7]], dtype=torch.float64))


# -- training from the CLI, resume, attribute -----------------------------------------------------
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    ds = make_tiny_images()  # 16x16, classes 0 (healthy) and 1 (patient) used, 2 ignored
    np.savez(tmp_path / "tiny.npz", x=ds.x.numpy(), y=ds.y.numpy())
    args = ["vagan", "--data", str(tmp_path / "tiny.npz"), "--steps", "24", "--batch-size", "4",
            "--no-progress", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.keep_ckpts=10", *sets("vagan")]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert any(k.startswith("M.") for k in a) and any(k.startswith("D.") for k in a)
    assert_identical(a, b)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two steps of the tiny model on the built-in task, from the CLI."""
    out = tmp_path_factory.mktemp("vagan") / "run"
    code = run_cli("train", "vagan", "--data", "vagan-squares", "--steps", "2", "--batch-size",
                   "4", "--no-progress", "--out", out, *sets("vagan"))
    assert code == 0
    return out


def test_attribute_cli_writes_the_maps(tiny_run, tmp_path, capsys):
    x = torch.from_numpy(square_images(2, 3, seed=0)[0])  # [5, 1, 64, 64]
    np.save(tmp_path / "x.npy", x.numpy())
    code, out, err = cli_output(capsys, "attribute", tiny_run, "--input", tmp_path / "x.npy",
                                "--out", tmp_path / "maps.npy")
    assert code == 0 and not err and "wrote 5 outputs" in out
    want = gankit.load(tiny_run).attribute(x, seed=0)
    assert want.shape == (5, 1, 64, 64) and want.abs().sum() > 0
    assert torch.allclose(torch.from_numpy(np.load(tmp_path / "maps.npy")), want)
    code, _, err = cli_output(capsys, "attribute", tiny_run, "--input", tmp_path / "x.npy",
                              "--out", tmp_path / "maps")
    assert code == 0 and len(list((tmp_path / "maps").glob("*.png"))) == 5
    code, _, err = cli_output(capsys, "attribute", tiny_run, "--input", tmp_path / "x.npy",
                              "--out", tmp_path / "grid.png")
    assert code == 0 and (tmp_path / "grid.png").stat().st_size > 100
    # PNGs show each map scaled by its largest absolute value
    assert torch.allclose(displayable(want).abs().flatten(1).amax(1), torch.ones(5))


@pytest.mark.parametrize("case", ["missing_input", "points", "out_is_file", "no_run",
                                  "cannot_attribute"])
def test_attribute_cli_errors_are_one_line(case, tiny_run, tmp_path, capsys):
    run, inp, out = tiny_run, tmp_path / "x.npy", tmp_path / "maps.npy"
    np.save(inp, square_images(1, 1)[0])
    want = {"missing_input": "no such file", "points": "holds points",
            "out_is_file": "is a file", "no_run": "", "cannot_attribute": "cannot attribute"}
    if case == "missing_input":
        inp = tmp_path / "nope.npy"
    elif case == "points":
        np.save(inp, np.zeros((4, 2), np.float32))
    elif case == "out_is_file":
        out = tmp_path / "taken"
        out.write_text("x")
    elif case == "no_run":
        run = tmp_path / "not-a-run"
    else:
        run = tmp_path / "gan"
        gankit.train("gan", "ring8", out=run, progress=False,
                     overrides={**MODELS.get("gan").tiny, "train.steps": 1,
                                "train.batch_size": 8})
    code, _, err = cli_output(capsys, "attribute", run, "--input", inp, "--out", out)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert want[case] in err[0], err
