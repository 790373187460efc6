"""Evaluation statistics: paired win rates with confidence intervals, KL estimators, category rates.

Pure functions on numbers and tensors; no model calls.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import mean

import torch
from torch import Tensor

Z95 = 1.959964  # two-sided 95 % normal quantile


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """Mean and 95 % normal-approximation interval mean ± 1.96·s/√n (s with Bessel's correction), in [0, 1].

    With one value the interval is the whole [0, 1] (nothing is known about the spread).
    """
    n = len(values)
    if n == 0:
        raise ValueError("mean_ci needs at least one value")
    m = mean(values)
    if n == 1:
        return m, 0.0, 1.0
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    half = Z95 * s / math.sqrt(n)
    return m, max(0.0, m - half), min(1.0, m + half)


def win_rate(scores: Sequence[float], reference_scores: Sequence[float], *, tie_margin: float = 1e-6) -> dict:
    """Paired comparison per prompt judged by gold scores: win 1, tie (|Δ| ≤ tie_margin) ½, loss 0.

    Returns ``{"win_rate", "ci": [lo, hi], "wins", "ties", "losses", "n"}``; the CI is :func:`mean_ci`
    of the per-prompt outcomes.
    """
    if len(scores) != len(reference_scores):
        raise ValueError(f"win_rate needs paired scores, got {len(scores)} and {len(reference_scores)}")
    outcomes = [0.5 if abs(a - b) <= tie_margin else float(a > b) for a, b in zip(scores, reference_scores)]
    m, lo, hi = mean_ci(outcomes)
    return {"win_rate": m, "ci": [lo, hi], "wins": outcomes.count(1.0), "ties": outcomes.count(0.5),
            "losses": outcomes.count(0.0), "n": len(outcomes)}


# KL(π ‖ π_ref) estimators on samples from π (Schulman, "Approximating KL Divergence", 2020), with
# log r = log π_ref(a) − log π(a) per token, summed over the response: (B, A) → (B,).

def kl_k1(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """k1 = −log r: unbiased, high variance, negative for some samples."""
    return ((logp - ref_logp) * mask).sum(-1)


def kl_k2(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """k2 = ½ (log r)²: biased, low variance, ≥ 0."""
    return (0.5 * (ref_logp - logp) ** 2 * mask).sum(-1)


def kl_k3(logp: Tensor, ref_logp: Tensor, mask: Tensor) -> Tensor:
    """k3 = (r − 1) − log r: unbiased, low variance, ≥ 0."""
    log_r = ref_logp - logp
    return ((torch.exp(log_r) - 1 - log_r) * mask).sum(-1)


def category_rates(categories: Sequence[str], judgements: Sequence) -> dict:
    """Helpful / honest / harmless accuracy, over-refusal and proper endings (``None`` for an empty group).

    ``judgements`` carry ``correct``, ``refused`` and ``proper_ending`` (see ``alignkit.world.oracle``).
    """
    from alignkit.world import RATE_GROUPS

    def rate(group: tuple, attr: str) -> float | None:
        hits = [float(getattr(j, attr)) for c, j in zip(categories, judgements) if c in group]
        return mean(hits) if hits else None

    out = {name: rate(cats, "refused" if name == "over_refusal" else "correct") for name, cats in RATE_GROUPS.items()}
    out["proper_ending"] = mean(float(j.proper_ending) for j in judgements) if judgements else None
    return out
