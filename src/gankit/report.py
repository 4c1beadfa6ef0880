"""One self-contained HTML report of a run (``gankit report RUN``).

The file carries everything inline - CSS, and every figure and sample grid as a base64 PNG - and
refers to no URL, so it opens offline, can be mailed or archived with the run, and leaks nothing
(the medical-imaging user of DESIGN.md §1 works without network access). It is rendered from the
Jinja2 template ``gankit/assets/report.html.j2`` with autoescaping (every value from the run is
escaped). Sections:

* the command line that reproduces the run (:mod:`gankit.reproduce`);
* the verdict (:mod:`gankit.doctor.verdict`): "no failure mode detected" only when the evidence
  supports it; "samples not recognisable" or "insufficient evidence" in red otherwise;
* the run at a glance (model, data, status, steps, speed, final losses, best metric);
* the doctor's diagnoses with their evidence, explanation and remedies, citing the literature
  by author and title (:mod:`gankit.doctor.citations`);
* training curves from ``metrics.jsonl``: losses, D(x) and D(G(z)) (probabilities for the
  minimax/non-saturating losses, raw scores otherwise) with D's accuracy, per-network gradient
  norms, the doctor's probes (``probes.jsonl``: diversity, coverage, precision/recall) and the
  evaluation metrics (``eval/*``);
* sample grids over time (``samples/``);
* the configuration, with values that differ from the model's defaults highlighted;
* the evaluation protocol (``eval.json``, ``best/best.json``) and the environment (``run.json``).
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from .doctor.rules import num
from .errors import CheckpointError

__all__ = ["build_report", "write_report"]

# colours shared by the CSS and the figures
PALETTE = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"]
SEV_COLOUR = {"critical": "#b91c1c", "warning": "#b45309", "info": "#0e7490"}

# ---------------------------------------------------------------------------------------------
# reading the run
# ---------------------------------------------------------------------------------------------

def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in v.items()) + "}"
    return str(v)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()  # titles of one row of panels must not run into the axis labels above
    # no metadata: nothing but pixels goes into the report
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for r in rows:
        v = num(r.get(key))
        if v is not None and math.isfinite(v) and "step" in r:
            xs.append(float(r["step"]))
            ys.append(v)
    return xs, ys


def _axes(n: int, height: float = 3.1, ncols: int | None = None) -> tuple[Any, list[Any]]:
    # Figures of their own on an Agg canvas: no pyplot state, no backend switch.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = ncols or n
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(10.5, height * nrows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = [a for row in axes for a in row]
    for a in flat[n:]:
        a.set_visible(False)
    for a in flat[:n]:
        a.grid(alpha=0.25)
        a.spines[["top", "right"]].set_visible(False)
        a.set_xlabel("step")
    return fig, flat[:n]


def _smooth(ys: list[float], k: int) -> list[float]:
    if k <= 1 or len(ys) < 3 * k:
        return ys
    out, acc = [], 0.0
    for i, y in enumerate(ys):  # trailing moving average, same length
        acc += y
        if i >= k:
            acc -= ys[i - k]
        out.append(acc / min(i + 1, k))
    return out


def fig_losses(logs: list[dict[str, Any]]) -> str | None:
    keys = sorted({k for r in logs for k in r if k.startswith("loss/")})
    main = [k for k in keys if k in ("loss/D", "loss/G")]
    extra = [k for k in keys if k not in main]
    if not keys:
        return None
    fig, axes = _axes(2 if extra else 1)
    sm = max(1, len(logs) // 60)
    for i, k in enumerate(main or keys):
        xs, ys = _series(logs, k)
        c = PALETTE[i % len(PALETTE)]
        axes[0].plot(xs, ys, color=c, alpha=0.3 if sm > 1 else 1, lw=1)
        if sm > 1:
            axes[0].plot(xs, _smooth(ys, sm), color=c, lw=1.8, label=f"{k} (smoothed)")
        else:
            axes[0].lines[-1].set_label(k)
    axes[0].set_title("adversarial losses")
    axes[0].legend(fontsize=8, frameon=False)
    if extra:
        for i, k in enumerate(extra):
            xs, ys = _series(logs, k)
            axes[1].plot(xs, ys, color=PALETTE[(i + 2) % len(PALETTE)], lw=1.2, label=k)
        axes[1].set_title("other loss terms")
        axes[1].legend(fontsize=8, frameon=False)
    return _png(fig)


def fig_discriminator(logs: list[dict[str, Any]], probabilistic: bool) -> str | None:
    if not any("D/real" in r or "D/acc" in r for r in logs):
        return None
    fig, axes = _axes(2)
    ax = axes[0]
    for key, label, c in (("D/real", "D(x)", PALETTE[2]), ("D/fake", "D(G(z))", PALETTE[1])):
        xs, ys = _series(logs, key)
        if probabilistic:
            ys = [1 / (1 + math.exp(-max(min(y, 50), -50))) for y in ys]
        ax.plot(xs, ys, color=c, lw=1.5, label=label)
    if probabilistic:
        ax.set_ylim(-0.02, 1.02)
        ax.axhline(0.5, color="#9ca3af", lw=0.8, ls="--")
        ax.set_title("D(x) and D(G(z)) (sigmoid of the batch-mean logit)")
    else:
        ax.set_title("D scores on real and generated batches (raw)")
    ax.legend(fontsize=8, frameon=False)
    xs, ys = _series(logs, "D/acc")
    axes[1].plot(xs, ys, color=PALETTE[4], lw=1.5)
    axes[1].axhline(0.5, color="#9ca3af", lw=0.8, ls="--")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].set_title("D accuracy (0.5 = chance)")
    return _png(fig)


def fig_gradients(logs: list[dict[str, Any]]) -> str | None:
    keys = sorted({k for r in logs for k in r if k.startswith("grad/")})
    if not keys:
        return None
    fig, axes = _axes(1, height=3.0)
    for i, k in enumerate(keys):
        xs, ys = _series(logs, k)
        pts = [(x, y) for x, y in zip(xs, ys) if y > 0]
        if pts:
            axes[0].plot(*zip(*pts), color=PALETTE[i % len(PALETTE)], lw=1.5, label=f"|{k}|")
    axes[0].set_yscale("log")
    axes[0].set_title("gradient L2 norm per network (after its phase, mean over log interval)")
    axes[0].legend(fontsize=8, frameon=False)
    return _png(fig)


def fig_probes(probes: list[dict[str, Any]]) -> str | None:
    if not probes:
        return None
    panels = []
    if any("doctor/div_ratio" in p for p in probes):
        panels.append("div")
    if any("doctor/covered" in p for p in probes):
        panels.append("cov")
    if any("doctor/precision" in p for p in probes):
        panels.append("pr")
    if not panels:
        return None
    fig, axes = _axes(len(panels), ncols=min(3, len(panels)))
    for ax, kind in zip(axes, panels):
        if kind == "div":
            xs, ys = _series(probes, "doctor/div_ratio")
            ax.plot(xs, ys, "o-", color=PALETTE[0], lw=1.5, ms=4)
            ax.axhline(1.0, color="#9ca3af", lw=0.8, ls="--")
            ax.set_title("sample diversity / real diversity")
        elif kind == "cov":
            xs, ys = _series(probes, "doctor/covered")
            k = max((num(p.get("doctor/classes")) or 0) for p in probes)
            ax.plot(xs, ys, "o-", color=PALETTE[2], lw=1.5, ms=4)
            ax.set_ylim(-0.3, k + 0.3)
            ax.axhline(k, color="#9ca3af", lw=0.8, ls="--")
            ax.set_title(f"classes/modes covered (of {k:.0f})")
        else:
            for key, c in (("doctor/precision", PALETTE[3]), ("doctor/recall", PALETTE[4])):
                xs, ys = _series(probes, key)
                ax.plot(xs, ys, "o-", color=c, lw=1.5, ms=4, label=key.split("/")[1])
            ax.set_ylim(-0.02, 1.02)
            ax.set_title("precision / recall (k = 3)")
            ax.legend(fontsize=8, frameon=False)
    return _png(fig)


def fig_eval(evals: list[dict[str, Any]]) -> str | None:
    keys = sorted({k for r in evals for k in r if k.startswith("eval/") and not k.endswith("_std")
                   and any(num(x.get(k)) is not None for x in evals)})
    if not keys:
        return None
    fig, axes = _axes(len(keys), height=2.9, ncols=min(3, len(keys)))
    for i, (ax, k) in enumerate(zip(axes, keys)):
        xs, ys = _series(evals, k)
        c = PALETTE[i % len(PALETTE)]
        ax.plot(xs, ys, "o-", color=c, lw=1.5, ms=4)
        sk = k[:-len("_mean")] + "_std" if k.endswith("_mean") else None
        if sk:  # KID: mean +- std over subsets as a band
            sx, sd = _series(evals, sk)
            if sx == xs:
                ax.fill_between(xs, [y - d for y, d in zip(ys, sd)], [y + d for y, d in zip(ys, sd)],
                                color=c, alpha=0.15)
        ax.set_title(k)
    return _png(fig)


# ---------------------------------------------------------------------------------------------
# the template's context
# ---------------------------------------------------------------------------------------------

def _rows(pairs: list[tuple[Any, ...]], changed: set[int] | None = None) -> list[dict[str, Any]]:
    """Table rows for the template: each cell's text (formatted) and whether it is a number."""
    return [{"changed": bool(changed and i in changed),
             "cells": [{"text": c if isinstance(c, str) else _fmt(c),
                        "num": isinstance(c, (int, float)) and not isinstance(c, bool)}
                       for c in r]}
            for i, r in enumerate(pairs)]


