"""The GAN doctor: failure-mode diagnostics, live during training and offline on a finished run.

Live, :class:`Doctor` (``train.doctor``, on by default) watches D(x) and D(G(z)), D's accuracy,
per-network gradient norms, loss trends and sample statistics, and diagnoses the failure modes
the seeds describe (mode collapse, vanishing gradients, the Helvetica scenario, oscillation,
divergence, memorisation), each with its evidence, explanation and remedies; divergence is rolled
back automatically. Offline, :func:`analyse_run` (``gankit doctor RUN``) replays the same rules
(:mod:`gankit.doctor.rules`) over ``metrics.jsonl`` and the doctor's sample probes
(``probes.jsonl``), and merges what the live doctor recorded in ``diagnostics.jsonl``
(rollbacks, which undo the records that caused them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..rundir import RunDir, read_jsonl
from .callback import Doctor, TrainingDiverged
from .rules import KNOWLEDGE, RULES, Diagnosis, RunInfo, Tracker, Window, replay

__all__ = ["KNOWLEDGE", "RULES", "Diagnosis", "Doctor", "RunInfo", "Tracker", "TrainingDiverged",
           "Window", "analyse_run", "print_report", "read_jsonl", "summarise"]

def _run_info(run_dir: Path) -> RunInfo:
    cfg = RunDir(run_dir).read_config()
    name = cfg.get("model", {}).get("name", "")
    from ..registry import MODELS

    # the registered family says whether D's scores follow loss.name (custom GANs: they do)
    default = bool(MODELS.get(name).scores_follow_loss) if name in MODELS else True
    return RunInfo.from_config(cfg, default)


def analyse_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-diagnose a run from its files.

    Returns ``{"run", "info", "replayed": [Diagnosis...], "live": [dict...], "rows": [...]}``:
    the events of replaying the rules over ``metrics.jsonl`` and ``probes.jsonl`` (log and eval
    records first at equal steps, as live), the live events of
    ``diagnostics.jsonl``, and one summary row per diagnosis (see :func:`summarise`).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"no such run directory: {run_dir}")
    info = _run_info(run_dir)
    rd = RunDir(run_dir)
    records = rd.read("metrics") + rd.read("probes")
    if not records:
        raise CheckpointError(f"{run_dir} has no metrics.jsonl records to analyse")
    tracker = replay(records, info)
    live = rd.read("diagnostics")
    return {"run": str(run_dir), "info": info, "replayed": tracker.history, "live": live,
            "active": list(tracker.active.values()), "last_step": tracker.window.step,
            "rows": summarise(tracker, live)}


_RANK = {"info": 0, "warning": 1, "critical": 2}


def summarise(tracker: Tracker, live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per diagnosis: first/last step, worst severity, latest summary, status.

    Replayed events come first; from ``diagnostics.jsonl`` come the doctor's actions
    (rollbacks, stops) and the divergences whose records those rollbacks removed.
    """
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, step: int, severity: str, title: str, summary: str, state: str,
            evidence: dict[str, Any], remedies: list[str], seed_ref: str, source: str) -> None:
        r = rows.setdefault(name, {"diagnosis": name, "title": title, "first_step": step,
                                   "last_step": step, "severity": severity, "summary": summary,
                                   "evidence": evidence, "remedies": remedies,
                                   "seed_ref": seed_ref, "status": "active", "episodes": 0,
                                   "actions": [], "source": source})
        r["last_step"] = max(r["last_step"], step)
        if state == "action":
            r["actions"].append(summary)
            return
        if state == "resolved":
            r["status"] = f"resolved at step {step}"
            return
        if state == "raised":
            r["episodes"] += 1
        r["status"] = "active"
        if _RANK.get(severity, 0) >= _RANK.get(r["severity"], 0):
            r["severity"], r["title"] = severity, title
        r["summary"], r["evidence"] = summary, evidence
        if remedies:
            r["remedies"] = remedies

    for d in tracker.history:
        add(d.diagnosis, d.step, d.severity, d.title, d.summary, d.state, d.evidence, d.remedies,
            d.seed_ref, "replayed")
    for name, d in tracker.active.items():  # still active: the freshest evidence
        if name in rows:
            rows[name].update(summary=d.summary, evidence=d.evidence,
                              last_step=max(rows[name]["last_step"], d.step))
    replayed = {d.diagnosis for d in tracker.history}
    for e in live:
        name = e.get("diagnosis", "?")
        # The replay is authoritative where the records exist; only what a rollback removed
        # from them (divergences) and what the doctor did (actions) come from the live log.
        if e.get("state") != "action" and (name in replayed or name != "divergence"):
            continue
        add(name, int(e.get("step", 0)), e.get("severity", "info"), e.get("title", name),
            e.get("summary", ""), e.get("state", "raised"), e.get("evidence", {}),
            e.get("remedies", []), e.get("seed_ref", ""), "live")
    for r in rows.values():
        r["explanation"] = KNOWLEDGE.get(r["diagnosis"], {}).get("explanation", "")
        if r["diagnosis"] == "divergence" and r["actions"] and r["status"] == "active" \
                and not any("stopped" in a for a in r["actions"]):
            r["status"] = "rolled back"
    return sorted(rows.values(), key=lambda r: (-_RANK.get(r["severity"], 0), r["first_step"]))


def print_report(result: dict[str, Any], console: Any = None) -> None:
    """The ``gankit doctor`` table."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from .citations import plain_citations

    c = console or Console()
    info: RunInfo = result["info"]
    rows = result["rows"]
    c.print(f"[bold]{escape(result['run'])}[/bold]: {info.model} on {info.data}, loss "
            f"{info.loss}, analysed up to step {result['last_step']}")
    if not rows:
        from .verdict import assess_run

        v = assess_run(result["run"])  # silence is good news only with enough evidence
        if v.ok:
            c.print("[green]no failure mode detected[/green]")
        else:
            c.print(f"[bold red]{escape(v.headline)}[/bold red]")
            for r in v.reasons:
                c.print(f"  [red]-[/red] {escape(r)}", highlight=False)
        return
    style = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
    t = Table("diagnosis", "severity", "steps", "status", title="summary", title_justify="left")
    for r in rows:
        steps = f"{r['first_step']}" + (f"-{r['last_step']}" if r["last_step"] != r["first_step"] else "")
        t.add_row(escape(r["title"]), f"[{style.get(r['severity'], 'white')}]{r['severity']}[/]",
                  steps, escape(r["status"]))
    c.print(t)
    for r in rows:  # then one block per diagnosis: evidence, what was done, remedies, sources
        c.print(f"\n[{style.get(r['severity'], 'white')}]{r['severity'].upper()}[/] "
                f"[bold]{escape(r['title'])}[/bold] (step {r['first_step']}, {escape(r['status'])})")
        c.print(f"  evidence: {escape(plain_citations(r['summary']))}", highlight=False)
        for a in r["actions"]:
            c.print(f"  done: {escape(a)}", highlight=False)
        for i, x in enumerate(r["remedies"][:3], 1):
            c.print(f"  remedy {i}: {escape(plain_citations(x))}", highlight=False)
        c.print(f"  [dim]sources: {escape(plain_citations(r['seed_ref']))}[/dim]",
                highlight=False)
