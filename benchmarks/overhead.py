"""Trainer overhead: gankit's Trainer vs a minimal hand-written PyTorch loop.

Both train the same DCGAN networks (gankit.models.dcgan) on the same data (MNIST-5k, held as one
tensor) with the same batch size, loss (non-saturating) and optimizers (Adam 2e-4, beta1 0.5). The
hand loop is the classic DCGAN loop (one G forward reused for the D and G steps, as in the PyTorch
examples). Rounds alternate between the two in one process so machine load affects both alike;
the result is the median over rounds of the images/s ratio. Two hand loops: the PyTorch-example
one (D's weight gradients are computed, unused, in the G step) and a careful one that freezes D
in the G step as the Trainer does; the second is the like-for-like comparison. EMA is off in the
Trainer here (the hand loops have none); a separate figure reports the cost of EMA.

Also reports achieved GFLOP/s (FLOPs of one step counted by torch.utils.flop_counter) against the
machine's measured float32 matmul peak.

``--model pix2pix`` measures the image-to-image game the same way: gankit's ``pix2pix``
(U-Net G, 70x70 PatchGAN D, edges2digits 32x32 pairs) against the hand-written loop of the
authors' reference code (``pix2pix_model.py``): one G forward per step, D on the channel
concatenation of (input, target) and (input, fake.detach()) with its loss halved, then the G step
that reuses the same fake with D frozen, non-saturating loss + 100 x L1; Adam 2e-4 (0.5, 0.999)
for both, the same batch. Its numbers go under the ``pix2pix`` key of the same JSON; each mode
keeps the other's numbers.

    python benchmarks/overhead.py [--rounds 7] [--steps 15] [--width 64] [--batch 64]
    python benchmarks/overhead.py --model pix2pix [--rounds 7] [--steps 10] [--batch 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from gankit.config import resolve_config
from gankit.data import load_data
from gankit.models import get_family
from gankit.train.callbacks import MetricsLogger
from gankit.train.trainer import Trainer


def build(width: int, seed: int = 0, model: str = "dcgan", data: str = "mnist5k"):
    """The config, data and a seeded model of the benchmarked family (EMA off: no hand loop has
    one)."""
    cfg = resolve_config(model, {"model": {"width": width},
                                 "train": {"ema": False, "log_every": 50, "progress": False}})
    ds = load_data(data)
    torch.manual_seed(seed)
    return cfg, ds, get_family(model)(cfg, ds.describe())


class HandLoop:
    """The minimal loop a PyTorch user would write for these networks."""

    def __init__(self, model, x: torch.Tensor, batch: int, seed: int = 0,
                 freeze_d: bool = False) -> None:
        self.G, self.D, self.x, self.batch = model.G, model.D, x, batch
        self.freeze_d = freeze_d  # the careful variant: no D weight gradients in the G step
        self.optG = torch.optim.Adam(self.G.parameters(), 2e-4, betas=(0.5, 0.999))
        self.optD = torch.optim.Adam(self.D.parameters(), 2e-4, betas=(0.5, 0.999))
        self.gen = torch.Generator().manual_seed(seed)
        self.latent = model.latent_dim
        self.perm, self.pos = torch.randperm(len(x), generator=self.gen), 0

    def step(self) -> None:
        if self.pos + self.batch > len(self.x):
            self.perm, self.pos = torch.randperm(len(self.x), generator=self.gen), 0
        real = self.x[self.perm[self.pos:self.pos + self.batch]]
        self.pos += self.batch
        fake = self.G(torch.randn(self.batch, self.latent, generator=self.gen))
        self.optD.zero_grad(set_to_none=True)
        loss_d = F.softplus(-self.D(real)).mean() + F.softplus(self.D(fake.detach())).mean()
        loss_d.backward()
        self.optD.step()
        self.optG.zero_grad(set_to_none=True)
        if self.freeze_d:
            self.D.requires_grad_(False)
        loss_g = F.softplus(-self.D(fake)).mean()
        loss_g.backward()
        if self.freeze_d:
            self.D.requires_grad_(True)
        self.optG.step()


def build_pix2pix(width: int, seed: int = 0):
    return build(width, seed, "pix2pix", "edges2digits")


class Pix2PixHandLoop:
    """The loop of the pix2pix authors' PyTorch code (``optimize_parameters``) for these networks:
    one ``fake = G(a)`` per step; D on ``cat([a, b])`` and ``cat([a, fake.detach()])``, loss
    halved; G's step reuses ``fake`` with D frozen (``set_requires_grad(netD, False)``):
    non-saturating loss on every patch + lambda x L1."""

    def __init__(self, model, a: torch.Tensor, b: torch.Tensor, batch: int, seed: int = 0,
                 lambda_l1: float = 100.0) -> None:
        self.G, self.D, self.a, self.b, self.batch = model.G, model.D, a, b, batch
        self.lam = lambda_l1
        self.optG = torch.optim.Adam(self.G.parameters(), 2e-4, betas=(0.5, 0.999))
        self.optD = torch.optim.Adam(self.D.parameters(), 2e-4, betas=(0.5, 0.999))
        self.gen = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(len(a), generator=self.gen), 0

    def step(self) -> None:
        if self.pos + self.batch > len(self.a):
            self.perm, self.pos = torch.randperm(len(self.a), generator=self.gen), 0
        idx = self.perm[self.pos:self.pos + self.batch]
        self.pos += self.batch
        a, b = self.a[idx], self.b[idx]  # [B, 1, 32, 32] each
        fake = self.G(a)
        self.optD.zero_grad(set_to_none=True)
        l_real = self.D(torch.cat([a, b], 1))  # [B, 1, 2, 2] patch logits
        l_fake = self.D(torch.cat([a, fake.detach()], 1))
        loss_d = 0.5 * (F.softplus(-l_real).mean() + F.softplus(l_fake).mean())
        loss_d.backward()
        self.optD.step()
        self.optG.zero_grad(set_to_none=True)
        self.D.requires_grad_(False)
        loss_g = F.softplus(-self.D(torch.cat([a, fake], 1))).mean() \
            + self.lam * (fake - b).abs().mean()
        loss_g.backward()
        self.D.requires_grad_(True)
        self.optG.step()


def matmul_peak(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def step_flops(loop: HandLoop) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        loop.step()
    return fc.get_total_flops()


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=("dcgan", "pix2pix"), default="dcgan")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "overhead.json")
    return ap.parse_args()


def write_result(out: Path, model: str, res: dict) -> None:
    """DCGAN's numbers are the top level of the JSON, pix2pix's its ``pix2pix`` entry; writing
    one keeps the other."""
    old = json.loads(out.read_text()) if out.exists() else {}
    if model == "dcgan":
        new = {**res, **{k: old[k] for k in ("pix2pix",) if k in old}}
    else:
        new = {**old, model: res}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(new, indent=2) + "\n")


def main() -> None:
    a = parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    res = run_pix2pix(a) if a.model == "pix2pix" else run_dcgan(a)
    write_result(a.out, a.model, res)


def run_pix2pix(a: argparse.Namespace) -> dict:
    cfg, ds, m_ours = build_pix2pix(a.width)
    cfg.train.batch_size = a.batch
    m_hand = build_pix2pix(a.width)[2]
    trainer = Trainer(cfg, m_ours, ds, None, [MetricsLogger(None, 50, 10**9, False)])
    hand = Pix2PixHandLoop(m_hand, ds.a, ds.x, a.batch)
    flops = step_flops(Pix2PixHandLoop(build_pix2pix(a.width)[2], ds.a, ds.x, a.batch))

    def time_ours() -> float:
        t = time.perf_counter()
        trainer.fit(trainer.step + a.steps)
        return a.steps * a.batch / (time.perf_counter() - t)

    def time_hand() -> float:
        t = time.perf_counter()
        for _ in range(a.steps):
            hand.step()
        return a.steps * a.batch / (time.perf_counter() - t)

    time_ours(), time_hand()  # warm-up
    ours, ref, ratios = [], [], []
    for r in range(a.rounds):
        # alternate the order so drift in machine load favours no side
        if r % 2:
            h, o = time_hand(), time_ours()
        else:
            o, h = time_ours(), time_hand()
        ours.append(o), ref.append(h), ratios.append(o / h)
        print(f"round {r}: trainer {o:7.1f} img/s | hand loop (reference pix2pix) {h:7.1f} "
              f"(ratio {o / h:.3f})", flush=True)
    peak = matmul_peak()
    med = statistics.median(ours)
    res = {
        "model": "pix2pix", "data": "edges2digits", "device": "cpu",
        "threads": torch.get_num_threads(), "width": a.width, "batch": a.batch,
        "resolution": ds.resolution, "n_layers": m_ours.p.n_layers, "rounds": a.rounds,
        "steps_per_round": a.steps, "ema": False,
        "trainer_img_s_median": med, "hand_img_s_median": statistics.median(ref),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios), "ratios": ratios,
        "gflop_per_step": flops / 1e9,
        "achieved_gflop_s": flops / 1e9 * med / a.batch,
        "matmul_peak_gflop_s": peak,
    }
    res["utilisation"] = res["achieved_gflop_s"] / peak
    print(f"\npix2pix: median images/s ratio trainer / hand loop = {res['ratio_median']:.3f} "
          f"(rounds {res['ratio_min']:.3f}-{res['ratio_max']:.3f})")
    print(f"{res['gflop_per_step']:.2f} GFLOP/step -> {res['achieved_gflop_s']:.1f} GFLOP/s "
          f"achieved vs {peak:.1f} GFLOP/s fp32 matmul peak ({100 * res['utilisation']:.0f}%)")
    return res


def run_dcgan(a: argparse.Namespace) -> dict:
    cfg, ds, m_ours = build(a.width)
    cfg.train.batch_size = a.batch
    _, _, m_hand = build(a.width)
    _, _, m_ema = build(a.width)
    _, _, m_frozen = build(a.width)
    trainer = Trainer(cfg, m_ours, ds, None, [MetricsLogger(None, 50, 10**9, False)])
    cfg_ema = cfg.model_copy(deep=True)
    cfg_ema.train.ema = True
    trainer_ema = Trainer(cfg_ema, m_ema, ds, None, [MetricsLogger(None, 50, 10**9, False)])
    hand = HandLoop(m_hand, ds.x, a.batch)
    hand_frozen = HandLoop(m_frozen, ds.x, a.batch, freeze_d=True)
    flops = step_flops(HandLoop(build(a.width)[2], ds.x, a.batch, freeze_d=True))  # the work the Trainer does

    def time_ours(tr: Trainer) -> float:
        t = time.perf_counter()
        tr.fit(tr.step + a.steps)
        return a.steps * a.batch / (time.perf_counter() - t)

    def time_hand(loop: HandLoop) -> float:
        t = time.perf_counter()
        for _ in range(a.steps):
            loop.step()
        return a.steps * a.batch / (time.perf_counter() - t)

    time_ours(trainer), time_hand(hand), time_hand(hand_frozen), time_ours(trainer_ema)  # warm-up
    ours, ref, reff, ema, ratios, ratios_f, ema_ratios = [], [], [], [], [], [], []
    for r in range(a.rounds):
        # rotate the order so drift in machine load favours no side
        fns = [lambda: time_ours(trainer), lambda: time_hand(hand), lambda: time_hand(hand_frozen)]
        res = {}
        for i in range(3):
            j = (i + r) % 3
            res[j] = fns[j]()
        o, h, hf = res[0], res[1], res[2]
        e = time_ours(trainer_ema)
        ours.append(o), ref.append(h), reff.append(hf), ema.append(e)
        ratios.append(o / h), ratios_f.append(o / hf), ema_ratios.append(e / o)
        print(f"round {r}: trainer {o:7.1f} img/s | hand loop {h:7.1f} (ratio {o / h:.3f}) | "
              f"hand loop, D frozen in G step {hf:7.1f} (ratio {o / hf:.3f}) | "
              f"trainer+EMA {e:7.1f}", flush=True)
    peak = matmul_peak()
    med = statistics.median(ours)
    res = {
        "device": "cpu", "threads": torch.get_num_threads(), "width": a.width, "batch": a.batch,
        "resolution": ds.resolution, "rounds": a.rounds, "steps_per_round": a.steps,
        "trainer_img_s_median": med, "hand_img_s_median": statistics.median(ref),
        "hand_frozen_img_s_median": statistics.median(reff),
        "trainer_ema_img_s_median": statistics.median(ema),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_vs_frozen_median": statistics.median(ratios_f), "ratio_vs_frozen_min": min(ratios_f),
        "ema_cost_ratio_median": statistics.median(ema_ratios), "ratios": ratios,
        "ratios_vs_frozen": ratios_f,
        "gflop_per_step": flops / 1e9,
        "achieved_gflop_s": flops / 1e9 * med / a.batch,
        "matmul_peak_gflop_s": peak,
    }
    res["utilisation"] = res["achieved_gflop_s"] / peak
    print(f"\nmedian images/s ratio trainer / hand loop = {res['ratio_median']:.3f}; "
          f"trainer / hand loop with D frozen in the G step = {res['ratio_vs_frozen_median']:.3f}; "
          f"trainer+EMA / trainer = {res['ema_cost_ratio_median']:.3f}")
    print(f"{res['gflop_per_step']:.2f} GFLOP/step -> {res['achieved_gflop_s']:.1f} GFLOP/s achieved "
          f"vs {peak:.1f} GFLOP/s fp32 matmul peak ({100 * res['utilisation']:.0f}%)")
    return res


if __name__ == "__main__":
    main()
