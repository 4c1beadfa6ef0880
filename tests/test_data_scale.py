"""Folders that just work (a default image size valid for the model, zips, refused sizes) and
data at scale (prepared uint8 shards, the streaming source, exact resume, bounded memory)."""

import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    make_tiny_images,
    make_tiny_paired,
    make_tiny_points,
    make_tiny_unpaired,
    make_tiny_unpaired_labelled,
)
from PIL import Image
from test_resume_ddp import ENV, assert_identical, final_weights, wait_for_checkpoint

import gankit
from gankit.api import absolute_data
from gankit.cli import main
from gankit.commands_data import prepare_images
from gankit.config import parse_overrides, resolve_config
from gankit.data import Dataset, load_data
from gankit.data.sizes import ANY_SIZE
from gankit.data.sources import build_source
from gankit.data.store import ImageStore, write_prepared
from gankit.data.streaming import LoaderStream
from gankit.errors import ConfigError
from gankit.registry import MODELS

QUICK = ["--batch-size", "16", "--no-progress", "--set", "model.width=8",
         "--set", "train.sample_every=1000", "--set", "train.log_every=1"]


def mixed_folder(root: Path, n: int = 200, seed: int = 0) -> Path:
    """``n`` images of sizes 20..90 px in two class sub-folders, cycling RGB, RGBA, grey and
    16-bit grey."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        w, h = (int(v) for v in rng.integers(20, 91, 2))
        kind = i % 4
        if kind == 0:
            im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
        elif kind == 1:
            im = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
        elif kind == 2:
            im = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), "L")
        else:
            im = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
        d = root / ("cats" if i % 2 else "dogs")
        d.mkdir(parents=True, exist_ok=True)
        im.save(d / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return mixed_folder(tmp_path_factory.mktemp("mixed") / "photos")


def cli(*args) -> int:
    try:
        main(list(map(str, args)))
    except SystemExit as e:
        return int(e.code)
    return 0


# -- 1. folders that just work -------------------------------------------------------------------


def test_mixed_folder_trains_without_a_size_flag(folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli("train", "dcgan", "--data", folder, "--steps", 2, *QUICK, "--out", out) == 0
    cfg = json.loads((out / "config.json").read_text())
    size = cfg["data"]["image_size"]
    # the median short side of 20..90 px images, rounded down to a size DCGAN's stages like
    assert size in (32, 40, 48)
    assert cfg["data"]["name"] == str(folder.resolve())  # recorded absolute
    info = json.loads((out / "run.json").read_text())["data_info"]
    assert info["shape"] == [3, size, size] and info["num_classes"] == 2  # RGB: some colour
    assert info["image_size"] == size and "chosen from the data" in info["image_size_note"]
    assert f"image size {size} chosen" in capsys.readouterr().err
    x = gankit.load(out).sample(2, seed=0)
    assert x.shape == (2, 3, size, size)


def test_the_crash_case_is_refused_in_one_line(folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = cli("train", "dcgan", "--data", folder, "--set", "data.image_size=59", "--out", out)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "59" in err and "56 or 64" in err, err
    assert not out.exists()
    # --image-size is the same key
    assert cli("train", "pix2pix", "--data", "edges2digits", "--image-size", 48, "--out", out) == 2
    err = capsys.readouterr().err.strip()
    assert "power of two" in err and "32 or 64" in err and err.count("\n") == 0


def _tiny(kind: str, size: int) -> Dataset:
    ds = {"images": make_tiny_images, "points": make_tiny_points,
          "paired": make_tiny_paired, "unpaired": make_tiny_unpaired,
          "unpaired-labelled": make_tiny_unpaired_labelled}[kind]()
    from gankit.data.files import resize_images

    for k in ("x", "x_test", "a", "a_test"):
        if getattr(ds, k) is not None:
            setattr(ds, k, resize_images(getattr(ds, k), size))
    return ds


IMAGE_FAMILIES = [n for n in MODELS.names()
                  if MODELS.get(n).tiny_data not in ("points", "volumes")]


@pytest.mark.parametrize("name", IMAGE_FAMILIES)
def test_every_image_family_takes_exactly_its_claimed_sizes(name, monkeypatch):
    family = MODELS.get(name)
    over = {"train.batch_size": 8, "train.doctor": False, "train.sample_every": 1000,
            **family.tiny}
    cfg = resolve_config(name, parse_overrides([f"{k}={v}" for k, v in over.items()]))
    sizes = family.valid_image_sizes(cfg)
    steps = 1 + sum(family.tiny.get("model.layer_steps", []))  # a DBN trains each layer
    for size in (7, 8, 12, 32, 59):
        ds = _tiny(family.tiny_data, size)
        if sizes.fits(size, size):
            run = gankit.train(name, ds, steps=steps, save=False, progress=False,
                               overrides=over)
            assert run.trainer.step == steps
            continue
        with pytest.raises(ConfigError, match=f"\\({size}x{size}\\) do not fit {name}") as e:
            gankit.train(name, ds, steps=steps, save=False, progress=False, overrides=over)
        assert e.value.exit_code == 2
        # the refusal is real: without the check, the networks fail on this size
        with monkeypatch.context() as m:
            m.setattr(family, "valid_image_sizes", classmethod(lambda cls, cfg: ANY_SIZE))
            with pytest.raises(Exception):  # noqa: B017  (whatever the network raises)
                gankit.train(name, ds, steps=steps, save=False, progress=False,
                             overrides=over)


def test_mlp_architectures_take_any_size():
    for name, over in (("gan", {}), ("vae", {}), ("wgan", {"model.arch": "mlp"}),
                       ("cgan", {"model.arch": "mlp"})):
        cfg = resolve_config(name, parse_overrides([f"{k}={v}" for k, v in over.items()]))
        assert MODELS.get(name).valid_image_sizes(cfg).fits(59, 59)
    assert not MODELS.get("wgan").valid_image_sizes(resolve_config("wgan")).fits(59, 59)


def test_zip_reads_as_the_folder(folder, tmp_path):
    z = tmp_path / "photos.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted(folder.rglob("*.png")):
            zf.write(f, f.relative_to(folder.parent).as_posix())  # photos/cats/0001.png
    a = load_data(str(folder), image_size=24)
    b = load_data(str(z), image_size=24)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert a.info["classes"] == b.info["classes"] == ["cats", "dogs"]
    # streamed from the zip, rows read on demand equal the decoded ones (8-bit files exactly)
    s = load_data(str(z), image_size=24, stream=True, workers=0)
    assert isinstance(s.x, ImageStore) and len(s) == len(a)
    rows = torch.arange(100, 200)  # dogs: RGB and grey 8-bit files
    assert torch.equal(s.x[rows], a.x[rows])
    out = tmp_path / "run"  # streamed from the zip by a worker process
    assert cli("train", "dcgan", "--data", z, "--steps", 2, *QUICK, "--out", out,
               "--set", "data.stream=true", "--set", "data.workers=1") == 0
    assert json.loads((out / "run.json").read_text())["data_info"]["stream"] is True


def test_auto_streams_by_decoded_size(folder, monkeypatch):
    import gankit.data

    small = load_data(str(folder), image_size=16)  # 200 x 3 x 16 x 16 float32: 600 KiB
    assert not isinstance(small.x, ImageStore) and small.info["stream"] is False
    assert small.info["decoded_bytes"] == 200 * 3 * 16 * 16 * 4
    monkeypatch.setattr(gankit.data, "STREAM_THRESHOLD", 500 << 10)
    big = load_data(str(folder), image_size=16)
    assert isinstance(big.x, ImageStore) and big.describe()["stream"] is True
    assert load_data(str(folder), image_size=16, stream=False).info["stream"] is False


# -- 2. data at scale ----------------------------------------------------------------------------


def test_prepare_round_trip(folder, tmp_path):
    out = tmp_path / "prepared"
    assert cli("prepare", folder, "--size", 16, "--out", out) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["count"] == 200 and meta["size"] == 16 and meta["channels"] == 3
    assert meta["classes"] == ["cats", "dogs"] and meta["source"] == str(folder.resolve())
    shard = np.load(out / meta["shards"][0]["file"], mmap_mode="r")
    assert shard.dtype == np.uint8 and shard.shape == (200, 3, 16, 16)
    ref = load_data(str(folder), image_size=16)
    for stream in (False, True):
        ds = load_data(str(out), stream=stream)
        assert isinstance(ds.x, ImageStore) == stream
        assert torch.equal(ds.y, ref.y) and ds.info["classes"] == ["cats", "dogs"]
        # rows: cats (files 1, 3, 5, ...: RGBA and 16-bit alternately), then dogs; the 16-bit
        # files are rounded to 8 bits by prepare
        r = torch.arange(200)
        eight_bit = ~((r < 100) & (r % 2 == 1))
        x = ds.x[torch.arange(200)]
        assert torch.equal(x[eight_bit], ref.x[eight_bit])
        assert (x - ref.x).abs().max() <= 1.01 / 255
    # refused: an existing --out, a size the prepared set does not have
    assert cli("prepare", folder, "--size", 16, "--out", out) == 2
    run = tmp_path / "run"
    assert cli("train", "dcgan", "--data", out, "--image-size", 32, "--out", run) == 2
    assert cli("train", "dcgan", "--data", out, "--steps", 2, *QUICK, "--out", run) == 0


@pytest.mark.parametrize("model, cases", [("dcgan", ((False, 0), (True, 0), (True, 2))),
                                          ("sgan", ((False, 0), (True, 0)))])  # + labelled rows
def test_streamed_training_equals_in_memory(folder, tmp_path, model, cases):
    prep = tmp_path / "prep"
    prepare_images(folder, prep, size=16)
    over = {"model.width": 8, "train.sample_every": 1000, "train.batch_size": 16}
    runs = [gankit.train(model, str(prep), steps=6, save=False, progress=False,
                         overrides={**over, "data.stream": s, "data.workers": w})
            for s, w in cases]
    assert not isinstance(runs[0].data.x, ImageStore)
    for run in runs[1:]:
        assert isinstance(run.data.x, ImageStore)
        for k in ("G", "D"):
            a, b = runs[0].trainer.nets[k].state_dict(), run.trainer.nets[k].state_dict()
            assert all(torch.equal(a[n], b[n]) for n in a), k


def test_rank_shares_of_the_streaming_source(folder, tmp_path):
    prep = tmp_path / "prep"
    prepare_images(folder, prep, size=8)
    ds = load_data(str(prep), stream=True, workers=0)
    whole = build_source("samples", ds, 16, torch.device("cpu"), 5)
    ranks = [LoaderStream("data", ds.x, ds.y, 16, torch.device("cpu"), 5, r, 2) for r in (0, 1)]
    for _ in range(30):  # across epochs (200 / 16 batches each)
        b = whole.draw()
        parts = [r.next() for r in ranks]
        assert torch.equal(torch.cat([p["x"] for p in parts]), b["x"])
        assert torch.equal(torch.cat([p["y"] for p in parts]), b["y"])


def test_lazy_store_reads_only_what_is_asked(folder, tmp_path):
    prep = tmp_path / "prep"
    prepare_images(folder, prep, size=8)
    ds = load_data(str(prep), stream=True)
    full = ds.x.materialise()
    assert ds.x.dim() == 4 and len(ds.x) == 200 and ds.shape == (3, 8, 8)
    assert torch.equal(ds.x[3], full[3]) and torch.equal(ds.x[-1], full[-1])
    assert torch.equal(ds.x[10:20], full[10:20])
    idx = torch.tensor([5, 199, 0, 5])
    assert torch.equal(ds.x[idx], full[idx])
    with pytest.raises(IndexError):
        ds.x[200]
    # the source refuses what needs the whole set in memory, in one line
    with pytest.raises(ConfigError, match="data.stream=false"):
        build_source("classes", ds, 8, torch.device("cpu"), 0, streams={"a": [0]})


def test_sigkill_then_resume_is_bit_identical_on_the_streaming_source(folder, tmp_path):
    prep = tmp_path / "prep"
    prepare_images(folder, prep, size=16)
    args = ["dcgan", "--data", str(prep), "--steps", "24", "--batch-size", "16",
            "--no-progress", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.sample_every=100", "--set", "train.keep_ckpts=10",
            "--set", "model.width=8", "--set", "data.stream=true", "--set", "data.workers=1"]

    def gk(*a):
        return subprocess.run([sys.executable, "-m", "gankit.cli", *a], env=ENV,
                              capture_output=True, text=True, check=False)

    ref = tmp_path / "ref"
    r = gk("train", *args, "--out", str(ref))
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "gankit.cli", "train", *args, "--out",
                             str(run)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    wait_for_checkpoint(run, proc, 8)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # resumed from another working directory, with the prepared set moved (--data)
    moved = tmp_path / "moved"
    prep.rename(moved)
    r = subprocess.run([sys.executable, "-m", "gankit.cli", "resume", str(run), "--no-progress",
                        "--data", str(moved)], env=ENV, capture_output=True, text=True,
                       check=False, cwd=tmp_path.parent)
    assert r.returncode == 0, r.stderr
    assert_identical(final_weights(run), final_weights(ref))
    assert json.loads((run / "config.json").read_text())["data"]["name"] == str(moved)


def test_resume_data_must_have_the_run_shape(folder, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "dcgan", "--data", folder, "--steps", 2, *QUICK, "--out", out) == 0
    other = tmp_path / "other"
    prepare_images(folder, other, size=8)
    before = (out / "config.json").read_text()
    assert cli("resume", out, "--data", other, "--no-progress") == 2
    assert (out / "config.json").read_text() == before


def test_absolute_data_keeps_builtins_and_prefixes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs").mkdir()
    assert absolute_data("mnist5k") == "mnist5k"
    assert absolute_data("paired:pairs") == f"paired:{tmp_path / 'pairs'}"
    assert absolute_data("nowhere") == "nowhere"


# -- peak memory does not grow with the number of images -----------------------------------------

RSS_SCRIPT = """
import os, resource, sys
os.environ["OMP_NUM_THREADS"] = "1"
import torch
torch.set_num_threads(1)
import gankit
run = gankit.train("dcgan", sys.argv[1], steps=8, save=False, progress=False,
                   overrides={"model.width": 8, "train.batch_size": 32, "data.stream": True,
                              "data.workers": 0, "train.sample_every": 1000,
                              "train.doctor": False})
