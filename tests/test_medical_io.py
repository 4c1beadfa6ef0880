"""NIfTI volumes and DICOM series written here (nibabel, pydicom) load, window, slice, cut into
3-D patches and train from the CLI; corrupt or mismatched files give one line and exit 2."""

import json

import numpy as np
import pytest
import torch
from helpers import cli_output

from gankit.data import load_data
from gankit.data.medical import (
    WINDOWS,
    apply_window,
    extract_patches,
    load_volumes,
    parse_window,
    volume_patches,
    volume_slices,
)
from gankit.errors import DataError

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")


def write_nifti(path, data, affine=None):
    """``data`` [x, y, z] (float32) with an identity (RAS) affine unless given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.eye(4) if affine is None
                             else affine), str(path))
    return path


def write_ct_series(folder, hu, *, slope=1.0, intercept=-1024.0, modality="CT", sizes=None,
                    series_uid=None):
    """A minimal valid CT series: one file per slice of ``hu`` [z, rows, cols], stored as
    uint16 ``(hu - intercept) / slope``, positions 2.5 mm apart along +z. Files are named in
    the REVERSE order of their positions (the reader must sort by position); ``sizes`` lets a
    test give some slice another shape."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    n = len(hu)
    for k in range(n):
        img = hu[k] if sizes is None or sizes[k] is None else np.zeros(sizes[k])
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice{n - 1 - k:03d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series_uid
        ds.Modality = modality
        ds.PatientName, ds.PatientID = "Phantom^Test", "0"
        ds.Rows, ds.Columns = img.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, 2.5 * k]
        ds.InstanceNumber = n - k  # misleading on purpose: positions decide the order
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.5
        ds.PixelData = np.round((img - intercept) / slope).astype(np.uint16).tobytes()
        ds.save_as(str(path), enforce_file_format=True)
    return folder


def ct_volume(z=6, size=16):
    """HU volume [z, size, size]: air (-1000) around a soft-tissue square (40 HU) with a bone
    centre (700 HU); the first and last slices are all air (empty)."""
    hu = np.full((z, size, size), -1000.0)
    hu[1:-1, 4:12, 4:12] = 40.0
    hu[1:-1, 6:10, 6:10] = 700.0
    return hu


# -- windows ------------------------------------------------------------------------------------
def test_window_presets_and_numbers():
    assert parse_window("soft-tissue") == (400.0, 40.0) == parse_window("Soft_Tissue")
    assert parse_window("brain") == (80.0, 40.0) and parse_window("lung") == (1500.0, -600.0)
    assert parse_window("bone") == WINDOWS["bone"] == (1800.0, 400.0)
    assert parse_window("400/40") == (400.0, 40.0) == parse_window("W400/L40")
    assert parse_window("1500,-600") == (1500.0, -600.0) == parse_window([1500, -600])
    assert parse_window(None) is None and parse_window("auto") is None
    with pytest.raises(DataError, match="did you mean 'lung'"):
        parse_window("lungs")
    with pytest.raises(DataError, match="positive"):
        parse_window("0/40")
    # soft tissue W400/L40: [-160, 240] HU -> [-1, 1], linear, clipped outside
    hu = np.array([-1000.0, -160.0, -60.0, 40.0, 140.0, 240.0, 3000.0])
    assert apply_window(hu, 400, 40).tolist() == [-1.0, -1.0, -0.5, 0.0, 0.5, 1.0, 1.0]


