"""CPU thread counts that share the machine gracefully.

Two defaults make concurrent CPU trainings slow each other down far more than their share of
the cores would: PyTorch starts as many OpenMP threads as the machine has cores, whatever the
process may actually use (a CPU affinity mask set by ``taskset`` or a batch scheduler, a cgroup
CPU quota in a container), and OpenMP worker threads *spin* (busy-wait) between parallel
regions, burning cores that another process needs. On a 2-core machine two DCGAN trainings
started together ran 9.4x slower each (benchmarks/shared_machine.py).

This module fixes both:

* :func:`openmp_env` sets ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep instead of
  spinning; GNU libgomp and Intel's runtime both read it), ``GOMP_SPINCOUNT=0`` and
  ``KMP_BLOCKTIME=0`` with :func:`os.environ.setdefault` (an explicit user setting wins). The
  OpenMP runtime reads them once, when it is loaded with torch, so the ``gankit`` command calls
  this before anything imports torch (``gankit/__init__.py``).
* :func:`choose_threads` picks the intra-op thread count from the CPUs the process may use:
  ``os.sched_getaffinity`` and the cgroup v2 ``cpu.max`` / v1 ``cpu.cfs_quota_us`` quota,
  never more than torch's current setting; ``train.threads`` or ``OMP_NUM_THREADS`` set by the
  user win. The choice is printed in the start-up summary.

The choice depends only on the machine's configuration, never on its momentary load, so a run
resumed on the same machine uses the same thread count (CPU results can depend on it).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

#: set (if unset) before torch loads its OpenMP runtime: idle worker threads sleep at once
OPENMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0"}

#: the user's OMP_NUM_THREADS as it was before gankit touched the environment
_USER_OMP: str | None = os.environ.get("OMP_NUM_THREADS")


def openmp_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Set the OpenMP wait policy variables that are not set yet; returns those it set.

    Effective only before torch (its OpenMP runtime) is first imported.
    """
    env = os.environ if environ is None else environ
    done = {}
    for k, v in OPENMP_ENV.items():
        if k not in env:
            env[k] = v
            done[k] = v
    return done


