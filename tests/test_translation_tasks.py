"""The image-to-image built-ins with a hidden ground truth (thin2thick, mnist2digits, ct-sparse):
determinism, the true relation between the domains, disjoint unpaired training halves, the
written folders, `gankit eval` against the truth, and `gankit translate --direction`."""

import json

import numpy as np
import pytest
import torch
from helpers import cli_output, run_cli
from PIL import Image
from test_resume_ddp import sets

import gankit as gk
from gankit.data import dataset_meta, load_data
from gankit.data.builtin import mnist5k_arrays
from gankit.data.translation_tasks import (
    DIGITS_BOX,
    THICK_RADIUS,
    ct_sparse_arrays,
    fbp,
    full_view_reference,
    thicken,
    thin_strokes,
    upscale_digits,
)
from gankit.metrics.paired import digit_label_accuracy, psnr


def on(x: torch.Tensor) -> np.ndarray:
    """Binary {-1, 1} images [N, 1, H, W] -> bool [N, H, W]."""
    return (x[:, 0] > 0).numpy()


@pytest.fixture(scope="module")
def t2t():
    return load_data("thin2thick")


@pytest.fixture(scope="module")
def ct():
    return load_data("ct-sparse")


# -- thin2thick -----------------------------------------------------------------------------------
def test_thin2thick_is_deterministic_binary_32px_and_unpaired_with_paired_test(t2t):
    again = load_data("thin2thick")
    for k in ("x", "a", "x_test", "a_test", "y", "y_test"):
        assert torch.equal(getattr(t2t, k), getattr(again, k)), k
    assert t2t.pairing == "unpaired" and t2t.kind == "unpaired" and t2t.info["paired_test"]
    assert t2t.x.shape == t2t.a.shape == (2000, 1, 32, 32)
    assert t2t.x_test.shape == t2t.a_test.shape == (1000, 1, 32, 32)
    for k in ("x", "a", "x_test", "a_test"):
        assert set(torch.unique(getattr(t2t, k)).tolist()) == {-1.0, 1.0}, k
    assert dataset_meta("thin2thick")["kind"] == "unpaired"


def test_thin2thick_train_halves_are_disjoint_digits(t2t):
    ia, ib = t2t.info["index_a"].numpy(), t2t.info["index_b"].numpy()
    assert len(np.intersect1d(ia, ib)) == 0
    assert sorted(np.concatenate([ia, ib]).tolist()) == list(range(4000))
    xtr, ytr, _, _ = mnist5k_arrays()
    pad = ((0, 0), (2, 2), (2, 2))
    # each domain is its own half of the training digits, in its own style
    assert np.array_equal(on(t2t.a), thin_strokes(np.pad(xtr[ia], pad)))
    assert np.array_equal(on(t2t.x), thicken(thin_strokes(np.pad(xtr[ib], pad))))
    assert torch.equal(t2t.info["y_a"], torch.from_numpy(ytr[ia]))
    assert torch.equal(t2t.y, torch.from_numpy(ytr[ib]))
    # no raw digit is in both halves, and a training digit of A, thickened, is (but for a
    # coincidence: 1 of 2,000, a short straight stroke) never a digit of B: no pairs to learn from
    raw_b = {row.tobytes() for row in xtr[ib]}
    assert not any(row.tobytes() in raw_b for row in xtr[ia])
    b_set = {row.tobytes() for row in on(t2t.x)}
    assert sum(row.tobytes() in b_set for row in thicken(on(t2t.a))) <= 2


def test_thin2thick_test_pairs_follow_the_true_mapping(t2t):
    thin, thick = on(t2t.a_test), on(t2t.x_test)
    assert np.array_equal(thicken(thin), thick)  # x_test[i] = dilate(a_test[i], disk(2))
    assert np.all(thick[thin])  # every thin stroke pixel lies inside its thick stroke
    n_thin, n_thick = thin.sum((1, 2)), thick.sum((1, 2))
    assert np.all(n_thin > 0) and np.all(n_thin < n_thick)
    assert n_thick.mean() > 3 * n_thin.mean()  # 1-px strokes vs 5-px strokes
    # the skeleton is one pixel wide: a 2x2 block of ink survives thinning only at a rare
    # junction (23 in 1,000 digits; the thick digits have hundreds each)
    def blocks(m):
        return (m[:, :-1, :-1] & m[:, 1:, :-1] & m[:, :-1, 1:] & m[:, 1:, 1:]).sum()
    assert blocks(thin) < 0.05 * len(thin) and blocks(thick) > 20 * len(thick)
    # test pairs are the same digit: both read as the true label by the shipped LeNet
    assert torch.equal(t2t.info["y_a_test"], t2t.y_test)
    assert digit_label_accuracy(t2t.a_test, t2t.y_test) > 0.9
    assert digit_label_accuracy(t2t.x_test, t2t.y_test) > 0.9
    # and misaligned pairs are far worse than aligned ones under the true mapping
    mis = np.roll(thick, 1, axis=0)
    assert (thicken(thin) != mis).mean() > 0.1


def test_thicken_is_a_disk_dilation():
    im = np.zeros((1, 9, 9), bool)
    im[0, 4, 4] = True
    out = thicken(im)[0]
    yy, xx = np.mgrid[0:9, 0:9]
    assert np.array_equal(out, (yy - 4) ** 2 + (xx - 4) ** 2 <= THICK_RADIUS ** 2)


# -- mnist2digits ---------------------------------------------------------------------------------
def test_mnist2digits_domains_labels_and_upscaling():
    from sklearn.datasets import load_digits

    ds = load_data("mnist2digits")
    assert ds.pairing == "unpaired" and ds.shape == (1, 32, 32) and ds.a.shape[1:] == (1, 32, 32)
    assert torch.equal(ds.x, load_data("mnist2digits").x)  # deterministic
    xtr, ytr, _, yte = mnist5k_arrays()
    assert torch.allclose(ds.a[:, 0, 2:30, 2:30], torch.from_numpy(xtr / 255.0 * 2 - 1).float(),
                          atol=1e-6)
    assert torch.equal(ds.info["y_a"], torch.from_numpy(ytr))
    assert torch.equal(ds.info["y_a_test"], torch.from_numpy(yte))
    assert len(ds.x) + len(ds.x_test) == 1797 and abs(len(ds.x_test) / 1797 - 0.2) < 0.01
    assert np.bincount(ds.y_test.numpy(), minlength=10).min() >= 35  # stratified
    # B is scikit-learn's digits: every test image is the upscaling of a digit of its class
    d = load_digits()
    up = torch.from_numpy(upscale_digits(d.images)) * 2 - 1
    lut = {up[i].numpy().tobytes(): int(d.target[i]) for i in range(len(up))}
    assert [lut[im[0].numpy().tobytes()] for im in ds.x_test] == ds.y_test.tolist()
    # centred in the 20x20 box, black outside it
    lo = (32 - DIGITS_BOX) // 2
    frame = ds.x.clone()
    frame[:, :, lo:lo + DIGITS_BOX, lo:lo + DIGITS_BOX] = -1
    assert bool((frame == -1).all())
    # the LeNet reads most of the upscaled digits: label preservation is measurable on B
    assert digit_label_accuracy(ds.x_test, ds.y_test) > 0.8


# -- ct-sparse ------------------------------------------------------------------------------------
def test_ct_sparse_input_is_worse_than_full_view_and_shepp_logan_is_last():
    from gankit.data.phantoms import shepp_logan

    arr = ct_sparse_arrays(n_train=3, n_test=4)
    assert arr["phantom"].shape == (3, 64, 64) and arr["sparse_test"].shape == (4, 64, 64)
    assert np.array_equal(arr["phantom_test"][-1], shepp_logan(64))
    assert (arr["tissue_test"][-1] == -1).all() and (arr["tissue_test"][:-1] >= 0).all()
    tgt = torch.from_numpy(arr["phantom_test"]).unsqueeze(1) * 2 - 1
    sparse = psnr(torch.from_numpy(arr["sparse_test"]).unsqueeze(1) * 2 - 1, tgt)
    full = psnr(full_view_reference(tgt), tgt)
    assert bool((sparse < full).all())  # 18 views leave streaks that 180 views do not
    assert bool((full > 27).all()) and bool((sparse > 20).all())
    # more views, closer to the truth, on one phantom
    one = arr["phantom_test"][:1]
    errs = [np.abs(fbp(one, v) - one).mean() for v in (6, 18, 60)]
    assert errs[0] > errs[1] > errs[2]
    assert np.array_equal(fbp(np.zeros((1, 64, 64), np.float32), 18), np.zeros((1, 64, 64)))


def test_ct_sparse_registered_dataset(ct):
    assert ct.pairing == "paired" and ct.shape == (1, 64, 64)
    assert len(ct.x) == len(ct.a) == 1000 and len(ct.x_test) == len(ct.a_test) == 200
    small = ct_sparse_arrays(n_train=2, n_test=3)  # the first phantoms of the same seeds
    assert torch.equal(ct.x[:2, 0], torch.from_numpy(small["phantom"]) * 2 - 1)
    assert torch.equal(ct.a[:2, 0], torch.from_numpy(small["sparse"]) * 2 - 1)
    assert torch.equal(ct.a_test[:2, 0], torch.from_numpy(small["sparse_test"][:2]) * 2 - 1)
    assert ct.info["shepp_logan_index"] == 199 and ct.info["views"] == 18
    assert float(psnr(ct.a_test[:4], ct.x_test[:4]).mean()) < \
        float(psnr(full_view_reference(ct.x_test[:4]), ct.x_test[:4]).mean())
    # train and test phantoms are different bodies
    assert not any(torch.equal(ct.x_test[i], ct.x[j]) for i in range(5) for j in range(1000))


