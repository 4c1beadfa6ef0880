"""Two trainings sharing the machine: how much slower is each than one alone?

Runs one DCGAN training on mnist5k alone, then two identical ones started together (separate
processes, the ``gankit`` command, default thread settings), and reports each one's slowdown:
its training time (the ``time`` of the last ``metrics.jsonl`` record, so imports and data
loading are excluded) divided by the lone run's. Target (issue 10): each concurrent run at most
2.5x slower than one alone on a 2-core machine.

The load average before and after is recorded: the numbers only mean something on an otherwise
quiet machine. Rerun with one command::

    python benchmarks/shared_machine.py                         # this tree: entry "after"
    python benchmarks/shared_machine.py --src OLD/src --tag before   # another checkout's code

"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def command(out: Path, steps: int, batch: int) -> list[str]:
    return [sys.executable, "-c", "from gankit.cli import main; main()", "train", "dcgan",
            "--data", "mnist5k", "--steps", str(steps), "--batch-size", str(batch),
            "--out", str(out), "--set", "train.log_every=10",
            "--set", "train.sample_every=100000", "--set", "train.ckpt_every=100000",
            "--set", "train.doctor=false"]


def train_seconds(run: Path) -> float:
    recs = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln]
    return float([r for r in recs if "time" in r][-1]["time"])


def launch(n: int, tmp: Path, steps: int, batch: int, src: Path, tag: str) -> list[dict]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY",
                        "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    env["PYTHONPATH"] = str(src)
    procs = []
    t0 = time.perf_counter()
    for i in range(n):
        out = tmp / f"{tag}-{n}-{i}"
        procs.append((out, subprocess.Popen(command(out, steps, batch), env=env,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            text=True)))
    res = []
    for out, p in procs:
        log, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"training failed ({p.returncode}):\n{log[-2000:]}")
        res.append({"train_s": round(train_seconds(out), 2),
                    "wall_s": round(time.perf_counter() - t0, 2),
                    "threads": next((ln.split(None, 1)[1].strip() for ln in log.splitlines()
                                     if ln.startswith("threads ")), None)})
    return res


def measure(a: argparse.Namespace) -> dict:
    """``rounds`` x (one run alone, then two together); slowdowns against the same round's
    lone run, and their median."""
    rounds = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.rounds):
            tmp = Path(d) / str(r)
            tmp.mkdir()
            load = os.getloadavg()[0]
            alone = launch(1, tmp, a.steps, a.batch_size, a.src, a.tag)[0]
            pair = launch(2, tmp, a.steps, a.batch_size, a.src, a.tag)
            rounds.append({"alone": alone, "together": pair,
                           "slowdown": [round(p["train_s"] / alone["train_s"], 2)
                                        for p in pair],
                           "loadavg_1min_before": round(load, 2)})
            print(json.dumps(rounds[-1]), flush=True)
    slow = sorted(s for r in rounds for s in r["slowdown"])
    med = slow[len(slow) // 2] if len(slow) % 2 else (slow[len(slow) // 2 - 1]
                                                      + slow[len(slow) // 2]) / 2
    return {"tag": a.tag, "src": str(a.src), "cpus": os.cpu_count(),
            "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None, "steps": a.steps, "batch_size": a.batch_size, "rounds": rounds,
            "median_slowdown": round(med, 2), "max_slowdown": max(slow), "target": 2.5,
            "met": max(slow) <= 2.5, "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def markdown(results: dict) -> str:
    md = ["# Two trainings sharing the machine (benchmarks/shared_machine.py)", "",
          ("Each round: one DCGAN training on mnist5k alone, then two identical ones started "
           "together (`gankit train`, stdout a pipe, default thread settings). Slowdown = "
           "training time (last `metrics.jsonl` record's `time`: imports and data loading "
           "excluded) / the same round's lone run. Target (issue 10): each concurrent run "
           "<= 2.5x slower."), "",
          "| tree | round | load (1 min) before | alone s | together s | slowdown | threads |",
          "|---|---|---|---|---|---|---|"]
    for tag, res in results.items():
        for i, r in enumerate(res["rounds"]):
            md.append(f"| {tag} | {i + 1} | {r['loadavg_1min_before']} | "
                      f"{r['alone']['train_s']} | "
                      f"{', '.join(str(p['train_s']) for p in r['together'])} | "
                      f"{', '.join(f'{s}x' for s in r['slowdown'])} | "
                      f"{r['alone']['threads'] or 'torch default'} |")
    md.append("")
    for tag, res in results.items():
        md.append(f"- **{tag}** (`{res['src']}`, {res['steps']} steps, batch {res['batch_size']},"
                  f" {res['cpus']} CPUs, {res['date']}): median slowdown "
                  f"{res['median_slowdown']}x, worst {res['max_slowdown']}x - target "
                  f"{'met' if res['met'] else 'not met'}; load average after "
                  f"{res['loadavg_after']}." + (f" ({res['note']})" if res.get("note") else ""))
    md += ["", ("The load average is that of the whole machine: other work running at the same "
                "time slows the lone run and the pair alike and makes single numbers noisy. "
                "Rerun on a quiet machine with `python benchmarks/shared_machine.py` (this tree) and "
                "`python benchmarks/shared_machine.py --src OLD/src --tag before` (another checkout);"
                " each run updates its own entry in shared_machine.json and rewrites shared_machine.md."),
           ""]
    return "\n".join(md)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--src", type=Path, default=ROOT / "src", help="the gankit source tree")
    ap.add_argument("--tag", default="after", help="the entry of shared_machine.json to update")
    ap.add_argument("--no-write", action="store_true", help="print only")
    a = ap.parse_args()
    res = measure(a)
    print(json.dumps(res, indent=2))
    if a.no_write:
        return
    out = ROOT / "benchmarks" / "results"
    path = out / "shared_machine.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results[a.tag] = res
    path.write_text(json.dumps(results, indent=2) + "\n")
    (out / "shared_machine.md").write_text(markdown(results))


if __name__ == "__main__":
    main()
