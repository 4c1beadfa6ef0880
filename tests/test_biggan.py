"""BigGAN (Brock et al. 2019): hierarchical latents, the shared embedding, orthogonal init and
regularisation, the paper's defaults, the truncation sweep, CLI and exact resume."""

import json

import numpy as np
import pytest
import torch
from conftest import make_tiny_images
from helpers import cli_output, run_cli
from test_resume_ddp import assert_identical, final_weights, killed_and_resumed, sets

from gankit.config import resolve_config
from gankit.errors import ConfigError
from gankit.models.biggan import BigGAN, split_latent
from gankit.nn.cbn import ConditionalBatchNorm2d


def _build(ds, **model):
    cfg = resolve_config("biggan", {"model": {"g_width": 8, "d_width": 8, "latent_dim": 12,
                                              "embed_dim": 4, **model}})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return BigGAN(cfg, ds.describe())


def test_split_latent_gives_one_chunk_per_resolution():
    assert split_latent(128, 4) == [32, 32, 32, 32]
    assert split_latent(120, 6) == [20] * 6
    assert split_latent(13, 3) == [5, 4, 4] and sum(split_latent(13, 3)) == 13
    with pytest.raises(ConfigError, match="cannot be split"):
        split_latent(2, 3)


def test_hierarchical_latents_and_one_shared_embedding():
    m = _build(make_tiny_images())  # 16 px: projection to 4x4 and 2 blocks -> 3 chunks of 4
    G = m.G
    assert G.chunks == [4, 4, 4]
    assert sum(isinstance(x, torch.nn.Embedding) for x in G.modules()) == 1  # shared
    cbns = [x for x in G.modules() if isinstance(x, ConditionalBatchNorm2d)]
    assert len(cbns) == 4 and all(c.gain.in_features == 4 + 4 for c in cbns)  # embed + chunk
    # each chunk reaches the image, and block i's conditional BN sees only chunk i + 1
    with torch.no_grad():
        for c in cbns:
            torch.nn.init.normal_(c.gain.weight, std=0.5)
    G.eval()
    z = torch.randn(3, 12, requires_grad=True)
    G(z, torch.tensor([0, 1, 2])).sum().backward()
    for a, b in ((0, 4), (4, 8), (8, 12)):
        assert z.grad[:, a:b].abs().sum() > 0
    seen = []
    hook = cbns[0].register_forward_hook(lambda mod, inp, out: seen.append(inp[1].clone()))
    z2 = torch.randn(1, 12)
    G(z2, torch.tensor([2]))
    hook.remove()
    assert torch.equal(seen[0][:, 4:], z2[:, 4:8])  # block 0: [embedding, chunk 1]
    assert torch.equal(seen[0][:, :4], G.embed.weight[2:3])


def test_orthogonal_init_and_the_papers_defaults():
    m = _build(make_tiny_images())
    w = m.G.blocks[0].c2.parametrizations.weight.original.flatten(1)  # [8, 72]: rows orthonormal
    assert torch.allclose(w @ w.T, torch.eye(8), atol=1e-5)
    cfg = resolve_config("biggan", {})
    o = cfg.optim
    assert cfg.loss.name == "hinge" and cfg.tricks.orthogonal_reg == 1e-4
    assert (o.lr_g, o.lr_d, tuple(o.betas_g), o.n_critic, cfg.train.ema) == \
        (5e-5, 2e-4, (0.0, 0.999), 2, True)
    assert cfg.model["latent_dim"] == 128 and cfg.model["embed_dim"] == 128


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("biggan") / "run"
    code = run_cli("train", "biggan", "--data", "mnist5k", "--image-size", "16", "--steps", "3",
                   "--batch-size", "8", "--no-progress", "--out", out, *sets("biggan"))
    assert code == 0
    return out


def test_training_logs_the_orthogonal_penalty(tiny_run):
    rec = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert rec["loss/G/ortho"] > 0


def test_truncation_sweep_uses_the_same_latents_at_every_threshold(tiny_run, tmp_path, capsys):
    import gankit
    from gankit.latent import truncation_sweep

    res = truncation_sweep(tiny_run, [None, 1.0, 0.25], n=40, metrics=["pr"])
    assert [r["threshold"] for r in res["rows"]] == [None, 1.0, 0.25]
    assert all(0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 for r in res["rows"])
    assert res["protocol"]["same_latents"] and res["protocol"]["n"] == 40
    g = gankit.load(tiny_run)
    # a threshold above every |z| changes nothing: the latents are the untruncated ones
    assert torch.equal(g.sample(5, seed=0, truncation=100.0), g.sample(5, seed=0))
    small = g.sample(200, seed=0, truncation=0.25)
    assert not torch.equal(small[:5], g.sample(5, seed=0))
    code, _, err = cli_output(capsys, "truncation", tiny_run, "--n", "30", "--thresholds",
                                "none,0.5", "--metrics", "pr", "--out", tmp_path / "sweep")
    assert code == 0, err
    saved = json.loads((tmp_path / "sweep" / "truncation.json").read_text())
    assert len(saved["rows"]) == 2 and (tmp_path / "sweep" / "truncation.png").stat().st_size
    for bad in ("0", "x", "-1"):
        code, _, err = cli_output(capsys, "truncation", tiny_run, "--thresholds", bad,
                                  "--out", tmp_path / "bad")
        assert code == 2 and len(err) == 1, err


def test_sample_cli_with_labels_and_truncation(tiny_run, tmp_path):
    assert run_cli("sample", tiny_run, "--n", "6", "--labels", "2", "--truncation", "0.5",
                   "--out", tmp_path / "s.npy") == 0
    x = np.load(tmp_path / "s.npy")
    assert x.shape == (6, 1, 16, 16)


def test_resume_after_sigkill_is_bit_identical(tmp_path):
    ds = make_tiny_images()
    np.savez(tmp_path / "tiny.npz", x=ds.x.numpy(), y=ds.y.numpy())
    args = ["biggan", "--data", str(tmp_path / "tiny.npz"), "--steps", "24", "--batch-size", "4",
            "--no-progress", "--set", "train.ckpt_every=4", "--set", "train.log_every=2",
            "--set", "train.keep_ckpts=10", *sets("biggan")]
    run, ref = killed_and_resumed(args, tmp_path)
    a, b = final_weights(run), final_weights(ref)
    assert any(k.startswith("G.embed") for k in a)
    assert_identical(a, b)
