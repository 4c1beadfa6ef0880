"""Feature extractors (gankit.metrics.features / lenet / inception): shapes, determinism,
batch-size independence, the shipped digit classifier's accuracy and checksum, the random CNN's
seeding, and the Inception network's layout and weight loading (no real weights needed)."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from gankit.errors import DataError, GankitError
from gankit.metrics import inception as inc
from gankit.metrics.features import FeatureExtractor, RandomCNNExtractor, RawExtractor
from gankit.metrics.inception import FIDInceptionV3, InceptionExtractor
from gankit.metrics.lenet import LENET_SHA256, LeNetExtractor, default_lenet_path
from gankit.registry import FEATURES


def images(n: int, c: int = 1, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Deterministic images in [-1, 1], [n, c, size, size]."""
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) * 2 - 1


def random_inception(seed: int = 0) -> FIDInceptionV3:
    """FID Inception with He-normal weights from a private generator, so activations stay O(1)
    through its 94 conv layers (PyTorch's default init shrinks them to ~1e-8)."""
    g = torch.Generator().manual_seed(seed)
    net = FIDInceptionV3()
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / fan_in))
    return net.eval()


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    # The CI/dev machine has 2 shared cores; one intra-op thread avoids OpenMP stalls under load
    # (measured: Inception forward of 2 images 0.9 s with 1 thread vs 4.4 s with 2 under load).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lenet() -> LeNetExtractor:
    return LeNetExtractor()


@pytest.fixture(scope="module")
def inception_net() -> FIDInceptionV3:
    return random_inception(0)


# ---------------------------------------------------------------------------------------------
# registry and the common contract
# ---------------------------------------------------------------------------------------------
def test_registry_has_all_extractors() -> None:
    assert {"raw", "random-cnn", "lenet-mnist", "inception-v3"} <= set(FEATURES.names())
    assert isinstance(FEATURES.get("raw")(), RawExtractor)
    assert isinstance(FEATURES.get("random-cnn")(seed=3), RandomCNNExtractor)
    assert isinstance(FEATURES.get("lenet-mnist")(), LeNetExtractor)
    with pytest.raises(GankitError, match="unknown option"):
        FEATURES.get("random-cnn")(sede=3)


CASES = {
    # name: (builder, input, expected feature dim, expected logit dim)
    "raw-points": (RawExtractor, lambda: torch.randn(64, 2, generator=torch.Generator()
                                                      .manual_seed(1)), 2, None),
    "raw-images": (RawExtractor, lambda: images(64, 1, 8), 64, None),
    "random-cnn-grey28": (RandomCNNExtractor, lambda: images(64, 1, 28), 512, None),
    "random-cnn-rgb64": (RandomCNNExtractor, lambda: images(64, 3, 64), 512, None),
    "lenet-28": (LeNetExtractor, lambda: images(64, 1, 28), 128, 10),
    "lenet-rgb32": (LeNetExtractor, lambda: images(64, 3, 32), 128, 10),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_shape_determinism_and_batch_independence(case: str) -> None:
    build, make_x, dim, k = CASES[case]
    ex: FeatureExtractor = build()
    x = make_x()
    f = ex.features(x, batch_size=64)
    assert f.shape == (64, dim) and f.dtype == np.float64
    assert np.isfinite(f).all() and f.std() > 0
    np.testing.assert_array_equal(f, ex.features(x, batch_size=64))  # deterministic
    np.testing.assert_allclose(ex.features(x, batch_size=7), f, rtol=0, atol=1e-5)
    if k is not None:
        lg = ex.logits(x, batch_size=7)
        assert lg.shape == (64, k) and lg.dtype == np.float64
        np.testing.assert_allclose(lg, ex.logits(x, batch_size=64), rtol=0, atol=1e-5)
        f2, lg2 = ex.features_and_logits(x, batch_size=64)
        np.testing.assert_allclose(f2, f, atol=1e-6)
        np.testing.assert_allclose(lg2, lg, atol=1e-5)
    else:
        with pytest.raises(GankitError, match="not a classifier"):
            ex.logits(x)
    p = ex.protocol()
    assert p["extractor"] == ex.name and isinstance(p["checksum"], str)
    assert {"resize", "channels", "feature_dim", "version"} <= set(p)


def test_raw_is_exact_float64() -> None:
    x = np.random.default_rng(0).normal(size=(10, 2)).astype(np.float64)
    np.testing.assert_array_equal(RawExtractor().features(x), x)
    img = images(5, 3, 4)
    np.testing.assert_array_equal(RawExtractor().features(img), img.reshape(5, -1).double().numpy())


def test_bad_inputs_are_data_errors(lenet: LeNetExtractor) -> None:
    rc = RandomCNNExtractor()
    with pytest.raises(DataError, match="NaN"):
        rc.features(torch.full((2, 1, 8, 8), float("nan")))
    with pytest.raises(DataError, match=r"\[N, C, H, W\]"):
        rc.features(torch.zeros(2, 8, 8))
    with pytest.raises(DataError, match="channels"):
        lenet.features(torch.zeros(2, 2, 28, 28))
    with pytest.raises(DataError, match="NaN"):
        RawExtractor().features(np.array([[0.0, np.inf]]))
    with pytest.warns(UserWarning, match=r"\[-1, 1\]"):
        rc.features(torch.full((2, 1, 8, 8), 200.0))


def test_uint8_images_map_to_minus_one_one() -> None:
    u8 = torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator()
                       .manual_seed(0))
    rc = RandomCNNExtractor()
    np.testing.assert_allclose(rc.features(u8), rc.features(u8.float() / 127.5 - 1), atol=1e-6)


