"""Adversarial segmentation in 2-D and 3-D: 5-D volume data, the phantom-seg and blobs3d tasks,
SegAN (Xue et al. 2018), vox2vox (Cirillo et al. 2020), Dice/Jaccard/uncertainty metrics and
``gankit segment``."""

import numpy as np
import pytest
import torch

from gankit.data.base import Dataset
from gankit.errors import ConfigError, DataError


def _volumes(n=6, side=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, side, side, side, generator=g) * 2 - 1


# --- 5-D datasets (the core change) -------------------------------------------------------------
def test_volume_dataset_is_a_volume_not_an_image():
    x = _volumes()
    ds = Dataset("vol", x)
    assert ds.is_volume and not ds.is_image
    assert ds.kind == "volumes" and ds.shape == (1, 8, 8, 8) and ds.channels == 1
    d = ds.describe()
    assert d["is_volume"] is True and d["is_image"] is False and d["shape"] == [1, 8, 8, 8]
    img = Dataset("img", x[:, :, 0])
    assert img.is_image and not img.is_volume and img.describe()["is_volume"] is False
    paired = Dataset("pv", x[:4], x_test=x[4:], a=x[:4], a_test=x[4:], pairing="paired")
    assert paired.kind == "paired" and paired.describe()["a_shape"] == [1, 8, 8, 8]


def test_volume_validation_is_one_line():
    x = _volumes()
    with pytest.raises(DataError, match=r"volumes must be scaled to \[-1, 1\]"):
        Dataset("vol", x * 3)
    with pytest.raises(DataError, match=r"volumes, got shape \(2, 1, 2, 2, 2, 2\)"):
        Dataset("six", torch.zeros(2, 1, 2, 2, 2, 2))
    bad = x.clone()
    bad[1, 0, 1, 1, 1] = float("nan")
    with pytest.raises(DataError, match="1 sample"):
        Dataset("vol", bad)
    with pytest.raises(DataError, match="domain a is"):  # a 2-D input for a 3-D target
        Dataset("pv", x, a=x[:, :, 0], pairing="paired")


def test_2d_families_refuse_volumes_in_one_line():
    from gankit.config import resolve_config
    from gankit.trained import build_model

    ds = Dataset("vol", _volumes())
    cfg = resolve_config("dcgan", {})
    with pytest.raises(ConfigError, match="takes 2-D data; 'vol' holds 3-D volumes"):
        build_model(cfg, ds.describe())


def test_grids_of_volumes_show_the_middle_slice(tmp_path):
    from gankit.train.callbacks import save_samples

    x = _volumes(4)
    a = save_samples(x, tmp_path / "vol.png")
    b = save_samples(x[:, :, 4], tmp_path / "slice.png")
    assert a.read_bytes() == b.read_bytes()
    c = save_samples(x[:, :, 0], tmp_path / "first.png")
    assert a.read_bytes() != c.read_bytes()


def test_volumes_are_not_written_as_image_folders(tmp_path):
    from gankit.data.folders import write_folder

    with pytest.raises(ConfigError, match="holds 3-D volumes"):
        write_folder(Dataset("vol", _volumes()), tmp_path / "out")


def test_segan_refuses_volumes_and_vox2vox_refuses_images():
    from conftest import make_tiny_paired, make_tiny_volumes

    from gankit.config import resolve_config
    from gankit.trained import build_model

    with pytest.raises(ConfigError, match="takes 2-D data"):
        build_model(resolve_config("segan", {}), make_tiny_volumes().describe())
    with pytest.raises(ConfigError, match="vox2vox segments 3-D volumes"):
        build_model(resolve_config("vox2vox", {}), make_tiny_paired().describe())


