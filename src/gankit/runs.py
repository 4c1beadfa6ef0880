"""Many runs at once: list them (``gankit runs``) and compare them (``gankit compare``).

:func:`list_runs` reads each run directory's ``config.json``, ``run.json``, the tail of
``metrics.jsonl`` and ``best/best.json`` (nothing is loaded into torch). :func:`write_compare`
writes one self-contained HTML page (no external assets: the plots are inline SVG) overlaying
the loss, discriminator, gradient and evaluation curves of several runs, with their final
evaluation results and the config keys in which they differ; it is rendered from the Jinja2
template ``gankit/assets/compare.html.j2``.
"""

from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path
from typing import Any

from .errors import CheckpointError, ConfigError
from .rundir import RunDir

#: line colours of the runs (colour-blind safe, Okabe & Ito)
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442",
          "#000000"]


def _tail_records(path: Path, nbytes: int = 65536) -> list[dict[str, Any]]:
    """The JSON records in the last ``nbytes`` of a JSON-lines file (torn lines skipped)."""
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - nbytes))
        data = f.read().decode("utf-8", errors="replace")
    lines = data.splitlines()
    if size > nbytes:
        lines = lines[1:]  # the first one may be cut
    out = []
    for ln in lines:
        try:
            rec = json.loads(ln)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def find_runs(folder: Path) -> list[Path]:
    """Run directories (with ``config.json`` and ``run.json``) at or under ``folder``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"no such folder: {folder}")
    found = []
    for cfg in sorted(folder.rglob("config.json")):
        d = cfg.parent
        if (d / "run.json").exists() and not any(p.name in ("checkpoints", "best")
                                                 for p in d.relative_to(folder).parents):
            found.append(d)
    return found


def run_row(path: Path, base: Path | None = None) -> dict[str, Any]:
    """One run's summary: status, step/total, model, data, best metric, last modified."""
    rd = RunDir(path)
    try:
        cfg = rd.read_config()
        info = rd.read_info()
    except (CheckpointError, OSError, ValueError) as e:  # a damaged run gets a row saying so
        return {"run": str(path.relative_to(base) if base else path), "status": f"damaged ({e})",
                "step": None, "total": None, "model": "?", "data": "?", "best": None,
                "best_metric": None, "best_value": None, "modified": None}
    recs = _tail_records(rd.stream("metrics"))
    train_recs = [r for r in recs if "it_s" in r]
    step = train_recs[-1]["step"] if train_recs else info.get("step", 0)
    best_metric = best_value = best_step = None
    bj = rd.best / "best.json"
    if bj.exists():
        try:
            b = json.loads(bj.read_text())
            best_metric, best_value, best_step = b.get("metric"), b.get("value"), b.get("step")
        except (json.JSONDecodeError, OSError):
            pass
    if best_metric is None:
        evals = [r for r in recs if any(k.startswith("eval/") for k in r)]
        if evals:
            k = next(k for k in evals[-1] if k.startswith("eval/"))
            best_metric, best_value, best_step = k[5:], evals[-1][k], evals[-1]["step"]
    files = [p for p in (rd.config, rd.run_json, rd.stream("metrics"), rd.stream("diagnostics"))
             if p.exists()]
    mtime = max(p.stat().st_mtime for p in files)
    status = info.get("status", "unknown")
    if status == "running" and rd.lock_owner() is None:
        # no live process holds the run's lock: it was killed (SIGKILL, power loss)
        status = "stopped (process gone)"
    return {"run": str(path.relative_to(base) if base else path),
            "status": status, "step": step,
            "total": cfg.get("train", {}).get("steps"),
            "model": cfg.get("model", {}).get("name", "?"),
            "data": cfg.get("data", {}).get("name", "?"),
            "best": (f"{best_metric}={best_value:.4g} @{best_step}"
                     if isinstance(best_value, (int, float)) else None),
            "best_metric": best_metric, "best_value": best_value,
            "modified": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime))}


def list_runs(folder: str | Path = "runs") -> list[dict[str, Any]]:
    """Summary rows of the runs under ``folder``, most recently modified first."""
    folder = Path(folder)
    rows = [run_row(p, folder) for p in find_runs(folder)]
    rows.sort(key=lambda r: r["modified"] or "", reverse=True)
    return rows


# -- compare ----------------------------------------------------------------------------------

def _fmt(v: float) -> str:
    return f"{v:.4g}"


