"""Cost of the GAN doctor on the README's DCGAN run (configs/dcgan-mnist5k.yaml).

Two Trainers with the same networks, data and settings - one with the doctor's callback, one
without - take turns in one process (rounds of ``--steps`` steps each), so machine load affects
both alike. Each step is timed on its own (the loop is the Trainer's: ``train_step`` then every
callback's ``on_step_end``); the result is the median over rounds of the ratio of median step
times, doctor on / off. The median leaves out the doctor's periodic work (probes every
``train.doctor_every`` steps), which is timed separately and amortised over the full 1,500-step
schedule of the config:

    amortised = per-step overhead + (probes + memorisation checks + the one-time reference
                features and step-0 checkpoint) / (steps x step time)

On a shared machine the ratio of step times is noisy (a 1% effect within +-5% jitter), so the
per-step hook (gradient norms) and the rules run at log steps are also timed directly, in a loop
of their own, and reported as a fraction of the step time ("direct").

    python benchmarks/doctor_overhead.py [--rounds 7] [--steps 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from gankit.config import resolve_config
from gankit.data import load_data
from gankit.doctor import Doctor
from gankit.models import get_family
from gankit.rundir import RunDir
from gankit.train.callbacks import MetricsLogger
from gankit.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def build(doctor: bool, ds, run_dir: Path | None) -> tuple[Trainer, list]:
    raw = yaml.safe_load((ROOT / "configs" / "dcgan-mnist5k.yaml").read_text())
    raw["train"] = {**raw.get("train", {}), "progress": False, "doctor": doctor}
    cfg = resolve_config("dcgan", raw)
    torch.manual_seed(cfg.train.seed)
    model = get_family("dcgan")(cfg, ds.describe())
    total = cfg.train.steps
    cbs = [MetricsLogger(None, cfg.train.log_every, total, False)]
    if doctor:
        cbs.append(Doctor(run_dir, ds, total, show=False))
    tr = Trainer(cfg, model, ds, None, cbs)
    tr._cbs = cbs  # what fit() sets: the logger's records reach the doctor (on_log)
    tr._phase_cbs = [c for c in cbs if isinstance(c, Doctor)]
    return tr, cbs


def timed_steps(tr: Trainer, cbs: list, n: int) -> list[float]:
    out = []
    tr.model.train()
    for _ in range(n):
        t = time.perf_counter()
        tr.train_step()
        for cb in cbs:
            cb.on_step_end(tr)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "doctor_overhead.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_data("mnist5k")
    tmp = Path(tempfile.mkdtemp())
    on, cbs_on = build(True, ds, None)
    off, cbs_off = build(False, ds, None)
    for tr, cbs in ((on, cbs_on), (off, cbs_off)):
        for cb in cbs:
            cb.on_train_start(tr)
        timed_steps(tr, cbs, 3)  # warm-up (allocator, first kernels)
    doc = cbs_on[1]
    doc.every = 10**9  # probes are timed separately below, not inside the step medians
    ratios, t_on, t_off = [], [], []
    for _ in range(a.rounds):
        m_on = statistics.median(timed_steps(on, cbs_on, a.steps))
        m_off = statistics.median(timed_steps(off, cbs_off, a.steps))
        ratios.append(m_on / m_off)
        t_on.append(m_on)
        t_off.append(m_off)
    step_off = statistics.median(t_off)

    # periodic and one-time work of the doctor, timed on the trained-for-a-while generator
    def clock(fn, reps: int = 3) -> float:
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    # the per-step hook on its own (gradient norms of both networks, kept on the device), on the
    # gradients of the last step, and the rules run at each log step: exact, load-free numbers
    phases = {ph.name: ph for ph in on.phases}
    reps = 200
    t = time.perf_counter()
    for _ in range(reps):
        for ph in phases.values():
            doc.on_phase_end(on, ph)
    hook_s = (time.perf_counter() - t) / reps
    on.stats, on.counts = {}, {}
    t = time.perf_counter()
    for _ in range(reps):
        doc.tracker.update()
    rules_s = (time.perf_counter() - t) / reps
    probe_s = clock(lambda: doc.probe.run(on))
    t = time.perf_counter()
    doc.probe.mem_reference()
    mem_ref_s = time.perf_counter() - t
    probe_mem_s = clock(lambda: doc.probe.run(on, final=True))
    on.rundir = RunDir(tmp / "run")
    ckpt_s = clock(on.save_checkpoint, 1)

    cfg = on.cfg.train
    total = cfg.steps
    n_probes = total // cfg.doctor_every + (total % cfg.doctor_every != 0)
    n_mem = n_probes // 4 + 1  # every 4th probe and the last
    periodic = (n_probes - n_mem) * probe_s + n_mem * probe_mem_s + mem_ref_s + ckpt_s
    per_step = statistics.median(ratios) - 1
    amortised = per_step + periodic / (total * step_off)
    # the same from the directly timed parts (insensitive to machine load)
    direct = (hook_s + rules_s / cfg.log_every) / step_off
    direct_amortised = direct + periodic / (total * step_off)
    res = {
        "config": "configs/dcgan-mnist5k.yaml", "threads": a.threads, "rounds": a.rounds,
        "steps_per_round": a.steps, "device": str(on.device),
        "step_s_doctor_off": step_off, "step_s_doctor_on": statistics.median(t_on),
        "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "probe_s": probe_s, "probe_with_memorisation_s": probe_mem_s,
        "memorisation_reference_s": mem_ref_s, "step0_checkpoint_s": ckpt_s,
        "schedule_steps": total, "doctor_every": cfg.doctor_every, "probes": n_probes,
        "memorisation_checks": n_mem,
        "per_step_overhead": per_step, "amortised_overhead": amortised,
        "hook_s_per_step": hook_s, "rules_s_per_log_step": rules_s,
        "per_step_overhead_direct": direct, "amortised_overhead_direct": direct_amortised,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))
    print(f"doctor overhead: {per_step:+.2%} per step (median ratio {res['ratio_median']:.4f}), "
          f"{amortised:+.2%} amortised over the {total}-step schedule; from the directly timed "
          f"parts {direct:+.2%} per step, {direct_amortised:+.2%} amortised")


if __name__ == "__main__":
    main()
