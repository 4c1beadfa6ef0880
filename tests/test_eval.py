"""Evaluation plumbing: protocol recording, caching, eval during training, the eval command."""

import itertools
import json

import numpy as np
import pytest
import torch

import gankit
from gankit.cli import main
from gankit.errors import ConfigError, DataError
from gankit.metrics.evaluate import better, evaluate_sets


def ring(n, seed, spread=0.01):
    from gankit.data.builtin import mixture, ring8_centers

    return mixture(ring8_centers(), spread, n, seed)[0]


def test_points_default_to_modes_and_raw_features():
    from gankit.data.builtin import TOY_MIXTURES

    centers, sigma = TOY_MIXTURES["ring8"][0](), TOY_MIXTURES["ring8"][1]
    res = evaluate_sets(ring(2000, 0), ring(2500, 1), info={"centers": centers.tolist(),
                                                             "sigma": sigma})
    r, p = res["results"], res["protocol"]
    assert r["modes_covered"] == 8 and r["high_quality_frac"] > 0.98
    assert p["features"]["extractor"] == "raw" and p["n_fake"] == 2500 and p["seed"] == 0
    assert p["metrics"]["modes"]["n_sigma"] == 3.0
    # a collapsed generator: everything at one centre
    one = torch.tensor(centers[:1], dtype=torch.float32).repeat(2500, 1)
    res = evaluate_sets(ring(2000, 0), one, info={"centers": centers.tolist(), "sigma": sigma})
    assert res["results"]["modes_covered"] == 1


def test_errors_are_clear():
    with pytest.raises(DataError, match="shape"):
        evaluate_sets(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate_sets(torch.zeros(10, 2), torch.zeros(10, 2), metrics=["fidd"])
    with pytest.raises(ConfigError, match="known modes"):
        evaluate_sets(torch.randn(50, 2), torch.randn(50, 2), metrics=["modes"])
    with pytest.raises(ConfigError, match="logits"):
        evaluate_sets(torch.randn(50, 2), torch.randn(50, 2), metrics=["is"])


def test_better_direction():
    assert better("fid", 1.0, 2.0) and not better("fid", 3.0, 2.0)
    assert better("coverage", 0.9, 0.5) and better("fid", 5.0, None)
    assert not better("fid", float("nan"), None)


def test_real_features_are_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path))
    x = torch.rand(64, 1, 16, 16) * 2 - 1
    kw = {"metrics": ["fid"], "features": "random-cnn", "real_key": {"dataset": "t", "split": "train"}}
    a = evaluate_sets(x, x.flip(0), **kw)
    files = list((tmp_path / "features").glob("*.npz"))
    assert len(files) == 1 and a["protocol"]["real_feature_cache"] == str(files[0])
    b = evaluate_sets(x, x.flip(0), **kw)
    assert a["results"]["fid"] == pytest.approx(b["results"]["fid"], abs=1e-9)
    assert a["results"]["fid"] == pytest.approx(0.0, abs=1e-6)  # same set, another order


def test_eval_during_training_keeps_best(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    run = gankit.train("gan", "ring8", steps=4, out=tmp_path / "r", progress=False,
                       overrides={"train.batch_size": 64, "train.eval_every": 2,
                                  "train.eval_n": 300, "model.g_hidden": 16, "model.d_hidden": 16})
    rows = [r for r in run.metrics() if "eval/modes_covered" in r]
    assert [r["step"] for r in rows] == [2, 4]
    best = json.loads((run.run_dir / "best" / "best.json").read_text())
    assert best["metric"] == "modes_covered"
    assert best["value"] == max(r["eval/modes_covered"] for r in rows)
    assert (run.run_dir / "best" / "G_ema.safetensors").exists()


def test_eval_command_on_two_sets(tmp_path, capsys):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    np.save(a, ring(500, 0).numpy())
    np.save(b, (ring(500, 1) + 0.5).numpy())
    out = tmp_path / "e.json"
    main(["eval", "--real", str(a), "--fake", str(b), "--metrics", "fid,pr", "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["results"]["fid"] == pytest.approx(0.5, rel=0.1)  # |dmu|^2 = 0.25 + 0.25
    assert res["protocol"]["real"] == str(a)
    with pytest.raises(SystemExit) as e:
        main(["eval", "--real", str(a)])
    assert e.value.code == 2


def test_stacked_mnist_has_1000_modes_and_lenet_counts_them():
    from gankit.data import load_data
    from gankit.metrics.evaluate import stacked_modes

    ds = load_data("stackedmnist")
    assert ds.x.shape[1:] == (3, 28, 28) and ds.num_classes == 1000
    assert len(torch.unique(ds.y)) > 990  # 20,000 random triples reach nearly every mode
    r = stacked_modes(ds.x_test)
    true_modes = len(torch.unique(ds.y_test))
    # lenet-mnist is ~99% accurate per digit: the counted modes are close to the true ones
    assert abs(r["stacked_modes_covered"] - true_modes) <= 0.05 * true_modes
    one = ds.x_test[:1].repeat(500, 1, 1, 1)  # total collapse: one mode
    assert stacked_modes(one)["stacked_modes_covered"] == 1


def test_utility_metrics_separate_noise_from_real(tmp_path):
    from gankit.data import load_data
    from gankit.metrics.utility import augmentation_gain, classification_accuracy_score

    run = gankit.train("cgan", "mnist5k", steps=1, save=False, progress=False,
                       overrides={"model.width": 8, "train.batch_size": 16})
    ds = load_data("mnist5k")
    cas = classification_accuracy_score(run.generator, ds, n=300, epochs=3)
    assert 0 <= cas["cas"] <= 0.35  # an untrained generator's samples teach nothing
    assert cas["cas_real_baseline"] > cas["cas"] + 0.3
    aug = augmentation_gain(run.generator, ds, n_labelled=50, n_synth=100, epochs=2)
    assert aug["augmentation_gain"] == pytest.approx(
        aug["acc_real_plus_synthetic"] - aug["acc_real_only"])
    with pytest.raises(ConfigError, match="conditional"):
        classification_accuracy_score(gankit.train("gan", "mnist5k", steps=1, save=False,
                                                   progress=False).generator, ds)


def test_lenet_fid_rises_monotonically_with_blur_and_noise():
    """Degrading real test images step by step must raise the lenet-mnist FID every step."""
    import torch.nn.functional as F

    from gankit.data import load_data
    from gankit.metrics import fid
    from gankit.registry import FEATURES

    ds = load_data("mnist5k")
    ext = FEATURES.get("lenet-mnist")()
    ref = ext.features(ds.x)
    x = ds.x_test
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)

    def blur(img, sigma):
        k = torch.arange(-3, 4, dtype=torch.float32)
        w = torch.exp(-k ** 2 / (2 * sigma ** 2))
        w = (w / w.sum()).view(1, 1, 1, 7)
        out = F.conv2d(F.pad(img, (3, 3, 0, 0), mode="replicate"), w)
        return F.conv2d(F.pad(out, (0, 0, 3, 3), mode="replicate"), w.transpose(2, 3))

    blurred = [fid(ref, ext.features(x if s == 0 else blur(x, s))) for s in (0, 0.7, 1.2, 2.0, 3.0)]
    noised = [fid(ref, ext.features((x + s * noise).clamp(-1, 1))) for s in (0, 0.2, 0.4, 0.7, 1.0)]
    for curve in (blurred, noised):
        assert all(b > a for a, b in itertools.pairwise(curve)), curve
    assert blurred[0] < 10 and blurred[-1] > 5 * blurred[0]