def svg_plot(title: str, series: list[tuple[str, str, list[float], list[float]]],
             width: int = 460, height: int = 260, markers: bool = False) -> str:
    """An inline SVG line plot of ``(label, colour, xs, ys)`` series (non-finite values are
    skipped), with axes, min/max ticks and a legend."""
    pts = [(x, y) for _, _, xs, ys in series for x, y in zip(xs, ys)
           if math.isfinite(x) and math.isfinite(y)]
    e = html.escape
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    L, R, T, B = 58, 12, 24, 34
    pw, ph = width - L - R, height - T - B

    def sx(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return T + (1 - (y - y0) / (y1 - y0)) * ph

    out = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(title)}">'),
           f'<text x="{L}" y="15" font-size="13" font-weight="bold">{e(title)}</text>',
           f'<rect x="{L}" y="{T}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>']
    for v in (y0, (y0 + y1) / 2, y1):
        out.append(f'<text x="{L - 4}" y="{sy(v) + 4:.1f}" font-size="10" '
                   f'text-anchor="end">{_fmt(v)}</text>')
        out.append(f'<line x1="{L}" x2="{L + pw}" y1="{sy(v):.1f}" y2="{sy(v):.1f}" '
                   f'stroke="#eee"/>')
    for v in (x0, x1):
        out.append(f'<text x="{sx(v):.1f}" y="{T + ph + 14}" font-size="10" '
                   f'text-anchor="middle">{_fmt(v)}</text>')
    out.append(f'<text x="{L + pw / 2}" y="{height - 4}" font-size="10" '
               f'text-anchor="middle">step</text>')
    for i, (label, color, xs, ys) in enumerate(series):
        seg = [(sx(x), sy(y)) for x, y in zip(xs, ys) if math.isfinite(x) and math.isfinite(y)]
        if not seg:
            continue
        path = " ".join(f"{a:.1f},{b:.1f}" for a, b in seg)
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" '
                   f'points="{path}"><title>{e(label)}</title></polyline>')
        if markers or len(seg) == 1:
            out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.5" fill="{color}"/>' for a, b in seg]
        ly = T + 12 + 13 * i
        out.append(f'<line x1="{L + pw - 120}" x2="{L + pw - 106}" y1="{ly - 4}" y2="{ly - 4}" '
                   f'stroke="{color}" stroke-width="2"/>')
        out.append(f'<text x="{L + pw - 102}" y="{ly}" font-size="10">{e(label[:22])}</text>')
    out.append("</svg>")
    return "".join(out)


def _labels(paths: list[Path]) -> list[str]:
    names = [p.name for p in paths]
    if len(set(names)) == len(names):
        return names
    return [str(p) for p in paths]


def compare_data(paths: list[Path]) -> dict[str, Any]:
    """What the comparison page shows, from the runs' files."""
    if not paths:
        raise ConfigError("gankit compare needs at least one run directory")
    runs = []
    for p, label, color in zip(paths, _labels(paths), COLORS * (len(paths) // len(COLORS) + 1)):
        rd = RunDir(p)
        cfg = rd.read_config()
        recs = rd.read("metrics")
        row = run_row(p)
        runs.append({"label": label, "path": str(p), "color": color, "cfg": cfg, "recs": recs,
                     "row": row})
    keys: list[str] = []
    for r in runs:
        for rec in r["recs"]:
            for k, v in rec.items():
                if k not in ("step", "time", "it_s") and k not in keys \
                        and isinstance(v, (int, float)) and not isinstance(v, bool):
                    keys.append(k)
    order = ("loss/", "D/", "eval/", "grad/")
    keys.sort(key=lambda k: (next((i for i, p in enumerate(order) if k.startswith(p)),
                                  len(order)), k))
    plots = []
    for k in keys:
        series = []
        for r in runs:
            pts = [(float(rec["step"]), float(rec[k])) for rec in r["recs"]
                   if isinstance(rec.get(k), (int, float)) and "step" in rec]
            if pts:
                series.append((r["label"], r["color"], [a for a, _ in pts], [b for _, b in pts]))
        svg = svg_plot(k, series, markers=k.startswith("eval/"))
        if svg:
            plots.append({"key": k, "svg": svg})
    eval_keys = [k for k in keys if k.startswith("eval/")]
    evals = []
    for r in runs:
        last = next((rec for rec in reversed(r["recs"]) if any(k in rec for k in eval_keys)), {})
        evals.append({"label": r["label"], "color": r["color"], "step": last.get("step"),
                      "values": [_fmt(last[k]) if isinstance(last.get(k), (int, float)) else "-"
                                 for k in eval_keys]})
    from .tracking import flatten

    flat = [flatten(r["cfg"]) for r in runs]
    all_keys = sorted({k for f in flat for k in f})
    differ = [{"key": k, "values": [str(f.get(k, "-")) for f in flat]}
              for k in all_keys if len({json.dumps(f.get(k), default=str) for f in flat}) > 1]
    return {"runs": [{"label": r["label"], "path": r["path"], "color": r["color"],
                      **{k: r["row"][k] for k in ("status", "step", "total", "model", "data",
                                                  "best", "modified")}} for r in runs],
            "plots": plots, "eval_keys": [k[5:] for k in eval_keys], "evals": evals,
            "differ": differ, "created": time.strftime("%Y-%m-%d %H:%M:%S")}


def render_compare(data: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(Path(__file__).parent / "assets")),
                      autoescape=select_autoescape(["html", "j2"], default=True),
                      undefined=StrictUndefined)
    return env.get_template("compare.html.j2").render(**data)


def write_compare(paths: list[str | Path], out: str | Path = "compare.html") -> Path:
    """Write the comparison page of the runs ``paths`` to ``out`` (atomically)."""
    from .rundir import atomic_write_text

    data = compare_data([Path(p) for p in paths])
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a folder; give a file name such as compare.html")
    if not out.parent.exists():
        raise ConfigError(f"--out: the folder {out.parent} does not exist")
    try:
        atomic_write_text(out, render_compare(data))
    except OSError as e:
        raise ConfigError(f"cannot write {out}: {e.strerror}") from None
    return out


__all__ = ["compare_data", "find_runs", "list_runs", "run_row", "svg_plot",
           "write_compare"]
