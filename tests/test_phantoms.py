"""The synthetic anatomy behind the medical tasks: deterministic, and its ground truth is exact."""

import numpy as np

from gankit.data import phantoms as ph


def test_phantoms_are_deterministic_and_hold_every_tissue():
    a, ma = ph.phantoms(40, 48, seed=3, lesions=(1, 2))
    b, mb = ph.phantoms(40, 48, seed=3, lesions=(1, 2))
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert set(np.unique(a)) == set(range(len(ph.TISSUES)))
    assert not np.array_equal(a, ph.phantoms(40, 48, seed=4, lesions=(1, 2))[0])


def test_lesion_masks_are_exactly_the_lesion_tissue_inside_the_body():
    labs, masks = ph.phantoms(30, 64, seed=0, lesions=(1, 3))
    assert np.array_equal(masks, labs == ph.LESION)
    assert masks.reshape(30, -1).any(1).all()  # every phantom got a lesion
    clean, none = ph.phantoms(30, 64, seed=0)
    assert not none.any() and not (clean == ph.LESION).any()


def test_contrasts_render_the_same_anatomy_with_different_intensities():
    labs, _ = ph.phantoms(5, 32, seed=1)
    ct, mr = ph.render(labs, "ct"), ph.render(labs, "mr")
    for t in range(len(ph.TISSUES) - 1):  # each tissue is one intensity per contrast
        sel = labs == t
        if sel.any():
            assert np.ptp(ct[sel]) == 0 and np.ptp(mr[sel]) == 0
    # fat is darker than soft tissue on CT and brighter on MR; bone the reverse of that order
    c, m = ph.CONTRASTS["ct"], ph.CONTRASTS["mr"]
    assert c[ph.FAT] < c[ph.SOFT] and m[ph.FAT] > m[ph.SOFT] and c[ph.BONE] > m[ph.BONE]
    noisy = ph.render(labs, "ct", 0.05, np.random.default_rng(0))
    assert noisy.min() >= 0 and noisy.max() <= 1 and 0.01 < np.abs(noisy - ct).mean() < 0.05


def test_blob_volumes_and_shepp_logan():
    v, m = ph.blob_volumes(4, 24, seed=0)
    assert v.shape == m.shape == (4, 24, 24, 24) and v.dtype == np.float32
    assert m.reshape(4, -1).any(1).all()
    assert v[m].mean() > v[~m].mean() + 0.2  # blobs are brighter than their surroundings
    s = ph.shepp_logan(32)
    assert s.shape == (32, 32) and 0 <= s.min() and s.max() <= 1 and s.std() > 0.1