def affinity_cpus() -> int | None:
    """The number of CPUs the process may run on (its affinity mask), if the OS says."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _v2_quota(text: str | None) -> float | None:
    """``cpu.max`` of cgroup v2: ``"max 100000"`` (no limit) or ``"QUOTA PERIOD"``."""
    if not text:
        return None
    parts = text.split()
    if len(parts) < 1 or parts[0] == "max":
        return None
    try:
        quota = int(parts[0])
        period = int(parts[1]) if len(parts) > 1 else 100000
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(quota: str | None, period: str | None) -> float | None:
    """cgroup v1: ``cpu.cfs_quota_us`` (-1: no limit) over ``cpu.cfs_period_us``."""
    try:
        q, p = int(quota or ""), int(period or "")
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_quota(root: str | Path = "/sys/fs/cgroup",
                     self_cgroup: str | Path = "/proc/self/cgroup") -> float | None:
    """The CPU quota (in CPUs, possibly fractional) of the process's cgroup, or ``None``.

    cgroup v2: the smallest ``cpu.max`` from the process's group up to the root of ``root``.
    cgroup v1: ``cpu.cfs_quota_us / cpu.cfs_period_us`` of the ``cpu`` controller's group (or,
    in a container whose group path is not mounted, of the mount's root).
    """
    root = Path(root)
    lines = (_read(Path(self_cgroup)) or "").splitlines()
    v2_path, v1_path = None, None
    for ln in lines:
        parts = ln.split(":", 2)
        if len(parts) != 3:
            continue
        hid, ctrls, path = parts
        if hid == "0" and ctrls == "":
            v2_path = path
        elif "cpu" in ctrls.split(","):
            v1_path = (ctrls, path)
    quotas: list[float] = []
    if (root / "cpu.max").exists() or (v2_path is not None and v1_path is None):
        # v2 (unified): walk from the group up to the mount root
        rel = (v2_path or "/").strip("/")
        d = root / rel if rel else root
        while True:
            q = _v2_quota(_read(d / "cpu.max"))
            if q is not None:
                quotas.append(q)
            if d == root or root not in d.parents:
                break
            d = d.parent
    else:
        candidates = []
        for name in ([v1_path[0]] if v1_path else []) + ["cpu,cpuacct", "cpu"]:
            base = root / name
            if v1_path:
                rel = v1_path[1].strip("/")
                candidates.append(base / rel if rel else base)
            candidates.append(base)
        for d in candidates:
            if (d / "cpu.cfs_quota_us").exists():
                q = _v1_quota(_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us"))
                if q is not None:
                    quotas.append(q)
                break
    return min(quotas) if quotas else None


def available_cpus(affinity: int | None = None, quota: float | None = None) -> int:
    """CPUs the process can really use: its affinity mask, capped by the cgroup quota
    (rounded down, at least 1)."""
    n = affinity if affinity is not None else (os.cpu_count() or 1)
    if quota is not None:
        n = min(n, max(1, math.floor(quota)))
    return max(1, n)


@dataclass
class ThreadChoice:
    """The intra-op thread count chosen for a run and why."""

    threads: int
    source: str  # train.threads, OMP_NUM_THREADS or available CPUs
    affinity: int | None
    quota: float | None
    available: int

    def describe(self) -> str:
        parts = [f"affinity {self.affinity}" if self.affinity is not None else None,
                 f"cgroup quota {self.quota:g}" if self.quota is not None else None]
        why = ", ".join(p for p in parts if p) or "cpu_count"
        wait = os.environ.get("OMP_WAIT_POLICY", "default")
        return (f"{self.threads} ({self.source}; {self.available} CPUs available: {why}; "
                f"OMP_WAIT_POLICY={wait})")


def choose_threads(setting: int | None = None, current: int | None = None,
                   environ: dict[str, str] | None = None, affinity: int | None = None,
                   quota: float | None = None, probe: bool = True,
                   processes: int = 1) -> ThreadChoice:
    """The intra-op thread count for a run.

    ``setting`` (``train.threads``) wins, then a user's ``OMP_NUM_THREADS``; otherwise the CPUs
    available to the process (:func:`available_cpus`) divided among the ``processes`` of one
    data-parallel job on this machine, never more than ``current`` (torch's setting, which a
    caller may have lowered with ``torch.set_num_threads``). With ``probe`` the affinity and
    quota are read from the system unless given.
    """
    if probe:
        affinity = affinity if affinity is not None else affinity_cpus()
        quota = quota if quota is not None else cgroup_cpu_quota()
    avail = available_cpus(affinity, quota)
    env = os.environ if environ is None else environ
    user_omp = env.get("OMP_NUM_THREADS") if environ is not None else _USER_OMP
    if setting is not None:
        return ThreadChoice(int(setting), "train.threads", affinity, quota, avail)
    if user_omp:
        try:
            n = int(user_omp.split(",")[0])
        except ValueError:
            n = 0
        if n > 0:
            return ThreadChoice(n, "OMP_NUM_THREADS", affinity, quota, avail)
    n = max(1, avail // max(1, processes))
    n = n if current is None else min(current, n)
    src = "available CPUs" + (f" / {processes} processes" if processes > 1 else "")
    return ThreadChoice(max(1, n), src, affinity, quota, avail)


def apply_threads(setting: int | None = None, world: int = 1) -> ThreadChoice:
    """Choose (:func:`choose_threads`) and set torch's intra-op thread count; ``world``: the
    processes of a data-parallel job (those on this machine, ``LOCAL_WORLD_SIZE``, share it)."""
    import torch

    local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if world > 1 else 1
    choice = choose_threads(setting, current=torch.get_num_threads(), processes=local)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice
