"""f-AnoGAN (Schlegl et al. 2019): the anomaly tasks, the izi_f loss, the stage switch, the score
capability and CLI, the anomaly metrics, and exact resume across the switch."""

import numpy as np
import pytest
import torch
from helpers import cli_output
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets
from torch import nn

import gankit as gk
from gankit.config import parse_overrides, resolve_config
from gankit.data import load_data
from gankit.errors import ConfigError, DataError
from gankit.metrics.anomaly import (
    auroc,
    best_dice_threshold,
    dice,
    percentile_threshold,
    pixel_auroc,
)
from gankit.models.fanogan import FAnoGAN, izi_f
from gankit.registry import MODELS
from gankit.train.trainer import Callback

TINY = MODELS.get("fanogan").tiny
FAST = {"train.log_every": 1, "train.sample_every": 100, "train.batch_size": 8}


def tiny_images(n=32, size=16):
    from gankit.data.base import Dataset

    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, size, size, generator=g) * 0.2 - 1
    x[:, :, 4:8, :] = 0.8
    return Dataset("tinynormal", x)


def build(ds, **over):
    cfg = resolve_config("fanogan", parse_overrides(
        [f"{k}={v}" for k, v in {**TINY, **FAST, "train.steps": 4, **over}.items()]))
    return FAnoGAN(cfg, ds.describe())


@pytest.fixture(scope="module")
def phantoms():
    return load_data("phantom-lesions")


# --- the tasks ----------------------------------------------------------------------------------
def test_mnist_anomaly_trains_on_the_other_digits_only():
    from gankit.data.builtin import mnist5k_arrays

    xtr, ytr, _, yte = mnist5k_arrays()
    ds = load_data("mnist-anomaly-3")
    assert ds.x.shape == (3600, 1, 32, 32) and ds.x_test.shape == (1000, 1, 32, 32)
    assert (ds.y == 0).all()  # nothing anomalous in training
    # the training images are exactly the digits that are not 3, padded with background
    want = torch.from_numpy(np.pad(xtr[ytr != 3], ((0, 0), (2, 2), (2, 2))).astype(np.float32))
    assert torch.equal(ds.x[:, 0], want / 255.0 * 2 - 1)
    assert torch.equal(ds.y_test, torch.from_numpy((yte == 3).astype(np.int64)))
    assert int(ds.y_test.sum()) == 100 and ds.info["anomaly_digit"] == 3
    assert torch.equal(load_data("mnist-anomaly").x, load_data("mnist-anomaly-0").x)


def test_phantom_lesions_train_is_healthy_and_masks_cover_the_lesions(phantoms):
    ds = phantoms
    lesion = 0.8 * 2 - 1  # the lesion tissue's CT intensity in [-1, 1]; no other tissue near it
    near = lambda x: (x - lesion).abs() < 0.2
    m = ds.info["masks_test"]
    assert m.dtype == torch.bool and m.shape == ds.x_test.shape == (400, 1, 32, 32)
    assert (ds.y == 0).all() and torch.equal(ds.y_test, torch.arange(400).ge(200).long())
    assert near(ds.x).float().mean() < 1e-4  # no lesion tissue in training
    assert not m[:200].any() and m[200:].flatten(1).any(1).all()  # healthy half: empty masks
    assert near(ds.x_test)[m].float().mean() > 0.99  # every mask pixel is lesion tissue
    assert near(ds.x_test)[~m].float().mean() < 1e-4  # and lesion tissue lies inside the masks
    mv = ds.info["masks_val"]
    assert mv.shape == ds.info["x_val"].shape and torch.equal(ds.info["y_val"].bool(),
                                                             mv.flatten(1).any(1))
    # validation and test come from other seeds: no image shared
    assert not (ds.info["x_val"][:, None] == ds.x_test[None]).flatten(2).all(2).any()


# --- the loss, the score, the stages ------------------------------------------------------------
class Const(nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, z):
        return self.out.expand(len(z), *self.out.shape[1:])


class DoubleFeatures(nn.Module):
    """A critic whose penultimate features are 2x the image, flattened."""

    def features(self, x):
        return 2 * x.flatten(1)

    def forward(self, x):
        return x.flatten(1).sum(1, keepdim=True)


