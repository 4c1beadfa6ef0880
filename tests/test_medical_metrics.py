"""The registered paired and scoring metrics (PSNR, SSIM, MAE, NCC, Dice, Jaccard, AUROC):
known values by hand, the reference implementations, and ``gankit eval RUN --metrics ...`` on a
pix2pix run with its protocol recorded."""

import json
import math

import numpy as np
import pytest
import torch
from helpers import cli_output
from PIL import Image

import gankit
from gankit.data.images import to_uint8
from gankit.errors import ConfigError, DataError
from gankit.metrics.evaluate import evaluate_sets
from gankit.metrics.medical import auroc, dice, jaccard, mae, ncc
from gankit.registry import METRICS, MODELS


def _mask(rows, cols, size=8):
    """A [1, 1, size, size] mask in [-1, 1]: +1 on the given rows x cols."""
    m = -torch.ones(1, 1, size, size)
    m[..., rows, cols] = 1.0
    return m


def test_dice_and_jaccard_of_known_overlaps():
    a = _mask(slice(0, 4), slice(0, 4))  # 16 px
    b = _mask(slice(2, 6), slice(0, 4))  # 16 px, 8 shared
    assert dice(a, b).item() == pytest.approx(2 * 8 / 32)
    assert jaccard(a, b).item() == pytest.approx(8 / 24)
    disjoint = _mask(slice(4, 8), slice(4, 8))
    assert dice(a, disjoint).item() == 0.0 and jaccard(a, disjoint).item() == 0.0
    empty = -torch.ones(1, 1, 8, 8)
    assert dice(empty, empty).item() == 1.0 and jaccard(empty, empty).item() == 1.0
    assert dice(a, empty).item() == 0.0
    # thresholded at 0: a soft output of 0.1 inside, -0.1 outside is the same mask
    assert dice(a * 0.1, a).item() == 1.0
    # boolean masks are accepted as masks; J = D / (2 - D) image by image
    x = torch.rand(5, 1, 8, 8) * 2 - 1
    y = torch.rand(5, 1, 8, 8) * 2 - 1
    d, j = dice(x, y), jaccard(x, y)
    assert torch.allclose(j, d / (2 - d))
    assert torch.equal(dice(x > 0, y > 0), d)


def test_mae_psnr_ssim_of_known_images():
    t = torch.zeros(2, 1, 16, 16)
    p = t + 0.5  # |error| 0.5 everywhere: MSE 0.25, PSNR 10 log10(4 / 0.25) = 12.04 dB
    res = {k: METRICS.get(k)(t, p) for k in ("mae", "psnr")}
    assert res["mae"] == {"mae": pytest.approx(0.5)}
    assert res["psnr"]["psnr"] == pytest.approx(10 * math.log10(16))
    assert mae(p, t).tolist() == [0.5, 0.5]
    # SSIM of an image with itself is 1, and falls as noise is added; scikit-image's value
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert METRICS.get("ssim")(x, x)["ssim"] == pytest.approx(1.0)
    noise = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    noisy = [(x + k * noise).clamp(-1, 1) for k in (0.1, 0.3, 0.9)]
    s = [METRICS.get("ssim")(x, y)["ssim"] for y in noisy]
    assert 1 > s[0] > s[1] > s[2]
    from skimage.metrics import structural_similarity

    want = np.mean([structural_similarity(x[i, 0].double().numpy(),
                                          noisy[1][i, 0].double().numpy(),
                                          data_range=2.0, gaussian_weights=True, sigma=1.5,
                                          use_sample_covariance=False) for i in range(3)])
    assert s[1] == pytest.approx(want, abs=1e-12)
    assert METRICS.get("psnr")(x, x)["psnr"] == math.inf


def test_ncc_is_the_pearson_correlation():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 8, 8, generator=g)
    y = torch.rand(4, 1, 8, 8, generator=g)
    v = ncc(x, y)
    for i in range(4):
        r = np.corrcoef(x[i].flatten().numpy(), y[i].flatten().numpy())[0, 1]
        assert v[i].item() == pytest.approx(r, abs=1e-12)
    assert ncc(x, 3 * x + 1).tolist() == pytest.approx([1.0] * 4)
    assert ncc(x, -x).tolist() == pytest.approx([-1.0] * 4)
    const = torch.zeros(1, 1, 8, 8)
    assert math.isnan(ncc(const, x[:1]).item())
    out = METRICS.get("ncc")(torch.cat([x[:1], x[:1]]), torch.cat([x[:1], const]))
    assert out == {"ncc": pytest.approx(1.0), "ncc_n_undefined": 1.0}


