"""Diagnosis rules: plain functions over a window of logged records.

Every rule has the signature ``rule(window, info) -> Diagnosis | None``. The same functions
serve the live :class:`~gankit.doctor.callback.Doctor` (its window holds the records it has just
logged) and the offline ``gankit doctor RUN`` (which replays the run's records one by one),
so a diagnosis made during training can always be re-derived from the files of the run.

Three kinds of records are read, from ``metrics.jsonl`` and ``probes.jsonl``:

* **log records** (``MetricsLogger``, every ``train.log_every`` steps): ``loss/D``, ``loss/G``,
  ``D/real`` and ``D/fake`` (batch-mean raw D scores, logits for the probabilistic losses),
  ``D/acc``, and, with the doctor on, ``grad/<net>`` (L2 norm of that network's gradient after its
  phase, averaged over the interval). Non-finite values are written as the strings ``"nan"`` /
  ``"inf"``, which :func:`num` reads back as floats.
* **probe records** (the doctor, every ``train.doctor_every`` steps, in ``probes.jsonl``):
  ``doctor/div_ratio`` (mean pairwise distance of generated samples / that of real samples),
  the class or mode histogram
  (``doctor/classes``, ``doctor/hist``, ``doctor/lost``, ``doctor/assigned_frac``), improved
  precision/recall (``doctor/precision``, ``doctor/recall``) and, every few probes, the
  memorisation statistics ``doctor/mem_*``.
* **eval records** (``Evaluator``): ``eval/<metric>``.

The explanations and remedies quote the project's source documents, named in plain words:
Wenzel (2023) ("Generative Adversarial Networks and Other Generative Models", Machine
Learning for Brain Disorders, ch. 5), Cohen & Giryes (2022) (an introduction to GANs through
mode collapse, vanishing gradients and low-quality images), the BIOS 740 GAN lecture, and
Bénédict's GAN survey post ("Generative Adversarial Networks, their variants and their
evaluation"). Remedies name the gankit setting that applies them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SEVERITIES = ("info", "warning", "critical")


# ---------------------------------------------------------------------------------------------
# records
# ---------------------------------------------------------------------------------------------

def num(v: Any) -> float | None:
    """A logged value as a float (``"nan"``/``"inf"`` strings included), ``None`` if not a number."""
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def finite(v: Any) -> bool:
    x = num(v)
    return x is not None and math.isfinite(x)


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def is_log(rec: dict[str, Any]) -> bool:
    return any(k.startswith("loss/") for k in rec)


def is_probe(rec: dict[str, Any]) -> bool:
    return any(k.startswith("doctor/") for k in rec)


def is_eval(rec: dict[str, Any]) -> bool:
    return any(k.startswith("eval/") for k in rec)


@dataclass
class RunInfo:
    """What the rules need to know about a run besides its records (from its config)."""

    loss: str = "nonsaturating"
    probabilistic: bool = True  # sigmoid(D score) is D's probability (minimax / non-saturating)
    n_critic: int = 1
    d_every: int = 1
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    optimizer: str = "adam"
    fp16: bool = False  # fp16 loss scaling skips steps with inf gradients by design
    model: str = ""
    data: str = ""

    @classmethod
    def from_config(cls, cfg: dict[str, Any], family_default_phases: bool = True) -> RunInfo:
        """From a resolved config dict (``config.json`` or ``Config.to_dict()``).

        ``family_default_phases``: whether D's logged scores are those of ``loss.name``
        (``ModelFamily.scores_follow_loss``); families playing their own objective (EBGAN's
        energies, BEGAN ...) log other quantities under ``D/real``.
        """
        from ..losses import get_loss

        loss = cfg.get("loss", {}).get("name", "nonsaturating")
        try:
            prob = bool(get_loss(loss).probabilistic) and family_default_phases
        except Exception:  # noqa: BLE001  (an f-GAN divergence etc.: not a probability)
            prob = False
        o, t = cfg.get("optim", {}), cfg.get("train", {})
        return cls(loss=loss, probabilistic=prob, n_critic=int(o.get("n_critic", 1)),
                   d_every=int(cfg.get("tricks", {}).get("d_every", 1)),
                   lr_g=float(o.get("lr_g", 2e-4)), lr_d=float(o.get("lr_d", 2e-4)),
                   optimizer=str(o.get("name", "adam")), fp16=t.get("amp") == "fp16",
                   model=str(cfg.get("model", {}).get("name", "")),
                   data=str(cfg.get("data", {}).get("name", "")))


@dataclass
class Window:
    """The records a rule looks at, oldest first, all at steps <= ``step``."""

    logs: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def step(self) -> int:
        return max([r["step"] for r in (self.logs[-1:] + self.probes[-1:] + self.evals[-1:])],
                   default=0)

    def series(self, key: str, n: int | None = None) -> list[float]:
        vals = [num(r.get(key)) for r in self.logs if key in r]
        out = [v for v in vals if v is not None]
        return out[-n:] if n else out


@dataclass
class Diagnosis:
    """One finding: what, how bad, the numbers behind it, why (seeds), what to do."""

    diagnosis: str  # stable id: divergence, vanishing_gradients, mode_collapse, ...
    severity: str  # info | warning | critical
    title: str  # human name, may be more specific than the id ("mode dropping")
    summary: str  # one line with the key numbers
    evidence: dict[str, Any]
    explanation: str
    remedies: list[str]
    seed_ref: str
    step: int = 0
    state: str = "raised"  # raised | changed | resolved | action

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["evidence"] = _jsonable(d["evidence"])
        return {"step": d.pop("step"), "diagnosis": d.pop("diagnosis"),
                "severity": d.pop("severity"), **d}


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return round(f, 6) if math.isfinite(f) else str(f)
    return v


# ---------------------------------------------------------------------------------------------
# what the seeds say: explanation, remedies and source of every diagnosis
# ---------------------------------------------------------------------------------------------

KNOWLEDGE: dict[str, dict[str, Any]] = {
    "divergence": {
        "title": "divergence",
        "explanation": (
            "Losses or gradients became non-finite or exploded. The BIOS 740 GAN lecture ('Challenges in GAN "
            "Training') lists 'Vanishing/Exploding Gradients' and, under 'Hyperparameter "
            "Sensitivity', 'Learning Rate: Too high -> instability'; Wenzel (2023) Box 4: 'GAN "
            "training is sensitive to hyperparameters, most importantly the learning rate.' The "
            "doctor returns to the last good checkpoint with lower learning rates."),
        "remedies": [
            ("lower the learning rates (done automatically: train.doctor_lr_factor per rollback); "
            "set optim.lr_g / optim.lr_d lower for the next run"),
            ("Adam with beta1 = 0.5 rather than plain SGD (the BIOS 740 GAN lecture: 'reducing beta1 to 0.5 "
            "improves stability'): optim.name=adam optim.betas_d=[0.5,0.999]"),
            ("a gradient penalty, which 'adds stability and prevents exploding gradients' "
            "(the BIOS 740 GAN lecture): gankit train wgan-gp, or loss.gp=r1"),
            "spectral normalisation of D (the BIOS 740 GAN lecture #3): model.spectral_norm=true or gankit train sngan",
        ],
        "seed_ref": "the BIOS 740 GAN lecture 'Challenges in GAN Training' & 'Hyperparameter Sensitivity' 1-4; "
                    "Wenzel (2023) §3.5 Box 4 'General measures'",
    },
    "vanishing_gradients": {
        "title": "vanishing generator gradients",
        "explanation": (
            "D separates real from fake almost perfectly (D(x) -> 1, D(G(z)) -> 0), so G learns "
            "little. Wenzel (2023) §3.4: 'the training criterion saturates if the discriminator in "
            "the early phase of training perfectly distinguishes between fake and real examples. "
            "The generator will therefore no longer obtain a helpful gradient to update its "
            "weights.' Cohen & Giryes (2022) §3.2: with a near-optimal D the generator minimises the JS "
            "divergence, whose gradient vanishes when p_g is far from p_r ('training will not be "
            "feasible due to extremely low gradients'). With the saturating minimax loss "
            "log(1 - D(G(z))) the gradient w.r.t. D's logit is D(G(z)) itself, so it goes to 0 "
            "with D(G(z)). Bénédict's GAN survey (challenge 4): 'D is too strong compared to G ... G is not "
            "provided with any more training guidance.'"),
        "remedies": [
            ("use the non-saturating generator loss -log D(G(z)) (Wenzel (2023) §3.4, Goodfellow "
            "et al. 2014): loss.name=nonsaturating"),
            ("weaken D: fewer D steps (optim.n_critic=1), a lower optim.lr_d, dropout in D "
            "(tricks.d_dropout=0.3, the BIOS 740 GAN lecture #6), or freeze D while it is too strong (the BIOS 740 GAN lecture "
            "#7: tricks.freeze_d_when_acc_above=0.95)"),
            ("keep D unsure: one-sided label smoothing (Wenzel (2023) Box 4): "
            "tricks.label_smoothing=0.1; instance noise ('added noise can be required', §3.4): "
            "tricks.instance_noise=0.1"),
            ("a loss with useful gradients far from the data (Cohen & Giryes (2022) §5, the BIOS 740 GAN lecture LSGAN/WGAN): "
            "gankit train lsgan / wgan-gp"),
        ],
        "seed_ref": "Wenzel (2023) §3.4 'Why Early GANs Were Hard to Train' and §3.5 'Poor "
                    "convergence'; Cohen & Giryes (2022) §3.2 'Vanishing gradients'; Bénédict's GAN survey challenge 4",
    },
    "mode_collapse": {
        "title": "mode collapse",
        "explanation": (
            "The generator covers only part of the data distribution. Cohen & Giryes (2022) §3.1: 'Mode "
            "collapse is the phenomenon where the generator only yields a small subset of the "
            "possible modes'; Wenzel (2023) §3.5: mode dropping leaves 'regions of the data "
            "distribution not being covered by the generator', and 'if all modes but one are "
            "dropped, one can call this mode collapse'. Cohen & Giryes (2022) §3.2 explains why the usual "
            "non-saturating loss invites it: it is dominated by the reverse KL(p_g || p_r), for "
            "which 'q distribution chooses a single mode'. The BIOS 740 GAN lecture ('Mode Collapse') names "
            "imbalanced G-D learning, training instability and the lack of diversity-promoting "
            "mechanisms as causes; Wenzel (2023), Box 4: 'when the generator only produces very "
            "convincing, but extremely similar images, this is an indication for mode collapse' "
            "- high precision with low recall."),
        "remedies": [
            ("minibatch discrimination (the BIOS 740 GAN lecture, Wenzel (2023) Box 4): "
            "tricks.minibatch_discrimination=5, or tricks.minibatch_stddev=4"),
            "feature matching (the BIOS 740 GAN lecture, Box 4): tricks.feature_matching=true",
            ("a lower learning rate ('Mode collapse might already be mitigated by a lower learning "
            "rate', Box 4): e.g. halve optim.lr_g and optim.lr_d"),
            ("unrolled GAN, 'allows the generator to anticipate discriminator updates' (the BIOS 740 GAN lecture): "
            "gankit train unrolled"),
            "Wasserstein loss (the BIOS 740 GAN lecture, Cohen & Giryes (2022) §5): gankit train wgan-gp",
            "mutual-information regularisation (the BIOS 740 GAN lecture): gankit train infogan",
        ],
        "seed_ref": "Cohen & Giryes (2022) §3.1 'Mode collapse' and §3.2 (reverse KL); Wenzel (2023) §3.5 "
                    "'Mode dropping' and Box 4 'Minibatch discrimination'; the BIOS 740 GAN lecture 'Mode Collapse'",
    },
    "helvetica": {
        "title": "Helvetica scenario",
        "explanation": (
            "G has been trained far ahead of D: D is fooled (D(G(z)) high, accuracy near "
            "chance) although G maps many latent vectors to (nearly) the same output. Bénédict's GAN survey "
            "('The Original Generative Adversarial Network', challenge 1): 'The Helvetica "
            "scenario: G is trained too much without updating D. The latter is then unable to "
            "discriminate real from fake data, without G having learned to mimic the real data.' "
            "Goodfellow et al. 2014: G 'collapses too many values of z to the "
            "same value of x'."),
        "remedies": [
            ("update D at least as often as G (Goodfellow et al. 2014 Alg. 1, k D steps per G "
            "step, the BIOS 740 GAN lecture 'GAN Algorithms'): optim.n_critic >= 1, tricks.d_every=1, no "
            "tricks.freeze_d_when_acc_above"),
            "two time-scale update rule, a faster D (the BIOS 740 GAN lecture 'TTUR'): optim.lr_d > optim.lr_g",
            ("diversity pressure on G (the BIOS 740 GAN lecture 'Mode Collapse'): "
            "tricks.minibatch_discrimination=5 or tricks.feature_matching=true"),
            "unrolled GAN so G anticipates D's response (the BIOS 740 GAN lecture): gankit train unrolled",
        ],
        "seed_ref": "Bénédict's GAN survey 'The Original Generative Adversarial Network', challenge 1 (Helvetica "
                    "scenario, after Goodfellow et al. 2014); the BIOS 740 GAN lecture 'Alternating Training'",
    },
    "oscillation": {
        "title": "oscillation / non-convergence",
        "explanation": (
            "The losses cycle instead of settling and the sample metrics do not improve. The BIOS 740 GAN lecture "
            "('Challenges in GAN Training'): 'Non-Convergence: The model oscillates instead of "
            "converging.' Wenzel (2023) Box 4 ('Feature matching'): 'neither discriminator nor "
            "generator converge. They play their cat and mouse game too effectively. The "
            "generator produces a good image, but the discriminator learns to figure it out, and "
            "the generator shifts to another good image, and so on.' Cohen & Giryes (2022) §3.3: the "
            "parameters 'fluctuate' and the loss 'fluctuates during the entire training' without "
            "correlating with image quality; Bénédict's GAN survey (challenge 3): gradient descent only "
            "roughly approximates the Nash equilibrium of the game."),
        "remedies": [
            "feature matching (Box 4): tricks.feature_matching=true",
            ("Adam beta1 = 0.5 ('standard settings beta1 = 0.9 can lead to oscillations', the "
            "BIOS 740 GAN lecture) and lower learning rates / TTUR: optim.betas_g=[0.5,0.999], optim.lr_g < optim.lr_d"),
            ("an exponential moving average of G's weights 'to avoid forgetting' (Wenzel (2023) "
            "§3.5): train.ema=true (sample from G_ema)"),
            ("consensus optimisation or a gradient penalty (the BIOS 740 GAN lecture convergence figures): "
            "tricks.consensus=10, loss.gp=r1, gankit train wgan-gp"),
            "judge by metrics, not losses (the BIOS 740 GAN lecture #7 'Track GAN metrics'): train.eval_every",
        ],
        "seed_ref": "the BIOS 740 GAN lecture 'Challenges in GAN Training' (Non-Convergence) and 'Hyperparameter "
                    "Sensitivity' 2; Wenzel (2023) §3.5 Box 4 'Feature matching'; Cohen & Giryes (2022) §3.3; "
                    "Bénédict's GAN survey challenge 3",
    },
    "memorisation": {
        "title": "memorisation",
        "explanation": (
            "Generated samples lie closer to the training images than held-out real images do: "
            "the generator reproduces its training data (data copying, Meehan et al. 2020; "
            "gankit.metrics.memorization). The BIOS 740 GAN lecture ('Hyperparameter Sensitivity' #9, #6) warns "
            "that the discriminator can memorise the training data and recommends augmentation "
            "and dropout against it; a D that memorises pulls G towards the training points."),
        "remedies": [
            ("data augmentation for D 'prevents the discriminator from memorizing training data' "
            "(the BIOS 740 GAN lecture #9): tricks.diffaugment=color,translation,cutout"),
            "dropout in D 'helps prevent overfitting' (the BIOS 740 GAN lecture #6): tricks.d_dropout=0.3",
            ("early stopping at the best evaluated weights (the BIOS 740 GAN lecture #7 'Avoid overtraining'): "
            "train.eval_every with best/ "),
            "more training data",
        ],
        "seed_ref": "the BIOS 740 GAN lecture 'Hyperparameter Sensitivity' #6, #7, #9; gankit.metrics.memorization "
                    "(Meehan et al. 2020)",
    },
}


def make(diag: str, severity: str, summary: str, evidence: dict[str, Any], step: int,
         title: str | None = None, extra_remedies: list[str] | None = None) -> Diagnosis:
    k = KNOWLEDGE[diag]
    return Diagnosis(diag, severity, title or k["title"], summary, evidence, k["explanation"],
                     [*(extra_remedies or []), *k["remedies"]], k["seed_ref"], step)


# ---------------------------------------------------------------------------------------------
# thresholds (module constants so that tests and users can see and change them)
# ---------------------------------------------------------------------------------------------

#: divergence: a gradient norm this many times the median of its previous values ...
EXPLODE_VS_MEDIAN = 1e3
#: ... and this many times their maximum counts as exploding.
EXPLODE_VS_MAX = 10.0
#: vanishing gradients: D near-perfect on this many consecutive log records
D_PERFECT_RECORDS = 3
D_PERFECT_REAL = 0.9  # sigmoid(mean logit of real) at least
D_PERFECT_FAKE = 0.1  # sigmoid(mean logit of fake) at most
D_PERFECT_ACC = 0.97
G_GRAD_COLLAPSE = 0.1  # G's gradient norm below this fraction of its peak in the window
#: mode collapse: a class/mode is lost when it gets less than this fraction of its fair share
LOST_SHARE = 0.2
MIN_ASSIGNED = 0.25  # the histogram counts only when this fraction of samples is assignable
MIN_ASSIGNED_PER_CLASS = 4  # ... and there are at least this many assigned samples per class
DIV_FALL = 0.5  # diversity ratio below this fraction of its earlier maximum ...
DIV_LOW = 0.5  # ... and below this absolute ratio (fake vs real pairwise distance)
PR_PRECISION_HIGH, PR_RECALL_LOW = 0.7, 0.3
#: Helvetica: D fooled (p_fake >= this, accuracy <= that) while samples have collapsed
HELV_P_FAKE, HELV_ACC, HELV_DIV = 0.35, 0.75, 0.15
HELV_RECORDS = 4
#: oscillation: windows of this many log records (at least OSC_MIN)
OSC_WINDOW, OSC_MIN = 24, 16
OSC_ACF_NEG, OSC_ACF_POS, OSC_ACF_LAG1 = -0.3, 0.2, 0.2
OSC_REL_AMPLITUDE = 0.05


# ---------------------------------------------------------------------------------------------
# rules
# ---------------------------------------------------------------------------------------------

def nonfinite_keys(rec: dict[str, Any], ignore_grads: bool = False) -> list[str]:
    """Keys of a log record whose values are NaN/Inf (losses, D outputs, gradient norms)."""
    out = []
    for k, v in rec.items():
        if k in ("step", "time", "it_s") or not (k.startswith(("loss/", "D/", "grad/"))):
            continue
        if ignore_grads and k.startswith("grad/"):
            continue
        x = num(v)
        if x is not None and not math.isfinite(x):
            out.append(k)
    return out


def divergence(w: Window, info: RunInfo) -> Diagnosis | None:
    """NaN/Inf in the latest log record, or a gradient norm exploding by orders of magnitude.

    The logged values are means over the log interval, so one non-finite step anywhere in the
    interval makes the mean non-finite: checking the log record catches it without a per-step
    host sync.
    """
    if not w.logs:
        return None
    rec = w.logs[-1]
    # fp16: the loss scaler meets inf gradients by design and skips those steps
    bad = nonfinite_keys(rec, ignore_grads=info.fp16)
    exploding: dict[str, Any] = {}
    for k in [k for k in rec if k.startswith("grad/")]:
        cur = num(rec[k])
        prev = [v for v in w.series(k)[:-1][-20:] if math.isfinite(v)]
        if cur is None or not math.isfinite(cur) or len(prev) < 3:
            continue
        med, mx = float(np.median(prev)), max(prev)
        if cur > EXPLODE_VS_MEDIAN * max(med, 1e-12) and cur > EXPLODE_VS_MAX * mx:
            exploding[k] = {"now": cur, "median_before": med, "max_before": mx}
    if not bad and not exploding:
        return None
    ev: dict[str, Any] = {"nonfinite": bad, "exploding": exploding,
                          "values": {k: rec.get(k) for k in rec if k.startswith(("loss/", "grad/"))},
                          "lr_g": info.lr_g, "lr_d": info.lr_d, "optimizer": info.optimizer}
    what = (f"non-finite {', '.join(bad)}" if bad else
            "exploding " + ", ".join(f"{k} {v['now']:.3g} (median before {v['median_before']:.3g})"
                                     for k, v in exploding.items()))
    return make("divergence", "critical", f"{what} at step {rec['step']}", ev, rec["step"])


def _d_probs(rec: dict[str, Any], info: RunInfo) -> tuple[float | None, float | None]:
    """D(x), D(G(z)) as probabilities: sigmoid of the logged batch-mean logit.

    The sigmoid of the mean logit is a monotone summary of the batch (the per-sample mean of
    sigmoids is not logged, to keep the training step free of extra work); it is only a
    probability for the minimax / non-saturating losses.
    """
    if not info.probabilistic:
        return None, None
    r, f = num(rec.get("D/real")), num(rec.get("D/fake"))
    if r is None or f is None or not (math.isfinite(r) and math.isfinite(f)):
        return None, None
    return sigmoid(r), sigmoid(f)


def vanishing_gradients(w: Window, info: RunInfo) -> Diagnosis | None:
    """D near-perfect for ``D_PERFECT_RECORDS`` log records; G's gradient collapsed, or the loss
    is the saturating minimax one (whose gradient is D(G(z)) itself, Wenzel (2023) §3.4)."""
    recs = [r for r in w.logs if "D/acc" in r][-D_PERFECT_RECORDS:]
    if len(recs) < D_PERFECT_RECORDS:
        return None
    accs = [num(r["D/acc"]) for r in recs]
    if any(a is None or not math.isfinite(a) or a < D_PERFECT_ACC for a in accs):
        return None
    probs = [_d_probs(r, info) for r in recs]
    if info.probabilistic and any(p is None or q is None or p < D_PERFECT_REAL
                                  or q > D_PERFECT_FAKE for p, q in probs):
        return None
    g = [v for v in w.series("grad/G") if math.isfinite(v)]
    g_now = g[-1] if g else None
    g_peak = max(g) if g else None
    collapsed = g_now is not None and g_peak is not None and g_peak > 0 and \
        g_now <= G_GRAD_COLLAPSE * g_peak
    saturating = info.loss == "minimax"
    if not (saturating or collapsed):
        return None  # a winning D with a non-saturating loss still gives G gradients
    last = recs[-1]
    p_real, p_fake = probs[-1]
    ev: dict[str, Any] = {"D_acc": accs[-1], "records": len(recs), "loss": info.loss,
                          "n_critic": info.n_critic, "lr_d/lr_g": info.lr_d / max(info.lr_g, 1e-30)}
    if p_real is not None:
        ev |= {"D(x)": p_real, "D(G(z))": p_fake,
               # d/dl of log(1 - sigmoid(l)) is -sigmoid(l): the minimax gradient scale
               "minimax_grad_scale": p_fake if saturating else None}
    if g_now is not None:
        ev |= {"grad_G": g_now, "grad_G_peak": g_peak,
               "grad_G_ratio": g_now / g_peak if g_peak else None}
    sev = "critical" if saturating or (collapsed and g_now is not None and g_peak is not None
                                        and g_now <= 0.01 * g_peak) else "warning"
    bits = [f"D acc {accs[-1]:.3f}"]
    if p_real is not None:
        bits.append(f"D(x) {p_real:.3f}, D(G(z)) {p_fake:.3g}")
    if g_now is not None:
        bits.append(f"|grad G| {g_now:.3g} ({g_now / g_peak:.1%} of peak)" if g_peak else "")
    if saturating:
        bits.append("saturating minimax loss")
    extra = [] if not saturating else [
        ("switch to the non-saturating loss now: loss.name=nonsaturating (the run's loss is the "
        "saturating minimax one)")]
    return make("vanishing_gradients", sev, "; ".join(b for b in bits if b), ev, last["step"],
                extra_remedies=extra)


def _histogram_state(p: dict[str, Any]) -> tuple[int, list[str], bool]:
    """(number of classes/modes, lost names, whether the histogram is meaningful) of a probe."""
    k = int(num(p.get("doctor/classes")) or 0)
    lost = list(p.get("doctor/lost") or [])
    hist = p.get("doctor/hist") or []
    valid = k > 0 and (num(p.get("doctor/assigned_frac")) or 0.0) >= MIN_ASSIGNED \
        and sum(hist) >= MIN_ASSIGNED_PER_CLASS * k
    return k, lost, valid


def mode_collapse(w: Window, info: RunInfo) -> Diagnosis | None:
    """Classes/modes lost (and the loss confirmed by a second probe or a fall in coverage), or
    diversity falling; high precision with low recall (Box 4's "very convincing, but extremely
    similar") is added as supporting evidence.

    Severity critical when at most half the classes/modes are left or the diversity ratio fell
    below a quarter of the real data's; warning otherwise.
    """
    if not w.probes:
        return None
    p, prev = w.probes[-1], w.probes[:-1]
    k, lost, valid = _histogram_state(p)
    reasons: list[str] = []
    sev = 0  # 1 warning, 2 critical
    ev: dict[str, Any] = {}
    if valid:
        covered = k - len(lost)
        earlier = [q for q in prev if _histogram_state(q)[2]]
        best_before = max((_histogram_state(q)[0] - len(_histogram_state(q)[1]) for q in earlier),
                          default=0)
        confirmed = bool(earlier) and len(_histogram_state(earlier[-1])[1]) > 0
        fell = best_before > covered
        ev |= {"covered": covered, "classes": k, "lost": lost,
               "hist": p.get("doctor/hist"), "assigned_frac": num(p.get("doctor/assigned_frac")),
               "best_covered_before": best_before}
        if lost and (confirmed or fell):
            sev = max(sev, 2 if covered <= k // 2 else 1)
    div = num(p.get("doctor/div_ratio"))
    if div is not None and math.isfinite(div):
        before = [num(q.get("doctor/div_ratio")) for q in prev]
        before_f = [b for b in before if b is not None and math.isfinite(b)]
        peak = max(before_f, default=None)
        ev |= {"diversity_ratio": div, "diversity_ratio_peak_before": peak}
        if peak is not None and div < DIV_FALL * peak and div < DIV_LOW:
            sev = max(sev, 2 if div < 0.25 else 1)
            reasons.append(f"diversity {div:.2f}x real (was {peak:.2f}x)")
    prec, rec = num(p.get("doctor/precision")), num(p.get("doctor/recall"))
    # With a class histogram, precision counts only when the samples are recognisable at all
    # (a blob can sit inside the real feature manifold without being a digit).
    if prec is not None and rec is not None and (valid or k == 0):
        ev |= {"precision": prec, "recall": rec}
        # Supporting evidence only: on a few hundred samples in a 128-d feature space recall is
        # low for every young image GAN, collapsed or not.
        if sev and prec >= PR_PRECISION_HIGH and rec <= PR_RECALL_LOW:
            reasons.append(f"precision {prec:.2f} but recall {rec:.2f}")
    if not sev:
        return None
    if valid and lost:  # name what is missing whenever the histogram is meaningful
        from ..data import dataset_meta

        unit = "modes" if dataset_meta(info.data).get("probe") == "toy" else "classes"
        reasons.insert(0, f"{k - len(lost)}/{k} {unit}"
                          f" covered, lost {', '.join(map(str, lost))}")
    severity = "critical" if sev == 2 else "warning"
    title = "mode collapse" if severity == "critical" else "mode dropping"
    if valid and k - len(lost) == 1:
        title = "mode collapse (a single mode left)"
    return make("mode_collapse", severity, "; ".join(reasons), ev, p["step"], title=title)


def helvetica(w: Window, info: RunInfo) -> Diagnosis | None:
    """D fooled (D(G(z)) high, accuracy near chance) while G's samples have collapsed: the
    diversity ratio fell below ``HELV_DIV`` (and to under half its earlier peak), or a single
    class/mode is left.

    D's side is the mean over the last ``HELV_RECORDS`` log records up to the latest probe, so
    one noisy interval neither raises nor clears it.
    """
    if not w.probes or not w.logs:
        return None
    p = w.probes[-1]
    recs = [r for r in w.logs if r["step"] <= p["step"] and finite(r.get("D/acc"))][-HELV_RECORDS:]
    if not recs:
        return None
    acc = float(np.mean([num(r["D/acc"]) for r in recs]))
    probs = [_d_probs(r, info) for r in recs]
    p_real = float(np.mean([a for a, _ in probs])) if all(a is not None for a, _ in probs) else None
    p_fake = float(np.mean([b for _, b in probs])) if all(b is not None for _, b in probs) else None
    rec = recs[-1]
    fooled = acc <= HELV_ACC and (p_fake is None or p_fake >= HELV_P_FAKE)
    k, lost, valid = _histogram_state(p)
    div = num(p.get("doctor/div_ratio"))
    # "collapses too many values of z": diversity must have *fallen* to a fraction of an earlier
    # value - a freshly initialised generator also starts with low diversity, without collapse
    before = [v for v in (num(q.get("doctor/div_ratio")) for q in w.probes[:-1])
              if v is not None and math.isfinite(v)]
    collapsed_div = div is not None and math.isfinite(div) and div <= HELV_DIV and \
        bool(before) and div <= DIV_FALL * max(before)
    collapsed_modes = valid and k - len(lost) <= 1
    if not (fooled and (collapsed_div or collapsed_modes)):
        return None
    ev: dict[str, Any] = {"D_acc": acc, "D(x)": p_real, "D(G(z))": p_fake, "diversity_ratio": div,
                          "log_records": len(recs),
                          "G_steps_per_D_step": 1.0 / max(info.n_critic, 1) * info.d_every,
                          "lr_g/lr_d": info.lr_g / max(info.lr_d, 1e-30)}
    if valid:
        ev |= {"covered": k - len(lost), "classes": k, "lost": lost}
    bits = [f"D fooled (acc {acc:.2f}" + (f", D(G(z)) {p_fake:.2f})" if p_fake is not None else ")")]
    if collapsed_div:
        bits.append(f"yet samples {div:.2f}x as diverse as real data")
    if collapsed_modes:
        bits.append(f"and only {k - len(lost)}/{k} modes")
    return make("helvetica", "critical", " ".join(bits), ev, max(p["step"], rec["step"]))


def _acf(x: np.ndarray, max_lag: int) -> np.ndarray:
    """Autocorrelation at lags 1..max_lag of a mean-removed series."""
    x = x - x.mean()
    den = float(np.dot(x, x))
    if den <= 0:
        return np.zeros(max_lag)
    return np.array([float(np.dot(x[:-k], x[k:])) / den for k in range(1, max_lag + 1)])


def cycling(values: list[float]) -> dict[str, Any] | None:
    """Evidence of a cycle in a series, or ``None``.

    After removing a linear trend, a cycle of period P shows as a smooth series (lag-1
    autocorrelation high) that is anti-correlated with itself half a period later and correlated
    again a full period later. White noise (acf ~ 0 everywhere) and a slow drift (acf decays but
    does not come back) fail the test.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < OSC_MIN or not np.isfinite(x).all():
        return None
    t = np.arange(n)
    resid = x - np.polyval(np.polyfit(t, x, 1), t)
    amp = float(resid.std())
    rel = amp / (abs(float(x.mean())) + amp + 1e-12)
    if rel < OSC_REL_AMPLITUDE:
        return None
    r = _acf(resid, n // 2)
    k_neg = int(np.argmin(r[: max(n // 3, 2)])) + 1  # lag of the deepest trough
    if r[0] < OSC_ACF_LAG1 or r[k_neg - 1] > OSC_ACF_NEG:
        return None
    lo, hi = math.ceil(1.5 * k_neg), min(int(2.5 * k_neg) + 1, n // 2)
    if lo > hi or float(r[lo - 1:hi].max()) < OSC_ACF_POS:
        return None
    k_pos = lo + int(np.argmax(r[lo - 1:hi]))
    return {"period_records": k_pos, "acf_lag1": float(r[0]), "acf_trough": float(r[k_neg - 1]),
            "acf_trough_lag": k_neg, "acf_peak": float(r[k_pos - 1]), "std": amp,
            "relative_amplitude": rel}


def _metric_progress(w: Window, since_step: int) -> tuple[str | None, bool | None]:
    """Whether a quality metric improved after ``since_step`` (best later vs best before)."""
    from ..metrics.evaluate import LOWER_IS_BETTER

    for recs, prefix in ((w.evals, "eval/"), (w.probes, "doctor/")):
        keys = ["eval/fid", "eval/kid_mean", "eval/recall", "eval/modes_covered", "eval/coverage"] \
            if prefix == "eval/" else ["doctor/recall", "doctor/div_ratio"]
        for key in keys:
            vals = [(r["step"], num(r.get(key))) for r in recs if finite(r.get(key))]
            before = [v for s, v in vals if s <= since_step]
            after = [v for s, v in vals if s > since_step]
            if not before or not after:
                continue
            lower = key.split("/", 1)[1] in LOWER_IS_BETTER
            b, a = (min(before), min(after)) if lower else (max(before), max(after))
            tol = 0.02 * abs(b)
            return key, (a < b - tol) if lower else (a > b + tol)
    return None, None


def oscillation(w: Window, info: RunInfo) -> Diagnosis | None:
    """loss/G or loss/D cycling over the last ``OSC_WINDOW`` log records (see :func:`cycling`),
    warning when no metric improved over the window (info when one did: cycling losses with
    improving samples are common, Cohen & Giryes (2022) §3.3 finds the loss uncorrelated with quality)."""
    recs = [r for r in w.logs if finite(r.get("loss/G")) and finite(r.get("loss/D"))][-OSC_WINDOW:]
    if len(recs) < OSC_MIN:
        return None
    g = [num(r["loss/G"]) for r in recs]
    d = [num(r["loss/D"]) for r in recs]
    cg, cd = cycling(g), cycling(d)  # type: ignore[arg-type]
    if cg is None and cd is None:
        return None
    start = recs[0]["step"]
    mid = recs[len(recs) // 2]["step"]
    key, improved = _metric_progress(w, mid)
    corr = float(np.corrcoef(g, d)[0, 1]) if np.std(g) > 0 and np.std(d) > 0 else None
    ev: dict[str, Any] = {"window_steps": [start, recs[-1]["step"]], "records": len(recs),
                          "loss_G": cg, "loss_D": cd, "loss_G_var": float(np.var(g)),
                          "loss_D_var": float(np.var(d)), "corr_loss_D_loss_G": corr,
                          "metric": key, "metric_improved": improved}
    c = cg or cd
    assert c is not None
    steps_per_rec = (recs[-1]["step"] - start) / max(len(recs) - 1, 1)
    period = c["period_records"] * steps_per_rec
    ev["period_steps"] = period
    which = "loss/G" if cg else "loss/D"
    summary = (f"{which} cycles with a period of ~{period:.0f} steps (acf {c['acf_trough']:.2f} at "
               f"half period, {c['acf_peak']:.2f} at full)")
    summary += (f"; {key} not improving" if improved is False else
                f"; {key} still improving" if improved else "; no sample metric to confirm")
    sev = "info" if improved else "warning"
    return make("oscillation", sev, summary, ev, recs[-1]["step"])


def memorisation(w: Window, info: RunInfo) -> Diagnosis | None:
    """The latest memorisation statistics (``doctor/mem_*``) flag data copying or near copies."""
    p = next((q for q in reversed(w.probes) if "doctor/mem_z_u" in q), None)
    if p is None:
        return None
    z = num(p.get("doctor/mem_z_u"))
    frac = num(p.get("doctor/mem_frac_near"))
    ratio = num(p.get("doctor/mem_median_ratio"))
    copying = z is not None and z < -3.0
    near = frac is not None and frac > 0.05
    if not (copying or near):
        return None
    ev = {"z_u": z, "frac_closer_than_heldout_1pct": frac, "median_ratio": ratio,
          "n_samples": p.get("doctor/mem_n"), "space": p.get("doctor/mem_space")}
    bits = []
    if copying:
        bits.append(f"samples nearer to train than held-out data (z_U {z:.1f})")
    if near:
        bits.append(f"{frac:.0%} of samples closer than the 1st percentile of held-out distances")
    return make("memorisation", "critical" if copying and near else "warning", "; ".join(bits),
                ev, p["step"])


Rule = Callable[[Window, RunInfo], Diagnosis | None]
#: Rules driven by probes are re-evaluated only when a new probe arrives (their evidence changes
#: only then), which keeps them from flapping with the noise of single log intervals.
PROBE_RULES = ("mode_collapse", "helvetica", "memorisation")
#: Hysteresis: an active diagnosis is resolved only after its rule stayed silent for this many
#: evaluations in a row (log records, or probes for the probe rules), so that a borderline case
#: does not print a raised/resolved pair every interval.
RESOLVE_AFTER = {"oscillation": OSC_MIN // 2, "vanishing_gradients": D_PERFECT_RECORDS,
                 "mode_collapse": 2, "helvetica": 2}
RULES: dict[str, Rule] = {
    "divergence": divergence,
    "vanishing_gradients": vanishing_gradients,
    "mode_collapse": mode_collapse,
    "helvetica": helvetica,
    "oscillation": oscillation,
    "memorisation": memorisation,
}


# ---------------------------------------------------------------------------------------------
# state tracking: the same for live and offline analysis
# ---------------------------------------------------------------------------------------------

class Tracker:
    """Runs the rules after each new record and reports only changes of state.

    A diagnosis is *raised* the first time its rule fires, *changed* when its severity or title
    changes, and *resolved* when the rule has stopped firing (for ``RESOLVE_AFTER`` evaluations);
    repeated firings with the same state are silent, so the console shows one line per event
    rather than one per log interval.
    """

    def __init__(self, info: RunInfo, rules: dict[str, Rule] | None = None,
                 max_records: int = 400) -> None:
        self.info = info
        self.rules = dict(rules or RULES)
        self.window = Window()
        self.max_records = max_records
        self.active: dict[str, Diagnosis] = {}
        self.history: list[Diagnosis] = []
        self._probes_seen: dict[str, int] = {}
        self._silent: dict[str, int] = {}
        self._raised_at: dict[str, int] = {}

    def add(self, rec: dict[str, Any]) -> None:
        """File a record of ``metrics.jsonl``/``probes.jsonl`` into the window (log, probe, eval)."""
        for pred, lst in ((is_log, self.window.logs), (is_probe, self.window.probes),
                          (is_eval, self.window.evals)):
            if pred(rec):
                lst.append(rec)
                del lst[:-self.max_records]

    def truncate(self, step: int) -> None:
        """Forget records after ``step`` (after a rollback to the checkpoint of that step)."""
        for lst in (self.window.logs, self.window.probes, self.window.evals):
            lst[:] = [r for r in lst if r["step"] <= step]
        self._probes_seen.clear()

    def update(self, only: tuple[str, ...] | None = None) -> list[Diagnosis]:
        """Evaluate the rules on the window; return the events (state changes)."""
        events: list[Diagnosis] = []
        for name, rule in self.rules.items():
            if only is not None and name not in only:
                continue
            if name in PROBE_RULES:
                n = len(self.window.probes)
                if self._probes_seen.get(name) == n and n:
                    continue
                self._probes_seen[name] = n
            d = rule(self.window, self.info)
            old = self.active.get(name)
            if d is not None:
                self._silent[name] = 0
                if old is None:
                    d.state = "raised"
                    self._raised_at[name] = d.step
                elif (old.severity, old.title) != (d.severity, d.title):
                    d.state = "changed"
                else:
                    self.active[name] = d  # same state: keep the freshest evidence, no event
                    continue
                self.active[name] = d
                events.append(d)
            elif old is not None:
                self._silent[name] = self._silent.get(name, 0) + 1
                if self._silent[name] < RESOLVE_AFTER.get(name, 1):
                    continue
                del self.active[name]
                since = self._raised_at.get(name, old.step)
                events.append(Diagnosis(name, "info", old.title,
                                        f"no longer detected (raised at step {since}, last seen "
                                        f"at step {old.step})",
                                        {"raised_at": since, "last_seen": old.step},
                                        old.explanation, [],
                                        old.seed_ref, self.window.step, "resolved"))
        self.history.extend(events)
        return events


def replay(records: list[dict[str, Any]], info: RunInfo) -> Tracker:
    """Re-run the rules over a finished run's records in step order (offline ``gankit doctor``).

    As live, the rules run once per step that has a log or probe record, after all of that
    step's records are filed.
    """
    tr = Tracker(info)
    recs = sorted(records, key=lambda r: r.get("step", 0))  # stable: same-step order kept
    for i, rec in enumerate(recs):
        tr.add(rec)
        last_of_step = i + 1 == len(recs) or recs[i + 1].get("step", 0) != rec.get("step", 0)
        if last_of_step and any(is_log(r) or is_probe(r) for r in recs[max(0, i - 3):i + 1]
                                if r.get("step", 0) == rec.get("step", 0)):
            tr.update()
    return tr
