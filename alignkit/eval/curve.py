"""The reward model's data-efficiency curve, summarised: how many ranked prompts reach what pairs reach.

Pure functions on the curve's points (``{"form", "prompts", "heldout_accuracy"}`` dicts); no torch, so the
report can read them without importing it.
"""

from __future__ import annotations

import math


def matching_count(points: list[dict]) -> dict | None:
    """How many ranked prompts reach the accuracy of pairs at the largest count they share: the first count
    where the rankings' mean accuracy is at least that, interpolated linearly in log(count) from the count
    before it (``bound`` "at_most" when the smallest count already reaches it, ``rankings_prompts`` None when
    no count does). None without both forms at a common count."""
    acc = {(p["form"], p["prompts"]): p["heldout_accuracy"] for p in points if p.get("heldout_accuracy") is not None}
    common = [n for f, n in acc if f == "pairs" and ("rankings", n) in acc]
    if not common:
        return None
    largest = max(common)
    target = acc[("pairs", largest)]
    curve = sorted((n, a) for (f, n), a in acc.items() if f == "rankings")
    result = {"pairs_prompts": largest, "pairs_accuracy": target, "rankings_prompts": None, "bound": None}
    for i, (n, a) in enumerate(curve):
        if a < target:
            continue
        if i == 0:
            return {**result, "rankings_prompts": n, "bound": "at_most"}
        (n0, a0) = curve[i - 1]
        x = math.log(n0) + (target - a0) / (a - a0) * (math.log(n) - math.log(n0))
        return {**result, "rankings_prompts": round(math.exp(x)), "bound": "interpolated"}
    return result


def match_sentence(match: dict, seeds: int) -> str:
    """One line for :func:`matching_count`'s answer (the run's printout and report)."""
    means = f"means of {seeds} seeds" if seeds > 1 else "one seed"
    head = f"pairs reach {match['pairs_accuracy']:.3f} with {match['pairs_prompts']} prompts; rankings "
    if match["rankings_prompts"] is None:
        return head + f"do not reach it at any count ({means})"
    how = "at most" if match["bound"] == "at_most" else "about"
    return head + f"reach it with {how} {match['rankings_prompts']} ({means})"
