"""Reward-model evaluation against gold scores, Spearman's ρ, and the analytic best-of-n KL."""

import math

import pytest

from alignkit.eval.metrics import average_ranks, spearman
from alignkit.eval.rm import gold_agreement
from alignkit.stages.bon import bon_kl


def test_best_of_n_kl_matches_the_closed_form():
    # §10 (Gao et al.): log n - (n-1)/n
    assert bon_kl(1) == 0.0
    assert bon_kl(4) == pytest.approx(0.6363, abs=1e-4)
    assert bon_kl(16) == pytest.approx(1.8351, abs=1e-4)
    assert bon_kl(1000) == pytest.approx(5.909, abs=1e-3)


def test_spearman_uses_average_ranks_for_ties():
    assert average_ranks([10, 20, 20, 5]) == [2.0, 3.5, 3.5, 1.0]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None
    # ranks x = [1, 2, 3, 4], y = [1, 3, 2, 4]: 1 - 6·Σd²/(n(n²-1)) = 1 - 6·2/60 = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)


def test_gold_agreement_counts_pairs_beyond_the_tie_margin():
    scores = [[2.0, 1.0, 0.0], [0.0, 1.0]]
    gold = [[1.0, 0.5, 0.52], [1.0, -1.0]]
    out = gold_agreement(scores, gold, categories=["a", "b"], tie_margin=0.05, labeller_temperature=0.25)
    # prompt a: pairs (0,1) right, (0,2) right, (1,2) within the margin → skipped; prompt b: (0,1) wrong
    assert out["n_pairs"] == 3
    assert out["heldout_accuracy"] == pytest.approx(2 / 3)
    assert out["per_category"] == {"a": {"accuracy": 1.0, "n_pairs": 2}, "b": {"accuracy": 0.0, "n_pairs": 1}}
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert out["accuracy_ceiling"] == pytest.approx((sig(0.5 / 0.25) + sig(0.48 / 0.25) + sig(2 / 0.25)) / 3)
    # a score tie is half right; no labeller temperature, no ceiling
    half = gold_agreement([[1.0, 1.0]], [[1.0, 0.0]])
    assert half["heldout_accuracy"] == 0.5 and half["accuracy_ceiling"] is None
