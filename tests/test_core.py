"""Fast tier: every model, loss, regulariser, config rule and CLI error path."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gankit
from gankit.cli import main
from gankit.config import parse_overrides, resolve_config
from gankit.errors import CheckpointError, ConfigError
from gankit.registry import LOSSES, MODELS, REGULARIZERS

FAST = {"train.log_every": 1, "train.ckpt_every": 2, "train.sample_every": 2,
        "train.batch_size": 8, "train.ema_decay": 0.9}


def small(name):
    """The family's declared tiny model (its ``tiny`` config)."""
    return MODELS.get(name).tiny


def tiny_train(name, ds, tmp_path, **extra):
    over = {**FAST, **small(name), "train.steps": 2, **extra}
    return gankit.train(name, ds, out=tmp_path / name, overrides=over, progress=False)


def test_gan_on_points(tiny_points, tmp_path):
    run = tiny_train("gan", tiny_points, tmp_path)
    x = run.generator.sample(100, seed=0)
    assert x.shape == (100, 2)
    assert run.model.latent_dim == 2  # PacGAN/VEEGAN 2-D setting


def test_conditional_sampling_respects_labels(tiny_images, tmp_path):
    run = tiny_train("cgan", tiny_images, tmp_path)
    g = gankit.load(run.run_dir)
    a = g.sample(4, seed=1, labels=0)
    b = g.sample(4, seed=1, labels=2)
    assert not torch.equal(a, b)  # the label changes the output for the same z
    with pytest.raises(ConfigError):
        g.sample(4, labels=7)


def test_cgan_needs_labels(tiny_points, tmp_path):
    with pytest.raises(ConfigError, match="needs labelled data"):
        tiny_train("cgan", tiny_points, tmp_path, **{"model.arch": "mlp"})


# --- losses -------------------------------------------------------------------------------
R = torch.tensor([2.0, -1.0])
Fk = torch.tensor([0.5, -3.0])


def sig(x):
    return torch.sigmoid(x)


@pytest.mark.parametrize("name,d,g", [
    ("minimax", -(torch.log(sig(R)).mean() + torch.log(1 - sig(Fk)).mean()),
     torch.log(1 - sig(Fk)).mean()),
    ("nonsaturating", -(torch.log(sig(R)).mean() + torch.log(1 - sig(Fk)).mean()),
     -torch.log(sig(Fk)).mean()),
    ("lsgan", 0.5 * (((R - 1) ** 2).mean() + (Fk ** 2).mean()), 0.5 * ((Fk - 1) ** 2).mean()),
    ("wasserstein", Fk.mean() - R.mean(), -Fk.mean()),
    ("hinge", F.relu(1 - R).mean() + F.relu(1 + Fk).mean(), -Fk.mean()),
    # f-GAN (Nowozin et al. 2016 Table 2): T = g_f(v), d = -(E_P[T] - E_Q[f*(T)]), g = -E_Q[T]
    ("fgan-kl", -(R.mean() - torch.exp(Fk - 1).mean()), -Fk.mean()),
    ("fgan-rkl", -((-torch.exp(-R)).mean() - (-1 - torch.log(torch.exp(-Fk))).mean()),
     torch.exp(-Fk).mean()),
    ("fgan-pearson", -(R.mean() - (Fk ** 2 / 4 + Fk).mean()), -Fk.mean()),
    ("fgan-hellinger", -((1 - torch.exp(-R)).mean() - ((1 - torch.exp(-Fk)) / torch.exp(-Fk)).mean()),
     -(1 - torch.exp(-Fk)).mean()),
    ("fgan-js", -((math.log(2) - torch.log1p(torch.exp(-R))).mean()
                  + torch.log(2 - torch.exp(math.log(2) - torch.log1p(torch.exp(-Fk)))).mean()),
     -(math.log(2) - torch.log1p(torch.exp(-Fk))).mean()),
    ("fgan-tv", -(0.5 * torch.tanh(R).mean() - 0.5 * torch.tanh(Fk).mean()), -0.5 * torch.tanh(Fk).mean()),
])
def test_losses_match_hand_computed(name, d, g):
    loss = LOSSES.get(name)
    assert loss.d_loss(R, Fk).item() == pytest.approx(d.item(), rel=1e-6)
    assert loss.g_loss(Fk).item() == pytest.approx(g.item(), rel=1e-6)


