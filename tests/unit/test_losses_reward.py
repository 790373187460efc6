"""Reward-model losses (alignkit.losses.reward): hand-checked numbers from docs/algorithms.md §10, plus identities."""

import math

import pytest
import torch

from alignkit.losses.reward import (
    DAVIDSON_NU,
    RAO_KUPPER_LOG_THETA,
    all_pairs,
    bradley_terry,
    centering,
    davidson,
    davidson_log_probs,
    plackett_luce,
    rao_kupper,
    rao_kupper_log_probs,
)

T = torch.tensor


def close(x, expected: float, tol: float = 1e-5) -> bool:
    return math.isclose(float(x), expected, abs_tol=tol)


# ---------------------------------------------------------------- Bradley-Terry


@pytest.mark.parametrize("r_w, margin, expected", [
    (1.0, None, 0.313262), (0.0, None, 0.693147), (2.0, None, 0.126928), (1.0, 0.5, 0.474077),
])
def test_bradley_terry_hand_numbers(r_w, margin, expected):
    m = None if margin is None else T([margin])
    loss, metrics = bradley_terry(T([r_w]), T([0.0]), margin=m)
    assert close(loss, expected)
    assert close(metrics["margin"], r_w) and close(metrics["accuracy"], float(r_w > 0))


def test_bradley_terry_is_finite_for_huge_gaps():
    loss, _ = bradley_terry(T([0.0]), T([200.0]))
    assert close(loss, 200.0, tol=1e-3)


# ---------------------------------------------------------------- all pairs (InstructGPT)


def test_all_pairs_k3_and_padded_batch():
    loss, m = all_pairs(T([[2.0, 1.0, 0.0]]), T([[0, 1, 2]]))
    assert close(loss, 0.251150) and m["n_pairs"].item() == 3 and close(m["accuracy"], 1.0)
    # a second prompt with K=2 (one padded slot): mean of the per-prompt losses, not of the 4 pairs
    loss, m = all_pairs(T([[2.0, 1.0, 0.0], [1.0, 0.0, 9.0]]), T([[0, 1, 2], [0, 1, -1]]))
    assert close(loss, (0.251150 + 0.313262) / 2) and m["n_pairs"].item() == 4


def test_all_pairs_margin_and_skipped_ties():
    loss, _ = all_pairs(T([[1.0, 0.0]]), T([[0, 1]]), margin=T([0.5]))
    assert close(loss, 0.474077)
    # responses 0 and 1 are tied: without a tie model only the two strict pairs count
    loss, m = all_pairs(T([[2.0, 1.0, 0.0]]), T([[0, 0, 1]]))
    assert close(loss, (0.126928 + 0.313262) / 2)
    assert (m["n_pairs"].item(), m["n_tied_pairs"].item()) == (2, 1)


def test_all_pairs_with_tie_models_by_hand():
    r, ranks = T([[2.0, 1.0, 0.0]]), T([[0, 0, 1]])
    # Davidson ν=1: tie (2,1): -[1.5 - lse(2,1,1.5)] = 1.180270; 0≻2: 0.407606; 1≻2: 0.680270
    loss, _ = all_pairs(r, ranks, tie_model="davidson", tie_strength=1.0)
    assert close(loss, (1.180270 + 0.407606 + 0.680270) / 3)
    # Rao-Kupper η=log 2, d=1: P(tie) = 1 - σ(1-η) - σ(-1-η) = 0.268521 → -log = 1.314827
    loss, _ = all_pairs(r, ranks, tie_model="rao_kupper", tie_strength=math.log(2.0))
    assert close(loss, 0.701939)
    with pytest.raises(ValueError, match="tie_model must be"):
        all_pairs(r, ranks, tie_model="bt")
    with pytest.raises(ValueError, match="tie_strength=0"):
        all_pairs(r, ranks, tie_model="davidson", tie_strength=0.0)


def test_all_pairs_no_usable_pair_is_zero_not_nan():
    loss, m = all_pairs(T([[1.0, 2.0], [3.0, 0.0]]), T([[0, 0], [0, -1]]))
    assert loss.item() == 0.0 and m["n_pairs"].item() == 0


