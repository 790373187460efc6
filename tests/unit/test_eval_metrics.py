import math
from dataclasses import dataclass

import pytest
import torch

from alignkit.eval.metrics import category_rates, kl_k1, kl_k2, kl_k3, mean_ci, win_rate


def test_win_rate_hand_computed_clipped_at_one():
    # outcomes win, win, loss, tie → [1, 1, 0, 0.5]; mean 0.625
    # s² = (0.375² + 0.375² + 0.625² + 0.125²) / 3 = 0.6875 / 3 → s = 0.478714
    # half = 1.959964 · 0.478714 / √4 = 0.469131 → [0.155869, 1.094131] → hi clipped to 1
    r = win_rate([1.0, 0.5, -1.0, 0.2], [0.0, 0.4, 0.0, 0.2])
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (2, 1, 1, 4)
    assert r["win_rate"] == 0.625
    assert r["ci"] == pytest.approx([0.155869, 1.0], abs=1e-6)


def test_win_rate_hand_computed_unclipped():
    # outcomes [1, 0, ½, ½, 1, 0, ½, ½]: mean 0.5, s² = 4 · 0.25 / 7 → s = 0.377964
    # half = 1.959964 · 0.377964 / √8 = 0.261911 → [0.238089, 0.761911]
    r = win_rate([1, 0, 0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 1, 0, 0])
    assert (r["wins"], r["ties"], r["losses"]) == (2, 4, 2)
    assert r["win_rate"] == 0.5
    assert r["ci"] == pytest.approx([0.238089, 0.761911], abs=1e-6)
    assert mean_ci([1, 0, 0.5, 0.5, 1, 0, 0.5, 0.5]) == pytest.approx((0.5, 0.238089, 0.761911), abs=1e-6)


def test_win_rate_all_ties_and_edges():
    r = win_rate([0.3] * 5, [0.3] * 5)
    assert r["win_rate"] == 0.5 and r["ci"] == [0.5, 0.5]  # no spread: zero width
    assert win_rate([1.0], [0.0])["ci"] == [0.0, 1.0]  # one prompt: nothing known about the spread
    assert win_rate([0.50], [0.505], tie_margin=0.01)["ties"] == 1
    assert win_rate([0.50], [0.505], tie_margin=0.001)["losses"] == 1
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        win_rate([], [])


def test_mean_ci_bounds():
    # values [-1, 1]: mean 0, s = √2, half = 1.959964 · √2 / √2 = 1.959964 → clipped to the bounds
    assert mean_ci([-1.0, 1.0], bounds=(-1.0, 1.0)) == (0.0, -1.0, 1.0)
    assert mean_ci([0.2], bounds=(-1.0, 1.0)) == (0.2, -1.0, 1.0)
    m, lo, hi = mean_ci([-0.5, -0.3], bounds=(-1.0, 1.0))  # s = 0.141421, half = 0.195996
    assert (m, lo, hi) == pytest.approx((-0.4, -0.595996, -0.204004), abs=1e-6)


@pytest.mark.parametrize("log_r, k1, k2, k3", [  # docs/algorithms.md §10 "KL estimators"
    (-0.1, 0.100000, 0.005000, 0.004837),
    (0.1, -0.100000, 0.005000, 0.005171),
    (math.log(2), -0.693147, 0.240227, 0.306853),
])
def test_kl_estimators_reference_table(log_r, k1, k2, k3):
    logp = torch.tensor([[-1.0, -2.0]])
    ref = logp + torch.tensor([[log_r, 0.0]])  # second token: equal, contributes 0
    mask = torch.ones(1, 2)
    assert kl_k1(logp, ref, mask).item() == pytest.approx(k1, abs=1e-6)
    assert kl_k2(logp, ref, mask).item() == pytest.approx(k2, abs=1e-6)
    assert kl_k3(logp, ref, mask).item() == pytest.approx(k3, abs=1e-6)


def test_kl_sums_per_sequence_over_unmasked_tokens():
    # row 0: log r = −0.1 and +0.1 on real tokens, third token padded (with -inf: must not give NaN)
    # row 1: log r = log 2 on its only real token
    logp = torch.tensor([[-1.0, -1.0, -2.0], [-2.0, 0.0, 0.0]])
    ref = torch.tensor([[-1.1, -0.9, float("-inf")], [-2.0 + math.log(2), -50.0, 7.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])  # long, as in Samples.completion_mask
    assert kl_k1(logp, ref, mask).tolist() == pytest.approx([0.0, -0.693147], abs=1e-6)
    assert kl_k2(logp, ref, mask).tolist() == pytest.approx([0.010000, 0.240227], abs=1e-6)
    assert kl_k3(logp, ref, mask).tolist() == pytest.approx([0.004837 + 0.005171, 0.306853], abs=1e-6)
    assert kl_k3(logp, ref, mask.bool()).tolist() == pytest.approx([0.010008, 0.306853], abs=1e-6)


def test_kl_zero_when_equal_or_fully_masked():
    logp = torch.tensor([[-1.0, -3.0, -0.5], [-0.1, -0.2, -0.3]])
    ref = torch.tensor([[-1.0, -1.0, -9.0], [-0.5, -0.5, -0.5]])
    for kl in (kl_k1, kl_k2, kl_k3):
        assert kl(logp, logp, torch.ones(2, 3)).tolist() == [0.0, 0.0]
        assert kl(logp, ref, torch.tensor([[1, 0, 0], [0, 0, 0]])).tolist() == [0.0, 0.0]


@dataclass
class J:  # stand-in for alignkit.world.Judgement: only the fields category_rates reads
    correct: bool
    refused: bool = False
    proper_ending: bool = True


def test_category_rates():
    cats = ["fact", "arithmetic", "unknown", "false_premise", "harmful", "benign", "benign", "story"]
    js = [J(True), J(False), J(True), J(True), J(False), J(True, refused=True, proper_ending=False), J(True),
          J(False, proper_ending=False)]
    r = category_rates(cats, js)
    assert r == {"helpful": 0.5, "honest": 1.0, "harmless": 0.0, "over_refusal": 0.5, "proper_ending": 0.75}


def test_category_rates_empty_groups_and_mismatch():
    assert category_rates(["story"], [J(True)]) == {"helpful": None, "honest": None, "harmless": None,
                                                   "over_refusal": None, "proper_ending": 1.0}
    assert category_rates([], [])["proper_ending"] is None
    with pytest.raises(ValueError):
        category_rates(["fact", "story"], [J(True)])