def test_every_loss_is_tested():
    assert set(LOSSES.names()) == {"minimax", "nonsaturating", "lsgan", "wasserstein", "hinge",
                                   *(f"fgan-{d}" for d in ("kl", "rkl", "pearson", "hellinger", "js", "tv"))}


def test_saturating_gradient_vanishes_when_d_rejects_fakes():
    l = torch.tensor([-8.0], requires_grad=True)  # D(G(z)) ~ 3e-4
    (gs,) = torch.autograd.grad(LOSSES.get("minimax").g_loss(l), l)
    (gn,) = torch.autograd.grad(LOSSES.get("nonsaturating").g_loss(l), l)
    assert abs(gs.item()) < 1e-3
    assert abs(gn.item()) > 0.99


def test_penalties_on_a_linear_critic():
    w = torch.tensor([3.0, 4.0])  # ||w|| = 5: the gradient of x . w everywhere
    critic = lambda x: x @ w
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    assert REGULARIZERS.get("wgan-gp").fn(critic, real, fake).item() == pytest.approx(16.0)
    assert REGULARIZERS.get("dragan").fn(critic, real, fake).item() == pytest.approx(16.0)
    assert REGULARIZERS.get("r1").fn(critic, real, fake).item() == pytest.approx(12.5)


def test_weight_clipping_and_penalty_in_training(tiny_images, tmp_path):
    run = tiny_train("dcgan", tiny_images, tmp_path, **{"loss.name": "wasserstein",
                                                         "loss.clip": 0.01, "optim.n_critic": 3})
    assert max(p.abs().max().item() for p in run.model.D.parameters()) <= 0.01 + 1e-7
    d_steps = [float(s["step"]) for s in run.trainer.opts["D"].state_dict()["state"].values()]
    assert set(d_steps) == {6.0}  # k = 3 D steps per G step, 2 G steps
    run2 = tiny_train("gan", tiny_images, tmp_path / "gp", **{"loss.gp": "wgan-gp",
                                                              "loss.name": "wasserstein"})
    assert "loss/D/wgan-gp" in run2.metrics()[-1]


def test_lazy_penalty_phase_runs_every_k(tiny_images, tmp_path):
    run = tiny_train("gan", tiny_images, tmp_path, **{"loss.gp": "r1", "loss.gp_every": 2,
                                                      "train.steps": 4})
    d_steps = {float(s["step"]) for s in run.trainer.opts["D"].state_dict()["state"].values()}
    # 4 D steps + 2 lazy R1 steps (steps 0 and 2); D's output bias gets no R1 gradient
    assert max(d_steps) == 6.0 and min(d_steps) == 4.0
    assert [("loss/D/r1" in r) for r in run.metrics()] == [True, False, True, False]


def test_spectral_norm_switch(tiny_images, tmp_path):
    run = tiny_train("dcgan", tiny_images, tmp_path, **{"model.spectral_norm": True})
    assert any("parametrizations" in k for k in run.model.D.state_dict())
    g = gankit.load(run.run_dir)
    assert g.sample(2, seed=0).shape == (2, 1, 16, 16)


def test_gradient_accumulation_matches_full_batch(tmp_path):
    """With a z-independent G, accumulating 2 micro-batches of 4 equals one batch of 8."""
    from gankit.data.base import Dataset

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.tensor([0.3, -0.2]))

        def forward(self, z):
            return self.p.expand(len(z), 2) + 0 * z[:, :2]

    ds = Dataset("pts", torch.randn(64, 2, generator=torch.Generator().manual_seed(0)))
    outs = []
    for accum in (1, 2):
        torch.manual_seed(0)
        D = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
        m = gankit.GAN(G(), D, latent_dim=2)
        gankit.train(m, ds, steps=3, batch_size=8, save=False, progress=False,
                     overrides={"optim.name": "sgd", "optim.grad_accum": accum, "train.ema": False})
        outs.append(torch.cat([p.detach().flatten() for p in [*m.G.parameters(), *m.D.parameters()]]))
    assert torch.allclose(outs[0], outs[1], atol=1e-6)


