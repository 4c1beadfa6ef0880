"""Latent tools: inverting a generator by optimisation (gankit.latent.invert, gankit invert)."""

import csv

import numpy as np
import pytest
import torch
from helpers import cli_output
from test_core import tiny_train

import gankit
from gankit.errors import ConfigError
from gankit.latent import invert


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import make_tiny_images

    tmp = tmp_path_factory.mktemp("latent")
    ds = make_tiny_images()
    return {"dcgan": tiny_train("dcgan", ds, tmp, **{"model.width": 8}).run_dir,
            "cgan": tiny_train("cgan", ds, tmp, **{"model.width": 8}).run_dir}


def _varied(g):
    """The tiny run's generator barely varies after 2 steps: give its weights (and its EMA
    copy's) a larger spread so that different latents make clearly different images."""
    torch.manual_seed(0)
    for net in (g.model.G, *g.nets.values()):
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
                torch.nn.init.normal_(m.weight, 0.0, 0.3)
    return g


def test_inversion_reproduces_images_the_generator_can_make(runs):
    g = _varied(gankit.load(runs["dcgan"]))
    target = g.sample(6, seed=123)  # in the generator's range: an exact latent exists
    res = invert(g, target, steps=150, restarts=2, seed=0)
    start = (g.sample(6, seed=0) - target).pow(2).flatten(1).mean(1)  # a random latent's error
    assert res["z"].shape == (6, g.model.latent_dim) and res["images"].shape == target.shape
    assert torch.allclose(res["mse"], (res["images"] - target).pow(2).flatten(1).mean(1),
                          atol=1e-6)
    assert res["mse"].mean() < 0.25 * start.mean()
    # more restarts from the same seed include the first start: never worse
    one = invert(g, target, steps=20, restarts=1, seed=0)
    three = invert(g, target, steps=20, restarts=3, seed=0)
    assert (three["mse"] <= one["mse"] + 1e-7).all()
    # the generator is left as it was: trainable, weights untouched
    assert all(p.requires_grad for p in g.model.parameters())
    assert torch.equal(g.sample(2, seed=5), g.sample(2, seed=5))


def test_conditional_inversion_tries_every_class_or_the_given_one(runs):
    g = gankit.load(runs["cgan"])
    target = g.sample(4, seed=7, labels=[0, 1, 2, 1])
    res = invert(g, target, steps=40, restarts=1, seed=0)
    assert res["labels"].shape == (4,) and set(res["labels"].tolist()) <= {0, 1, 2}
    fixed = invert(g, target, labels=2, steps=40, restarts=1, seed=0)
    assert (fixed["labels"] == 2).all()
    assert (res["mse"] <= fixed["mse"] + 1e-7).all()  # the best class is at least as good
    with pytest.raises(ConfigError, match="unconditional"):
        invert(gankit.load(runs["dcgan"]), target, labels=1, steps=1)
    with pytest.raises(ConfigError, match="cannot be inverted"):
        invert(g, torch.zeros(2, 1, 8, 8), steps=1)


def test_invert_cli_writes_reconstructions_latents_and_errors(runs, tmp_path, capsys):
    g = gankit.load(runs["dcgan"])
    np.save(tmp_path / "x.npy", g.sample(3, seed=9).numpy())
    out = tmp_path / "inv"
    code, _, err = cli_output(capsys, "invert", runs["dcgan"], "--input", tmp_path / "x.npy",
                              "--out", out, "--steps", "10", "--restarts", "1")
    assert code == 0, err
    assert np.load(out / "latents.npy").shape == (3, g.model.latent_dim)
    rows = list(csv.DictReader((out / "inversion.csv").read_text().splitlines()))
    assert [r["name"] for r in rows] == ["00000", "00001", "00002"]
    assert len(list(out.glob("*.png"))) == 3
    code, _, err = cli_output(capsys, "invert", runs["dcgan"], "--input", tmp_path / "x.npy",
                              "--out", tmp_path / "o2", "--labels", "1")
    assert code == 2 and "unconditional" in err[-1]