# ---------------------------------------------------------------- Plackett-Luce


def test_plackett_luce_hand_numbers():
    loss, m = plackett_luce(T([[2.0, 1.0, 0.0]]), T([[0, 1, 2]]))
    assert close(loss, 0.720868)  # P = e²/(e²+e+1) · e/(e+1) = 0.486330
    assert close(m["accuracy"], 1.0) and close(m["top1_accuracy"], 1.0)
    loss, _ = plackett_luce(T([[1.0, 0.0]]), T([[0, 1]]))
    assert close(loss, -math.log(0.731059))  # K=2 is Bradley-Terry
    loss, m = plackett_luce(T([[0.0, 1.0]]), T([[0, 1]]))
    assert close(loss, 1.313262) and close(m["accuracy"], 0.0) and close(m["top1_accuracy"], 0.0)


def test_plackett_luce_breslow_ties_by_hand():
    r = T([[2.0, 1.0, 0.0]])
    # {0,1} ≻ 2: 2·lse(2,1,0) - (2+1) = 1.815212; the last stage (response 2 alone) scores 0
    assert close(plackett_luce(r, T([[0, 0, 1]]))[0], 1.815212)
    # 0 ≻ {1,2}: [lse(2,1,0) - 2] + [2·lse(1,0) - 1] = 0.407606 + 1.626523
    assert close(plackett_luce(r, T([[0, 1, 1]]))[0], 2.034129)
    # one tie group: -Σ log softmax = 3·lse(2,1,0) - 3; at equal rewards it is K·log K
    assert close(plackett_luce(r, T([[0, 0, 0]]))[0], 4.222818)
    assert close(plackett_luce(torch.zeros(1, 3), T([[0, 0, 0]]))[0], 3 * math.log(3))


def test_plackett_luce_invariances():
    torch.manual_seed(0)
    r = torch.randn(2, 4)
    ranks = T([[2, 0, 3, 1], [1, 0, 1, 2]])
    base, _ = plackett_luce(r, ranks)
    assert torch.allclose(plackett_luce(r + 7.5, ranks)[0], base, atol=1e-5)
    perm = T([3, 1, 0, 2])
    assert torch.allclose(plackett_luce(r[:, perm], ranks[:, perm])[0], base, atol=1e-6)
    padded_r = torch.cat([r, T([[float("nan"), 5.0], [-3.0, float("inf")]])], dim=1)
    padded_ranks = torch.cat([ranks, torch.full((2, 2), -1)], dim=1)
    assert torch.allclose(plackett_luce(padded_r, padded_ranks)[0], base, atol=1e-6)
    assert torch.allclose(all_pairs(padded_r, padded_ranks)[0], all_pairs(r, ranks)[0], atol=1e-6)


def test_padded_response_gets_exactly_zero_gradient():
    ranks = T([[0, -1, 1, 2], [0, 1, -1, -1]])
    for loss_fn in (plackett_luce, all_pairs,
                    lambda r, k: all_pairs(r, k, tie_model="davidson"),
                    lambda r, k: (centering(r, k >= 0, coef=0.01)[0], {})):
        r = torch.randn(2, 4).requires_grad_()
        junk = T([[0.0, float("nan"), 0.0, 0.0], [0.0, 0.0, float("inf"), float("-inf")]])
        loss_fn(torch.where(ranks < 0, r + junk, r), ranks)[0].backward()  # NaN/inf padding must not leak
        assert torch.all(r.grad[ranks < 0] == 0)
        assert torch.all(r.grad[ranks >= 0] != 0) and torch.isfinite(r.grad).all()
    r = torch.randn(1, 3).requires_grad_()  # a fully padded prompt beside a real one
    plackett_luce(torch.cat([r, torch.zeros(1, 3)]), T([[0, 1, 2], [-1, -1, -1]]))[0].backward()
    assert torch.isfinite(r.grad).all()


