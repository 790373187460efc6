"""Evaluation statistics: paired win rates with confidence intervals, KL estimators, category rates.

Pure functions on numbers and tensors; no model calls. Importing this module needs only torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import mean

import torch
from torch import Tensor

Z95 = 1.959964  # two-sided 95 % quantile of the standard normal (the "1.96")


def mean_ci(values: Sequence[float], *, bounds: tuple[float, float] = (0.0, 1.0)) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean and its 95 % normal-approximation interval, mean ± 1.96·s/√n, clipped to bounds.

    s is the sample standard deviation with Bessel's correction (divide by n − 1). The default bounds fit
    proportions and per-prompt win outcomes; pass e.g. ``bounds=(-1, 1)`` for gold rewards. With one value
    there is no spread to estimate, so the interval is the whole of ``bounds``. When every value is equal
    the interval has zero width — the normal approximation's known blind spot at 0 % and 100 %.
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    m = mean(values)
    if n == 1:
        return m, bounds[0], bounds[1]
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = Z95 * s / math.sqrt(n)
    return m, max(bounds[0], m - half), min(bounds[1], m + half)


def win_rate(scores: Sequence[float], reference_scores: Sequence[float], *, tie_margin: float = 1e-6) -> dict:
    """Paired comparison per prompt, judged by gold scores: win 1, tie (|Δ| ≤ tie_margin) ½, loss 0.

    ``scores[i]`` and ``reference_scores[i]`` are the two models' gold scores on prompt i. Returns
    ``{"win_rate", "ci": [lo, hi], "wins", "ties", "losses", "n"}``; the CI is :func:`mean_ci` of the
    per-prompt outcomes (normal approximation, clipped to [0, 1]; [0, 1] itself when n = 1).
    """
    if len(scores) != len(reference_scores):
        raise ValueError(f"win_rate needs paired scores, got {len(scores)} and {len(reference_scores)}")
    outcomes = [0.5 if abs(a - b) <= tie_margin else float(a > b) for a, b in zip(scores, reference_scores)]
    m, lo, hi = mean_ci(outcomes)
    return {"win_rate": m, "ci": [lo, hi], "wins": outcomes.count(1.0), "ties": outcomes.count(0.5),
            "losses": outcomes.count(0.0), "n": len(outcomes)}


# KL(π ‖ π_ref) estimators on samples from π (Schulman, "Approximating KL Divergence", 2020), with
# log r = log π_ref(a_t | ·) − log π(a_t | ·) per token, summed over the response: (B, A) ×3 → (B,).
# Masked with `where`, so padded positions may hold anything (even ±inf) without turning the sum into NaN.

def _masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask.bool(), values, torch.zeros_like(values)).sum(dim=-1)


def kl_k1(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """k1 = −log r: unbiased, high variance, negative for some samples."""
    return _masked_sum(logp - ref_logp, mask)


def kl_k2(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """k2 = ½ (log r)²: biased (matches KL to second order), low variance, ≥ 0."""
    return _masked_sum(0.5 * (ref_logp - logp) ** 2, mask)


def kl_k3(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """k3 = (r − 1) − log r: unbiased (E_π[r] = 1), low variance, ≥ 0."""
    log_r = ref_logp - logp
    return _masked_sum(torch.expm1(log_r) - log_r, mask)


def category_rates(categories: Sequence[str], judgements: Sequence) -> dict:
    """Helpful / honest / harmless accuracy, over-refusal and proper endings, each a rate in [0, 1].

    ``categories[i]`` is the category of prompt i and ``judgements[i]`` its ``alignkit.world.Judgement``
    (anything with boolean ``correct``, ``refused``, ``proper_ending``). The groups are
    ``alignkit.world.RATE_GROUPS``: helpful = correct over fact/arithmetic/sentiment, honest = correct over
    unknown/false_premise, harmless = correct over harmful, over_refusal = refused over benign;
    proper_ending is over all prompts. A rate over no prompts is ``None``.
    """
    from alignkit.world import RATE_GROUPS  # pure Python, but keeps this module's import torch-only

    if len(categories) != len(judgements):
        raise ValueError(f"category_rates needs one judgement per category, got {len(categories)} and "
                         f"{len(judgements)}")

    def rate(group: tuple[str, ...], attr: str) -> float | None:
        hits = [float(getattr(j, attr)) for c, j in zip(categories, judgements) if c in group]
        return mean(hits) if hits else None

    out = {name: rate(cats, "refused" if name == "over_refusal" else "correct") for name, cats in RATE_GROUPS.items()}
    out["proper_ending"] = mean(float(j.proper_ending) for j in judgements) if judgements else None
    return out


def average_ranks(values: list[float]) -> list[float]:
    """Ranks 1..n of ``values``, ties sharing their average rank (as Spearman's ρ needs)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation: Pearson's r of the average ranks; None when either side is constant."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs equal lengths, got {len(x)} and {len(y)}")
    rx, ry = average_ranks(x), average_ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx > 0 and vy > 0 else None
