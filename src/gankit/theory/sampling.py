"""``sampling``: inverse-CDF, rejection and Metropolis-Hastings sampling of a 1-D density, each
checked against the target by a Kolmogorov-Smirnov test.

Seed chapter 000/001 §2.1.4 "Sampling from Distributions": draw a uniform number and feed it
through the inverse CDF "if the CDF is given in closed form"; otherwise "acceptance (or
rejection) sampling ... the random x is accepted if f(x) > y"; and Markov chain Monte Carlo for
the hard cases. The seed leaves out what makes rejection sampling correct: with a proposal q,
a draw x ~ q is accepted with probability p(x) / (M q(x)), where the *envelope constant*
M = sup_x p(x) / q(x) (von Neumann 1951); the acceptance rate is then 1 / M, and an M that is too
small (p > M q somewhere) silently yields samples from the wrong distribution, which the KS
test detects.

The target is a two-component Gaussian mixture, p = 0.3 N(-2, 0.5^2) + 0.7 N(1.5, 1): its CDF is
in closed form (a weighted sum of normal CDFs) but has no closed-form inverse, so the inverse-CDF
sampler inverts it by bisection to machine precision. Metropolis-Hastings (Metropolis et al.
1953; Hastings 1970) runs a random-walk Gaussian proposal; its draws are correlated, so its
effective sample size (Geyer's initial positive sequence estimator, 1992) is reported and the KS
test is applied to the chain thinned to about one draw per effective sample (the KS test assumes
independent draws).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats

from . import EXPERIMENTS
from ._common import Outcome, pyplot

#: The target: weights, means and standard deviations of the two-component mixture.
TARGET = ((0.3, -2.0, 0.5), (0.7, 1.5, 1.0))
#: The rejection sampler's proposal N(0, PROPOSAL_SD^2).
PROPOSAL_SD = 3.0
N_DRAWS = 20000
MH_STEPS = 60000
MH_BURN_IN = 1000
MH_STEP_SD = 2.0
#: KS p-values below this reject the hypothesis that a sampler draws from the target.
ALPHA = 0.01


def target_pdf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return sum(w * np.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
               for w, m, s in TARGET)


def target_log_pdf_scalar(x: float) -> float:
    """log p(x) of one number (plain floats: the Metropolis-Hastings loop calls it per step)."""
    return math.log(sum(w * math.exp(-0.5 * ((x - m) / s) ** 2) / (s * math.sqrt(2 * math.pi))
                        for w, m, s in TARGET))


def target_cdf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return sum(w * stats.norm.cdf(x, m, s) for w, m, s in TARGET)


def proposal_pdf(x: np.ndarray) -> np.ndarray:
    return stats.norm.pdf(x, 0.0, PROPOSAL_SD)


def inverse_cdf_sample(n: int, rng: np.random.Generator,
                       cdf: Callable[[np.ndarray], np.ndarray] = target_cdf,
                       lo: float = -50.0, hi: float = 50.0) -> np.ndarray:
    """``n`` draws x = F^-1(u), u ~ U(0, 1): F inverted by vectorised bisection on [lo, hi]
    (100 halvings: to float64 precision)."""
    u = rng.uniform(size=n)
    a, b = np.full(n, lo), np.full(n, hi)
    for _ in range(100):
        mid = 0.5 * (a + b)
        left = cdf(mid) < u
        a = np.where(left, mid, a)
        b = np.where(left, b, mid)
    return 0.5 * (a + b)


def envelope_constant(p: Callable[[np.ndarray], np.ndarray] = target_pdf,
                      q: Callable[[np.ndarray], np.ndarray] = proposal_pdf,
                      lo: float = -30.0, hi: float = 30.0) -> tuple[float, float]:
    """``(M, x*)``: M = sup_x p(x) / q(x) and where it is reached, by a grid search on
    [lo, hi] refined by bounded scalar minimisation around the best grid point."""
    from scipy.optimize import minimize_scalar

    grid = np.linspace(lo, hi, 200001)
    ratio = p(grid) / q(grid)
    i = int(np.argmax(ratio))
    step = grid[1] - grid[0]
    res = minimize_scalar(lambda t: -float(p(np.array([t]))[0] / q(np.array([t]))[0]),
                          bounds=(grid[i] - step, grid[i] + step), method="bounded",
                          options={"xatol": 1e-12})
    best = max(float(ratio[i]), -float(res.fun))
    return best, float(res.x if -res.fun >= ratio[i] else grid[i])


def rejection_sample(n: int, rng: np.random.Generator, M: float,
                     p: Callable[[np.ndarray], np.ndarray] = target_pdf,
                     q: Callable[[np.ndarray], np.ndarray] = proposal_pdf,
                     q_draw: Callable[[np.random.Generator, int], np.ndarray] | None = None,
                     ) -> tuple[np.ndarray, float, float]:
    """``n`` accepted draws of rejection sampling with envelope ``M q``: x ~ q is kept when
    u < p(x) / (M q(x)), u ~ U(0, 1). Returns the draws, the acceptance rate and the largest
    p(x) / (M q(x)) met among the proposals (above 1: the envelope is violated, M too small)."""
    q_draw = q_draw or (lambda r, m: r.normal(0.0, PROPOSAL_SD, m))
    kept: list[np.ndarray] = []
    proposed = accepted = 0
    worst = 0.0
    while accepted < n:
        m = max(1000, int(1.2 * (n - accepted) * M))
        x = q_draw(rng, m)
        ratio = p(x) / (M * q(x))
        worst = max(worst, float(ratio.max()))
        ok = rng.uniform(size=m) < ratio
        kept.append(x[ok])
        proposed += m
        accepted += int(ok.sum())
    return np.concatenate(kept)[:n], accepted / proposed, worst


def metropolis_hastings(steps: int, rng: np.random.Generator, step_sd: float = MH_STEP_SD,
                        x0: float = 0.0,
                        log_p: Callable[[float], float] = target_log_pdf_scalar,
                        ) -> tuple[np.ndarray, float]:
    """A random-walk Metropolis chain of ``steps`` states: propose x' = x + N(0, step_sd^2),
    accept with probability min(1, p(x') / p(x)) (the proposal is symmetric). Returns the chain
    and the acceptance rate."""
    noise = rng.normal(0.0, step_sd, steps)
    logu = np.log(rng.uniform(size=steps))
    chain = np.empty(steps)
    x, lp = x0, log_p(x0)
    acc = 0
    for t in range(steps):
        y = x + float(noise[t])
        ly = log_p(y)
        if logu[t] < ly - lp:
            x, lp = y, ly
            acc += 1
        chain[t] = x
    return chain, acc / steps


def effective_sample_size(chain: np.ndarray) -> float:
    """Geyer's (1992) initial positive sequence estimate of a chain's effective sample size,
    n / (1 + 2 sum_t rho_t), summing autocorrelations in pairs while the pair sums are
    positive; autocorrelations by FFT."""
    x = np.asarray(chain, np.float64) - np.mean(chain)
    n = len(x)
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n]
    acf = acf / acf[0]
    tau = -1.0  # 1 + 2 sum_{t>=1} rho_t = -1 + 2 sum_{k} (rho_2k + rho_2k+1)
    for k in range(n // 2):
        pair = acf[2 * k] + acf[2 * k + 1]
        if pair <= 0:
            break
        tau += 2 * pair
    return n / max(tau, 1.0 / n)


def ks(draws: np.ndarray) -> dict[str, float]:
    """The Kolmogorov-Smirnov test of draws against the target's CDF."""
    res = stats.kstest(draws, target_cdf)
    return {"ks_statistic": float(res.statistic), "ks_p_value": float(res.pvalue),
            "n": len(draws), "passes": bool(res.pvalue > ALPHA)}


def run_samplers(seed: int = 0) -> dict[str, dict[str, float]]:
    """The three samplers (and rejection with a too-small envelope), each KS-tested."""
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    inv = inverse_cdf_sample(N_DRAWS, rng)
    out["inverse_cdf"] = ks(inv)
    M, x_star = envelope_constant()
    rej, rate, worst = rejection_sample(N_DRAWS, rng, M)
    out["rejection"] = {**ks(rej), "M": M, "argmax_p_over_q": x_star, "acceptance_rate": rate,
                        "acceptance_rate_expected": 1.0 / M, "max_p_over_Mq": worst}
    bad_M = 0.5 * M
    rej_bad, rate_bad, worst_bad = rejection_sample(N_DRAWS, rng, bad_M)
    out["rejection_wrong_envelope"] = {**ks(rej_bad), "M": bad_M, "acceptance_rate": rate_bad,
                                       "max_p_over_Mq": worst_bad,
                                       "envelope_violated": bool(worst_bad > 1.0)}
    chain, acc = metropolis_hastings(MH_STEPS, rng)
    kept = chain[MH_BURN_IN:]
    ess = effective_sample_size(kept)
    thin = max(1, math.ceil(len(kept) / ess))
    out["metropolis_hastings"] = {**ks(kept[::thin]), "acceptance_rate": acc,
                                  "chain_length": len(kept), "burn_in": MH_BURN_IN,
                                  "effective_sample_size": ess, "thinning": thin,
                                  "step_sd": MH_STEP_SD,
                                  "ks_p_value_unthinned": float(stats.kstest(kept,
                                                                             target_cdf).pvalue)}
    out["_draws"] = {"inverse_cdf": inv, "rejection": rej, "rejection_wrong_envelope": rej_bad,
                     "metropolis_hastings": kept}  # type: ignore[dict-item]
    return out


@EXPERIMENTS.register("sampling")
def sampling_experiment() -> Outcome:
    """Inverse-CDF, rejection (with its envelope constant) and Metropolis-Hastings sampling of a
    two-component Gaussian mixture, each KS-tested against it."""
    res = run_samplers(0)
    draws = res.pop("_draws")
    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    xs = np.linspace(-5, 6, 600)
    titles = {"inverse_cdf": "inverse CDF (bisection)",
              "rejection": "rejection, M = sup p/q",
              "rejection_wrong_envelope": "rejection, M/2 (wrong)",
              "metropolis_hastings": "Metropolis-Hastings (thinned KS)"}
    for ax, (k, title) in zip(axes, titles.items()):
        r = res[k]
        ax.hist(draws[k], bins=120, range=(-5, 6), density=True, color="tab:blue", alpha=0.6)
        ax.plot(xs, target_pdf(xs), "k", lw=1.5, label="target p")
        if k.startswith("rejection"):
            ax.plot(xs, r["M"] * proposal_pdf(xs), "tab:red", lw=1, ls="--", label="M q")
        ax.set_title(f"{title}\nKS D = {r['ks_statistic']:.4f}, p = {r['ks_p_value']:.3g}",
                     fontsize=9)
        ax.legend(fontsize=7)
        ax.set_xlim(-5, 6)
    fig.tight_layout()
    rj, mh, bad = res["rejection"], res["metropolis_hastings"], res["rejection_wrong_envelope"]
    return Outcome(
        numbers=res,
        explanation=(
            f"All three samplers draw from the target (KS p = {res['inverse_cdf']['ks_p_value']:.2f}"
            f", {rj['ks_p_value']:.2f}, {mh['ks_p_value']:.2f} > {ALPHA}). Rejection sampling "
            f"needs the envelope constant M = sup p/q = {rj['M']:.4f} (at x = "
            f"{rj['argmax_p_over_q']:.3f}) for the proposal N(0, {PROPOSAL_SD:g}^2); its "
            f"acceptance rate {rj['acceptance_rate']:.4f} matches 1/M = "
            f"{rj['acceptance_rate_expected']:.4f}. With M/2 the envelope is violated "
            f"(max p/(Mq) = {bad['max_p_over_Mq']:.2f} > 1): the acceptance rises to "
            f"{bad['acceptance_rate']:.3f} and the draws no longer follow the target (KS p = "
            f"{bad['ks_p_value']:.2g}). Metropolis-Hastings accepts {mh['acceptance_rate']:.2f} "
            f"of its moves; its {mh['chain_length']} correlated states are worth "
            f"{mh['effective_sample_size']:.0f} independent draws, so the KS test uses every "
            f"{mh['thinning']}th state."
        ),
        reference=(
            "Wenzel (2023) §2.1.4 'Sampling from Distributions'; von Neumann 1951 (rejection); "
            "Metropolis et al. 1953, Hastings 1970; Geyer 1992 (effective sample size)."
        ),
        assumptions=[
            ("Target 0.3 N(-2, 0.5^2) + 0.7 N(1.5, 1); proposal N(0, 9) for rejection; random-walk "
            f"step N(0, {MH_STEP_SD:g}^2) from x0 = 0 with {MH_BURN_IN} burn-in states."),
            (f"{N_DRAWS} draws per independent sampler, {MH_STEPS} Metropolis-Hastings steps, "
            f"numpy random seed 0; a KS p-value above {ALPHA} counts as a pass."),
            ("The chapter's uniform-box acceptance test (accept x when f(x) > y) is rejection "
            "sampling with a uniform proposal on a bounded interval and M = (b - a) max f; the "
            "Gaussian proposal covers the unbounded support."),
        ],
        figure=fig,
    )