# -- NIfTI --------------------------------------------------------------------------------------
def test_nifti_volume_loads_in_ras_order_and_slices(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.uniform(0, 100, (8, 10, 12)).astype(np.float32)  # [x, y, z]
    data[..., 0] = 0.0  # an empty (constant background) bottom slice
    write_nifti(tmp_path / "vols" / "a.nii.gz", data)
    (v,) = load_volumes(tmp_path / "vols")
    assert v.data.shape == (12, 10, 8)  # [z, y, x]
    # voxel (x, y, z) sits at [z, Y - 1 - y, x]: rows run anterior -> posterior
    assert v.data[5, 10 - 1 - 3, 2] == pytest.approx(data[2, 3, 5])
    # a LPS-oriented copy of the same data is reoriented to the same volume
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    write_nifti(tmp_path / "lps" / "b.nii", data[::-1, ::-1, :], flip)
    (w,) = load_volumes(tmp_path / "lps")
    assert np.allclose(w.data, v.data)

    ds = load_data(str(tmp_path / "vols"))  # auto: per-volume 0.5-99.5th percentiles
    assert ds.x.shape == (11, 1, 10, 8)  # 12 axial slices, the empty one skipped
    lo, hi = np.percentile(v.data, [0.5, 99.5])
    want = np.clip((v.data[1:] - lo) / (hi - lo), 0, 1) * 2 - 1
    assert np.allclose(ds.x[:, 0].numpy(), want, atol=1e-6) and ds.x.max() == 1.0
    assert ds.info["window"].startswith("auto")


def test_nifti_window_slices_and_axes(tmp_path):
    data = np.zeros((8, 10, 12), np.float32)  # [x, y, z]
    data[2:6, 3:7, 4:9] = 50.0
    write_nifti(tmp_path / "v.nii.gz", data)
    ds = load_data(str(tmp_path / "v.nii.gz"), window="100/50")  # [0, 100] -> [-1, 1]
    assert ds.x.shape == (5, 1, 10, 8)  # only z = 4..8 hold foreground
    assert ds.x.min() == -1.0 and ds.x.max() == 0.0  # 50 maps to 0, 0 to -1
    assert ds.info["window"] == {"width": 100.0, "level": 50.0}
    assert ds.info["volumes"] == ["v.nii.gz"] and ds.info["slices_per_volume"] == [5]
    keep = load_data(str(tmp_path / "v.nii.gz"), window="100/50", skip_empty=False)
    assert keep.x.shape == (12, 1, 10, 8)
    cor = load_data(str(tmp_path / "v.nii.gz"), window="100/50", slice_axis="coronal")
    sag = load_data(str(tmp_path / "v.nii.gz"), window="100/50", slice_axis="sagittal")
    assert cor.x.shape == (4, 1, 12, 8) and sag.x.shape == (4, 1, 12, 10)
    # auto: per-volume percentiles, so the two intensities land on -1 and +1
    auto = load_data(str(tmp_path / "v.nii.gz"))
    assert set(torch.unique(auto.x).tolist()) == {-1.0, 1.0}
    sized = load_data(str(tmp_path / "v.nii.gz"), window="100/50", image_size=16)
    assert sized.x.shape == (5, 1, 16, 16)


def test_volume_slices_and_patches():
    vol = -np.ones((6, 8, 8), np.float32)
    vol[2:4, 2:6, 2:6] = 0.5
    s, idx = volume_slices(vol, "axial")
    assert idx.tolist() == [2, 3] and s.shape == (2, 8, 8)
    p = extract_patches(vol, 4)  # starts z: 0, 2 (flush); y, x: 0, 4 -> 2 * 2 * 2
    assert p.shape == (8, 1, 4, 4, 4)
    assert np.array_equal(p[0, 0], vol[0:4, 0:4, 0:4])
    assert np.array_equal(p[-1, 0], vol[2:6, 4:8, 4:8])
    full = extract_patches(vol, (6, 8, 8))
    assert full.shape == (1, 1, 6, 8, 8) and np.array_equal(full[0, 0], vol)
    dense = extract_patches(vol, 2, stride=1)
    assert dense.shape == (5 * 7 * 7, 1, 2, 2, 2)
    fg = extract_patches(vol, 2, skip_empty=True)  # 2x2x2 tiles touching the lesion only
    assert len(fg) == 1 * 2 * 2 and (fg > -1).all(axis=(1, 2, 3, 4)).all()
    with pytest.raises(DataError, match="does not fit"):
        extract_patches(vol, 7)


# -- DICOM --------------------------------------------------------------------------------------
def test_dicom_series_sorted_by_position_rescaled_to_hu_and_windowed(tmp_path):
    hu = ct_volume()
    hu[2, 0, 0] = -999.0  # tag slices to check the order
    hu[3, 0, 0] = -998.0
    write_ct_series(tmp_path / "ct" / "patient1", hu, slope=0.5, intercept=-1024.0)
    (v,) = load_volumes(tmp_path / "ct")
    assert v.modality == "CT" and v.data.shape == hu.shape
    assert np.allclose(v.data, hu)  # stored * 0.5 - 1024 = HU, slices in position order
    ds = load_data(str(tmp_path / "ct"), window="soft-tissue")
    assert ds.x.shape == (4, 1, 16, 16)  # the two all-air slices skipped
    x = ds.x[:, 0]
    # air -1000 -> -1 (clipped), soft tissue 40 HU -> 0, bone 700 -> +1 (clipped)
    assert x[0, 0, 0] == -1.0 and x[0, 5, 5] == 0.0 and x[0, 8, 8] == 1.0
    lung = load_data(str(tmp_path / "ct"), window="lung")  # [-1350, 150] HU
    for i, v_hu in ((0, -1000), (1, -999), (2, -998)):  # kept slices 1, 2, 3 in order
        assert lung.x[i, 0, 0, 0].item() == pytest.approx((v_hu + 1350) / 1500 * 2 - 1,
                                                          abs=1e-6)
    assert lung.x[0, 0, 5, 5].item() == pytest.approx(1 - 2 * 110 / 1500, abs=1e-6)
    assert ds.info["modality"] == "CT" and ds.info["window"] == {"width": 400.0, "level": 40.0}
    # 3-D patches of the windowed series for volumetric models: [N, 1, 4, 8, 8]
    p = volume_patches(tmp_path / "ct", (4, 8, 8), window="soft-tissue", skip_empty=False)
    assert p.shape == (2 * 2 * 2, 1, 4, 8, 8)
    full = apply_window(hu, 400, 40)
    assert np.array_equal(p[0, 0], full[0:4, 0:8, 0:8]) and np.array_equal(p[-1, 0],
                                                                            full[2:6, 8:, 8:])


def test_train_test_split_by_volume(tmp_path):
    write_ct_series(tmp_path / "d" / "train" / "p1", ct_volume())
    write_ct_series(tmp_path / "d" / "train" / "p2", ct_volume())
    write_nifti(tmp_path / "d" / "test" / "p3.nii.gz", ct_volume().transpose(2, 1, 0))
    ds = load_data(str(tmp_path / "d"), window="400/40")
    assert ds.x.shape == (8, 1, 16, 16) and ds.x_test.shape == (4, 1, 16, 16)
    assert ds.info["volumes"] == ["p1", "p2"] and ds.info["test_volumes"] == ["p3.nii.gz"]


def train_on_series(tmp_path, capsys):
    """A tiny dcgan trained for 2 steps from the CLI on a CT series; its run directory."""
    write_ct_series(tmp_path / "ct" / "s1", ct_volume(z=10))
    out = tmp_path / "run"
    code, _, err = cli_output(capsys, "train", "dcgan", "--data", tmp_path / "ct", "--steps", 2,
                              "--batch-size", 4, "--no-progress", "--out", out,
                              "--set", "model.width=4", "--set", "data.window=soft-tissue",
                              "--set", "train.doctor=false", "--set", "train.log_every=1")
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["data"]["window"] == "soft-tissue" and cfg["data"]["slice_axis"] == "axial"
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    return out


def test_dcgan_trains_on_a_dicom_series_from_the_cli(tmp_path, capsys):
    out = train_on_series(tmp_path, capsys)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss/D" in r] == [1, 2]


# -- one line and exit 2 ------------------------------------------------------------------------
def _one_error(capsys, *args):
    code, _, err = cli_output(capsys, *args)
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_corrupt_and_mismatched_files_are_one_line_and_exit_2(tmp_path, capsys):
    args = ["train", "dcgan", "--steps", "1", "--no-progress", "--set", "model.width=4"]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "scan.nii.gz").write_bytes(b"\x1f\x8b this is not gzip")
    line = _one_error(capsys, *args, "--data", bad, "--out", tmp_path / "r1")
    assert "scan.nii.gz: cannot read this NIfTI file" in line
    hdr = tmp_path / "hdr"
    hdr.mkdir()
    (hdr / "head.nii").write_bytes(b"\0" * 400)  # a header of the right size, all wrong
    assert "cannot read this NIfTI file" in _one_error(capsys, *args, "--data", hdr)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.dcm").write_bytes(b"not a dicom file at all")
    assert "x.dcm" in _one_error(capsys, *args, "--data", junk)
    sizes = [None, None, (8, 8), None]
    write_ct_series(tmp_path / "mixed_size" / "s", ct_volume(z=4), sizes=sizes)
    assert "slices of different sizes in one series" in _one_error(
        capsys, *args, "--data", tmp_path / "mixed_size")
    mods = tmp_path / "mixed_mod" / "s"
    write_ct_series(mods, ct_volume(z=3))
    uid = pydicom.dcmread(str(mods / "slice000.dcm")).SeriesInstanceUID
    write_ct_series(tmp_path / "tmp_mr", ct_volume(z=1) + 1024, modality="MR",
                    series_uid=uid)
    (tmp_path / "tmp_mr" / "slice000.dcm").rename(mods / "slice_mr.dcm")
    assert "mixes modalities (CT, MR)" in _one_error(capsys, *args, "--data", mods.parent)
    two = tmp_path / "two"
    write_ct_series(two / "ct", ct_volume(z=3))
    write_ct_series(two / "mr", ct_volume(z=3) + 1024, modality="MR")
    assert "mixed modalities" in _one_error(capsys, *args, "--data", two)
    assert "unknown window 'lungs'" in _one_error(capsys, *args, "--data", two / "ct",
                                                  "--set", "data.window=lungs")
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), np.uint8))
    for data in ("digits", f"paired:{two}", str(tmp_path / "x.npy")):
        assert "apply to NIfTI/DICOM" in _one_error(capsys, *args, "--data", data,
                                                    "--set", "data.window=lung")
    assert not (tmp_path / "r1").exists()


def test_a_corrupted_series_loses_nothing_already_written(tmp_path, capsys):
    out = train_on_series(tmp_path, capsys)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    victim = sorted((tmp_path / "ct" / "s1").iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated mid-header
    line = _one_error(capsys, "resume", out, "--steps", "4", "--no-progress")
    assert victim.name in line
    after = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