# --- the datasets ---------------------------------------------------------------------------------
def test_phantom_seg_masks_are_exactly_the_lesions():
    from gankit.data import load_data
    from gankit.data.phantoms import CONTRASTS, LESION
    from gankit.data.segmentation_tasks import phantom_seg_arrays

    # Without noise, a pixel shows the lesion intensity exactly when the mask says lesion (no
    # other tissue has the CT lesion value 0.8).
    img, mask = phantom_seg_arrays(6, size=32, seed=5, noise=0.0)
    lesion = CONTRASTS["ct"][LESION]
    assert mask.any(axis=(1, 2)).all()  # every phantom has a lesion
    assert np.array_equal(np.isclose(img, lesion), mask)
    ds = load_data("phantom-seg")
    assert ds.pairing == "paired" and ds.shape == (1, 64, 64) and (len(ds), len(ds.x_test)) == \
        (800, 200)
    assert set(ds.x.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(ds.info["masks"], ds.x > 0) and torch.equal(ds.info["masks_test"],
                                                                  ds.x_test > 0)
    # the first training phantoms are the generator's first ones (fixed seed 0)
    img5, mask5 = phantom_seg_arrays(5, seed=0)
    assert torch.equal(ds.x[:5, 0] > 0, torch.from_numpy(mask5))
    assert torch.allclose(ds.a[:5, 0], torch.from_numpy(img5) * 2 - 1)
    # lesion pixels are bright (0.8 + noise), on average well above the rest of the body
    lesion_mean = float(ds.a[ds.x > 0].mean())
    assert abs(lesion_mean - (2 * lesion - 1)) < 0.02


def test_blobs3d_masks_are_the_blobs():
    from gankit.data import load_data
    from gankit.data.phantoms import blob_volumes

    ds = load_data("blobs3d")
    assert ds.is_volume and ds.shape == (1, 32, 32, 32) and ds.kind == "paired"
    assert (len(ds), len(ds.x_test)) == (160, 40)
    vols, masks = blob_volumes(40, 32, seed=1)
    assert torch.equal(ds.x_test[:, 0] > 0, torch.from_numpy(masks))
    assert torch.allclose(ds.a_test[:, 0], torch.from_numpy(vols) * 2 - 1)
    assert torch.equal(ds.info["masks_test"], ds.x_test > 0)
    # blobs at 0.75 (-> 0.5 in [-1, 1]) plus noise of std 0.1, the organ at 0.4 (-> -0.2)
    assert abs(float(ds.a[ds.x > 0].mean()) - 0.5) < 0.02
    with pytest.raises(DataError, match="holds 3-D volumes"):
        load_data("blobs3d", image_size=16)


# --- metrics --------------------------------------------------------------------------------------
def test_dice_and_jaccard_known_answers_2d_and_3d():
    from gankit.metrics.segmentation import dice, jaccard

    p = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    t = torch.zeros(3, 1, 4, 4, dtype=torch.bool)
    p[0, 0, :2, :2] = True  # 4 predicted
    t[0, 0, :2, :3] = True  # 6 true, 4 shared: Dice 8/10, Jaccard 4/6
    t[1, 0, 0, 0] = True  # nothing predicted: 0
    # sample 2: both empty: 1 by convention
    assert torch.allclose(dice(p, t), torch.tensor([0.8, 0.0, 1.0], dtype=torch.float64))
    assert torch.allclose(jaccard(p, t), torch.tensor([4 / 6, 0.0, 1.0], dtype=torch.float64))
    # 3-D, and {-1, +1} masks thresholded at 0
    pv = torch.full((1, 1, 4, 4, 4), -1.0)
    tv = torch.full((1, 1, 4, 4, 4), -1.0)
    pv[0, 0, :2] = 1.0  # 32 voxels
    tv[0, 0, 1:3] = 1.0  # 32 voxels, 16 shared
    d, j = float(dice(pv, tv)), float(jaccard(pv, tv))
    assert d == pytest.approx(0.5) and j == pytest.approx(1 / 3)
    assert j == pytest.approx(d / (2 - d))
    with pytest.raises(DataError, match="the same shape"):
        dice(pv, tv[:, :, :2])


def test_spearman_and_uncertainty_error():
    from gankit.metrics.segmentation import spearman, uncertainty_error

    # ranks 1 2 3 4 vs 1 3 2 4: sum d^2 = 2, rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1.0, 2, 3, 4], [10.0, 30, 20, 40]) == pytest.approx(0.8)
    assert spearman([1.0, 2, 3], [3.0, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1.0, 1, 1], [1.0, 2, 3]))
    g = torch.Generator().manual_seed(0)
    t = torch.rand(4, 1, 8, 8, generator=g) > 0.5
    prob = torch.rand(4, 1, 8, 8, generator=g)
    err = (prob - t.double()).abs()
    r = uncertainty_error(err ** 2, prob, t)  # a variance that ranks pixels as their error
    assert r["spearman_pixel"] == pytest.approx(1.0) and r["n_pixels"] == 256
    r = uncertainty_error(-err, prob, t)
    assert r["spearman_pixel"] == pytest.approx(-1.0)


# --- SegAN ----------------------------------------------------------------------------------------
def _segan(**model):
    from conftest import make_tiny_paired

    from gankit.config import resolve_config
    from gankit.trained import build_model

    ds = make_tiny_paired()
    cfg = resolve_config("segan", {"model": {"width": 4, "c_layers": 2, **model}})
    return build_model(cfg, ds.describe()), ds


