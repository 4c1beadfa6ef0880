"""Fast tests for gankit.data: built-ins, image folders, arrays, resizing and image utilities."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.data import load_data
from gankit.data.builtin import grid25_centers, mnist5k_arrays, ring8_centers
from gankit.data.files import load_arrays, load_image_folder, resize_images
from gankit.data.images import make_grid, plot_points, save_grid, save_images, to_uint8
from gankit.errors import DataError, GankitError

# ----------------------------------------------------------------------------- built-ins


@pytest.fixture(scope="module")
def mnist():
    return load_data("mnist5k")


def test_mnist5k_shapes_ranges_and_stratified_split(mnist):
    assert mnist.x.shape == (4000, 1, 28, 28) and mnist.x.dtype == torch.float32
    assert mnist.x_test.shape == (1000, 1, 28, 28)
    assert mnist.x.min() == -1.0 and mnist.x.max() == 1.0
    assert mnist.y.dtype == torch.int64 and mnist.num_classes == 10
    assert torch.bincount(mnist.y, minlength=10).tolist() == [400] * 10
    assert torch.bincount(mnist.y_test, minlength=10).tolist() == [100] * 10


def test_mnist5k_split_is_fixed_and_disjoint(mnist):
    xtr, ytr, xte, yte = mnist5k_arrays()
    # Same split as the dataset loaded earlier (a second, independent call).
    assert torch.equal(mnist.x, torch.from_numpy(xtr).float().div(255).mul(2).sub(1).unsqueeze(1))
    assert np.array_equal(mnist.y.numpy(), ytr) and np.array_equal(mnist.y_test.numpy(), yte)
    # No image of the test split appears in the training split.
    train_rows = {r.tobytes() for r in xtr.reshape(len(xtr), -1)}
    assert not any(r.tobytes() in train_rows for r in xte.reshape(len(xte), -1))


def test_digits():
    d = load_data("digits")
    assert d.x.shape == (1797, 1, 8, 8) and d.num_classes == 10
    assert d.x.min() == -1.0 and d.x.max() == 1.0
    # 17 grey levels (0..16) map to 17 distinct values in [-1, 1].
    assert torch.unique(d.x).numel() == 17


@pytest.mark.parametrize("name,centers,sigma", [("ring8", ring8_centers(), 0.01),
                                                 ("grid25", grid25_centers(), 0.05)])
def test_toy_mixtures_near_centres(name, centers, sigma):
    d = load_data(name)
    assert d.x.shape == (50_000, 2) and d.y is None and not d.is_image
    c = torch.tensor(centers, dtype=torch.float32)
    dist = torch.cdist(d.x, c).min(1).values
    assert dist.max() < 6 * sigma
    # Every mode is populated, roughly equally.
    counts = torch.bincount(torch.cdist(d.x, c).argmin(1), minlength=len(c)).float()
    assert counts.min() > 0.7 * counts.mean()
    # Same seed, same data; different seed, different data.
    assert torch.equal(load_data(name).x, d.x)
    assert not torch.equal(load_data(name, seed=1).x, d.x)


def test_builtin_resize():
    d = load_data("digits", image_size=16)
    assert d.x.shape == (1797, 1, 16, 16)
    assert d.x.min() >= -1 and d.x.max() <= 1


def test_unknown_dataset_did_you_mean():
    with pytest.raises(DataError, match="mnist5k"):
        load_data("mnist5")


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="no such"):
        load_data(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no such"):
        load_data(str(tmp_path / "nope.npz"))
    with pytest.raises(DataError, match="no such folder"):
        load_image_folder(tmp_path / "nope")


# ----------------------------------------------------------------------------- image folders


def _png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if mode is not None:
        img = img.convert(mode)
    img.save(path)


def test_folder_labelled_round_trip(tmp_path):
    # Class sub-folders in sorted order: "bird" < "cat"; one image nested one level deeper.
    _png(tmp_path / "cat" / "a.png", np.full((6, 6), 255, np.uint8))
    _png(tmp_path / "cat" / "deep" / "b.png", np.full((6, 6), 255, np.uint8))
    _png(tmp_path / "bird" / "c.png", np.zeros((6, 6), np.uint8))
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / ".DS_Store").write_bytes(b"\x00junk")
    (tmp_path / "cat" / ".hidden.png").write_bytes(b"junk")  # hidden: skipped, not read
    (tmp_path / "empty_dir").mkdir()  # no images: not a class
    d = load_data(str(tmp_path))
    assert d.x.shape == (3, 1, 6, 6) and d.x.dtype == torch.float32
    assert d.info["classes"] == ["bird", "cat"] and d.num_classes == 2
    assert d.y.dtype == torch.int64 and d.y.tolist() == [0, 1, 1]
    assert torch.all(d.x[0] == -1.0) and torch.all(d.x[1:] == 1.0)


def test_folder_unlabelled_values_exact(tmp_path):
    a = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4  # 0..252
    _png(tmp_path / "x1.png", a)
    _png(tmp_path / "x2.PNG", 255 - a)
    d = load_image_folder(tmp_path)
    assert d.y is None and d.num_classes == 0 and "classes" not in d.info
    assert d.x.shape == (2, 1, 8, 8)
    expected = torch.from_numpy(a).float() / 255 * 2 - 1
    assert torch.allclose(d.x[0, 0], expected, atol=1e-6)
    assert torch.allclose(d.x[1, 0], -expected, atol=1e-6)


def test_folder_rgb_vs_grayscale(tmp_path):
    rgb = np.zeros((5, 5, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    _png(tmp_path / "a.png", rgb)
    _png(tmp_path / "b.png", np.full((5, 5), 255, np.uint8))  # grey: replicated to 3 channels
    d = load_image_folder(tmp_path)
    assert d.x.shape == (2, 3, 5, 5)
    assert torch.all(d.x[0, 0] == 1) and torch.all(d.x[0, 1:] == -1)
    assert torch.all(d.x[1] == 1)
    # Forcing one channel turns red into its luminance (0.299 * 255 = 76).
    g = load_image_folder(tmp_path, channels=1)
    assert g.x.shape == (2, 1, 5, 5)
    assert abs(float(g.x[0, 0, 0, 0]) - (76 / 255 * 2 - 1)) < 1e-5


def test_folder_rgba_palette_jpeg_and_16bit(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 0  # fully transparent white -> black on black background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).convert("P").save(tmp_path / "b.gif")
    Image.fromarray(np.full((4, 4, 3), 255, np.uint8)).save(tmp_path / "c.jpg", quality=95)
    d = load_image_folder(tmp_path)
    assert d.x.shape == (3, 3, 4, 4)
    assert torch.all(d.x[0] == -1)
    assert torch.all(d.x[1] > 0.95) and torch.all(d.x[2] > 0.95)
    # 16-bit grayscale alone stays one channel and is scaled by 65535.
    hi = tmp_path / "hi"
    hi.mkdir()
    Image.fromarray(np.full((4, 4), 65535, np.uint16)).save(hi / "h.png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(hi / "l.tiff")
    h = load_image_folder(hi)
    assert h.x.shape == (2, 1, 4, 4)
    assert torch.allclose(h.x[0], torch.ones(1, 4, 4)) and torch.all(h.x[1] == -1)


def test_folder_exif_orientation_and_progress_path(tmp_path, monkeypatch):
    from gankit.data import files

    img = Image.fromarray(np.zeros((2, 4, 3), np.uint8))  # stored 4 wide, 2 high
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": shown 2 wide, 4 high
    img.save(tmp_path / "r.jpg", exif=exif)
    Image.fromarray(np.zeros((4, 2, 3), np.uint8)).save(tmp_path / "s.jpg")
    monkeypatch.setattr(files, "_PROGRESS_THRESHOLD", 1)  # exercise the rich progress bar path
    d = load_image_folder(tmp_path)
    assert d.x.shape == (2, 3, 4, 2)


def test_folder_mixed_sizes_needs_image_size(tmp_path):
    _png(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "b.png", np.zeros((6, 10), np.uint8))
    with pytest.raises(DataError) as e:
        load_image_folder(tmp_path)
    msg = str(e.value)
    assert "image_size" in msg and "a.png" in msg and "b.png" in msg and "10x6" in msg
    d = load_image_folder(tmp_path, image_size=4)
    assert d.x.shape == (2, 1, 4, 4)


def test_folder_image_size_center_crops(tmp_path):
    # A 4x8 (HxW) image: left and right quarters black, centre 4x4 white -> crop keeps the white.
    a = np.zeros((4, 8), np.uint8)
    a[:, 2:6] = 255
    _png(tmp_path / "a.png", a)
    d = load_image_folder(tmp_path, image_size=4)
    assert d.x.shape == (1, 1, 4, 4) and torch.all(d.x == 1.0)
    up = load_image_folder(tmp_path, image_size=12)
    assert up.x.shape == (1, 1, 12, 12) and up.x.min() >= -1 and up.x.max() <= 1


def test_folder_root_and_subfolders_mixed_is_error(tmp_path):
    _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    _png(tmp_path / "cls" / "b.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="sub-folder"):
        load_image_folder(tmp_path)


def test_folder_empty_lists_extensions(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match=r"no images.*\.png"):
        load_data(str(tmp_path))


def test_folder_corrupt_image_names_file(tmp_path):
    _png(tmp_path / "good.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "x.png").write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match="x.png"):
        load_image_folder(tmp_path)
    # A truncated PNG (valid header, missing data) is caught by .load().
    raw = (tmp_path / "good.png").read_bytes()
    (tmp_path / "x.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="x.png"):
        load_image_folder(tmp_path)


def test_bad_options(tmp_path):
    _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="channels"):
        load_image_folder(tmp_path, channels=2)
    with pytest.raises(DataError, match="image_size"):
        load_image_folder(tmp_path, image_size=0)


# ----------------------------------------------------------------------------- arrays


def test_npy_points_kept_as_is(tmp_path):
    pts = np.array([[10.0, -3.0], [0.5, 7.0]], np.float64)
    np.save(tmp_path / "p.npy", pts)
    d = load_data(str(tmp_path / "p.npy"))
    assert d.x.dtype == torch.float32 and d.x.shape == (2, 2) and d.y is None
    assert torch.equal(d.x, torch.tensor(pts, dtype=torch.float32))


def test_npz_uint8_channels_last_with_labels(tmp_path):
    x = np.zeros((4, 5, 5, 3), np.uint8)
    x[:, :, :, 2] = 255  # blue
    y = np.array([0, 2, 2, 1])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_data(str(tmp_path / "d.npz"))
    assert d.x.shape == (4, 3, 5, 5)
    assert torch.all(d.x[:, 2] == 1) and torch.all(d.x[:, :2] == -1)
    assert d.y.tolist() == [0, 2, 2, 1] and d.y.dtype == torch.int64 and d.num_classes == 3


@pytest.mark.parametrize(
    "x,expected",
    [
        (np.full((2, 4, 4), 0.5, np.float32), 0.0),  # [N, H, W] float in [0, 1]
        (np.full((2, 1, 4, 4), -0.5, np.float32), -0.5),  # already in [-1, 1]
        (np.full((2, 3, 4, 4), 255, np.uint8), 1.0),  # channels first uint8
        (np.full((2, 4, 4, 1), 0, np.uint8), -1.0),  # channels last, one channel
    ],
)
def test_array_image_variants(tmp_path, x, expected):
    np.save(tmp_path / "a.npy", x)
    d = load_arrays(tmp_path / "a.npy")
    assert d.is_image and d.x.shape[0] == 2 and d.x.shape[-2:] == (4, 4)
    assert torch.allclose(d.x, torch.full_like(d.x, expected))


def test_array_channels_and_resize(tmp_path):
    np.save(tmp_path / "a.npy", np.random.default_rng(0).random((3, 10, 10), dtype=np.float32))
    d = load_arrays(tmp_path / "a.npy", channels=3, image_size=4)
    assert d.x.shape == (3, 3, 4, 4)
    assert torch.equal(d.x[:, 0], d.x[:, 2])


def test_npz_single_array_any_name(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((2, 4, 4), np.uint8))
    assert load_arrays(tmp_path / "a.npz").x.shape == (2, 1, 4, 4)
    np.savez(tmp_path / "b.npz", a=np.zeros((2, 4, 4)), b=np.zeros(2))
    with pytest.raises(DataError, match="'x'"):
        load_arrays(tmp_path / "b.npz")


def test_array_bad_range_shape_nan(tmp_path):
    np.save(tmp_path / "r.npy", np.full((2, 4, 4), 300.0, np.float32))
    with pytest.raises(DataError, match=r"300.*\[0, 1\]"):
        load_arrays(tmp_path / "r.npy")
    np.save(tmp_path / "s.npy", np.zeros((2, 5, 4, 4), np.float32))
    with pytest.raises(DataError, match="channels"):
        load_arrays(tmp_path / "s.npy")
    x = np.zeros((3, 4, 4), np.float32)
    x[1, 2, 2] = np.nan
    np.savez(tmp_path / "n.npz", x=x)
    with pytest.raises(DataError, match="NaN"):
        load_arrays(tmp_path / "n.npz")
    pts = np.zeros((3, 2), np.float32)
    pts[0, 0] = np.inf
    np.save(tmp_path / "p.npy", pts)
    with pytest.raises(DataError, match="NaN or Inf"):
        load_arrays(tmp_path / "p.npy")


@pytest.mark.parametrize(
    "y,match",
    [
        (np.array([0, -1, 2]), ">= 0"),
        (np.array([0.0, 1.5, 2.0]), "whole numbers"),
        (np.array([0, 1]), "3 samples but 2 labels"),
        (np.array([0.0, np.nan, 1.0]), "NaN"),
        (np.array([0, 5_000_000, 1]), "0..K-1"),
    ],
)
def test_bad_labels(tmp_path, y, match):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), y=y)
    with pytest.raises(DataError, match=match):
        load_arrays(tmp_path / "d.npz")


def test_labels_integral_float_and_num_classes(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), y=np.array([0.0, 2.0, 1.0]))
    d = load_arrays(tmp_path / "d.npz")
    assert d.y.tolist() == [0, 2, 1] and d.num_classes == 3
    np.savez(tmp_path / "e.npz", x=np.zeros((3, 2), np.float32), y=np.array([0, 4, 1]),
             num_classes=np.int64(3))
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        load_arrays(tmp_path / "e.npz")


def test_object_array_and_truncated_files(tmp_path):
    np.savez(tmp_path / "o.npz", x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(DataError, match="o.npz"):
        load_arrays(tmp_path / "o.npz")
    np.save(tmp_path / "t.npy", np.zeros((100, 8), np.float32))
    raw = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(raw[:200])
    with pytest.raises(DataError, match="t.npy"):
        load_arrays(tmp_path / "t.npy")
    (tmp_path / "z.npz").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(DataError, match="z.npz"):
        load_data(str(tmp_path / "z.npz"))


def test_errors_are_gankit_errors():
    assert issubclass(DataError, GankitError) and DataError.exit_code == 2


# ----------------------------------------------------------------------------- resizing


def test_resize_images_shape_range_and_antialias():
    # Checkerboard of +-1: downsampling by 4 with antialiasing averages to ~0.
    x = torch.ones(3, 2, 16, 16)
    x[..., ::2, ::2] = -1
    x[..., 1::2, 1::2] = -1
    y = resize_images(x, 4)
    assert y.shape == (3, 2, 4, 4) and y.dtype == torch.float32
    assert y.abs().max() < 0.05
    up = resize_images(torch.rand(2, 1, 5, 5) * 2 - 1, 11)
    assert up.shape == (2, 1, 11, 11) and up.min() >= -1 and up.max() <= 1
    # Non-square input is center-cropped, not stretched.
    ns = torch.full((1, 1, 4, 8), -1.0)
    ns[..., 2:6] = 1.0
    assert torch.allclose(resize_images(ns, 2), torch.ones(1, 1, 2, 2))


def test_resize_images_chunks_match_single_pass():
    x = torch.rand(1030, 1, 6, 6) * 2 - 1
    y = resize_images(x, 3)
    assert torch.allclose(y[1025], resize_images(x[1025:1026], 3)[0])


# ----------------------------------------------------------------------------- image utilities


def test_make_grid_known_values():
    x = -torch.ones(5, 1, 3, 4)  # black grey-scale tiles
    g = make_grid(x, padding=2)
    # nrow = ceil(sqrt(5)) = 3 per row, 2 rows.
    assert g.dtype == np.uint8 and g.shape == (2 * (3 + 2) + 2, 3 * (4 + 2) + 2, 3)
    assert np.all(g[2:5, 2:6] == 0)  # first tile black
    assert np.all(g[:2] == 255) and np.all(g[:, :2] == 255)  # white padding
    assert np.all(g[7:10, 14:18] == 255)  # empty 6th cell filled with pad_value
    assert np.all(g[7:10, 8:12] == 0)  # 5th tile present
    g2 = make_grid(torch.ones(2, 3, 2, 2), nrow=1, padding=1, pad_value=-1.0)
    assert g2.shape == (7, 4, 3) and g2[0, 0].tolist() == [0, 0, 0] and g2[1, 1].tolist() == [255] * 3


def test_make_grid_colour_mapping():
    x = torch.zeros(1, 3, 1, 1)
    x[0, 0] = 1.0
    x[0, 2] = -1.0
    g = make_grid(x, padding=0)
    assert g.shape == (1, 1, 3) and g[0, 0].tolist() == [255, 128, 0]


def test_to_uint8_and_save_images(tmp_path):
    x = torch.tensor([-1.0, 0.0, 1.0, 2.0]).view(1, 1, 2, 2)
    u = to_uint8(x)
    assert u.shape == (1, 2, 2, 1) and u.dtype == np.uint8
    assert u[0, :, :, 0].tolist() == [[0, 128], [255, 255]]
    paths = save_images(torch.cat([x, -x.clamp(-1, 1)]), tmp_path / "out", prefix="s")
    assert [p.name for p in paths] == ["s_00000.png", "s_00001.png"]
    with Image.open(paths[0]) as im:
        assert im.mode == "L" and np.asarray(im).tolist() == [[0, 128], [255, 255]]
    rgb = save_images(torch.zeros(1, 3, 2, 2), tmp_path / "rgb")
    with Image.open(rgb[0]) as im:
        assert im.mode == "RGB"
    # Exported samples load back as an image folder with the same values.
    back = load_image_folder(tmp_path / "out")
    assert torch.allclose(back.x[0], x.clamp(-1, 1), atol=1 / 127.5)


def test_save_grid_png_size_and_default_scale(tmp_path):
    p = save_grid(-torch.ones(4, 1, 8, 8), tmp_path / "sub" / "grid.png")
    assert p == tmp_path / "sub" / "grid.png"
    with Image.open(p) as im:
        # 2x2 grid of 8x8 tiles with padding 2 -> 22x22, scaled by ceil(56/8) = 7.
        assert im.size == (22 * 7, 22 * 7) and im.mode == "RGB"
        a = np.asarray(im)
    assert np.all(a[14:70, 14:70] == 0) and np.all(a[:14] == 255)
    assert sorted(x.name for x in p.parent.iterdir()) == ["grid.png"]  # no temp file left
    with Image.open(save_grid(torch.zeros(1, 3, 64, 64), tmp_path / "g2.png", scale=1)) as im:
        assert im.size == (68, 68)


def test_plot_points(tmp_path):
    fake = torch.randn(200, 2)
    real = torch.randn(500, 2)
    p = plot_points(fake, real, tmp_path / "pts.png", title="ring8 step 0")
    with Image.open(p) as im:
        assert im.size == (500, 500)
        a = np.asarray(im.convert("RGB")).astype(int)
    # Some red (fake) pixels are drawn.
    assert np.any((a[..., 0] > 200) & (a[..., 1] < 120) & (a[..., 2] < 120))
    with pytest.raises(ValueError):
        plot_points(torch.randn(5, 1), None, tmp_path / "bad.png")
