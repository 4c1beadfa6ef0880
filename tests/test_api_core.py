"""The API on the new core: two-stage training, capability dispatch, best weights, and the
defects found in review (each test fails on the code before the fix)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import gankit
from gankit.cli import main
from gankit.errors import CheckpointError, ConfigError
from gankit.models.base import CapabilityError
from gankit.registry import MODELS
from gankit.rundir import RunDir

FAST = {"train.log_every": 1, "train.batch_size": 8, "train.sample_every": 100,
        "train.doctor": False, "model.width": 8}


def train(name, data, out, steps=3, **over):
    return gankit.train(name, data, out=out, progress=False,
                        overrides={**FAST, **MODELS.get(name).tiny, "train.steps": steps,
                                   "train.ckpt_every": steps, **over})


def cli(*args):
    try:
        main(list(map(str, args)))
    except SystemExit as e:
        return e.code
    return 0


# --- two-stage training -----------------------------------------------------------------------
def test_init_from_another_run_with_a_frozen_network(tmp_path):
    a = train("dcgan", "digits", tmp_path / "a", steps=4)
    b = gankit.train("dcgan", "digits", out=tmp_path / "b", progress=False,
                     init_from_run=tmp_path / "a",
                     overrides={**FAST, "train.steps": 3, "train.ckpt_every": 3,
                                "train.freeze": ["G"], "train.init_weights": "raw"})
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["train"]["init_from"] == str((tmp_path / "a").resolve())  # recorded, absolute
    assert cfg["train"]["freeze"] == ["G"]
    # G: A's trained weights, never optimised; D: started from A's and trained further
    assert all(torch.equal(p, q) for p, q in zip(b.model.G.parameters(), a.model.G.parameters()))
    assert "G" not in b.trainer.opts and set(b.trainer.nets) == {"D"}
    assert not any(torch.equal(p, q) for p, q in zip(b.model.D.parameters(),
                                                     a.model.D.parameters()))
    rd = RunDir(tmp_path / "b")
    ck = rd.checkpoints / "step_00000003"
    assert (rd.frozen / "G.safetensors").exists() and not (ck / "G.safetensors").exists()
    g = gankit.load(tmp_path / "b")
    assert torch.equal(g.sample(3, seed=0), b.generator.sample(3, seed=0))
    r = gankit.resume(tmp_path / "b", steps=5, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(r.model.G.parameters(), a.model.G.parameters()))


def test_init_from_errors(tmp_path):
    train("dcgan", "digits", tmp_path / "a")
    with pytest.raises(ConfigError, match="not a gankit run"):
        gankit.train("dcgan", "digits", init_from_run=tmp_path / "nope", save=False,
                     progress=False, overrides=FAST)
    with pytest.raises(ConfigError, match="has no network 'Q'"):
        gankit.train("dcgan", "digits", init_from_run=tmp_path / "a", save=False,
                     progress=False, overrides={**FAST, "train.init_nets": ["Q"]})
    with pytest.raises(ConfigError, match="no trained network 'H'"):
        gankit.train("dcgan", "digits", save=False, progress=False,
                     overrides={**FAST, "train.freeze": ["H"], "train.steps": 1})


# --- capabilities -------------------------------------------------------------------------------
def test_capability_dispatch_and_one_line_errors(tmp_path, capsys):
    run = train("dcgan", "digits", tmp_path / "r")
    g = gankit.load(run.run_dir)
    assert g.capabilities == {"sample"} and "sample" in repr(g)
    with pytest.raises(CapabilityError, match="model 'dcgan' cannot translate \\(it can: sample\\)"):
        g.translate(torch.zeros(1, 1, 8, 8))
    with pytest.raises(CapabilityError, match="cannot log prob"):
        g.log_prob(torch.zeros(1, 1, 8, 8))
    img = tmp_path / "in"
    img.mkdir()
    from PIL import Image

    Image.new("L", (8, 8)).save(img / "x.png")
    capsys.readouterr()
    assert cli("translate", run.run_dir, "--input", img, "--out", tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "cannot translate" in err


def test_best_weights_are_kept_and_loadable(tmp_path):
    run = train("dcgan", "digits", tmp_path / "r", steps=4,
                **{"train.eval_every": 2, "train.eval_n": 64, "train.eval_metrics": ["fid"]})
    best = RunDir(run.run_dir).best
    meta = json.loads((best / "best.json").read_text())
    assert meta["metric"] == "fid" and meta["step"] in (2, 4)
    assert {p.name for p in best.glob("*.safetensors")} == \
        {"G.safetensors", "D.safetensors", "G_ema.safetensors"}
    g = gankit.load(run.run_dir, weights="best")
    ema = load_file(best / "G_ema.safetensors")
    assert all(torch.equal(g.model.G.state_dict()[k], v) for k, v in ema.items())
    other = train("dcgan", "digits", tmp_path / "r2")
    with pytest.raises(CheckpointError, match="no best weights"):
        gankit.load(other.run_dir, weights="best")


# --- review defects ---------------------------------------------------------------------------
def test_custom_gan_adopts_the_configs_latent_dim_and_num_classes(tiny_points, tmp_path):
    G = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))  # built for 16-d latents
    D = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    m = gankit.GAN(G, D, latent_dim=8)
    run = gankit.train(m, tiny_points, steps=2, out=tmp_path / "c", progress=False,
                       overrides={"model.latent_dim": 16, "train.batch_size": 16})
    saved = json.loads((tmp_path / "c" / "config.json").read_text())["model"]
    assert saved["latent_dim"] == 16 == run.model.latent_dim  # config.json and model agree
    with pytest.raises(ConfigError, match="does not accept model.latent_dim=4"):
        gankit.train(gankit.GAN(G, D, latent_dim=16), tiny_points, steps=1, save=False,
                     progress=False, overrides={"model.latent_dim": 4})
    with pytest.raises(ConfigError, match="has no labels"):
        gankit.train(gankit.GAN(G, D, latent_dim=16), tiny_points, steps=1, save=False,
                     progress=False, overrides={"model.num_classes": 3})


def _g_inputs(model, **options):
    seen = []
    h = model.G.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    model.draw(64, 0, **options)
    h.remove()
    return torch.cat(seen)


def test_truncation_bounds_the_latent_of_a_gan(tiny_images, tmp_path):
    run = train("dcgan", tiny_images, tmp_path / "d")
    z = _g_inputs(run.model, truncation=0.5)
    assert z.abs().max() <= 0.5
    assert _g_inputs(run.model).abs().max() > 1.0  # without it the tails are there


def test_infogan_truncation_keeps_the_codes(tiny_images, tmp_path):
    run = train("infogan", tiny_images, tmp_path / "i")
    m = run.model
    z = _g_inputs(m, truncation=0.5)
    noise, onehot, cont = z[:, :m.noise_dim], z[:, m.noise_dim:m.noise_dim + m.n_cat], \
        z[:, m.noise_dim + m.n_cat:]
    assert noise.abs().max() <= 0.5
    assert torch.equal(onehot.sum(1), torch.ones(len(z)))  # still one-hot, not zeroed
    assert cont.abs().max() <= 1 and cont.abs().max() > 0.5  # U[-1, 1], not truncated


def test_resume_tolerates_a_torn_metrics_line_and_rewrites_atomically(tmp_path):
    run = train("dcgan", "digits", tmp_path / "r", steps=4, **{"train.ckpt_every": 2})
    p = run.run_dir / "metrics.jsonl"
    good = p.read_text()
    p.write_text(good + '{"step": 5, "loss/D": 0.')  # a crash mid-write
    gankit.resume(run.run_dir, steps=5, progress=False)
    recs = [json.loads(ln) for ln in p.read_text().splitlines()]  # all lines parse
    assert [r["step"] for r in recs if "it_s" in r] == [1, 2, 3, 4, 5]
    assert not list(run.run_dir.glob(".metrics.jsonl.tmp*"))


def test_training_does_not_reseed_the_callers_global_rng(tiny_images):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    gankit.train("dcgan", tiny_images, steps=2, save=False, progress=False, overrides=FAST)
    assert torch.equal(torch.get_rng_state(), before)


def test_curves_do_not_switch_the_matplotlib_backend(tmp_path):
    import matplotlib

    old = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        run = train("dcgan", "digits", tmp_path / "r", steps=3)
        assert (run.run_dir / "curves.png").read_bytes()[:4] == b"\x89PNG"
        from gankit import theory
        from gankit.report import write_report

        write_report(run.run_dir)
        theory.run("js-saturation", tmp_path / "theory")
        assert (tmp_path / "theory" / "js-saturation.png").exists()
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(old)


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16),
                                       ("none", torch.float32)])
def test_mixed_precision_runs_the_networks_in_its_dtype(amp, dtype, tiny_images):
    seen = set()
    run = None

    class Hook(gankit.Callback):
        def on_train_start(self, tr):
            tr.nets["D"].register_forward_hook(lambda mod, i, o: seen.add(o.dtype))

    run = gankit.train("dcgan", tiny_images, steps=2, save=False, progress=False,
                       overrides={**FAST, "train.amp": amp}, callbacks=[Hook()])
    assert seen == {dtype}
    assert bool(run.trainer.scalers) == (amp == "fp16")


def test_spectral_norm_bounds_ds_layers(tiny_images, tmp_path):
    run = train("dcgan", tiny_images, tmp_path / "s", steps=3, **{"model.spectral_norm": True})
    D = run.model.D
    D.train()
    with torch.no_grad():
        for _ in range(30):  # converge the power iteration (one step per forward)
            D(tiny_images.x[:8])
    sig = [torch.linalg.matrix_norm(m.weight.flatten(1), ord=2).item() for m in D.modules()
           if isinstance(m, (nn.Conv2d, nn.Linear)) and hasattr(m, "parametrizations")]
    assert sig and all(abs(s - 1) < 0.05 for s in sig), sig
    plain = train("dcgan", tiny_images, tmp_path / "p", steps=3).model.D
    assert not any(hasattr(m, "parametrizations") for m in plain.modules())


@pytest.mark.slow
def test_compile_opt_in_compiles_and_matches_eager(tiny_images):
    """train.compile compiles every trained network (about 25 s of compilation on CPU); the
    compiled run follows the eager one to float tolerance."""
    runs = [gankit.train("dcgan", tiny_images, steps=3, save=False, progress=False,
                         overrides={**FAST, "train.compile": c}) for c in (False, True)]
    assert runs[1].model.G._compiled_call_impl is not None
    assert runs[0].model.G._compiled_call_impl is None
    for a, b in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        assert torch.allclose(a, b, atol=1e-4)
    with pytest.raises(ConfigError, match="double backward"):
        gankit.train("dcgan", tiny_images, steps=1, save=False, progress=False,
                     overrides={**FAST, "train.compile": True, "loss.gp": "r1"})


def test_a_refused_config_leaves_no_run_directory_behind(tmp_path, tiny_paired):
    """Everything is built (networks, phases, optimizers) before the run directory exists, so a
    refusal at start-up does not block the same --out afterwards."""
    out = tmp_path / "p"
    with pytest.raises(ConfigError, match="diffaugment"):
        gankit.train("pix2pix", tiny_paired, out=out, progress=False,
                     overrides={**MODELS.get("pix2pix").tiny, "tricks.diffaugment": "color",
                                "train.batch_size": 4})
    assert not out.exists()
    run = gankit.train("pix2pix", tiny_paired, out=out, steps=1, progress=False,
                       overrides={**MODELS.get("pix2pix").tiny, "train.batch_size": 4})
    assert RunDir(run.run_dir).read_info()["status"] == "finished"


def test_translate_keeps_input_names(tmp_path, tiny_paired):
    from PIL import Image

    run = gankit.train("pix2pix", tiny_paired, out=tmp_path / "p", steps=1, progress=False,
                       overrides={**MODELS.get("pix2pix").tiny, "train.batch_size": 4})
    inp = tmp_path / "in"
    inp.mkdir()
    for name in ("img_00001", "img_00000", "zebra"):  # names that clash with numbered outputs
        Image.new("L", (16, 16), 255).save(inp / f"{name}.png")
    assert cli("translate", run.run_dir, "--input", inp, "--out", tmp_path / "o") == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == \
        ["img_00000.png", "img_00001.png", "zebra.png"]
