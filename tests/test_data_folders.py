"""``gankit datasets NAME --to DIR`` writes built-in data in the layouts ``--data`` reads back."""

from __future__ import annotations

import torch
from helpers import run_cli

from gankit.cli import main
from gankit.data import load_data


def test_labelled_images_round_trip_as_class_folders(tmp_path):
    out = tmp_path / "digits"
    main(["datasets", "mnist5k", "--to", str(out), "--n", "120"])
    ref = load_data("mnist5k")
    back = load_data(str(out))
    assert len(back) == 120
    assert sorted(p.name for p in out.iterdir()) == [str(k) for k in range(10)]
    # same images up to the 8-bit quantisation, same labels (class folder names are the digits)
    order = torch.argsort(ref.y[:120], stable=True)
    assert torch.equal(back.y, ref.y[:120][order])
    assert (back.x - ref.x[:120][order]).abs().max() <= 1 / 127.5 + 1e-6


def test_paired_data_round_trips_through_paired_prefix(tmp_path):
    out = tmp_path / "pairs"
    main(["datasets", "edges2digits", "--to", str(out), "--n", "16"])
    ref = load_data("edges2digits")
    back = load_data(f"paired:{out}")
    assert back.pairing == "paired" and len(back) == 16
    assert (back.a - ref.a[:16]).abs().max() <= 1 / 127.5 + 1e-6
    assert (back.x - ref.x[:16]).abs().max() <= 1 / 127.5 + 1e-6


def test_bad_requests_exit_2_and_leave_folders_alone(tmp_path, capsys):
    keep = tmp_path / "full"
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    assert run_cli("datasets", "mnist5k", "--to", str(keep)) == 2
    assert [p.name for p in keep.iterdir()] == ["mine.txt"]
    assert run_cli("datasets", "ring8", "--to", str(tmp_path / "r")) == 2
    assert run_cli("datasets", "mnist5x", "--to", str(tmp_path / "q")) == 2
    assert run_cli("datasets", "mnist5k") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert "did you mean 'mnist5k'" in err[2]
    assert not (tmp_path / "r").exists() and not (tmp_path / "q").exists()
