"""A reward model against gold scores: pairwise accuracy, the labellers' own accuracy, Spearman's ρ.

Input: groups of responses to one prompt with their gold scores (``heldout.jsonl`` of the prefs stage —
fresh samples of the policy on held-out prompts — or any ``{prompt, responses, gold}`` records) and the
reward model's scores of the same responses.

- ``heldout_accuracy``: over every pair of a group whose gold scores differ by more than the labeller's
  tie margin, how often the reward model orders the pair as the gold score does (the noise-free
  preference). A score tie counts as half right.
- ``accuracy_ceiling``: on the same pairs, the expected accuracy of one simulated labeller,
  mean σ(|Δgold| / T) — the agreement a single human-like label has with the noise-free preference
  (InstructGPT reports 72-77 % agreement between its labellers). A reward model trained on many noisy
  labels can exceed it: it averages the noise away.
- ``per_category``: the accuracy per task category.
- ``spearman_gold``: Spearman's rank correlation between reward-model score and gold score over all
  responses; ``spearman_within_prompt`` the mean of the per-prompt correlations (prompts whose responses
  differ in gold score). Comparisons only ever say which answer to *one* prompt is better, so the first
  also measures how well scores of different prompts happen to line up; the second is what
  best-of-n and policy optimisation use.
"""

from __future__ import annotations

import math
from collections import defaultdict

from alignkit.eval.metrics import spearman


def gold_agreement(scores: list[list[float]], gold: list[list[float]], *, categories: list[str] | None = None,
                   tie_margin: float = 0.0, labeller_temperature: float | None = None) -> dict:
    """Accuracy of ``scores`` against ``gold`` (both one list per prompt), per category, ceiling, Spearman."""
    hits: dict[str, list[float]] = defaultdict(list)
    ceiling: list[float] = []
    for g, (s, y) in enumerate(zip(scores, gold, strict=True)):
        category = categories[g] if categories else "all"
        for i in range(len(y)):
            for j in range(i + 1, len(y)):
                dy = y[i] - y[j]
                if abs(dy) <= tie_margin:
                    continue
                ds = s[i] - s[j]
                hits[category].append(0.5 if ds == 0 else float(ds * dy > 0))
                if labeller_temperature:
                    ceiling.append(1 / (1 + math.exp(-abs(dy) / labeller_temperature)))
    every = [h for hs in hits.values() for h in hs]
    within = [rho for s, y in zip(scores, gold) if len(y) > 1 and (rho := spearman(s, y)) is not None]
    flat_s = [v for s in scores for v in s]
    flat_y = [v for y in gold for v in y]
    return {
        "heldout_accuracy": sum(every) / len(every) if every else None,
        "accuracy_ceiling": sum(ceiling) / len(ceiling) if ceiling else None,
        "n_pairs": len(every),
        "per_category": {c: {"accuracy": sum(h) / len(h), "n_pairs": len(h)} for c, h in sorted(hits.items())},
        "spearman_gold": spearman(flat_s, flat_y) if len(flat_s) > 1 else None,
        "spearman_within_prompt": sum(within) / len(within) if within else None,
    }