assert run.trainer.step == 8
# VmHWM: this process's peak resident memory (ru_maxrss would keep the forking parent's peak
# across exec on Linux)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")] \
    if os.path.exists("/proc/self/status") else []
print(int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def make_prepared(out: Path, n: int, size: int = 64, seed: int = 0) -> Path:
    """A prepared set of ``n`` generated RGB images (smooth random blobs), written in chunks."""
    g = np.random.default_rng(seed)

    def batches():
        for i in range(0, n, 1000):
            k = min(1000, n - i)
            base = g.integers(0, 256, (k, 3, 8, 8), dtype=np.uint8)
            yield np.repeat(np.repeat(base, size // 8, 2), size // 8, 3), None

    write_prepared(out, batches(), size=size, channels=3, classes=None, source="generated")
    return out


def peak_rss_kib(data: Path) -> int:
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(data)], env=ENV,
                       capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return int(r.stdout.strip().splitlines()[-1])


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    small = make_prepared(tmp_path / "small", 2000)
    large = make_prepared(tmp_path / "large", 20000)
    rss_small, rss_large = peak_rss_kib(small), peak_rss_kib(large)
    print(f"peak RSS: 2,000 images {rss_small / 1024:.0f} MiB, 20,000 images "
          f"{rss_large / 1024:.0f} MiB")
    # the float32 images alone would be 94 MiB and 938 MiB
    assert rss_large <= 1.2 * rss_small, (rss_small, rss_large)
    assert os.path.getsize(next(large.glob("shard-*.npy"))) > 0