# ---------------------------------------------------------------------------------------------
# random-cnn
# ---------------------------------------------------------------------------------------------
def test_random_cnn_seeding() -> None:
    x = images(16, 3, 32)
    a, b, c = RandomCNNExtractor(0), RandomCNNExtractor(0), RandomCNNExtractor(1)
    assert a.checksum == b.checksum != c.checksum
    np.testing.assert_array_equal(a.features(x), b.features(x))
    assert np.abs(a.features(x) - c.features(x)).max() > 1e-3
    # Independent of the global RNG state.
    torch.manual_seed(123)
    assert RandomCNNExtractor(0).checksum == a.checksum
    assert a.protocol()["seed"] == 0 and a.protocol()["checksum"] == a.checksum


def test_random_cnn_same_in_another_process() -> None:
    code = ("from gankit.metrics.features import RandomCNNExtractor as R; "
            "print(R(0).checksum)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    assert out.stdout.strip() == RandomCNNExtractor(0).checksum


def test_random_cnn_grey_equals_replicated_rgb() -> None:
    rc = RandomCNNExtractor()
    g = images(8, 1, 32)
    np.testing.assert_allclose(rc.features(g), rc.features(g.expand(-1, 3, -1, -1)), atol=1e-5)
    assert rc.features(images(3, 4, 16)).shape == (3, 512)  # any channel count


# ---------------------------------------------------------------------------------------------
# lenet-mnist
# ---------------------------------------------------------------------------------------------
def test_lenet_heldout_accuracy(lenet: LeNetExtractor) -> None:
    from gankit.data.builtin import mnist5k_arrays

    _, _, xte, yte = mnist5k_arrays()
    x = torch.from_numpy(xte.astype(np.float32) / 127.5 - 1).unsqueeze(1)  # [1000, 1, 28, 28]
    pred = lenet.predict(x)
    assert pred.dtype == np.int64 and pred.shape == (1000,)
    acc = float((pred == yte).mean())
    assert acc >= 0.97, acc
    # Grey-as-RGB and 32x32 inputs follow the recorded rules and stay accurate.
    x_rgb32 = torch.nn.functional.interpolate(x[:200], size=32, mode="bilinear").expand(-1, 3, -1, -1)
    assert float((lenet.predict(x_rgb32) == yte[:200]).mean()) >= 0.95


def test_lenet_weights_small_and_pinned() -> None:
    p = default_lenet_path()
    assert p.stat().st_size < 1_000_000
    from gankit.metrics.features import file_sha256

    assert file_sha256(p) == LENET_SHA256
    assert LeNetExtractor().protocol()["checksum"] == LENET_SHA256


def test_lenet_checksum_mismatch_detected(tmp_path: Path) -> None:
    bad = tmp_path / "lenet.safetensors"
    shutil.copy(default_lenet_path(), bad)
    data = bytearray(bad.read_bytes())
    data[-100] ^= 0xFF  # a byte inside the last tensor's data: still a valid file
    bad.write_bytes(bytes(data))
    with pytest.raises(GankitError, match="checksum"):
        LeNetExtractor(path=bad)
    with pytest.raises(GankitError, match="checksum"):
        FEATURES.get("lenet-mnist")(path=str(bad))
    # Explicitly unverified: loads, and the protocol records the file's real digest.
    ex = LeNetExtractor(path=bad, verify=False)
    assert ex.checksum != LENET_SHA256
    with pytest.raises(GankitError, match="not found"):
        LeNetExtractor(path=tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------------------------------
# inception-v3 (no real weights: random init and self-made files)
# ---------------------------------------------------------------------------------------------
def test_inception_parameter_count_and_layout() -> None:
    with torch.device("meta"):
        net = FIDInceptionV3()
    assert sum(p.numel() for p in net.parameters()) == inc.FID_INCEPTION_NUM_PARAMETERS
    sd = net.state_dict()
    # Key names/shapes of the pt_inception-2015-12-05 file (94 conv+BN units, 1008-way fc).
    assert sum(k.endswith(".conv.weight") for k in sd) == 94
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert sd["Mixed_7c.branch_pool.bn.running_var"].shape == (192,)
    assert sd["fc.weight"].shape == (1008, 2048) and sd["fc.bias"].shape == (1008,)
    assert not any(k.startswith("AuxLogits") for k in sd)


def test_inception_shapes_determinism_batches(inception_net: FIDInceptionV3) -> None:
    ex = InceptionExtractor(net=inception_net)
    x = images(2, 1, 28)  # grey, small: replicated and resized to 299
    f, lg = ex.features_and_logits(x, batch_size=2)
    assert f.shape == (2, 2048) and lg.shape == (2, 1008) and f.dtype == np.float64
    assert f.std() > 1e-3
    f1 = ex.features(x, batch_size=1)  # batch-size independent
    np.testing.assert_allclose(f1, f, rtol=1e-4, atol=1e-5 * np.abs(f).max())
    # Deterministic (checked on a small input: the network is fully convolutional).
    with torch.inference_mode():
        small = images(2, 3, 75)
        torch.testing.assert_close(inception_net(small), inception_net(small), rtol=0, atol=0)
    # Unbiased logits are pool3 @ W^T (original IS code); biased ones add the fc bias.
    w = inception_net.fc.weight.detach().double().numpy()
    np.testing.assert_allclose(lg, f @ w.T, rtol=1e-4, atol=1e-4 * np.abs(lg).max())
    ft = torch.from_numpy(f).float()
    with torch.inference_mode():
        diff = inception_net.logits(ft, unbiased=False) - inception_net.logits(ft, unbiased=True)
    torch.testing.assert_close(diff, inception_net.fc.bias.detach().expand(2, -1), rtol=0,
                               atol=1e-4)
    assert "no fc bias" in ex.protocol()["logits"]
    assert "with fc bias" in InceptionExtractor(net=inception_net, unbiased_logits=False
                                                ).protocol()["logits"]


def test_inception_fid_pooling_variants() -> None:
    # The FID graph's A/C/E1 pool branches ignore padded zeros; E2 max-pools.
    x = torch.ones(1, 4, 5, 5)
    assert torch.allclose(inc._avg_pool_tf(x), x)  # with padding counted, corners would be 4/9
    assert inc.FIDInceptionV3().Mixed_7c.pool == "max"


def test_inception_weights_round_trip(tmp_path: Path, inception_net: FIDInceptionV3,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in inception_net.state_dict().items()}
    x = images(1, 3, 40)
    want = InceptionExtractor(net=inception_net).features(x)

    st = tmp_path / "fid_inception.safetensors"
    save_file(state, str(st))
    with pytest.warns(UserWarning, match="not that of the reference"):
        ex = InceptionExtractor(path=st)
    got_sd = ex.net.state_dict()
    assert all(torch.equal(got_sd[k], v) for k, v in state.items())
    np.testing.assert_allclose(ex.features(x), want, rtol=1e-6, atol=1e-6)
    assert ex.checksum != inc.FID_INCEPTION_SHA256 and not ex.protocol()["reference_weights"]

    # .pth via torch.load(weights_only=True), without the BatchNorm counters (older files), found
    # through the environment variable and the registry.
    pth = tmp_path / "fid_inception.pth"
    torch.save({k: v for k, v in state.items() if "num_batches_tracked" not in k}, pth)
    monkeypatch.setenv(inc.ENV_VAR, str(pth))
    # Pretend this file is the reference one: then no warning, and the protocol says so.
    from gankit.metrics.features import file_sha256

    monkeypatch.setattr(inc, "FID_INCEPTION_SHA256", file_sha256(pth))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ex2 = FEATURES.get("inception-v3")()
    assert ex2.protocol()["reference_weights"] is True
    got_sd = ex2.net.state_dict()
    assert all(torch.equal(got_sd[k], v) for k, v in state.items() if "num_batches" not in k)


def test_inception_without_weights_explains(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
                                            ) -> None:
    monkeypatch.delenv(inc.ENV_VAR, raising=False)
    with pytest.raises(GankitError, match="never downloads") as e:
        FEATURES.get("inception-v3")()
    assert inc.ENV_VAR in str(e.value) and "pt_inception-2015-12-05" in str(e.value)
    with pytest.raises(GankitError, match="not found"):
        InceptionExtractor(path=tmp_path / "nope.pth")
    monkeypatch.setenv(inc.ENV_VAR, str(tmp_path / "nope.pth"))
    with pytest.raises(GankitError, match="GANKIT_INCEPTION_WEIGHTS"):
        InceptionExtractor()


class _NotWeights:
    pass


def test_inception_bad_files(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    wrong = tmp_path / "wrong.safetensors"
    save_file({"foo": torch.zeros(3)}, str(wrong))
    with pytest.raises(GankitError, match=r"missing key.*unexpected key\(s\) \['foo'\]"):
        InceptionExtractor(path=wrong)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(GankitError, match="cannot read"):
        InceptionExtractor(path=garbage)
    pickled = tmp_path / "code.pth"
    torch.save({"x": _NotWeights()}, pickled)  # refused by weights_only=True
    with pytest.raises(GankitError, match="cannot read"):
        InceptionExtractor(path=pickled)
    other = tmp_path / "weights.npz"
    other.write_bytes(b"")
    with pytest.raises(GankitError, match="unsupported"):
        InceptionExtractor(path=other)


def test_inception_layout_mismatch_messages() -> None:
    with torch.device("meta"):
        sd = dict(FIDInceptionV3().state_dict())
    inc._check_layout(sd, Path("ok.pth"))  # fits
    tv = dict(sd)
    tv["fc.weight"] = torch.empty(1000, 2048, device="meta")
    tv["AuxLogits.fc.weight"] = torch.empty(1000, 768, device="meta")
    with pytest.raises(GankitError, match="torchvision's ImageNet Inception"):
        inc._check_layout(tv, Path("tv.pth"))
    dp = {"module." + k: v for k, v in sd.items()}
    with pytest.raises(GankitError, match="module."):
        inc._check_layout(dp, Path("dp.pth"))
    short = {k: v for k, v in sd.items() if not k.startswith("Mixed_7c")}
    with pytest.raises(GankitError, match="missing key"):
        inc._check_layout(short, Path("short.pth"))


def test_no_meaningless_mnist_inception_silently() -> None:
    # The docs must steer digit users to lenet-mnist.
    import gankit.metrics.features as fm
    import gankit.metrics.lenet as lm

    for mod in (fm, lm):
        assert "MNIST through Inception is meaningless" in " ".join((mod.__doc__ or "").split())
