"""FID matrix-square-root speed: our symmetric ``eigh`` form vs ``scipy.linalg.sqrtm``.

Builds two seeded, correlated 2048-d feature sets (5,000 rows each, the size of Inception pool3
features), computes their statistics once, then times ``gankit.metrics.fid_from_stats`` against
the straightforward form used by pytorch-fid (``sqrtm(s1 @ s2).real``), alternating the two so
machine load affects both alike. Prints median times, the speed ratio and the relative difference
of the two FID values, and writes them to ``benchmarks/results/fid_speed.json``.

For comparison only, it also times the same symmetric form with ``torch.linalg`` (MKL LAPACK in
the CPU wheel) instead of numpy (OpenBLAS LAPACK in the numpy wheel). ``--blas-threads`` caps
numpy's BLAS threads: on a busy shared machine OpenBLAS's spinning threads can slow ``eigh`` by
several times, so the JSON records the thread cap and the load average.

    python benchmarks/fid_speed.py [--n 5000] [--dim 2048] [--repeats 5] [--blas-threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits

from gankit.metrics import feature_stats, fid_from_stats


def sqrtm_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Reference: the general (non-symmetric) matrix square root, as pytorch-fid computes it."""
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def torch_eigh_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The same symmetric eigh form as ``fid_from_stats``, in float64 torch (comparison only)."""
    a, b = torch.from_numpy(s1), torch.from_numpy(s2)
    w, v = torch.linalg.eigh(a)
    sqrt_a = (v * w.clamp(min=0).sqrt()) @ v.T
    m = sqrt_a @ b @ sqrt_a
    tr = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum().item()
    diff = mu1 - mu2
    return max(float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr), 0.0)


def make_features(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated feature sets: a shared random mixing matrix, different means and scales,
    made non-negative like post-ReLU Inception features."""
    rng = np.random.default_rng(seed)
    rank = dim // 2
    mix = rng.standard_normal((rank, dim)) / np.sqrt(rank)
    real = np.maximum(rng.standard_normal((n, rank)) @ mix + 0.5 * rng.standard_normal((n, dim)), 0)
    fake_mix = mix + 0.1 * rng.standard_normal((rank, dim)) / np.sqrt(rank)
    fake = np.maximum(
        1.1 * rng.standard_normal((n, rank)) @ fake_mix + 0.5 * rng.standard_normal((n, dim)) + 0.05, 0
    )
    return real, fake


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blas-threads", type=int, default=None, help="cap numpy BLAS (and torch) threads")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "fid_speed.json")
    args = ap.parse_args()

    real, fake = make_features(args.n, args.dim, args.seed)
    stats = (*feature_stats(real), *feature_stats(fake))

    fns = {"eigh": fid_from_stats, "sqrtm": sqrtm_fid, "torch_eigh": torch_eigh_fid}
    times: dict[str, list[float]] = {k: [] for k in fns}
    values: dict[str, float] = {}
    if args.blas_threads:
        torch.set_num_threads(args.blas_threads)  # same cap for the torch comparison
    load_before = os.getloadavg()
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        for _ in range(args.repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                values[name] = fn(*stats)
                times[name].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "n": args.n,
        "dim": args.dim,
        "repeats": args.repeats,
        "median_s_eigh": med["eigh"],
        "median_s_sqrtm": med["sqrtm"],
        "speedup_sqrtm_over_eigh": med["sqrtm"] / med["eigh"],
        "fid_eigh": values["eigh"],
        "fid_sqrtm": values["sqrtm"],
        "rel_diff": abs(values["eigh"] - values["sqrtm"]) / abs(values["sqrtm"]),
        "median_s_torch_eigh": med["torch_eigh"],
        "rel_diff_torch_eigh": abs(values["torch_eigh"] - values["sqrtm"]) / abs(values["sqrtm"]),
        "times_s": times,
        "blas_threads": args.blas_threads,
        "torch_threads": torch.get_num_threads(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    print(f"FID {args.dim}-d, {args.n} samples per set, {args.repeats} alternating repeats")
    print(f"  eigh (gankit): median {med['eigh']:.3f} s   FID {values['eigh']:.8f}")
    print(f"  scipy sqrtm  : median {med['sqrtm']:.3f} s   FID {values['sqrtm']:.8f}")
    print(f"  speed ratio sqrtm/eigh: {result['speedup_sqrtm_over_eigh']:.2f}x")
    print(f"  relative difference of FID: {result['rel_diff']:.2e}")
    print(f"  (comparison) torch eigh: median {med['torch_eigh']:.3f} s, "
          f"rel. diff {result['rel_diff_torch_eigh']:.2e}")
    print(f"  BLAS threads: {args.blas_threads or 'default'}; load average "
          f"{load_before[0]:.1f} -> {result['loadavg_after'][0]:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
