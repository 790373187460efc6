"""DPO-family losses against the hand-checked numbers of reference/algorithms.md §10 (β = 0.1, h = 2)."""

import math

import pytest
import torch

from alignkit.losses.preference import all_pairs_dpo, dpo, hinge, ipo, listwise_dpo, robust_dpo, simpo

T = torch.tensor


def _case():
    # policy chosen −10, rejected −12; reference −11, −11 → h = 2
    return T([-10.0], requires_grad=True), T([-12.0]), T([-11.0]), T([-11.0])


def test_dpo_value_gradient_and_implicit_rewards():
    pc, pr, rc, rr = _case()
    loss, m = dpo(pc, pr, rc, rr, beta=0.1)
    assert loss.item() == pytest.approx(0.598139, abs=1e-6)
    loss.backward()
    assert pc.grad.item() == pytest.approx(-0.045017, abs=1e-6)  # dL/dh = −β σ(−βh), and dh/dπ_c = 1
    assert m["rewards/chosen"].item() == pytest.approx(0.1) and m["rewards/rejected"].item() == pytest.approx(-0.1)
    assert m["rewards/margin"].item() == pytest.approx(0.2) and m["rewards/accuracy"].item() == 1.0


def test_dpo_at_initialisation_is_log_2_with_gradient_minus_beta_over_2():
    pc = T([-7.0], requires_grad=True)
    loss, _ = dpo(pc, T([-9.0]), T([-7.0]), T([-9.0]), beta=0.1)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-6)
    loss.backward()
    assert pc.grad.item() == pytest.approx(-0.05, abs=1e-7)


def test_swapping_chosen_and_rejected_flips_h():
    pc, pr, rc, rr = _case()
    assert dpo(pr, pc, rr, rc, beta=0.1)[0].item() == pytest.approx(0.798139, abs=1e-6)


def test_family_values():
    pc, pr, rc, rr = _case()
    assert dpo(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1)[0].item() == pytest.approx(0.618139, abs=1e-6)
    assert robust_dpo(pc, pr, rc, rr, beta=0.1, label_smoothing=0.1)[0].item() == pytest.approx(0.573139, abs=1e-6)
    assert hinge(pc, pr, rc, rr, beta=0.1)[0].item() == pytest.approx(0.8, abs=1e-6)
    assert ipo(pc, pr, rc, rr, beta=0.1)[0].item() == pytest.approx(9.0, abs=1e-5)
    assert ipo(T([-6.0]), T([-12.0]), T([-11.0]), T([-12.0]), beta=0.1)[0].item() == pytest.approx(0.0)  # h = 5
    assert simpo(T([-1.0]), T([-1.5]), beta=2.5, gamma=1.375)[0].item() == pytest.approx(0.757599, abs=1e-6)
    with pytest.raises(ValueError):
        robust_dpo(pc, pr, rc, rr, label_smoothing=0.5)


def test_listwise_with_two_responses_is_dpo_and_ignores_constants():
    g = torch.Generator().manual_seed(0)
    policy, ref = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    ranks = T([[0, 1]] * 5)
    pairwise, _ = dpo(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=0.3)
    listwise, _ = listwise_dpo(policy, ref, ranks, beta=0.3)
    assert listwise.item() == pytest.approx(pairwise.item(), abs=1e-6)
    assert listwise_dpo(policy + 4.0, ref, ranks, beta=0.3)[0].item() == pytest.approx(listwise.item(), abs=1e-5)


def test_all_pairs_dpo_is_the_mean_of_pairwise_dpo_and_padding_gets_no_gradient():
    policy = T([[-3.0, -5.0, -4.0, 0.0]], requires_grad=True)
    ref = T([[-4.0, -4.0, -4.0, 0.0]])
    ranks = T([[0, 2, 1, -1]])
    loss, _ = all_pairs_dpo(policy, ref, ranks, beta=0.5)
    pair = lambda i, j: dpo(policy[0, i:i + 1], policy[0, j:j + 1], ref[0, i:i + 1], ref[0, j:j + 1], beta=0.5)[0]  # noqa: E731
    expected = (pair(0, 1) + pair(0, 2) + pair(2, 1)) / 3
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    loss.backward()
    assert policy.grad[0, 3].item() == 0.0 and policy.grad[0, :2].abs().min() > 0  # (slot 2: its two pulls cancel)