def test_multiscale_l1_equals_a_hand_computation():
    from helpers import FixedOutput

    from gankit.models.segan import multiscale_l1, soft_dice_loss

    a = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    b = [torch.tensor([0.0, 0.0]), torch.tensor([[1.0]])]
    assert float(multiscale_l1(a, b)) == pytest.approx((1.5 + 2.0) / 2)

    class Stub(torch.nn.Module):  # a critic whose features are the input and twice the input
        def forward(self, x):
            return [x, 2 * x]

    model, _ = _segan(lambda_adv=0.7, lambda_dice=0.3)
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    mask = torch.where(torch.rand(2, 1, 16, 16, generator=g) > 0.7, 1.0, -1.0)
    t = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1  # S's tanh output
    loss, stats, prob = model.s_loss(FixedOutput(t), Stub(), img, mask)
    i01, p01, y01 = (img + 1) / 2, (t + 1) / 2, (mask + 1) / 2
    mae = ((i01 * p01 - i01 * y01).abs().mean() + (2 * i01 * p01 - 2 * i01 * y01).abs().mean()) / 2
    inter = (p01 * y01).sum()
    dice = 1 - (2 * inter + 1) / (p01.sum() + y01.sum() + 1)
    assert float(stats["S/mae"]) == pytest.approx(float(mae), rel=1e-6)
    assert float(soft_dice_loss(p01, y01)) == pytest.approx(float(dice), rel=1e-6)
    assert float(loss) == pytest.approx(0.7 * float(mae) + 0.3 * float(dice), rel=1e-6)
    assert torch.equal(prob, p01)


def _s_grads(model, C, img, mask):
    model.eval()  # dropout off: the gradients differ only through the loss
    model.S.zero_grad(set_to_none=True)
    loss, _, _ = model.s_loss(model.S, C, img, mask)
    loss.backward()
    return torch.cat([p.grad.flatten() for p in model.S.parameters()])


def test_lambda_adv_zero_means_the_critic_does_not_touch_s():
    from gankit.models.segan import MultiScaleCritic

    torch.manual_seed(0)
    _, ds = _segan()
    img, mask = ds.a[:8], ds.x[:8]
    c1, c2 = MultiScaleCritic(1, 4, 2, "instance"), MultiScaleCritic(1, 4, 2, "instance")
    adv, _ = _segan(lambda_adv=1.0)
    assert set(adv.networks()) == {"S", "C"} and [p.name for p in adv.phases()] == ["S", "C"]
    # with the adversarial term, which critic S plays against changes its gradient
    assert not torch.allclose(_s_grads(adv, c1, img, mask), _s_grads(adv, c2, img, mask))
    base, _ = _segan(lambda_adv=0.0)
    assert set(base.networks()) == {"S"} and [p.name for p in base.phases()] == ["S"]
    base.S.load_state_dict(adv.S.state_dict())
    g1, g2 = _s_grads(base, c1, img, mask), _s_grads(base, c2, img, mask)
    assert torch.equal(g1, g2)
    # ... and it is the Dice loss's gradient alone
    from gankit.models.segan import soft_dice_loss

    base.S.zero_grad(set_to_none=True)
    soft_dice_loss((base.S(img) + 1) / 2, (mask + 1) / 2).backward()
    assert torch.equal(g1, torch.cat([p.grad.flatten() for p in base.S.parameters()]))
    with pytest.raises(ConfigError, match="lambda_adv > 0 or model.lambda_dice > 0"):
        _segan(lambda_adv=0.0, lambda_dice=0.0)


def test_mc_dropout_mean_and_variance():
    from gankit.models.segan import mc_segment

    model, ds = _segan()
    model.eval()
    x = ds.a_test[:4]
    with torch.no_grad():
        det = model.segment(x)
        assert torch.equal(det, model.segment(x))  # dropout off: deterministic
        assert det.shape == (4, 1, 16, 16) and 0 <= det.min() and det.max() <= 1
        both = model.segment(x, generator=torch.Generator().manual_seed(3), mc=5,
                             output="prob+variance")
        g = torch.Generator().manual_seed(3)  # the same masks, pass by pass
        passes = []
        for _ in range(5):
            passes.append(mc_segment(model.S, x, generator=g, mc=1))
        passes = torch.stack(passes)
        assert torch.allclose(both[:, :1], passes.mean(0), atol=1e-6)
        assert torch.allclose(both[:, 1:], passes.var(0, unbiased=False), atol=1e-6)
        assert both[:, 1:].max() > 0  # dropout makes the passes differ
        mask = model.segment(x, generator=torch.Generator().manual_seed(3), mc=5, output="mask")
        assert torch.equal(mask, (both[:, :1] > 0.5).float())
    with pytest.raises(ConfigError, match="mc >= 2"):
        model.segment(x, mc=1, output="variance")
    nodrop, _ = _segan(dropout=0.0)
    with pytest.raises(ConfigError, match="needs dropout layers"):
        nodrop.segment(x, mc=4)
    with pytest.raises(DataError, match=r"segments images \[N, 1, H, W\]"):
        model.segment(x[:, :, 0])


