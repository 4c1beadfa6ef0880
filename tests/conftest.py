import os

# Before numpy/torch load their BLAS: one thread. The test arrays and networks are small, where
# a second thread only adds synchronisation, and on a shared machine oversubscription makes
# multi-threaded BLAS 5-10x slower. Results do not depend on it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest
import torch

# The test networks are tiny: one thread is faster than two, and far faster when other
# processes share the cores (threads spin and oversubscribe).
torch.set_num_threads(1)


def make_tiny_images():
    """A small labelled image dataset (16x16 grey, 3 classes) made in memory."""
    from gankit.data.base import Dataset

    g = torch.Generator().manual_seed(0)
    y = torch.arange(48) % 3
    x = torch.rand(48, 1, 16, 16, generator=g) * 0.2 - 1
    for k in range(3):  # a class-dependent bright band so classes differ
        x[y == k, :, 4 * k:4 * k + 4, :] = 0.8
    return Dataset("tiny", x, y, 3)


def make_tiny_points():
    from gankit.data.builtin import _toy

    return _toy("ring8", 512, 0)


@pytest.fixture
def tiny_images():
    return make_tiny_images()


@pytest.fixture
def tiny_points():
    return make_tiny_points()


def make_tiny_paired():
    """A small paired image dataset (16x16 grey, 3 classes): a is an outline of the band in x."""
    from gankit.data.base import Dataset

    g = torch.Generator().manual_seed(1)
    y = torch.arange(48) % 3
    x = torch.rand(48, 1, 16, 16, generator=g) * 0.2 - 1
    a = torch.full((48, 1, 16, 16), -1.0)
    for k in range(3):
        x[y == k, :, 4 * k:4 * k + 4, :] = 0.8
        a[y == k, :, 4 * k, :] = 1.0
        a[y == k, :, 4 * k + 3, :] = 1.0
    return Dataset("tinypairs", x[:40], y[:40], 3, x[40:], y[40:], a=a[:40], a_test=a[40:],
                   pairing="paired")


@pytest.fixture
def tiny_paired():
    return make_tiny_paired()


def make_tiny_unpaired():
    """A small unpaired dataset (16x16 grey): domain a has a horizontal band, domain b (40
    images, a different count) a vertical one; no image of one has a partner in the other."""
    from gankit.data.base import Dataset

    g = torch.Generator().manual_seed(2)
    a = torch.rand(48, 1, 16, 16, generator=g) * 0.2 - 1
    x = torch.rand(40, 1, 16, 16, generator=g) * 0.2 - 1
    for i in range(48):
        a[i, :, (i % 3) * 4:(i % 3) * 4 + 4, :] = 0.8
    for i in range(40):
        x[i, :, :, (i % 4) * 4:(i % 4) * 4 + 4] = 0.8
    return Dataset("tinyunpaired", x[:36], None, 0, x[36:], None, a=a[:44], a_test=a[44:],
                   pairing="unpaired")


@pytest.fixture
def tiny_unpaired():
    return make_tiny_unpaired()


def make_tiny_volumes():
    """A small paired volume dataset (8^3, one channel): a is a noisy volume with a bright
    cube, x its mask in {-1, +1}; 24 training pairs, 8 held out."""
    from gankit.data.base import Dataset

    g = torch.Generator().manual_seed(3)
    a = torch.rand(32, 1, 8, 8, 8, generator=g) * 0.4 - 1
    x = torch.full((32, 1, 8, 8, 8), -1.0)
    for i in range(32):
        o = i % 4
        a[i, :, o:o + 4, o:o + 4, 2:6] = 0.6
        x[i, :, o:o + 4, o:o + 4, 2:6] = 1.0
    return Dataset("tinyvolumes", x[:24], None, 0, x[24:], None, a=a[:24], a_test=a[24:],
                   pairing="paired")


def make_tiny_unpaired_labelled():
    """:func:`make_tiny_unpaired` with a label map per image (info ``a_labels``, ``x_labels``,
    ``labels_test``; classes background, band, corner): the band is class 1, a 4x4 bright
    corner square in every other image class 2."""
    ds = make_tiny_unpaired()
    maps = {}
    for key, x in (("a", ds.a), ("x", ds.x), ("test", ds.x_test)):
        x = x.clone()
        lab = (x[:, 0] > 0).long()  # [N, 16, 16]: the band
        x[::2, :, :4, -4:] = 0.5
        lab[::2, :4, -4:] = 2
        setattr(ds, {"test": "x_test"}.get(key, key), x)
        maps[key] = lab
    ds.info |= {"a_labels": maps["a"], "x_labels": maps["x"], "labels_test": maps["test"],
                "label_classes": ["background", "band", "corner"]}
    return ds


@pytest.fixture
def tiny_unpaired_labelled():
    return make_tiny_unpaired_labelled()
