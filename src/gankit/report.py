"""One self-contained HTML report of a run (``gankit report RUN``).

The file carries everything inline - CSS, and every figure and sample grid as a base64 PNG - and
refers to no URL, so it opens offline, can be mailed or archived with the run, and leaks nothing
(the medical-imaging user of DESIGN.md §1 works without network access). Sections:

* the run at a glance (model, data, status, steps, speed, final losses, best metric);
* the doctor's diagnoses with their evidence, explanation (quoting the seeds) and remedies;
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
import html
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

CSS = """
:root { --ink:#1f2937; --muted:#6b7280; --line:#e5e7eb; --bg:#f8fafc; --card:#ffffff;
        --accent:#2563eb; }
* { box-sizing: border-box; }
body { margin:0; font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
       sans-serif; color:var(--ink); background:var(--bg); line-height:1.5; font-size:15px; }
header { background: linear-gradient(120deg, #0f172a, #1e3a8a); color:#fff; padding:28px 40px; }
header h1 { margin:0 0 4px 0; font-size:26px; font-weight:650; letter-spacing:.2px; }
header .sub { color:#c7d2fe; font-size:14px; }
.badges { margin-top:14px; display:flex; flex-wrap:wrap; gap:8px; }
.badge { background:rgba(255,255,255,.12); border:1px solid rgba(255,255,255,.25);
         border-radius:999px; padding:3px 12px; font-size:13px; }
.badge.finished { background:#065f46; } .badge.failed { background:#991b1b; }
.badge.running, .badge.interrupted { background:#92400e; }
nav { background:#fff; border-bottom:1px solid var(--line); padding:10px 40px; position:sticky;
      top:0; z-index:5; font-size:14px; }
nav a { color:var(--accent); text-decoration:none; margin-right:18px; }
main { max-width:1180px; margin:0 auto; padding:24px 40px 60px; }
section { background:var(--card); border:1px solid var(--line); border-radius:12px;
          padding:20px 24px; margin:0 0 22px 0; box-shadow:0 1px 2px rgba(0,0,0,.03); }
h2 { margin:0 0 14px 0; font-size:19px; }
h3 { margin:18px 0 8px 0; font-size:15px; color:#374151; }
.kpis { display:grid; grid-template-columns:repeat(auto-fit, minmax(150px, 1fr)); gap:12px; }
.kpi { border:1px solid var(--line); border-radius:10px; padding:10px 14px; background:#fbfdff; }
.kpi .v { font-size:20px; font-weight:650; } .kpi .k { color:var(--muted); font-size:12.5px; }
table { border-collapse:collapse; width:100%; font-size:13.5px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line);
         vertical-align:top; }
th { background:#f1f5f9; font-weight:600; }
tr:nth-child(even) td { background:#fcfcfd; }
td.num { font-variant-numeric: tabular-nums; }
tr.changed td { background:#eff6ff !important; } tr.changed td:first-child { font-weight:600; }
.cfg { display:grid; grid-template-columns:repeat(auto-fit, minmax(340px, 1fr)); gap:16px; }
.fig { width:100%; border:1px solid var(--line); border-radius:8px; margin:6px 0 4px; }
.caption { color:var(--muted); font-size:12.5px; margin-bottom:10px; }
.grids { display:grid; grid-template-columns:repeat(auto-fill, minmax(250px, 1fr)); gap:14px; }
.grids figure { margin:0; border:1px solid var(--line); border-radius:8px; padding:8px;
                background:#fff; }
.grids img { width:100%; image-rendering:pixelated; display:block; }
.grids figcaption { text-align:center; color:var(--muted); font-size:12.5px; margin-top:4px; }
.diag { border:1px solid var(--line); border-left:6px solid var(--sev); border-radius:10px;
        padding:12px 16px; margin:0 0 14px 0; }
.diag .head { display:flex; align-items:baseline; gap:10px; flex-wrap:wrap; }
.diag .title { font-size:16px; font-weight:650; }
.pill { color:#fff; background:var(--sev); border-radius:999px; padding:1px 10px; font-size:12px;
        text-transform:uppercase; letter-spacing:.4px; }
.diag .meta { color:var(--muted); font-size:13px; }
.diag .summary { margin:6px 0; font-weight:500; }
.diag details { margin-top:6px; } .diag summary { cursor:pointer; color:var(--accent); }
.diag ul { margin:6px 0 0 0; padding-left:20px; }
.diag .expl { color:#374151; font-size:14px; }
.seed { color:var(--muted); font-size:12.5px; font-style:italic; }
.ok { color:#065f46; font-weight:600; }
pre { background:#0f172a; color:#e2e8f0; padding:12px 14px; border-radius:8px; overflow:auto;
      font-size:12.5px; max-height:420px; }
.muted { color:var(--muted); }
footer { color:var(--muted); font-size:12.5px; text-align:center; padding:10px 0 30px; }
@media print { nav { display:none; } section { break-inside: avoid; } }
"""


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


def _e(v: Any) -> str:
    return html.escape(_fmt(v) if not isinstance(v, str) else v)


# ---------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------

def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()  # titles of one row of panels must not run into the axis labels above
    # no metadata: nothing but pixels goes into the report
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _img(b64: str, alt: str, cls: str = "fig") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


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
# HTML pieces
# ---------------------------------------------------------------------------------------------

def _table(rows: list[tuple[Any, ...]], head: tuple[str, ...] | None = None,
           changed: set[int] | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for i, r in enumerate(rows):
        cls = ' class="changed"' if changed and i in changed else ""
        cells = "".join(f'<td{" class=num" if isinstance(c, (int, float)) else ""}>{_e(c)}</td>'
                        for c in r)
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _config_section(cfg: dict[str, Any]) -> str:
    defaults: dict[str, Any] = {}
    try:  # the model's own defaults, to mark what this run changed
        from .config import resolve_config

        defaults = resolve_config(cfg["model"]["name"]).to_dict()
    except Exception:  # noqa: BLE001  (unknown/custom family: no highlighting)
        defaults = {}
    parts = [('<p class="caption">Highlighted: values that differ from the defaults of '
             f'<b>{_e(cfg.get("model", {}).get("name", "?"))}</b>.</p><div class="cfg">')]
    for sec, vals in cfg.items():
        if not isinstance(vals, dict):
            continue
        rows, changed = [], set()
        for i, (k, v) in enumerate(vals.items()):
            rows.append((k, v))
            if defaults and defaults.get(sec, {}).get(k, object()) != v:
                changed.add(i)
        parts.append(f"<div><h3>{_e(sec)}</h3>{_table(rows, ('key', 'value'), changed)}</div>")
    parts.append("</div>")
    return "".join(parts)


def _diagnoses_section(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="ok">No failure mode detected by the doctor.</p>'
    out = []
    for r in rows:
        sev = r.get("severity", "info")
        colour = SEV_COLOUR.get(sev, "#6b7280")
        steps = f"step {r['first_step']}" + (f"-{r['last_step']}" if r["last_step"] != r["first_step"]
                                             else "")
        ev = r.get("evidence") or {}
        ev_rows = [(k, v) for k, v in ev.items() if v is not None and v != [] and v != {}]
        actions = "".join(f"<li>{_e(a)}</li>" for a in r.get("actions", []))
        remedies = "".join(f"<li>{_e(x)}</li>" for x in r.get("remedies", []))
        expl = html.escape(r.get("explanation", ""))
        out.append(
            f'<div class="diag" style="--sev:{colour}"><div class="head">'
            f'<span class="title">{_e(r.get("title", r["diagnosis"]))}</span>'
            f'<span class="pill">{_e(sev)}</span>'
            f'<span class="meta">{_e(steps)} &middot; {_e(r.get("status", ""))}</span></div>'
            f'<div class="summary">{_e(r.get("summary", ""))}</div>'
            + (f"<h3>What the doctor did</h3><ul>{actions}</ul>" if actions else "")
            + (f"<details open><summary>Evidence</summary>{_table(ev_rows, ('quantity', 'value'))}"
               f"</details>" if ev_rows else "")
            + (f'<details><summary>Why (the seeds)</summary><p class="expl">{expl}</p></details>'
               if expl else "")
            + (f"<details open><summary>Remedies</summary><ul>{remedies}</ul></details>"
               if remedies else "")
            + f'<p class="seed">Sources: {_e(r.get("seed_ref", ""))}</p></div>')
    return "".join(out)


def _samples_section(run_dir: Path, limit: int = 8) -> str:
    files = sorted((run_dir / "samples").glob("step_*.png"))
    if not files:
        return '<p class="muted">No sample grids were written (samples/ is empty).</p>'
    if len(files) > limit:  # evenly spaced over training, always with the first and last
        idx = sorted({round(i * (len(files) - 1) / (limit - 1)) for i in range(limit)})
        files = [files[i] for i in idx]
    figs = []
    for f in files:
        m = re.search(r"step_(\d+)", f.stem)
        step = int(m.group(1)) if m else f.stem
        b64 = base64.b64encode(f.read_bytes()).decode("ascii")
        figs.append(f"<figure>{_img(b64, f'samples at step {step}', 'grid')}"
                    f"<figcaption>step {step}</figcaption></figure>")
    return ('<p class="caption">The same latent vectors at every step (G_ema when EMA is on), so '
            'the grids show how the generator evolved.</p><div class="grids">' + "".join(figs)
            + "</div>")


def _protocol_section(run_dir: Path) -> str:
    parts = []
    ev = _load_json(run_dir / "eval.json")
    if isinstance(ev, dict):
        res = ev.get("results", {})
        parts.append("<h3>eval.json: results</h3>" + _table(
            [(k, v) for k, v in res.items()], ("metric", "value")))
        parts.append("<h3>eval.json: protocol</h3><pre>"
                     + html.escape(json.dumps(ev.get("protocol", {}), indent=2)) + "</pre>")
    best = _load_json(run_dir / "best" / "best.json")
    if isinstance(best, dict):
        parts.append("<h3>best/best.json (kept during training)</h3>" + _table(
            [(k, best.get(k)) for k in ("metric", "value", "step")], ("key", "value")))
        if "protocol" in best:
            parts.append("<pre>" + html.escape(json.dumps(best["protocol"], indent=2)) + "</pre>")
    if not parts:
        return ('<p class="muted">No evaluation was recorded (run <code>gankit eval RUN</code> to '
                'write eval.json, or train with <code>--eval-every N</code>).</p>')
    return "".join(parts)



# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------

def build_report(run_dir: str | Path) -> str:
    """The HTML text of the report of ``run_dir`` (see the module docstring)."""
    from .doctor import analyse_run, read_jsonl
    from .doctor.rules import is_eval, is_log, num

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

    model = cfg.get("model", {}).get("name", "?")
    data = cfg.get("data", {}).get("name", "?")
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
             "the raw values. GAN losses do not measure sample quality (seed 002 §3.3).")),
            ("Discriminator", fig_discriminator(logs, probabilistic),
             ("D near 1 on real and near 0 on generated data with accuracy near 1 means D wins "
             "and G's gradient may vanish (seed 000/001 §3.4); all near 0.5 means D is fooled.")),
            ("Gradient norms", fig_gradients(logs),
             "Per network, measured by the doctor after each optimizer step (log scale)."),
            ("Doctor probes", fig_probes(probes),
             ("Small fixed-latent batches from the sampling generator: diversity relative to real "
             "data, classes/modes covered, improved precision/recall.")),
            ("Evaluation metrics", fig_eval(evals),
             "From train.eval_every (protocol below).")]
    curves = "".join(f"<h3>{t}</h3>{_img(b, t)}<div class='caption'>{html.escape(c)}</div>"
                     for t, b, c in figs if b)
    if not curves:
        curves = '<p class="muted">metrics.jsonl has no records yet.</p>'

    env_rows = [(k, v) for k, v in run.items() if k != "data_info"]
    data_rows = [(k, v) for k, v in (run.get("data_info") or {}).items()]

    title = f"{model} on {data}"
    badges = "".join(f'<span class="badge{" " + html.escape(c) if c else ""}">{_e(t)}</span>'
                     for t, c in ((f"status: {status}", status), (f"model: {model}", ""),
                                  (f"data: {data}", ""),
                                  (f"loss: {cfg.get('loss', {}).get('name', '?')}", ""),
                                  (f"seed {cfg.get('train', {}).get('seed', '?')}", ""),
                                  (f"created {run.get('created', '?')}", "")))
    body = f"""
<header><h1>{_e(title)}</h1>
<div class="sub">gankit run report &middot; {_e(str(run_dir.resolve()))}</div>
<div class="badges">{badges}</div></header>
<nav><a href="#glance">At a glance</a><a href="#doctor">Diagnoses</a><a href="#curves">Curves</a>
<a href="#samples">Samples</a><a href="#config">Configuration</a><a href="#protocol">Evaluation</a>
<a href="#env">Environment</a></nav>
<main>
<section id="glance"><h2>At a glance</h2><div class="kpis">
{"".join(f'<div class="kpi"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
         for k, v in kpis)}
</div></section>
<section id="doctor"><h2>Diagnoses</h2>
<p class="caption">From the GAN doctor (live diagnostics.jsonl, and the same rules replayed over
metrics.jsonl and probes.jsonl). Each finding gives its numbers, the seeds' explanation and the
gankit settings that apply their remedies.</p>
{_diagnoses_section(rows)}</section>
<section id="curves"><h2>Training curves</h2>{curves}</section>
<section id="samples"><h2>Samples over time</h2>{_samples_section(run_dir)}</section>
<section id="config"><h2>Configuration</h2>{_config_section(cfg)}</section>
<section id="protocol"><h2>Evaluation protocol</h2>{_protocol_section(run_dir)}</section>
<section id="env"><h2>Environment</h2>{_table(env_rows, ("key", "value"))}
<h3>Data</h3>{_table(data_rows, ("key", "value")) if data_rows else '<p class="muted">-</p>'}
</section>
</main>
<footer>gankit {_e(str(run.get("gankit", "")))} &middot; report written
{time.strftime("%Y-%m-%d %H:%M:%S")} &middot; self-contained: no external resources</footer>
"""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_e(title)} - gankit report</title><style>{CSS}</style></head>"
            f"<body>{body}</body></html>\n")


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