def test_custom_networks_train_and_load(tiny_points, tmp_path):
    G = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    D = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    m = gankit.GAN(generator=G, discriminator=D, loss="hinge", latent_dim=4)
    run = gankit.train(m, tiny_points, steps=3, out=tmp_path / "c", progress=False,
                       overrides={"train.batch_size": 16, "train.ckpt_every": 3})
    assert run.cfg.loss.name == "hinge"
    assert run.generator.sample(5, seed=0).shape == (5, 2)
    G2 = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    D2 = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    m2 = gankit.GAN(G2, D2, latent_dim=4)
    g = gankit.load(run.run_dir, model=m2)  # the whole model: G (EMA weights) and D
    assert torch.equal(g.sample(5, seed=1), run.generator.sample(5, seed=1))
    assert all(torch.equal(a, b) for a, b in zip(D2.parameters(), D.parameters()))


# --- config ---------------------------------------------------------------------------------
def test_config_layers_and_errors():
    cfg = resolve_config("dcgan", parse_overrides(["optim.lr_d=1e-4", "model.width=16"]))
    assert cfg.optim.lr_d == 1e-4 and cfg.model["width"] == 16 and cfg.optim.betas_g == (0.5, 0.999)
    with pytest.raises(ConfigError, match="did you mean 'lr_g'"):
        resolve_config("dcgan", parse_overrides(["optim.lrg=1"]))
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        resolve_config("dcgan", parse_overrides(["model.widht=1"]))
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        resolve_config("dcgan", {"trian": {"steps": 1}})
    with pytest.raises(ConfigError, match="train.steps"):
        resolve_config("dcgan", parse_overrides(["train.steps=-3"]))
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr_d"])


