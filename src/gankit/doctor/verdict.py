"""The verdict on a run: does the evidence support "no failure mode detected"?

The doctor's rules name failure modes (mode collapse, vanishing gradients, ...). Their silence is
not good news when they had nothing to look at, or when the samples are not recognisable at all:
a generator whose samples the data's probe classifier cannot name has no classes to lose, so the
mode-collapse rule (which needs an assignable histogram) stays quiet, and a non-saturating loss
keeps G's gradient alive while D wins every batch, so the vanishing-gradient rule stays quiet too.
:func:`assess` therefore checks the evidence itself:

* **samples not recognisable**: the data's probe classifier is confident on few samples
  (LeNet for digits; for toy mixtures, samples near a mode), almost no class/mode covered,
  recall near 0 (the doctor's probe or an evaluation), evaluation coverage near 0;
* **insufficient evidence**: D's accuracy pinned at 1 (D tells every generated batch from the
  data), too few log records for the rules, no sample probe, no evaluation at all.

Only a run with none of these and no diagnosis gets "no failure mode detected".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .rules import D_PERFECT_RECORDS, MIN_ASSIGNED, num

__all__ = ["Verdict", "assess", "assess_run", "family_traits"]

#: samples are unrecognisable when at most this fraction of classes/modes is covered ...
COVERAGE_NEAR_ZERO = 0.1
#: ... or recall (k-NN manifold, or density/coverage's coverage) is at most this
RECALL_NEAR_ZERO = 0.05
#: D's accuracy this close to 1 over the last records: "pinned"
D_PINNED = 0.995
D_PINNED_RECORDS = 5
#: fewer log records than this leave the windowed rules (oscillation, vanishing gradients)
#: without enough evidence
MIN_LOG_RECORDS = max(D_PERFECT_RECORDS, 5)


@dataclass
class Verdict:
    """``level``: ``unrecognisable``, ``diagnosed``, ``insufficient`` or ``ok``; ``headline``
    one line; ``severity``: ``critical`` (red), ``warning`` (amber) or ``ok`` (green);
    ``reasons``: the findings behind it (sample quality first), ``checked``: what was looked at."""

    level: str
    headline: str
    severity: str
    unrecognisable: list[str] = field(default_factory=list)
    insufficient: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [*self.unrecognisable, *self.insufficient]

    @property
    def ok(self) -> bool:
        return self.level == "ok"


def _latest(records: list[dict[str, Any]], key: str) -> tuple[float, int] | None:
    for r in reversed(records):
        v = num(r.get(key))
        if v is not None and math.isfinite(v):
            return v, int(r.get("step", 0))
    return None


def assess(*, logs: list[dict[str, Any]], probes: list[dict[str, Any]],
           evals: list[dict[str, Any]], eval_json: dict[str, Any] | None,
           best_json: dict[str, Any] | None, rows: list[dict[str, Any]],
           adversarial: bool = True, samples: bool = True, data: str = "") -> Verdict:
    """The verdict from a run's records: log records (``metrics.jsonl``), the doctor's probes,
    ``eval/*`` records, ``eval.json``, ``best/best.json`` and the doctor's summary rows
    (:func:`gankit.doctor.summarise`). ``adversarial=False`` (a VAE, ...): no D to look at;
    ``samples=False`` (translators): the doctor draws no sample probes, so none is expected;
    ``data``: the dataset's name (toy mixtures have modes, not classes)."""
    from ..data import dataset_meta

    unrec: list[str] = []
    insuf: list[str] = []
    checked: list[str] = []

    # -- the samples, through the data's probe classifier and the evaluation -----------------
    p = probes[-1] if probes else None
    if p is not None:
        checked.append(f"{len(probes)} sample probe(s), the last at step {p.get('step')}")
        k = int(num(p.get("doctor/classes")) or 0)
        if k:
            unit = "modes" if dataset_meta(data).get("probe") == "toy" else "classes"
            assigned = num(p.get("doctor/assigned_frac"))
            if assigned is not None and assigned < MIN_ASSIGNED:
                what = ("recognised with confidence by the data's probe classifier" if
                        unit == "classes" else "near any mode of the mixture")
                unrec.append(f"only {assigned:.0%} of the probe's samples are {what} "
                             f"(step {p.get('step')})")
            covered = num(p.get("doctor/covered"))
            hist = p.get("doctor/hist") or []
            # counted over confident samples only: with none of them, nothing is covered
            if covered is not None and (covered <= COVERAGE_NEAR_ZERO * k or not sum(hist)):
                shown = 0 if not sum(hist) else int(covered)
                unrec.append(f"{shown} of {k} {unit} covered by the samples (step {p.get('step')})")
    rec = _latest(probes, "doctor/recall")
    if rec is not None and rec[0] <= RECALL_NEAR_ZERO:
        unrec.append(f"recall {rec[0]:.2f} at step {rec[1]} (the samples cover almost none of "
                     f"the real data's manifold)")
    results = (eval_json or {}).get("results") or {}
    for key, label in (("recall", "recall"), ("coverage", "coverage")):
        v = num(results.get(key))
        if v is None:
            latest = _latest(evals, f"eval/{key}")
            v = latest[0] if latest else None
        if v is not None and math.isfinite(v) and v <= RECALL_NEAR_ZERO:
            unrec.append(f"evaluation {label} {v:.2f}")
    mc, nm = num(results.get("modes_covered")), num(results.get("n_modes"))
    if mc is not None and nm and mc <= COVERAGE_NEAR_ZERO * nm:
        unrec.append(f"evaluation: {mc:.0f} of {nm:.0f} modes covered")

    # -- how much evidence there is -----------------------------------------------------------
    if adversarial:
        accs = [a for a in (num(r.get("D/acc")) for r in logs if "D/acc" in r)
                if a is not None and math.isfinite(a)][-D_PINNED_RECORDS:]
        if len(accs) >= min(D_PINNED_RECORDS, max(1, len(logs))) and accs \
                and min(accs) >= D_PINNED:
            insuf.append(f"D's accuracy is pinned at {min(accs):.2f} over the last {len(accs)} "
                         f"log record(s): D tells every generated batch from the data, so G is "
                         f"not yet producing anything data-like")
    steps = [int(r["step"]) for r in logs if "step" in r]
    checked.append(f"{len(logs)} log record(s)" + (f" up to step {max(steps)}" if steps else ""))
    if len(logs) < MIN_LOG_RECORDS:
        insuf.append(f"only {len(logs)} log record(s): the doctor's rules need at least "
                     f"{MIN_LOG_RECORDS} (train longer or lower train.log_every)")
    if p is None and samples:
        insuf.append("no sample probe ran (train.doctor off, or the run stopped before "
                     "train.doctor_every steps): nobody looked at the samples")
    evaluated = bool(results) or bool(evals) or bool(best_json)
    if evaluated:
        checked.append("an evaluation (" + ", ".join(
            x for x, have in (("eval.json", bool(results)), ("eval records", bool(evals)),
                              ("best weights", bool(best_json))) if have) + ")")
    else:
        insuf.append("no evaluation: sample quality was never measured (run `gankit eval RUN`, "
                     "or train with --eval-every N)")

    failures = [r for r in rows if r.get("severity") in ("critical", "warning")]
    critical = any(r.get("severity") == "critical" for r in failures)
    if unrec:
        return Verdict("unrecognisable", "Samples not recognisable", "critical", unrec, insuf,
                       checked)
    if failures:
        n = len(failures)
        return Verdict("diagnosed", f"{n} failure mode{'s' if n > 1 else ''} diagnosed",
                       "critical" if critical or insuf else "warning", unrec, insuf, checked)
    if insuf:
        return Verdict("insufficient", "Insufficient evidence: no failure mode was detected, "
                       "but the evidence cannot rule one out", "critical", unrec, insuf, checked)
    return Verdict("ok", "No failure mode detected", "ok", unrec, insuf, checked)


def assess_run(run_dir: str | Path) -> Verdict:
    """The :class:`Verdict` of a run directory, from its files (``gankit report``/``doctor``)."""
    import json

    from ..rundir import RunDir, read_jsonl
    from . import analyse_run
    from .rules import is_eval, is_log

    rd = RunDir(run_dir)
    cfg = rd.read_config()
    records = rd.read("metrics")
    rows = analyse_run(rd.path)["rows"] if records else []

    def load(path: Path) -> dict[str, Any] | None:
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return d if isinstance(d, dict) else None

    name = cfg.get("model", {}).get("name", "")
    return assess(logs=[r for r in records if is_log(r)], probes=read_jsonl(rd.stream("probes")),
                  evals=[r for r in records if is_eval(r)], eval_json=load(rd.eval_json),
                  best_json=load(rd.best / "best.json"), rows=rows,
                  **family_traits(name), data=str(cfg.get("data", {}).get("name", "")))


def family_traits(name: str) -> dict[str, bool]:
    """``adversarial``/``samples`` of :func:`assess` for the registered family ``name`` (a
    custom ``gankit.GAN`` samples and plays the adversarial game)."""
    from ..registry import MODELS

    if name not in MODELS:
        return {"adversarial": True, "samples": True}
    fam = MODELS.get(name)
    return {"adversarial": bool(fam.adversarial), "samples": "sample" in fam.capabilities}
