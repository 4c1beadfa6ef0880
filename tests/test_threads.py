"""Thread counts from the CPUs available to the process (gankit.threads), with fake cgroup files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gankit import threads as T


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_quota_is_the_smallest_on_the_path(tmp_path):
    root = tmp_path / "cg"
    write(root / "cpu.max", "max 100000\n")
    write(root / "user.slice" / "cpu.max", "300000 100000\n")  # 3 CPUs
    write(root / "user.slice" / "job" / "cpu.max", "150000 100000\n")  # 1.5 CPUs
    me = tmp_path / "self_cgroup"
    write(me, "0::/user.slice/job\n")
    assert T.cgroup_cpu_quota(root, me) == pytest.approx(1.5)
    # a parent's limit binds when it is the smaller one
    write(root / "user.slice" / "cpu.max", "100000 100000\n")
    assert T.cgroup_cpu_quota(root, me) == pytest.approx(1.0)


def test_cgroup_v2_without_limit_and_default_period(tmp_path):
    root = tmp_path / "cg"
    write(root / "cpu.max", "max 100000\n")
    me = tmp_path / "self_cgroup"
    write(me, "0::/\n")
    assert T.cgroup_cpu_quota(root, me) is None
    write(root / "cpu.max", "200000\n")  # period omitted: 100000
    assert T.cgroup_cpu_quota(root, me) == pytest.approx(2.0)
    write(root / "cpu.max", "garbage here\n")
    assert T.cgroup_cpu_quota(root, me) is None


def test_cgroup_v1_quota(tmp_path):
    root = tmp_path / "cg"
    me = tmp_path / "self_cgroup"
    write(me, "4:memory:/docker/abc\n3:cpu,cpuacct:/docker/abc\n")
    grp = root / "cpu,cpuacct" / "docker" / "abc"
    write(grp / "cpu.cfs_quota_us", "250000\n")
    write(grp / "cpu.cfs_period_us", "100000\n")
    assert T.cgroup_cpu_quota(root, me) == pytest.approx(2.5)
    write(grp / "cpu.cfs_quota_us", "-1\n")  # no limit
    assert T.cgroup_cpu_quota(root, me) is None
    # in a container the group's path is often not mounted: the mount root's files count
    write(me, "3:cpu,cpuacct:/docker/elsewhere\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_quota_us", "100000\n")
    write(root / "cpu,cpuacct" / "cpu.cfs_period_us", "100000\n")
    assert T.cgroup_cpu_quota(root, me) == pytest.approx(1.0)


def test_no_cgroup_files_means_no_quota(tmp_path):
    assert T.cgroup_cpu_quota(tmp_path / "none", tmp_path / "missing") is None


def test_available_cpus_caps_affinity_by_quota():
    assert T.available_cpus(8, None) == 8
    assert T.available_cpus(8, 2.5) == 2  # rounded down: 3 threads would be throttled
    assert T.available_cpus(8, 0.5) == 1  # at least one
    assert T.available_cpus(2, 16.0) == 2


def test_choice_order_setting_then_env_then_available():
    kw = {"affinity": 4, "quota": 3.0, "probe": False}
    c = T.choose_threads(2, current=8, environ={"OMP_NUM_THREADS": "6"}, **kw)
    assert (c.threads, c.source) == (2, "train.threads")
    c = T.choose_threads(None, current=8, environ={"OMP_NUM_THREADS": "6"}, **kw)
    assert (c.threads, c.source) == (6, "OMP_NUM_THREADS")
    c = T.choose_threads(None, current=8, environ={}, **kw)
    assert (c.threads, c.source, c.available) == (3, "available CPUs", 3)
    # never more than torch's current setting (a caller's torch.set_num_threads(1) stands)
    c = T.choose_threads(None, current=1, environ={}, **kw)
    assert c.threads == 1
    assert "3 CPUs available" in c.describe() and "cgroup quota 3" in c.describe()
    # the processes of one data-parallel job on this machine share the CPUs
    c = T.choose_threads(None, current=8, environ={}, processes=2, **kw)
    assert (c.threads, c.source) == (1, "available CPUs / 2 processes")


def test_openmp_env_respects_user_values():
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    done = T.openmp_env(env)
    assert env["OMP_WAIT_POLICY"] == "ACTIVE" and "OMP_WAIT_POLICY" not in done
    assert env["GOMP_SPINCOUNT"] == "0" and env["KMP_BLOCKTIME"] == "0"


def test_importing_gankit_sets_the_wait_policy_before_torch_loads():
    """The gankit command's package import sets OMP_WAIT_POLICY before torch is imported (an
    import hook prints the variable at the moment torch's import starts)."""
    code = (
        "import os, sys\n"
        "class Spy:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch':\n"
        "            print('torch', os.environ.get('OMP_WAIT_POLICY'),\n"
        "                  os.environ.get('GOMP_SPINCOUNT'), flush=True)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Spy())\n"
        "import gankit.cli\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.stdout.splitlines()[0].split() == ["torch", "PASSIVE", "0"], out.stderr
    # a user's own setting wins
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.stdout.splitlines()[0].split()[:2] == ["torch", "ACTIVE"], out.stderr


def test_trainer_applies_train_threads(tiny_images, tmp_path):
    import gankit

    before = torch.get_num_threads()
    try:
        run = gankit.train("dcgan", tiny_images, steps=1, batch_size=8, save=False,
                           progress=False, overrides={"model.width": 8, "train.threads": 1,
                                                      "train.doctor": False})
        assert run.trainer.threads.threads == 1 and run.trainer.threads.source == "train.threads"
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_train_threads_must_be_positive(tiny_images):
    import gankit
    from gankit.errors import ConfigError

    with pytest.raises(ConfigError, match="threads"):
        gankit.train("dcgan", tiny_images, steps=1, save=False, progress=False,
                     overrides={"train.threads": 0})