# -- folders --------------------------------------------------------------------------------------
def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def test_datasets_to_writes_paired_test_split_of_thin2thick(tmp_path, capsys):
    out = tmp_path / "t2t"
    code, _, err = cli_output(capsys, "datasets", "thin2thick", "--to", out, "--split", "test",
                              "--n", "6")
    assert code == 0, err
    names = sorted(p.name for p in (out / "A").iterdir())
    assert names == sorted(p.name for p in (out / "B").iterdir()) and len(names) == 6
    for name in names:  # the pair shares its name, and B is A thickened
        thin, thick = _png(out / "A" / name) > 127, _png(out / "B" / name) > 127
        assert np.array_equal(thicken(thin[None])[0], thick)
    code, _, err = cli_output(capsys, "datasets", "ct-sparse", "--to", tmp_path / "ct", "--n", "2")
    assert code == 0, err
    assert len(list((tmp_path / "ct" / "A").iterdir())) == 2


# -- CLI: train, eval, translate --direction ------------------------------------------------------
def _train(tmp_path, model, data, name):
    out = tmp_path / name
    code = run_cli("train", model, "--data", data, "--steps", "2", "--batch-size", "4",
                   "--out", out, *sets(model), "--set", "train.sample_every=100")
    assert code == 0
    return out


def test_cyclegan_trains_on_thin2thick_and_translates_both_directions(tmp_path, capsys, t2t):
    run = _train(tmp_path, "cyclegan", "thin2thick", "cg")
    folder = tmp_path / "pairs"
    assert run_cli("datasets", "thin2thick", "--to", folder, "--split", "test", "--n", "4") == 0
    g = gk.load(run)
    outs = {}
    for direction, src in (("AB", "A"), ("BA", "B")):
        target = tmp_path / f"{direction}.npy"
        code, _, err = cli_output(capsys, "translate", run, "--input", folder / src, "--out",
                                  target, "--direction", direction)
        assert code == 0, err
        outs[direction] = torch.from_numpy(np.load(target))
        x = (t2t.a_test if src == "A" else t2t.x_test)[:4]
        assert torch.allclose(outs[direction], g.translate(x, direction=direction), atol=1e-5)
    assert not torch.allclose(outs["AB"], outs["BA"])  # G_AB and G_BA are different networks
    # the sample grids show (input, output, true target) of held-out pairs
    grid, per_row = g.model.preview(t2t, n=12)
    assert per_row == 12 and torch.equal(grid[2::3], t2t.x_test[:4])
    assert torch.equal(grid[0::3], t2t.a_test[:4])
    default = tmp_path / "default.npy"
    assert run_cli("translate", run, "--input", folder / "A", "--out", default) == 0
    assert torch.equal(torch.from_numpy(np.load(default)), outs["AB"])
    # gankit eval scores the held-out translations against the true thick digits
    code, _, err = cli_output(capsys, "eval", run, "--n", "40", "--metrics", "psnr")
    assert code == 0, err
    res = json.loads((run / "eval.json").read_text())["results"]
    want = psnr(g.translate(t2t.a_test[:40]), t2t.x_test[:40]).mean()
    assert res["psnr"] == pytest.approx(float(want), rel=1e-6)
    assert res["label_acc"] == digit_label_accuracy(g.translate(t2t.a_test[:40]),
                                                    t2t.y_test[:40])


def test_eval_on_mnist2digits_measures_label_preservation(tmp_path, capsys):
    run = _train(tmp_path, "cyclegan", "mnist2digits", "m2d")
    code, _, err = cli_output(capsys, "eval", run, "--n", "30", "--metrics", "label_acc")
    assert code == 0, err
    res = json.loads((run / "eval.json").read_text())["results"]
    ds = load_data("mnist2digits")
    out = gk.load(run).translate(ds.a_test[:30])
    assert res["label_acc"] == digit_label_accuracy(out, ds.info["y_a_test"][:30])
    # no paired truth in mnist2digits: a per-pair metric is refused in one line
    code, _, err = cli_output(capsys, "eval", run, "--n", "30", "--metrics", "psnr")
    assert code == 2 and "unpaired" in err[-1]


def test_one_way_model_refuses_direction_ba(tmp_path, capsys, ct):
    run = _train(tmp_path, "pix2pix", "ct-sparse", "p2p")
    folder = tmp_path / "ct"
    assert run_cli("datasets", "ct-sparse", "--to", folder, "--split", "test", "--n", "2") == 0
    code, _, err = cli_output(capsys, "translate", run, "--input", folder / "A", "--out",
                              tmp_path / "ba.npy", "--direction", "BA")
    assert code == 2 and len(err) == 1 and "one way" in err[0] and "cyclegan" in err[0]
    assert not (tmp_path / "ba.npy").exists()
    code, _, err = cli_output(capsys, "translate", run, "--input", folder / "A", "--out",
                              tmp_path / "ab.npy", "--direction", "AB")
    assert code == 0, err
    assert np.load(tmp_path / "ab.npy").shape == (2, 1, 64, 64)
