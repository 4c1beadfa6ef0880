"""Portable exports (gankit.export: `gankit export`, gankit.load of an exported folder, ONNX
checked with ONNX Runtime) and latent interpolation (gankit.interpolate, `gankit sample
--interpolate`)."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_images, make_tiny_paired
from helpers import run_cli
from PIL import Image

import gankit
from gankit.errors import CheckpointError, ConfigError
from gankit.export import EXPORT_FORMAT, EXPORT_MANIFEST, ONNX_TOLERANCE, export_run
from gankit.interpolate import slerp
from gankit.models.base import CapabilityError

FAST = {"train.log_every": 1, "train.sample_every": 1000, "train.batch_size": 8,
        "train.ema_decay": 0.9, "model.width": 8}


cli = run_cli


@pytest.fixture(scope="module")
def cgan_run(tmp_path_factory):
    """A conditional GAN (3 classes, 16x16) trained 3 steps, with an eval.json."""
    out = tmp_path_factory.mktemp("exp") / "run"
    gankit.train("cgan", make_tiny_images(), out=out, progress=False,
                 overrides={**FAST, "train.steps": 3})
    (out / "eval.json").write_text(json.dumps({
        "results": {"fid": 123.5, "recall": 0.25},
        "protocol": {"features": {"extractor": "random-cnn"}, "n_fake": 100, "n_real": 48,
                     "seed": 0, "weights": "ema"}}))
    return out


def _states_equal(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_export_roundtrip_card_and_onnx(cgan_run, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "exported"
    m = export_run(cgan_run, out, onnx=True)
    man = json.loads((out / EXPORT_MANIFEST).read_text())
    assert man["format"] == "gankit-export" and man["version"] == EXPORT_FORMAT
    assert man["model"] == "cgan" and man["weights"] == "ema" and man["step"] == 3
    assert man["data_info"]["shape"] == [1, 16, 16] and man["data_info"]["num_classes"] == 3
    assert {"G", "D"} <= set(man["networks"]) and man["networks"]["G"]["weights"] == "ema"
    for rel in ("config.json", "README.md", "samples.png", "model.onnx", "weights/G.safetensors"):
        assert rel in man["files"], rel
    # the loaded export is the run's model with its sampling (EMA) weights, bit for bit
    exp, run = gankit.load(out), gankit.load(cgan_run)
    assert isinstance(exp, gankit.api.TrainedModel) and not exp.model.training
    for k in ("G", "D"):
        assert _states_equal(getattr(exp.model, k), getattr(run.model, k)), k
    assert torch.equal(exp.sample(6, seed=2, labels=[0, 1, 2, 0, 1, 2]),
                       run.sample(6, seed=2, labels=[0, 1, 2, 0, 1, 2]))
    # model card: family and paper, data, training procedure, eval results, the grid, usage
    card = (out / "README.md").read_text()
    for s in ("Mirza & Osindero 2014", "## Data", "classes: 3", "## Training procedure",
              "steps: 3 planned", "batch size: 8", "seed: 0", "optimiser: adam",
              "| fid | 123.5 |", "| recall | 0.25 |", "](samples.png)", "gankit.load(",
              "gankit sample THIS_FOLDER", "max abs difference"):
        assert s in card, s
    assert Image.open(out / "samples.png").size[0] > 16
    # ONNX: recorded check within tolerance; re-run here on another batch size (dynamic axis)
    ox = m["onnx"]
    assert ox["inputs"] == ["z", "labels"] and 0 <= ox["max_abs_diff"] <= ONNX_TOLERANCE
    assert ox["batch"] == "dynamic" and ox["checked_batches"] == [4, 7]
    assert ox["input_specs"] == {"z": f"float32 [N, {exp.model.latent_dim}]",
                                 "labels": "int64 [N]"}
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    z = torch.randn(5, exp.model.latent_dim, generator=torch.Generator().manual_seed(9))
    c = torch.tensor([2, 1, 0, 2, 1])
    got = torch.from_numpy(sess.run(None, {"z": z.numpy(), "labels": c.numpy()})[0])
    with torch.no_grad():
        want = exp.model.generate(exp.model.G, z, c)
    assert got.shape == (5, 1, 16, 16) and float((got - want).abs().max()) <= ONNX_TOLERANCE


def test_export_damage_and_refusals(cgan_run, tmp_path, capsys):
    out = tmp_path / "e"
    export_run(cgan_run, out, weights="raw")
    assert json.loads((out / EXPORT_MANIFEST).read_text())["weights"] == "raw"
    raw = gankit.load(cgan_run, weights="raw")
    assert _states_equal(gankit.load(out, weights="raw").model.G, raw.model.G)
    with pytest.raises(ConfigError, match="raw weights only"):
        gankit.load(out, weights="best")
    # an existing, non-empty --out is refused and left alone
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_run(cgan_run, out)
    # one flipped byte in a weights file: refused by checksum, one line, exit 2
    w = out / "weights" / "G.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        gankit.load(out)
    assert cli("sample", str(out), "--out", str(tmp_path / "s.png")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "checksum" in err and len(err.strip().splitlines()) == 1
    # a newer format than this gankit knows
    man = json.loads((out / EXPORT_MANIFEST).read_text())
    (out / EXPORT_MANIFEST).write_text(json.dumps({**man, "version": EXPORT_FORMAT + 1}))
    with pytest.raises(CheckpointError, match="upgrade gankit"):
        gankit.load(out)
    # best weights that were never kept
    with pytest.raises(CheckpointError, match="no best weights"):
        export_run(cgan_run, tmp_path / "b", weights="best")
    assert not (tmp_path / "b").exists()


def test_cli_export_sample_translate(tmp_path, capsys):
    """`gankit export` prints the ONNX check; `gankit translate` reads an exported translator;
    a translator whose dropout is random at test time cannot be exported to ONNX (exit 2)."""
    run = tmp_path / "p2p"
    gankit.train("pix2pix", make_tiny_paired(), out=run, progress=False,
                 overrides={**FAST, **gankit.registry.MODELS.get("pix2pix").tiny,
                            "train.steps": 2})
    assert cli("export", str(run), "--out", str(tmp_path / "x"), "--onnx") == 2
    err = capsys.readouterr().err
    assert "ONNX" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing half-written
    assert cli("export", str(run), "--out", str(tmp_path / "x")) == 0
    capsys.readouterr()
    # without test-time dropout it exports; its batch norm over the batch needs a fixed batch
    det = tmp_path / "p2p-det"
    gankit.train("pix2pix", make_tiny_paired(), out=det, progress=False,
                 overrides={**FAST, **gankit.registry.MODELS.get("pix2pix").tiny,
                            "model.test_dropout": False, "train.steps": 1})
    ox = export_run(det, tmp_path / "det-x", onnx=True)["onnx"]
    assert ox["batch"] == 1 and ox["inputs"] == ["image"] and ox["max_abs_diff"] <= ONNX_TOLERANCE
    assert capsys.readouterr().out == ""  # the exporter's graph dump of the dynamic try is kept
    inp = tmp_path / "a.npy"
    np.save(inp, make_tiny_paired().a_test[:3].numpy())
    assert cli("translate", str(tmp_path / "x"), "--input", str(inp),
               "--out", str(tmp_path / "y.npy")) == 0
    y = torch.from_numpy(np.load(tmp_path / "y.npy"))
    want = gankit.load(run).translate(torch.from_numpy(np.load(inp)), seed=0)
    assert torch.equal(y, want)
    # a generator: the CLI prints the ONNX difference, and sample reads the export
    gan = tmp_path / "dcgan"
    gankit.train("dcgan", make_tiny_images(), out=gan, progress=False,
                 overrides={**FAST, "train.steps": 2})
    assert cli("export", str(gan), "--out", str(tmp_path / "g"), "--onnx") == 0
    out = capsys.readouterr().out
    assert "max abs diff" in out and "tolerance" in out
    assert cli("sample", str(tmp_path / "g"), "--n", "4", "--out", str(tmp_path / "s.npy")) == 0
    assert torch.equal(torch.from_numpy(np.load(tmp_path / "s.npy")),
                       gankit.load(gan).sample(4, seed=0))


def test_slerp():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g), torch.randn(5, 16, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6)
    assert torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    # unit vectors stay on the sphere and the angle moves linearly in t (Shoemake 1985)
    ua, ub = a / a.norm(dim=1, keepdim=True), b / b.norm(dim=1, keepdim=True)
    omega = torch.acos((ua * ub).sum(1))
    for t in (0.25, 0.5, 0.8):
        m = slerp(ua, ub, t)
        assert torch.allclose(m.norm(dim=1), torch.ones(5), atol=1e-5)
        assert torch.allclose(torch.acos((m * ua).sum(1).clamp(-1, 1)), t * omega, atol=1e-4)
    # parallel vectors: the straight line, no division by zero
    assert torch.allclose(slerp(a, 2 * a, 0.5), 1.5 * a, atol=1e-5)


def test_interpolation_rows_hold_class_and_end_at_their_seeds(cgan_run, tmp_path):
    g = gankit.load(cgan_run)
    m = g.model
    x = g.interpolate(3, 5, seed=10, labels=[2, 0, 1])  # [15, 1, 16, 16]
    assert x.shape == (15, 1, 16, 16)
    with torch.no_grad():
        for i, c in enumerate([2, 0, 1]):
            cc = torch.tensor([c])
            start = m.generate(m.G, m.sample_latent(1, m.seeded(10 + 2 * i, m.device)), cc)
            end = m.generate(m.G, m.sample_latent(1, m.seeded(11 + 2 * i, m.device)), cc)
            assert torch.allclose(x[5 * i], start[0], atol=1e-6)
            assert torch.allclose(x[5 * i + 4], end[0], atol=1e-5)
    assert not torch.equal(x[1], x[0])  # it moves
    with pytest.raises(ConfigError, match=r"labels must lie in \[0, 2\]"):
        g.interpolate(2, 3, labels=7)
    # the CLI: a PNG grid and an animated GIF walking forth and back
    assert cli("sample", str(cgan_run), "--interpolate", "5", "--rows", "2", "--labels", "1",
               "--out", str(tmp_path / "walk.png")) == 0
    png, gif = Image.open(tmp_path / "walk.png"), Image.open(tmp_path / "walk.gif")
    assert png.size[0] > png.size[1]  # 5 columns, 2 rows
    assert gif.n_frames == 2 * 5 - 2


def test_interpolation_vae_and_refusal(tmp_path, tiny_paired):
    vae = tmp_path / "vae"
    gankit.train("vae", make_tiny_images(), out=vae, progress=False,
                 overrides={**{k: v for k, v in FAST.items() if k != "model.width"},
                            **gankit.registry.MODELS.get("vae").tiny, "train.steps": 2})
    g = gankit.load(vae)
    x = g.interpolate(2, 4, seed=0)
    z0 = torch.randn(1, g.model.latent_dim, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(x[0], g.model.decode(z0)[0], atol=1e-6)
    assert math.isfinite(float(x.sum()))
    p2p = tmp_path / "p2p"
    gankit.train("pix2pix", tiny_paired, out=p2p, progress=False,
                 overrides={**FAST, **gankit.registry.MODELS.get("pix2pix").tiny,
                            "train.steps": 1})
    with pytest.raises(CapabilityError, match="cannot sample"):
        gankit.load(p2p).interpolate(2, 3)


def test_export_keeps_the_family_buffers(tmp_path):
    """SGAN's labelled subset (indices drawn at the first step) lives on the family, outside its
    networks: it travels in weights/family.safetensors and comes back with gankit.load."""
    run = tmp_path / "sgan"
    gankit.train("sgan", make_tiny_images(), out=run, progress=False,
                 overrides={**FAST, **gankit.registry.MODELS.get("sgan").tiny, "train.steps": 2})
    src = gankit.load(run)
    bufs = src.model.family_buffers()
    assert bufs and all(bool((v >= 0).all()) for v in bufs.values())  # drawn, not the -1 init
    export_run(run, tmp_path / "x")
    assert (tmp_path / "x" / "weights" / "family.safetensors").is_file()
    got = gankit.load(tmp_path / "x").model.family_buffers()
    assert bufs.keys() == got.keys() and all(torch.equal(bufs[k], got[k]) for k in bufs)
    assert torch.equal(gankit.load(tmp_path / "x").sample(3, seed=5), src.sample(3, seed=5))


def _exportable():
    from gankit.models import MODELS

    return [n for n in MODELS.names() if MODELS.get(n).capabilities & {"sample", "translate"}
            and n != "custom" and MODELS.get(n).sampling_network]


def test_iterative_samplers_refuse_onnx_export_in_one_line(tmp_path):
    from conftest import make_tiny_images
    from test_core import tiny_train

    from gankit.export import export_onnx
    from gankit.models import MODELS
    from gankit.models.base import CapabilityError

    iterative = [n for n in MODELS.names() if not MODELS.get(n).sampling_network]
    assert {"gmm", "rbm", "dbn", "ddpm", "ncsn"} <= set(iterative)
    run = tiny_train("rbm", make_tiny_images(), tmp_path)
    with pytest.raises(CapabilityError, match="no sampling network") as e:
        export_onnx(gankit.load(run.run_dir), tmp_path / "r.onnx")
    assert "\n" not in str(e.value) and not (tmp_path / "r.onnx").exists()


@pytest.mark.parametrize("name", _exportable())
def test_every_family_that_samples_or_translates_exports_to_onnx(name, tmp_path):
    """The ONNX export of every registered family's sampling/translating network (at its tiny
    configuration) agrees with PyTorch within ONNX_TOLERANCE on two batch sizes; pix2pix with
    its default test-time dropout is refused in one line (ONNX would freeze one dropout mask)."""
    from conftest import (
        make_tiny_images,
        make_tiny_paired,
        make_tiny_points,
        make_tiny_unpaired,
        make_tiny_unpaired_labelled,
    )

    from gankit.config import parse_overrides, resolve_config
    from gankit.export import export_onnx
    from gankit.models import MODELS
    from gankit.trained import TrainedModel, build_model

    family = MODELS.get(name)
    ds = {"images": make_tiny_images, "points": make_tiny_points, "paired": make_tiny_paired,
          "unpaired": make_tiny_unpaired,
          "unpaired-labelled": make_tiny_unpaired_labelled}[family.tiny_data]()
    over = {**family.tiny, "train.seed": 3}
    if name == "pix2pix":
        cfg = resolve_config(name, parse_overrides([f"{k}={v}" for k, v in over.items()]))
        with pytest.raises(ConfigError):
            export_onnx(TrainedModel(build_model(cfg, ds.describe()).eval(), torch.device("cpu")),
                        tmp_path / "m.onnx")
        over["model.test_dropout"] = False
    cfg = resolve_config(name, parse_overrides([f"{k}={v}" for k, v in over.items()]))
    trained = TrainedModel(build_model(cfg, ds.describe()).eval(), torch.device("cpu"))
    rec = export_onnx(trained, tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert rec["max_abs_diff"] <= ONNX_TOLERANCE, rec