def _config_sections(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    defaults: dict[str, Any] = {}
    try:  # the model's own defaults, to mark what this run changed
        from .config import resolve_config

        defaults = resolve_config(cfg["model"]["name"]).to_dict()
    except Exception:  # noqa: BLE001  (unknown/custom family: no highlighting)
        defaults = {}
    out = []
    for sec, vals in cfg.items():
        if not isinstance(vals, dict):
            continue
        pairs, changed = [], set()
        for i, (k, v) in enumerate(vals.items()):
            pairs.append((k, v))
            if defaults and defaults.get(sec, {}).get(k, object()) != v:
                changed.add(i)
        out.append({"name": sec, "rows": _rows(pairs, changed)})
    return out


def _diagnoses(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from .doctor.citations import plain_citations as plain

    out = []
    for r in rows:
        sev = r.get("severity", "info")
        steps = f"step {r['first_step']}" + (f"-{r['last_step']}"
                                             if r["last_step"] != r["first_step"] else "")
        ev = r.get("evidence") or {}
        out.append({
            "title": plain(str(r.get("title", r["diagnosis"]))), "severity": sev,
            "colour": SEV_COLOUR.get(sev, "#6b7280"), "steps": steps,
            "status": str(r.get("status", "")), "summary": plain(str(r.get("summary", ""))),
            "actions": [plain(str(a)) for a in r.get("actions", [])],
            "evidence": _rows([(k, v) for k, v in ev.items()
                               if v is not None and v != [] and v != {}]),
            "explanation": plain(r.get("explanation", "")),
            "remedies": [plain(str(x)) for x in r.get("remedies", [])],
            "sources": plain(str(r.get("seed_ref", ""))),
        })
    return out


def _samples(run_dir: Path, limit: int = 8) -> list[dict[str, Any]]:
    files = sorted((run_dir / "samples").glob("step_*.png"))
    if len(files) > limit:  # evenly spaced over training, always with the first and last
        idx = sorted({round(i * (len(files) - 1) / (limit - 1)) for i in range(limit)})
        files = [files[i] for i in idx]
    out = []
    for f in files:
        m = re.search(r"step_(\d+)", f.stem)
        out.append({"step": int(m.group(1)) if m else f.stem,
                    "png": base64.b64encode(f.read_bytes()).decode("ascii")})
    return out


def _reproduce(cfg: dict[str, Any]) -> tuple[str | None, str]:
    from .errors import GankitError
    from .reproduce import reproduce_command

    try:
        return reproduce_command(cfg), ""
    except GankitError as e:
        return None, f"Not reproducible from the command line: {e}."
    except Exception as e:  # noqa: BLE001  (a config this gankit no longer resolves)
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        return None, f"This gankit cannot rebuild the run's config ({first})."


def _template(name: str = "report.html.j2") -> Any:
    """A template of ``gankit/assets`` (autoescaping, strict): the run report, or another
    report in its style (``bench.html.j2``), which shares its CSS (``report.css``) and macros
    (``report_macros.j2``)."""
    from importlib.resources import files

    from jinja2 import DictLoader, Environment, StrictUndefined

    assets = files("gankit") / "assets"
    sources = {k: (assets / k).read_text("utf-8")
               for k in dict.fromkeys((name, "report.css", "report_macros.j2"))}
    env = Environment(loader=DictLoader(sources), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True)
    return env.get_template(name)


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

def build_report(run_dir: str | Path) -> str:
    """The HTML text of the report of ``run_dir`` (see the module docstring), rendered from the
    Jinja2 template ``gankit/assets/report.html.j2`` with autoescaping."""
    from .doctor import analyse_run, read_jsonl
    from .doctor.citations import SOURCES
    from .doctor.rules import is_eval, is_log
    from .doctor.verdict import assess, family_traits

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no such run directory: {run_dir}")
    cfg = _load_json(run_dir / "config.json")
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{run_dir} is not a gankit run directory (no readable config.json)")
    run = _load_json(run_dir / "run.json") or {}
    records = read_jsonl(run_dir / "metrics.jsonl")
    logs = [r for r in records if is_log(r)]
    evals = [r for r in records if is_eval(r)]
    probes = read_jsonl(run_dir / "probes.jsonl")
    analysis = analyse_run(run_dir) if records else None
    rows = analysis["rows"] if analysis else []
    probabilistic = analysis["info"].probabilistic if analysis else False
    ev = _load_json(run_dir / "eval.json")
    ev = ev if isinstance(ev, dict) else None
    best = _load_json(run_dir / "best" / "best.json")
    best = best if isinstance(best, dict) else None

    model = cfg.get("model", {}).get("name", "?")
    data = cfg.get("data", {}).get("name", "?")
    verdict = assess(logs=logs, probes=probes, evals=evals, eval_json=ev, best_json=best,
                     rows=rows, **family_traits(str(model)), data=str(data))
    status = str(run.get("status", "unknown"))
    last = logs[-1] if logs else {}
    step = run.get("step", last.get("step", 0))
    steps_total = cfg.get("train", {}).get("steps", "?")
    speed = [r["it_s"] for r in logs if isinstance(r.get("it_s"), (int, float)) and r["it_s"] > 0]
    minutes = (last.get("time") or 0) / 60

    kpis = [("steps", f"{step} / {steps_total}"),
            ("speed", f"{sorted(speed)[len(speed) // 2]:.1f} it/s" if speed else "-"),
            ("wall time", "-" if not last.get("time") else f"{minutes:.1f} min" if minutes >= 2
             else f"{last['time']:.0f} s")]
    for k in ("loss/D", "loss/G"):
        if k in last:
            kpis.append((f"final {k}", _fmt(num(last[k]))))
    if evals:
        e = evals[-1]
        for k in [k for k in e if k.startswith("eval/") and not k.endswith("_std")][:3]:
            kpis.append((f"{k} @ {e['step']}", _fmt(num(e[k]))))
    counts = {s: sum(r["severity"] == s for r in rows) for s in ("critical", "warning")}
    kpis.append(("diagnoses", f"{counts['critical']} critical, {counts['warning']} warning"))

    figs = [("Losses", fig_losses(logs),
             ("Averaged over each log interval; with many points a moving average is drawn over "
             "the raw values. GAN losses do not measure sample quality (Cohen & Giryes 2022, "
             "§3.3).")),
            ("Discriminator", fig_discriminator(logs, probabilistic),
             ("D near 1 on real and near 0 on generated data with accuracy near 1 means D wins "
             "and G's gradient may vanish (Wenzel 2023, §3.4); all near 0.5 means D is fooled.")),
            ("Gradient norms", fig_gradients(logs),
             "Per network, measured by the doctor after each optimizer step (log scale)."),
            ("Doctor probes", fig_probes(probes),
             ("Small fixed-latent batches from the sampling generator: diversity relative to real "
             "data, classes/modes covered, improved precision/recall (Kynkäänniemi et al. 2019).")),
            ("Evaluation metrics", fig_eval(evals), "From train.eval_every (protocol below).")]
    reproduce, note = _reproduce(cfg)
    ctx = {
        "title": f"{model} on {data}", "run_path": str(run_dir.resolve()), "model": model,
        "badges": [{"text": t, "cls": c} for t, c in (
            (f"status: {status}", status), (f"model: {model}", ""), (f"data: {data}", ""),
            (f"loss: {cfg.get('loss', {}).get('name', '?')}", ""),
            (f"seed {cfg.get('train', {}).get('seed', '?')}", ""),
            (f"created {run.get('created', '?')}", ""))],
        "reproduce": reproduce, "reproduce_note": note,
        "verdict": verdict, "kpis": kpis, "diagnoses": _diagnoses(rows),
        "figures": [{"title": t, "png": b, "caption": c} for t, b, c in figs if b],
        "samples": _samples(run_dir), "config": _config_sections(cfg),
        "eval_results": _rows(list((ev or {}).get("results", {}).items())) if ev else [],
        "eval_protocol": json.dumps((ev or {}).get("protocol", {}), indent=2),
        "best": _rows([(k, best.get(k)) for k in ("metric", "value", "step")]) if best else [],
        "best_protocol": json.dumps(best["protocol"], indent=2) if best and "protocol" in best
        else "",
        "env": _rows([(k, v) for k, v in run.items() if k != "data_info"]),
        "data_rows": _rows(list((run.get("data_info") or {}).items())),
        "sources": SOURCES, "version": str(run.get("gankit", "")),
        "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return _template().render(**ctx)


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``); return it."""
    run_dir = Path(run_dir)
    text = build_report(run_dir)
    path = Path(out) if out is not None else run_dir / "report.html"
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