# ---------------------------------------------------------------- tie models


def probs(log_probs, r_a, r_b, **kw):
    """(P(a≻b), P(b≻a), P(tie)) from a tie model's log-probabilities."""
    log_win, log_tie = log_probs(r_a, r_b, **kw)
    return log_win.exp(), log_probs(r_b, r_a, **kw)[0].exp(), log_tie.exp()


def test_rao_kupper_probabilities():
    d = torch.linspace(-50, 50, 201, dtype=torch.float64)
    win, lose, tie = probs(rao_kupper_log_probs, d, torch.zeros_like(d), log_theta=0.7)
    assert torch.allclose(win + lose + tie, torch.ones_like(d), atol=1e-12)
    assert tie.argmax().item() == 100 and d[100].item() == 0.0  # ties most likely at equal rewards
    assert close(tie[100], math.tanh(0.35), tol=1e-12)
    # |d| = 50 in float32: the naive 1 - σ - σ would be 0 (log = -inf); the product form is finite
    r_a = T([50.0, -50.0], requires_grad=True)
    loss, _ = rao_kupper(r_a, torch.zeros(2), T([True, True]), log_theta=0.5)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(r_a.grad).all() and loss.item() > 40


def test_rao_kupper_limits_and_default():
    r_a, r_b, no_tie = T([1.0, 2.0]), T([0.0, 0.0]), T([False, False])
    bt, _ = bradley_terry(r_a, r_b)
    assert torch.allclose(rao_kupper(r_a, r_b, no_tie, log_theta=0.0)[0], bt)
    assert torch.allclose(rao_kupper(r_a, r_b, no_tie, log_theta=1e-6)[0], bt, atol=1e-5)
    with pytest.raises(ValueError, match="log_theta=0"):
        rao_kupper(r_a, r_b, T([True, False]), log_theta=0.0)
    # the default gives P(tie | equal rewards) = 1/3
    tie = rao_kupper_log_probs(T(0.0), T(0.0), log_theta=RAO_KUPPER_LOG_THETA)[1].exp()
    assert close(tie, 1 / 3)


def test_davidson_probabilities_and_limits():
    d = torch.linspace(-30, 30, 61, dtype=torch.float64)
    win, lose, tie = probs(davidson_log_probs, d, torch.zeros_like(d), nu=2.5)
    assert torch.allclose(win + lose + tie, torch.ones_like(d), atol=1e-12)
    assert close(tie[30], 2.5 / 4.5, tol=1e-12)  # ν/(2+ν)
    assert close(davidson_log_probs(T(0.0), T(0.0), nu=DAVIDSON_NU)[1].exp(), 1 / 3)
    r_a, r_b = T([1.0, 2.0]), T([0.0, 0.0])
    assert torch.allclose(davidson(r_a, r_b, T([False, False]), nu=0.0)[0], bradley_terry(r_a, r_b)[0])
    with pytest.raises(ValueError, match="nu=0"):
        davidson(r_a, r_b, T([False, True]), nu=0.0)
    # one tie row at d=1, ν=1: -log(e^0.5 / (e + 1 + e^0.5)) = 1.180270
    loss, m = davidson(T([1.0]), T([0.0]), T([True]), nu=1.0)
    assert close(loss, 1.180270)
    assert close(m["tie_prob"], math.exp(-1.180270))


# ---------------------------------------------------------------- centring


def test_centering_k2_is_paper_term():
    r = T([[1.5, 0.5], [-2.0, 1.0]])
    penalty, m = centering(r, torch.ones(2, 2, dtype=torch.bool), coef=0.01)
    assert close(penalty, 0.01 * ((1.5 + 0.5) ** 2 + (-2.0 + 1.0) ** 2) / 2)  # 0.025
    assert close(m["reward_mean"], 0.25)
    # padding is ignored: a K=3 row with one absent slot is the K=2 term of its two responses
    penalty, _ = centering(T([[1.5, 9.0, 0.5]]), T([[True, False, True]]), coef=1.0)
    assert close(penalty, 4.0)
