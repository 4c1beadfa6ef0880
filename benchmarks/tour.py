"""Run the README's tour, command by command, and time each one.

The README promises that every command of its tour finishes in minutes on 2 CPU cores and that
the folders it uses can be made with gankit itself. This script reads the ```bash block of one
README section (``--section``: ``main``, "A tour"; ``medical``, "Image-to-image and medical
imaging"), runs each command in order in one fresh working directory (so later commands
find the runs and folders earlier ones made), and records its exit code and wall time in
``benchmarks/results/tour.md`` / ``tour.json`` (``tour_medical.*`` for the medical section).
A command that fails stops the tour.

    python benchmarks/tour.py                     # the whole tour
    python benchmarks/tour.py --section medical   # the image-to-image and medical commands
    python benchmarks/tour.py --list              # print the commands only
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: section -> (README heading whose first ```bash block is run, result file stem)
SECTIONS = {"main": ("## A tour", "tour"),
            "models": ("## Other generative models, one leaderboard", "tour_models"),
            "medical": ("## Image-to-image and medical imaging", "tour_medical")}


def tour_commands(readme: Path = ROOT / "README.md", section: str = "main") -> list[str]:
    """The shell commands of a README section's first bash block (comments and blank lines
    dropped)."""
    heading = SECTIONS[section][0]
    text = readme.read_text()
    start = text.index(heading)
    block = re.search(r"```bash\n(.*?)```", text[start:], flags=re.DOTALL)
    if block is None:
        raise SystemExit(f"no ```bash block after '{heading}' in {readme}")
    cmds = []
    for line in block.group(1).splitlines():
        line = re.sub(r"\s+#\s.*$", "", line).strip()
        if line and not line.startswith("#"):
            cmds.append(line)
    return cmds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="print the commands and stop")
    ap.add_argument("--keep", type=Path, default=None, help="run in this folder and keep it")
    ap.add_argument("--section", choices=sorted(SECTIONS), default="main",
                    help="which README section's commands (default: main, 'A tour')")
    a = ap.parse_args()
    cmds = tour_commands(section=a.section)
    heading, stem = SECTIONS[a.section]
    if a.list:
        print("\n".join(cmds))
        return
    gankit = shutil.which("gankit")
    if gankit is None:
        raise SystemExit("the gankit command is not on PATH: pip install -e . first")
    work = a.keep or Path(tempfile.mkdtemp(prefix="gankit-tour-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, t_all = [], time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for cmd in cmds:
        t0 = time.perf_counter()
        p = subprocess.run(cmd, shell=True, cwd=work, env=env, capture_output=True, text=True,
                           check=False)
        dt = time.perf_counter() - t0
        rows.append({"command": cmd, "rc": p.returncode, "seconds": round(dt, 1),
                     "last_line": (p.stdout.strip().splitlines() or [""])[-1][:160]})
        print(f"{dt:7.1f} s  rc={p.returncode}  {cmd}", flush=True)
        if p.returncode != 0:
            print(p.stdout[-2000:], p.stderr[-2000:], sep="\n", file=sys.stderr)
            break
    total = time.perf_counter() - t_all
    res = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
           "loadavg_after": [round(x, 2) for x in os.getloadavg()],
           "total_seconds": round(total, 1), "all_ok": all(r["rc"] == 0 for r in rows)
           and len(rows) == len(cmds), "commands": rows}
    out = ROOT / "benchmarks" / "results"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=2) + "\n")
    cmd = "python benchmarks/tour.py" + (f" --section {a.section}" if a.section != "main" else "")
    md = [f"# The README's '{heading[3:]}' commands, timed", "", f"Regenerate: `{cmd}`", "",
          (f"Every command of the README's section, run in order in one empty folder on "
           f"{res['cpus']} CPU cores ({res['date']}; load average after "
           f"{res['loadavg_after']}). Total {total / 60:.1f} min; "
           f"{'every command exited 0' if res['all_ok'] else 'NOT every command succeeded'}."),
          "",
          "| s | exit | command |", "|---:|---:|---|"]
    md += [f"| {r['seconds']} | {r['rc']} | `{r['command']}` |" for r in rows]
    (out / f"{stem}.md").write_text("\n".join(md) + "\n")
    if a.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    if not res["all_ok"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
