"""Adversarial segmentation in 2-D and 3-D: 5-D volume data, the phantom-seg and blobs3d tasks,
SegAN (Xue et al. 2018), vox2vox (Cirillo et al. 2020), Dice/Jaccard/uncertainty metrics and
``gankit segment``."""

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
    with pytest.raises(DataError, match=r"\[N, C, D, H, W\] volumes, got shape \(2, 1, 2, 2, 2, 2\)"):
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