# --- vox2vox --------------------------------------------------------------------------------------
def test_generalised_dice_loss_hand_computation():
    from gankit.models.vox2vox import generalised_dice_loss

    t = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # 2 foreground, 4 background voxels
    p = torch.tensor([0.5, 1.0, 0.5, 0.0, 0.0, 0.0])
    w_f, w_b = 1 / 2**2, 1 / 4**2
    inter = w_f * (0.5 + 1.0) + w_b * (0.5 + 1 + 1 + 1)
    total = w_f * (2 + 2.0) + w_b * (4 + 4.0)
    assert float(generalised_dice_loss(p, t)) == pytest.approx(1 - 2 * inter / total, rel=1e-5)
    assert float(generalised_dice_loss(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(generalised_dice_loss(1 - t, t)) == pytest.approx(1.0, abs=1e-6)


def test_vox2vox_seg_mode_has_no_discriminator_and_segments_volumes():
    from conftest import make_tiny_volumes

    from gankit.config import resolve_config
    from gankit.trained import build_model

    ds = make_tiny_volumes()
    over = {"width": 2, "depth": 2, "n_layers": 1, "bottleneck": 1}
    gan = build_model(resolve_config("vox2vox", {"model": over}), ds.describe())
    seg = build_model(resolve_config("vox2vox", {"model": {**over, "mode": "seg"}}),
                      ds.describe())
    assert set(gan.networks()) == {"G", "D"} and set(seg.networks()) == {"G"}
    assert [p.name for p in seg.phases()] == ["G"]
    gan.eval()
    with torch.no_grad():
        y = gan.segment(ds.a_test)
        assert y.shape == (8, 1, 8, 8, 8) and 0 <= y.min() and y.max() <= 1
        both = gan.segment(ds.a_test, generator=torch.Generator().manual_seed(0), mc=3,
                           output="prob+variance")
        assert both.shape == (8, 2, 8, 8, 8) and both[:, 1].max() > 0
    with pytest.raises(DataError, match="multiples of 4"):
        gan.segment(torch.zeros(1, 1, 6, 8, 8))
    with pytest.raises(DataError, match=r"segments volumes \[N, 1, D, H, W\]"):
        gan.segment(ds.a_test[:, :, 0])
    with pytest.raises(ConfigError, match="power of two >= 16"):  # 8 < 2**(n_layers + 2)
        build_model(resolve_config("vox2vox", {"model": {**over, "n_layers": 2}}), ds.describe())


# --- kill -9 resume -------------------------------------------------------------------------------
@pytest.mark.parametrize("name,data", [("segan", "phantom-seg"), ("vox2vox", "blobs3d")])
def test_resume_after_sigkill_is_bit_identical(name, data, tmp_path):
    from test_resume_ddp import COMMON, assert_identical, final_weights, killed_and_resumed, sets

    # batches of 4 (the last --batch-size wins): the tiny networks on 64^2 / 32^3 data
    args = [name, "--data", data, "--steps", "24", *COMMON, "--batch-size", "4", *sets(name)]
    run, ref = killed_and_resumed(args, tmp_path)
    assert_identical(final_weights(run), final_weights(ref))


# --- gankit segment -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import make_tiny_paired, make_tiny_volumes

    import gankit
    from gankit.registry import MODELS

    base = tmp_path_factory.mktemp("segruns")
    fast = {"train.steps": 6, "train.batch_size": 8, "train.ckpt_every": 6,
            "train.sample_every": 100, "train.doctor": False}
    out = {}
    for name, ds in (("segan", make_tiny_paired()), ("vox2vox", make_tiny_volumes())):
        gankit.train(name, ds, out=base / name, progress=False,
                     overrides={**fast, **MODELS.get(name).tiny})
        out[name] = (base / name, ds)
    return out


def test_segment_cli_writes_masks_and_variance(runs, tmp_path, capsys):
    from helpers import cli_output
    from PIL import Image

    import gankit

    run, ds = runs["segan"]
    a = ds.a_test[:3]
    np.save(tmp_path / "in.npy", a.numpy())
    code, out, err = cli_output(capsys, "segment", run, "--input", tmp_path / "in.npy", "--out",
                                tmp_path / "masks", "--mc", "4", "--seed", "1")
    assert code == 0 and "masks and variance maps of 3 inputs" in out, err
    names = sorted(p.name for p in (tmp_path / "masks").iterdir())
    assert names == sorted([f"{i:05d}_{k}.png" for i in range(3) for k in ("mask", "variance")])
    ref = gankit.load(run).segment(a, seed=1, mc=4, output="prob+variance")
    png = np.asarray(Image.open(tmp_path / "masks" / "00001_mask.png"))
    assert np.array_equal(png > 127, (ref[1, 0] > 0.5).numpy())
    code, out, err = cli_output(capsys, "segment", run, "--input", tmp_path / "in.npy", "--out",
                                tmp_path / "o.npz", "--mc", "4", "--seed", "1")
    assert code == 0, err
    z = np.load(tmp_path / "o.npz")
    assert z["mask"].shape == (3, 1, 16, 16) and z["variance"].shape == (3, 1, 16, 16)
    assert np.allclose(z["prob"], ref[:, :1].numpy()) and np.allclose(z["variance"],
                                                                       ref[:, 1:].numpy())
    assert np.array_equal(z["mask"], (z["prob"] > 0.5).astype(np.uint8))
    # one-line errors, exit 2
    for args, msg in ((["--mc", "1"], "--mc 1 gives no variance"),
                      (["--input", tmp_path / "nope.npy"], "no such file"),):
        full = ["segment", run, "--input", tmp_path / "in.npy", "--out", tmp_path / "x", *args]
        code, _, err = cli_output(capsys, *full)
        assert code == 2 and len(err) == 1 and msg in err[0], err


def test_segment_cli_on_volumes(runs, tmp_path, capsys):
    from helpers import cli_output

    import gankit

    run, ds = runs["vox2vox"]
    np.save(tmp_path / "vols.npy", ds.a_test[:2, 0].numpy())  # [N, D, H, W]: one channel
    code, out, err = cli_output(capsys, "segment", run, "--input", tmp_path / "vols.npy",
                                "--out", tmp_path / "v.npz")
    assert code == 0 and "wrote masks of 2 inputs" in out, err
    z = np.load(tmp_path / "v.npz")
    ref = gankit.load(run).segment(ds.a_test[:2])
    assert z["mask"].shape == (2, 1, 8, 8, 8) and np.allclose(z["prob"], ref.numpy())
    folder = tmp_path / "vin"
    folder.mkdir()
    np.save(folder / "scan.npy", ds.a_test[0, 0].numpy())
    code, _, err = cli_output(capsys, "segment", run, "--input", folder, "--out",
                              tmp_path / "vout", "--mc", "3")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "vout").iterdir()) == ["scan_mask.npy",
                                                                    "scan_variance.npy"]
    np.save(tmp_path / "flat.npy", ds.a_test[0, 0, 0].numpy())  # one 2-D slice, not a volume
    code, _, err = cli_output(capsys, "segment", run, "--input", tmp_path / "flat.npy",
                              "--out", tmp_path / "f.npz")
    assert code == 2 and len(err) == 1 and "not [N, 1, D, H, W] volumes" in err[0], err
    np.save(tmp_path / "hot.npy", ds.a_test[:2].numpy() * 5)
    code, _, err = cli_output(capsys, "segment", run, "--input", tmp_path / "hot.npy",
                              "--out", tmp_path / "h.npz")
    assert code == 2 and "scaled to [-1, 1]" in err[0], err


def test_sample_grids_of_segmenters_show_input_probability_truth(runs):
    import gankit

    run, ds = runs["vox2vox"]
    assert list((run / "samples").glob("step_*.png"))  # the trainer wrote the preview grid
    m = gankit.load(run).model
    grid, nrow = m.preview(ds, 24, seed=0)
    assert nrow == 12 and grid.shape == (24, 1, 8, 8)  # 8 triplets, volumes by their mid slice
    prob = m.infer("segment", ds.a_test[:8], 0)
    assert torch.equal(grid[0::3], ds.a_test[:8, :, 4])
    assert torch.equal(grid[1::3], prob[:, :, 4] * 2 - 1)
    assert torch.equal(grid[2::3], ds.x_test[:8, :, 4])
