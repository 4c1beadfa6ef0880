"""pix2pix (Isola et al. 2017): D on (input, output) pairs, the objective by hand, the ablation
modes, test-time dropout, save/load/translate from the CLI, and the resolution rules."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import stub_ctx
from PIL import Image

import gankit
from gankit.api import TrainedModel
from gankit.cli import main
from gankit.config import parse_overrides, resolve_config
from gankit.data.base import Dataset
from gankit.data.images import to_uint8
from gankit.data.inputs import read_inputs
from gankit.errors import ConfigError
from gankit.models import get_family
from gankit.registry import MODELS

FAST = {"train.log_every": 1, "train.ckpt_every": 2, "train.sample_every": 2,
        "train.batch_size": 8, "train.ema_decay": 0.9, "train.steps": 2}
TINY = MODELS.get("pix2pix").tiny


def make_pairs(n=48, size=16, seed=0):
    """Aligned pairs: random blob inputs ``a`` and targets ``b`` = a shifted, inverted copy."""
    g = torch.Generator().manual_seed(seed)
    a = (torch.rand(n, 1, size, size, generator=g) > 0.7).float() * 2 - 1  # [n, 1, s, s] in {-1, 1}
    b = -a.roll(1, dims=3)
    return a, b


@pytest.fixture
def pairs():
    a, b = make_pairs()
    return Dataset("pairs", b, a=a, pairing="paired")


def build(ds, **over):
    """The family as ``gankit.train`` builds it (seeded init), without training."""
    items = {**FAST, **TINY, **over}
    cfg = resolve_config("pix2pix", parse_overrides([f"{k}={v}" for k, v in items.items()]))
    torch.manual_seed(cfg.train.seed)
    return get_family("pix2pix")(cfg, ds.describe())


def train(ds, out, **over):
    return gankit.train("pix2pix", ds, out=out, overrides={**FAST, **TINY, **over},
                        progress=False)


def test_d_sees_the_input_and_the_output_concatenated(pairs):
    m = build(pairs)
    assert [p.name for p in m.phases()] == ["D", "G"]
    a32, b32 = make_pairs(4, 32)
    big = build(Dataset("p32", b32, a=a32, pairing="paired"), **{"model.n_layers": 3})
    assert big.D.receptive_field == 70 and big.p.n_layers == type(big.p)().n_layers  # the default
    seen = []
    m.D.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach().clone()))
    a, b = pairs.a[:6], pairs.x[:6]
    fake = torch.rand(6, 1, 16, 16) * 2 - 1
    ctx = stub_ctx(m, {"a": a, "b": b}, fake, a)
    m.phases()[0].loss_fn(ctx)
    real_in, fake_in = seen  # the D step judges the real pair, then the fake pair
    assert real_in.shape == fake_in.shape == (6, 2, 16, 16)
    assert torch.equal(real_in[:, :1], a) and torch.equal(real_in[:, 1:], b)
    assert torch.equal(fake_in[:, :1], a) and torch.equal(fake_in[:, 1:], fake)


@pytest.mark.parametrize("mode", ["cgan+l1", "cgan"])
def test_losses_equal_the_hand_computed_objective(mode, pairs):
    """D: 0.5 x BCE over every patch (§3.3); G: non-saturating over every patch + 100 x L1."""
    m = build(pairs, **{"model.mode": mode})
    a, b = pairs.a[:6], pairs.x[:6]
    fake = torch.rand(6, 1, 16, 16) * 2 - 1
    ctx = stub_ctx(m, {"a": a, "b": b}, fake, a)
    d_phase, g_phase = m.phases()
    loss_d, _ = d_phase.loss_fn(ctx)
    loss_g, stats = g_phase.loss_fn(ctx)
    with torch.no_grad():
        l_real = m.D(torch.cat([a, b], 1))  # [6, 1, 6, 6] patch logits
        l_fake = m.D(torch.cat([a, fake], 1))
    assert l_real.shape[-1] > 1  # many patches: averaging logits first would differ
    d_hand = 0.5 * (F.softplus(-l_real).mean() + F.softplus(l_fake).mean())
    l1 = (b - fake).abs().mean()
    g_hand = F.softplus(-l_fake).mean() + (100.0 * l1 if mode == "cgan+l1" else 0.0)
    assert loss_d.item() == pytest.approx(d_hand.item(), rel=1e-5)
    assert loss_g.item() == pytest.approx(g_hand.item(), rel=1e-5)
    assert ("loss/G/l1" in stats) == (mode == "cgan+l1")
    assert stats["G/l1"].item() == pytest.approx(l1.item(), rel=1e-6)


def test_l1_mode_trains_g_alone(pairs, tmp_path):
    m = build(pairs, **{"model.mode": "l1"})
    assert list(m.networks()) == ["G"] and not hasattr(m, "D")
    (phase,) = m.phases()
    a, b = pairs.a[:6], pairs.x[:6]
    fake = torch.rand(6, 1, 16, 16) * 2 - 1  # what the stand-in G returns for a
    loss, stats = phase.loss_fn(stub_ctx(m, {"a": a, "b": b}, fake))
    assert loss.item() == pytest.approx((fake - b).abs().mean().item(), rel=1e-6)
    assert set(stats) == {"loss/G", "G/l1"}
    run = train(pairs, tmp_path / "l1", **{"model.mode": "l1"})
    assert list(run.trainer.opts) == ["G"]
    assert "loss/D" not in run.metrics()[-1]
    with pytest.raises(ConfigError, match="needs a discriminator"):
        train(pairs, tmp_path / "bad", **{"model.mode": "l1", "tricks.instance_noise": 0.1})


def test_translation_noise_is_test_time_dropout_seeded(pairs):
    m = build(pairs)
    g = TrainedModel(m, torch.device("cpu"))
    a = pairs.a[:8]
    y1, y1b, y2 = g.translate(a, seed=1), g.translate(a, seed=1), g.translate(a, seed=2)
    assert torch.equal(y1, y1b)
    assert not torch.equal(y1, y2)  # dropout at test time: another seed, another translation
    assert all(not d.always and d.generator is None for d in m.G.dropouts())  # restored
    det = TrainedModel(build(pairs, **{"model.test_dropout": "false"}), torch.device("cpu"))
    y = det.translate(a, seed=1)
    assert torch.equal(y, det.translate(a, seed=2)) and not torch.equal(y, y1)
    det.model.p.test_dropout = True  # the same weights with the paper's test-time dropout
    assert not torch.equal(y, det.translate(a, seed=1))


def test_train_save_load_translate_cli(pairs, tmp_path, capsys):
    run = train(pairs, tmp_path / "run")
    assert json.loads((run.run_dir / "run.json").read_text())["status"] == "finished"
    assert (run.run_dir / "samples" / "step_00000002.png").is_file()
    grid, nrow = run.model.preview(pairs, 64, seed=0)  # (input, output, target) triplets
    assert grid.shape == (60, 1, 16, 16) and nrow == 12  # 20 triplets, 4 per row
    assert torch.equal(grid[0], pairs.a[0]) and torch.equal(grid[2], pairs.x[0])
    a = pairs.a[:5]
    g = gankit.load(run.run_dir)
    assert torch.equal(g.translate(a, seed=3), run.generator.translate(a, seed=3))

    inputs, out = tmp_path / "inputs", tmp_path / "out"
    (inputs / "sub").mkdir(parents=True)
    names = ["zeta", "alpha", "sub/beta"]
    for name, img in zip(names, to_uint8(pairs.a[10:13])):
        Image.fromarray(img[..., 0]).save(inputs / f"{name}.png")
    main(["translate", str(run.run_dir), "--input", str(inputs), "--out", str(out)])
    written = sorted(p.name for p in out.iterdir())
    assert written == ["alpha.png", "sub_beta.png", "zeta.png"]
    x, read_names = read_inputs(inputs, g.model.info)
    want = dict(zip(read_names, to_uint8(g.translate(x, seed=0))))
    assert not np.array_equal(want["alpha"], want["zeta"])
    for name, arr in want.items():  # each file holds its own input's translation
        assert np.array_equal(np.asarray(Image.open(out / f"{name}.png")), arr[..., 0])

    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(["sample", str(run.run_dir)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot sample" in err and "translate" in err


@pytest.mark.parametrize("size, n_layers, lo, want", [(24, 1, 8, 32), (12, 1, 8, 16),
                                                        (16, 3, 32, 32)])
def test_bad_resolution_is_refused_before_training(size, n_layers, lo, want, tmp_path):
    a, b = make_pairs(8, size)
    with pytest.raises(ConfigError) as e:
        train(Dataset("odd", b, a=a, pairing="paired"), tmp_path / "r",
              **{"model.n_layers": n_layers})
    msg = str(e.value)
    assert f"power of two >= {lo}" in msg and "--image-size" in msg and str(want) in msg
    assert not (tmp_path / "r").exists()


def test_unpaired_data_is_refused(tmp_path):
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    with pytest.raises(ConfigError, match="trains on paired data; 'plain' is images"):
        train(Dataset("plain", x), tmp_path / "u")


def test_paired_folder_trains(tmp_path):
    a, b = make_pairs(12)
    for dom, t in (("A", a), ("B", b)):
        (tmp_path / "data" / dom).mkdir(parents=True)
        for i, img in enumerate(to_uint8(t)):
            Image.fromarray(img[..., 0]).save(tmp_path / "data" / dom / f"{i:03d}.png")
    run = gankit.train("pix2pix", f"paired:{tmp_path / 'data'}", out=tmp_path / "run",
                       overrides={**FAST, **TINY}, progress=False)
    assert run.data.pairing == "paired" and torch.equal(run.data.a, a)
    rows = run.metrics()
    assert [r["step"] for r in rows] == [1, 2] and np.isfinite(rows[-1]["G/l1"])
    assert all(float(s["step"]) == 2 for o in run.trainer.opts.values()
               for s in o.state_dict()["state"].values())