def test_izi_f_loss_and_score_equal_the_hand_computation():
    # the function: image residual 1, features [1, 2] vs [0, 0] -> (1 + 4) / 2
    a_r, a_d = izi_f(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.tensor([[1.0, 2.0]]),
                     torch.zeros(1, 2), 1.0)
    assert a_r.item() == 1.0 and a_d.item() == 2.5
    # the model, with a G that returns 0 and a D whose features are 2x: x = 0.5 everywhere
    # (one image), x = -0.25 (another) -> A_R = 0.25, 0.0625 and A_D = 4 A_R
    m = build(tiny_images())
    m.G, m.D = Const(torch.zeros(1, 1, 16, 16)), DoubleFeatures()
    x = torch.cat([torch.full((1, 1, 16, 16), 0.5), torch.full((1, 1, 16, 16), -0.25)])
    for kappa, want in ((1.0, [1.25, 0.3125]), (0.0, [0.25, 0.0625])):
        m.p.kappa = kappa
        ctx = type("Ctx", (), {"batch": {"x": x}, "net": lambda self, k: getattr(m, k)})()
        loss, stats = m.encoder_step(ctx)
        assert loss.item() == pytest.approx(sum(want) / 2)
        assert stats["E/image_residual"].item() == pytest.approx(0.15625)
        assert torch.allclose(m.score(x), torch.tensor(want))
    assert torch.allclose(m.score(x, kappa=1.0), torch.tensor([1.25, 0.3125]))
    assert torch.equal(m.score(x, map=True), x.abs())  # |x - G(E(x))| with G = 0
    with pytest.raises(DataError, match="takes images of shape"):
        m.score(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="kappa must be >= 0"):
        m.score(x, kappa=-1.0)


class Snapshots(Callback):
    def __init__(self):
        self.states, self.ran = {}, []

    def on_phase_end(self, tr, phase):
        self.ran.append((tr.step, phase.name))

    def on_step_end(self, tr):
        self.states[tr.step] = {k: {n: t.clone() for n, t in net.state_dict().items()}
                                for k, net in tr.nets.items()}


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_stage_switch_trains_the_gan_then_only_the_encoder(tmp_path):
    snap = Snapshots()
    run = gk.train("fanogan", tiny_images(), out=tmp_path / "run", progress=False,
                   callbacks=[snap], overrides={**TINY, **FAST, "model.gan_steps": 3,
                                                "train.steps": 6})
    assert sorted({(s, p) for s, p in snap.ran}) == sorted(
        [(s, p) for s in range(3) for p in ("D", "G")] + [(s, "E") for s in range(3, 6)])
    st = snap.states  # after step t (tr.step = t + 1)
    for k in ("G", "D"):  # stage 1 changes them, stage 2 leaves weights and buffers alone
        assert not _same(st[1][k], st[3][k])
        assert _same(st[3][k], st[6][k]), k
    assert _same(st[1]["E"], st[3]["E"])  # the encoder waits for stage 2
    assert not _same(st[4]["E"], st[6]["E"])
    # the saved model scores with what training left
    g = gk.load(run.run_dir)
    x = tiny_images().x[:5]
    s = g.score(x)
    assert s.shape == (5,) and (s > 0).all() and torch.equal(s, g.score(x))
    assert g.score(x, map=True).shape == (5, 1, 16, 16)


def test_switch_defaults_to_three_quarters_and_is_recorded(tmp_path):
    cfg = resolve_config("fanogan", parse_overrides(["train.steps=40"]))
    m = FAnoGAN(cfg, tiny_images().describe())
    assert m.p.gan_steps == 30 and cfg.model["gan_steps"] == 30  # saved with the run's config
    stops = {ph.name: (ph.start, ph.stop) for ph in m.phases()}
    assert stops == {"D": (0, 30), "G": (0, 30), "E": (30, None)}
    with pytest.raises(ConfigError, match="kappa must be >= 0"):
        FAnoGAN(resolve_config("fanogan", parse_overrides(["model.kappa=-1"])),
                tiny_images().describe())


def test_a_resume_with_more_steps_keeps_the_recorded_switch(tmp_path):
    """gan_steps defaults to 3/4 of train.steps when the run starts and is saved with it: a
    resume to twice the steps trains only the encoder, it does not reopen the GAN stage."""
    import json

    tiny = {k: v for k, v in TINY.items() if k != "model.gan_steps"}
    run = gk.train("fanogan", "phantom-lesions", steps=4, out=tmp_path / "run", progress=False,
                   overrides={**tiny, **FAST})
    assert json.loads((run.run_dir / "config.json").read_text())["model"]["gan_steps"] == 3
    before = gk.load(run.run_dir, weights="raw").model
    gk.resume(run.run_dir, steps=8, progress=False)
    after = gk.load(run.run_dir, weights="raw").model
    for k in ("G", "D"):
        assert _same(getattr(before, k).state_dict(), getattr(after, k).state_dict()), k
    assert not _same(before.E.state_dict(), after.E.state_dict())


# --- the score command --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    from helpers import run_cli

    out = tmp_path_factory.mktemp("fanogan") / "run"
    code = run_cli("train", "fanogan", "--data", "phantom-lesions", "--steps", "4",
                   "--batch-size", "8", "--no-progress", "--out", out, *sets("fanogan"),
                   "--set", "model.gan_steps=2", "--set", "train.sample_every=100")
    assert code == 0
    return out