# --- CLI errors: one message, exit code 2, nothing written ------------------------------------
@pytest.mark.parametrize("args,msg", [
    (["train", "dcgan", "--data", "mnist5"], "did you mean 'mnist5k'"),
    (["train", "dcgann"], "did you mean 'dcgan'"),
    (["train", "dcgan", "--set", "optim.lrg=1"], "did you mean 'lr_g'"),
    (["train", "dcgan", "--data", "/no/such/dir"], "no such file"),
    (["train", "dcgan", "--data", "ring8"], "needs images"),
    (["train", "dcgan", "--config", "/no/such.yaml"], "config file not found"),
    (["resume", "/no/such/run"], "no such run directory"),
    (["sample", "/no/such/run"], "not a gankit run directory"),
])
def test_cli_user_errors_exit_2(args, msg, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing half-written


def test_cli_bad_data_files_exit_2(tmp_path, capsys):
    import numpy as np

    bad = tmp_path / "nan.npy"
    arr = np.zeros((10, 2), np.float32)
    arr[3, 1] = np.nan
    np.save(bad, arr)
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.png").write_bytes(b"not a png")
    for data, msg in [(bad, "NaN"), (empty, "no images"), (corrupt, "a.png")]:
        with pytest.raises(SystemExit) as e:
            main(["train", "gan", "--data", str(data), "--out", str(tmp_path / "r")])
        assert e.value.code == 2
        assert msg in capsys.readouterr().err
        assert not (tmp_path / "r").exists()


def test_existing_run_dir_is_never_overwritten(tiny_images, tmp_path):
    run = tiny_train("dcgan", tiny_images, tmp_path)
    before = (run.run_dir / "config.json").read_text()
    with pytest.raises(ConfigError, match="gankit resume"):
        tiny_train("dcgan", tiny_images, tmp_path)
    assert (run.run_dir / "config.json").read_text() == before


def test_corrupt_checkpoint_is_a_clear_error(tiny_images, tmp_path):
    run = tiny_train("dcgan", tiny_images, tmp_path)
    # every checkpoint damaged (a newest damaged one alone falls back: tests/test_robust.py)
    for ck in (run.run_dir / "checkpoints").glob("step_*"):
        (ck / "G_ema.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="G_ema.safetensors does not match its checksum"):
        gankit.load(run.run_dir)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps(amp, tiny_images, tmp_path):
    run = tiny_train("dcgan", tiny_images, tmp_path, **{"train.amp": amp, "loss.gp": "r1"})
    assert all(math.isfinite(v) for k, v in run.metrics()[-1].items() if k.startswith("loss"))
    if amp == "fp16":
        assert run.trainer.scalers  # loss scaling is on for fp16
    x = gankit.load(run.run_dir).sample(2, seed=0)
    assert torch.isfinite(x).all()


def test_ttur_learning_rates_reach_the_optimizers(tiny_images, tmp_path):
    run = tiny_train("dcgan", tiny_images, tmp_path, **{"optim.lr_g": 1e-4, "optim.lr_d": 4e-4,
                                                         "optim.betas_d": [0.0, 0.9]})
    assert run.trainer.opts["G"].param_groups[0]["lr"] == 1e-4
    assert run.trainer.opts["D"].param_groups[0]["lr"] == 4e-4
    assert run.trainer.opts["D"].param_groups[0]["betas"] == (0.0, 0.9)


def test_ema_warmup_and_tracking():
    from gankit.train.trainer import EMA

    G = nn.Linear(2, 2)
    ema = EMA({"G": G}, decay=0.999, start=0)
    with torch.no_grad():
        G.weight.add_(1.0)
    ema.update({"G": G}, 0)  # warm-up decay (1+0)/(10+0) = 0.1: mostly follows G
    w = ema.G_ema.weight
    assert torch.allclose(w, 0.1 * (G.weight - 1.0) + 0.9 * G.weight, atol=1e-6)


def test_family_level_buffers_are_checkpointed(tiny_images, tmp_path):
    """State a family keeps outside G and D (BEGAN's k_t, say) survives save and resume."""
    from gankit.models.dcgan import DCGAN
    from gankit.registry import MODELS

    class Counting(DCGAN):
        def __init__(self, cfg, info):
            super().__init__(cfg, info)
            self.register_buffer("k_t", torch.zeros(()))

        def phases(self):
            ph = super().phases()
            ph[0].after_step = lambda: self.k_t.add_(1)
            return ph

    import numpy as np

    path = tmp_path / "tiny.npz"  # resume reloads data by name: give it a file
    np.savez(path, x=tiny_images.x.numpy(), y=tiny_images.y.numpy())
    MODELS.register("counting-test", Counting)
    try:
        run = tiny_train("counting-test", str(path), tmp_path, **{"model.width": 8})
        assert run.model.k_t.item() == 2
        run2 = gankit.resume(run.run_dir, steps=3, progress=False)
        assert run2.model.k_t.item() == 3  # loaded 2 from the checkpoint, one more step
    finally:
        MODELS._entries.pop("counting-test")


def test_cli_sample_and_listings(tiny_images, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    run = tiny_train("cgan", tiny_images, tmp_path)
    png, npy = tmp_path / "grid.png", tmp_path / "s.npy"
    main(["sample", str(run.run_dir), "--n", "9", "--out", str(png), "--labels", "1"])
    assert Image.open(png).size[0] > 16 * 3
    main(["sample", str(run.run_dir), "--n", "5", "--out", str(npy), "--truncation", "0.5"])
    assert np.load(npy).shape == (5, 1, 16, 16)
    main(["sample", str(run.run_dir), "--n", "3", "--out", str(tmp_path / "imgs")])
    assert len(list((tmp_path / "imgs").glob("*.png"))) == 3
    with pytest.raises(SystemExit) as e:
        main(["sample", str(run.run_dir), "--labels", "x"])
    assert e.value.code == 2
    # --option KEY=VALUE reaches the model's sample(); options it lacks are one-line errors
    main(["sample", str(run.run_dir), "--n", "5", "--out", str(npy), "--option", "truncation=0.5"])
    assert np.load(npy).shape == (5, 1, 16, 16)
    capsys.readouterr()
    for bad, says in ((["steps=5"], "no sampling option(s) steps"), (["5"], "KEY=VALUE")):
        with pytest.raises(SystemExit) as e:
            main(["sample", str(run.run_dir), "--out", str(npy), "--option", *bad])
        assert e.value.code == 2 and says in capsys.readouterr().err
    for cmd in (["models"], ["datasets"], ["losses"]):
        main(cmd)
    out = capsys.readouterr().out
    for name in MODELS.names() + ["mnist5k", "ring8", "wgan-gp", "hinge"]:
        assert name in out