def test_auroc_counts_pairs_and_matches_sklearn():
    # 2 positives (0.9, 0.4), 2 negatives (0.5, 0.1): of the 4 pairs, 3 are ranked right
    assert auroc([0.9, 0.4, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(0.75)
    assert auroc([0.5, 0.5], [1, 0]) == 0.5  # a tie counts one half
    assert auroc([2.0, 1.0], [True, False]) == 1.0
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 200).astype(float)  # many ties
    y = rng.integers(0, 2, 200)
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    with pytest.raises(DataError, match="positives and negatives"):
        auroc([0.1, 0.2], [0, 0])
    with pytest.raises(DataError, match="binary"):
        auroc([0.1, 0.2], [0, 2])


def test_paired_metrics_through_evaluate_sets_need_equal_counts():
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    res = evaluate_sets(x, x, metrics=["mae", "dice", "jaccard"])
    assert res["results"] == {"mae": 0.0, "dice": 1.0, "jaccard": 1.0}
    assert res["protocol"]["metrics"]["dice"]["threshold"] == 0.0
    with pytest.raises(ConfigError, match="6 outputs and 5 targets"):
        evaluate_sets(x[:5], x, metrics=["dice"])
    with pytest.raises(ConfigError, match="ranks anomaly scores"):
        evaluate_sets(x, x, metrics=["auroc"])


def test_auroc_of_a_scoring_model_on_the_test_split():
    from types import SimpleNamespace

    from gankit.data.base import Dataset
    from gankit.metrics.evaluate import score_auroc

    x = torch.linspace(-1, 1, 8).view(8, 1, 1, 1).expand(8, 1, 4, 4).contiguous()
    # the score of an image is its mean intensity; abnormal = images 2, 5, 6, 7
    model = SimpleNamespace(name="stub", capabilities={"score"},
                            infer=lambda cap, t, seed, nets=None: t.flatten(1).mean(1))
    labels = torch.tensor([0, 0, 1, 0, 0, 1, 1, 1], dtype=torch.bool)
    ds = Dataset("stub", x, x_test=x, info={"anomaly_test": labels})
    res = score_auroc(model, ds, n=100, seed=0)
    # positives rank 3, 6, 7, 8 of 8: U = (3 + 6 + 7 + 8) - 4 * 5 / 2 = 14, AUROC 14 / 16
    assert res["results"] == {"auroc": pytest.approx(14 / 16)}
    assert res["protocol"]["auroc"]["n_positive"] == 4
    two = Dataset("two", x, torch.zeros(8, dtype=torch.int64), 2, x, labels.long())
    assert score_auroc(model, two, n=100, seed=0)["results"]["auroc"] == pytest.approx(14 / 16)
    with pytest.raises(ConfigError, match="cannot score"):
        score_auroc(SimpleNamespace(name="g", capabilities={"sample"}), ds, n=8, seed=0)
    with pytest.raises(ConfigError, match="normal/abnormal labels"):
        score_auroc(model, Dataset("none", x, x_test=x), n=8, seed=0)


def test_unpaired_data_with_an_aligned_test_split_is_scored_as_pairs():
    from types import SimpleNamespace

    from gankit.data.base import Dataset
    from gankit.train.callbacks import evaluate_model

    g = torch.Generator().manual_seed(0)
    a, x = torch.rand(2, 6, 1, 16, 16, generator=g) * 1.5 - 0.75  # in [-0.75, 0.75]
    model = SimpleNamespace(name="negate", capabilities={"translate"},
                            infer=lambda cap, t, seed, nets=None: -t)

    def data(info):
        return Dataset("u", x, x_test=-a + 0.25, a=a, a_test=a, pairing="unpaired", info=info)

    res = evaluate_model(model, data({"paired_test": True}), n=100, seed=0,
                         metrics=["mae", "ncc"])
    assert res["results"]["mae"] == pytest.approx(0.25)  # -a against -a + 0.25
    assert res["results"]["ncc"] == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="'u' is unpaired"):
        evaluate_model(model, data({}), n=100, seed=0, metrics=["mae"])


def _paired_folder(root, n_train=16, n_test=8):
    """train/ and test/ with A/ (blobs) and B/ (their inverted copies): PNG pairs."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", n_train), ("test", n_test)):
        a = (torch.rand(n, 1, 16, 16, generator=g) > 0.7).float() * 2 - 1
        for dom, t in (("A", a), ("B", -a)):
            (root / split / dom).mkdir(parents=True)
            for i, img in enumerate(to_uint8(t)):
                Image.fromarray(img[..., 0]).save(root / split / dom / f"{i:03d}.png")


def test_eval_psnr_ssim_mae_on_a_pix2pix_run(tmp_path, capsys):
    _paired_folder(tmp_path / "data")
    over = {"train.steps": 2, "train.batch_size": 8, "train.log_every": 1,
            **MODELS.get("pix2pix").tiny}
    run = gankit.train("pix2pix", f"paired:{tmp_path / 'data'}", out=tmp_path / "run",
                       overrides=over, progress=False)
    code, out, err = cli_output(capsys, "eval", tmp_path / "run", "--metrics",
                                "psnr,ssim,mae,dice")
    assert code == 0, err
    assert "mae" in out and "dice" in out  # the printed table
    res = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert set(res["results"]) == {"psnr", "ssim", "mae", "dice"}
    # the held-out inputs translated (EMA weights, dropout seed 0) against their targets
    ds = run.data
    pred = gankit.load(tmp_path / "run").translate(ds.a_test, seed=0, batch_size=256)
    assert res["results"]["mae"] == pytest.approx(float((pred - ds.x_test).abs().mean()),
                                                  rel=1e-6)
    assert res["results"]["dice"] == pytest.approx(float(dice(pred, ds.x_test).mean()))
    p = res["protocol"]
    assert p["n"] == 8 and p["split"] == "test" and p["seed"] == 0
    assert p["metrics"]["psnr"]["data_range"] == 2.0 and "ssim" in p["metrics"]
    code, _, err = cli_output(capsys, "eval", tmp_path / "run", "--metrics", "auroc")
    assert code == 2 and len(err) == 1 and "cannot score" in err[0]
