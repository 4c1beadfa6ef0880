"""``saturating-gradients``: the minimax generator loss vanishes early, the non-saturating one not.

Seed chapter 000 §3.4: "the training criterion saturates if the discriminator in the early phase
of training perfectly distinguishes between fake and real examples ... instead of minimizing
log(1 - D(G(z))), one maximizes log(D(G(z)))" (Goodfellow et al. 2014 §3). Seed 002 §3.2 repeats
it ("maintains higher gradients early in the training").

With D = sigmoid(l) for the discriminator logit l:

- saturating loss (G minimises) L_sat = log(1 - D) = -softplus(l), dL_sat/dl = -sigmoid(l) = -D;
- non-saturating loss L_ns = -log D = softplus(-l), dL_ns/dl = -sigmoid(-l) = -(1 - D).

So early in training, when D(G(z)) -> 0, the saturating gradient is D itself and vanishes, while
the non-saturating one tends to -1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import EXPERIMENTS
from ._common import Outcome, pyplot

#: D(G(z)) values at which the table is reported.
D_VALUES = (1e-6, 1e-3, 1e-2, 0.1, 0.5, 0.9, 0.99, 0.999)


def generator_loss_gradients(d: np.ndarray) -> dict[str, np.ndarray]:
    """Losses and their gradients w.r.t. the logit at the given D(G(z)) values, by autograd.

    Computed in float64 through ``softplus`` on the logit l = log(d / (1 - d)), which is how a
    numerically careful implementation evaluates them: log(1 - sigmoid(l)) taken literally gives
    log 0 = -inf (and a NaN gradient) once 1 - sigmoid(l) rounds to 0 for large l.
    """
    d64 = torch.as_tensor(np.asarray(d, dtype=np.float64))
    logit = torch.logit(d64).requires_grad_(True)
    sat = -F.softplus(logit)  # log(1 - D)
    ns = F.softplus(-logit)  # -log D
    (g_sat,) = torch.autograd.grad(sat.sum(), logit)
    (g_ns,) = torch.autograd.grad(ns.sum(), logit)
    return {
        "loss_sat": sat.detach().numpy(),
        "loss_ns": ns.detach().numpy(),
        "grad_sat_logit": g_sat.numpy(),
        "grad_ns_logit": g_ns.numpy(),
    }


@EXPERIMENTS.register("saturating-gradients")
def saturating_gradients_experiment() -> Outcome:
    """Gradients of log(1 - D(G(z))) and -log D(G(z)) w.r.t. the logit, as functions of D(G(z))."""
    d = np.array(D_VALUES)
    g = generator_loss_gradients(d)
    table = {
        f"{v:g}": {
            "loss_sat": g["loss_sat"][i],
            "loss_ns": g["loss_ns"][i],
            "grad_sat_logit": g["grad_sat_logit"][i],
            "grad_ns_logit": g["grad_ns_logit"][i],
            "analytic_grad_sat_logit": -v,
            "analytic_grad_ns_logit": -(1.0 - v),
            "grad_sat_wrt_D": -1.0 / (1.0 - v),
            "grad_ns_wrt_D": -1.0 / v,
            "ratio_ns_over_sat": g["grad_ns_logit"][i] / g["grad_sat_logit"][i],
        }
        for i, v in enumerate(D_VALUES)
    }
    max_err = float(
        max(np.max(np.abs(g["grad_sat_logit"] + d)), np.max(np.abs(g["grad_ns_logit"] + (1 - d))))
    )
    numbers = {"table": table, "max_abs_error_vs_analytic": max_err}

    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    dd = np.linspace(1e-3, 1 - 1e-3, 999)
    ax1.plot(dd, np.log1p(-dd), "tab:red", lw=2, label="saturating: log(1 − D(G(z)))")
    ax1.plot(dd, -np.log(dd), "tab:blue", lw=2, label="non-saturating: −log D(G(z))")
    ax1.set_xlabel("D(G(z))")
    ax1.set_ylabel("generator loss (minimised)")
    ax1.set_title("generator losses (Goodfellow et al. 2014 §3)", fontsize=10)
    ax1.legend(fontsize=8)
    dl = np.logspace(-6, np.log10(0.999), 400)
    gl = generator_loss_gradients(dl)
    ax2.loglog(dl, np.abs(gl["grad_sat_logit"]), "tab:red", lw=2, label="|∂/∂l log(1 − σ(l))| = D")
    ax2.loglog(dl, np.abs(gl["grad_ns_logit"]), "tab:blue", lw=2, label="|∂/∂l −log σ(l)| = 1 − D")
    ax2.axvspan(1e-6, 1e-2, color="gray", alpha=0.15, label="early training: D rejects fakes")
    ax2.set_xlabel("D(G(z))")
    ax2.set_ylabel("|gradient w.r.t. discriminator logit l|")
    ax2.set_title(
        f"at D = 1e-3: {abs(table['0.001']['grad_sat_logit']):.0e} vs "
        f"{abs(table['0.001']['grad_ns_logit']):.3f}",
        fontsize=10,
    )
    ax2.legend(fontsize=8, loc="lower right")
    fig.tight_layout()

    t = table["0.001"]
    return Outcome(
        numbers=numbers,
        explanation=(
            "The generator's gradient flows through the discriminator logit l (D = sigmoid(l)). "
            f"For the saturating loss log(1 - D) it is -D: at D(G(z)) = 1e-3 it is "
            f"{t['grad_sat_logit']:.3g}, {t['ratio_ns_over_sat']:.0f}x smaller than the "
            f"non-saturating -log D's {t['grad_ns_logit']:.4f} (= -(1 - D)). Early in training "
            "the discriminator rejects fakes confidently (D -> 0), so the saturating loss gives "
            "almost no signal; -log D gives the strongest signal exactly there. Both losses have "
            "the same fixed point (D = 1/2 at equilibrium, where their gradients are equal)."
        ),
        reference=(
            "Wenzel (2023) §3.4 'Why early GANs were hard to train'; Cohen & Giryes (2022) §3.2; "
            "Goodfellow et al. 2014 §3 (maximise log D(G(z)) instead of minimising "
            "log(1 - D(G(z))))."
        ),
        assumptions=[
            (
                "D is a sigmoid of a logit l and the gradient is taken w.r.t. l, since that is what "
                "backpropagates into G; gradients w.r.t. D itself are also reported "
                "(-1/(1 - D) and -1/D)."
            ),
        ],
        figure=fig,
    )