def test_score_command_writes_csv_and_maps(scored_run, phantoms, tmp_path, capsys):
    x = phantoms.x_test[195:201]
    np.save(tmp_path / "in.npy", x.numpy())
    code, out, err = cli_output(capsys, "score", scored_run, "--input", tmp_path / "in.npy",
                                "--maps", tmp_path / "maps.npy")
    assert code == 0, err
    rows = [ln.split(",") for ln in out.strip().splitlines()]
    assert rows[0] == ["name", "score"] and [r[0] for r in rows[1:]] == [f"{i:05d}" for i in range(6)]
    want = gk.load(scored_run).score(x)
    assert np.allclose([float(r[1]) for r in rows[1:]], want.numpy(), rtol=1e-5)
    maps = np.load(tmp_path / "maps.npy")
    assert maps.shape == (6, 1, 32, 32) and (maps >= 0).all()
    code, _, err = cli_output(capsys, "score", scored_run, "--input", tmp_path / "in.npy",
                              "--out", tmp_path / "s.csv", "--maps", tmp_path / "maps",
                              "--kappa", "0")
    assert code == 0, err
    assert (tmp_path / "s.csv").read_text().startswith("name,score\n")
    assert len(list((tmp_path / "maps").glob("*.png"))) == 6


def test_score_command_one_line_errors(scored_run, tmp_path, capsys):
    np.save(tmp_path / "pts.npy", np.zeros((4, 2), np.float32))
    dc = tmp_path / "dcgan"
    gk.train("dcgan", tiny_images(), out=dc, progress=False,
             overrides={"model.width": 8, "train.steps": 1, **FAST})
    cases = [
        ((scored_run, "--input", tmp_path / "missing"), "no such file or folder"),
        ((scored_run, "--input", tmp_path / "pts.npy"), "holds points"),
        ((scored_run, "--input", tmp_path / "pts.npy", "--out", tmp_path / "s.txt"), ".csv"),
        ((scored_run, "--input", tmp_path / "pts.npy", "--kappa", "-1"), "kappa must be >= 0"),
        ((tmp_path, "--input", tmp_path / "pts.npy"), "not a gankit run directory"),
        ((dc, "--input", tmp_path / "pts.npy"), "cannot score"),
    ]
    for args, msg in cases:
        code, _, err = cli_output(capsys, "score", *args)
        assert code == 2 and len(err) == 1 and msg in err[0], (args, err)


# --- resume across the switch -------------------------------------------------------------------
def test_resume_after_sigkill_across_the_stage_switch_is_bit_identical(tmp_path):
    args = ["fanogan", "--data", "phantom-lesions", "--steps", "24", "--batch-size", "8",
            "--no-progress", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.sample_every=100", "--set", "train.keep_ckpts=10",
            *sets("fanogan"), "--set", "model.gan_steps=12"]
    run, ref = killed_and_resumed(args, tmp_path)  # killed after step 8, before the switch
    a, b = final_weights(run), final_weights(ref)
    assert any(k.startswith("opt.E.") for k in a)  # the encoder trained after the resume
    assert_identical(a, b)


# --- the metrics --------------------------------------------------------------------------------
def test_auroc_known_answers_and_sklearn_agreement():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])
    assert auroc(s, y) == 1.0 and auroc(-s, y) == 0.0
    assert auroc(np.ones(6), y) == 0.5  # ties count one half
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75  # 3 of 4 pairs ordered
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    yy, ss = rng.integers(0, 2, 500), rng.integers(0, 10, 500).astype(float)  # many ties
    assert auroc(ss, yy) == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)
    with pytest.raises(DataError, match="needs positives and negatives"):
        auroc([1.0, 2.0], [1, 1])


def test_pixel_auroc_and_dice_known_answers():
    masks = np.zeros((2, 1, 4, 4), bool)
    masks[0, 0, 1:3, 1:3] = True
    assert pixel_auroc(masks.astype(float), masks) == 1.0
    assert pixel_auroc(1.0 - masks, masks) == 0.0
    assert dice(masks, masks) == 1.0 and dice(masks, ~masks) == 0.0
    half = masks.copy()
    half[0, 0, 1, 1:3] = False  # 2 of the 4 mask pixels: Dice = 2 * 2 / (2 + 4)
    assert dice(half, masks) == pytest.approx(2 / 3)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    # the best threshold separates a map that is high exactly on the mask
    maps = masks * 0.9 + 0.05 * np.random.default_rng(0).random(masks.shape)
    t, d = best_dice_threshold(maps, masks)
    assert d == 1.0 and 0.05 <= t < 0.9
    assert percentile_threshold(np.arange(101.0), 99.0) == pytest.approx(99.0)


def test_the_doctor_measures_memorisation_against_held_out_normal_images_only():
    """An anomaly task's test split mixes in anomalies, which are not held-out training data:
    the memorisation reference must leave them out (else a model of the normal data looks
    closer to its training set than to 'held-out' data and is called a memoriser)."""
    from gankit.data import load_data
    from gankit.doctor.callback import Probe

    ds = load_data("mnist-anomaly-3")
    assert torch.equal(ds.info["anomaly_test"], ds.y_test.bool())
    probe = Probe.__new__(Probe)
    probe.data, probe.kind, probe._mem_ref = ds, "images", None
    _, held_out, _ = probe.mem_reference()
    normal = ds.x_test[~ds.info["anomaly_test"]][:1000]
    assert held_out.shape[0] == len(normal) == 900
    assert np.array_equal(held_out, normal.flatten(1).double().numpy())
