"""DPO-family losses (alignkit.losses.preference): hand-checked numbers from docs/algorithms.md §10, plus identities.

Reference case, β = 0.1: policy chosen −10, rejected −12; reference −11, −11; so h = 2 and βh = 0.2.
"""

import math

import pytest
import torch

from alignkit.losses.preference import (
    DPO_LOSSES,
    all_pairs_dpo,
    dpo,
    hinge,
    ipo,
    listwise_dpo,
    robust_dpo,
    simpo,
)

T = torch.tensor


def close(x, expected: float, tol: float = 1e-6) -> bool:
    return math.isclose(float(torch.as_tensor(x).detach()), expected, abs_tol=tol)


def case(requires_grad: bool = False):
    """(policy_chosen, policy_rejected, ref_chosen, ref_rejected) with h = 2."""
    return T([-10.0], requires_grad=requires_grad), T([-12.0]), T([-11.0]), T([-11.0])


# ---------------------------------------------------------------- DPO


def test_dpo_hand_number_and_gradient():
    pc, pr, rc, rr = case(requires_grad=True)
    loss, _ = dpo(pc, pr, rc, rr, beta=0.1)
    assert close(loss, 0.598139)  # −log σ(0.2)
    loss.backward()
    # dL/dh = −β σ(−βh), and dh/dπ_chosen = 1
    assert close(pc.grad.item(), -0.045017)


def test_dpo_implicit_reward_metrics():
    _, m = dpo(*case(), beta=0.1)
    assert close(m["rewards/chosen"], 0.1) and close(m["rewards/rejected"], -0.1)
    assert close(m["rewards/margin"], 0.2) and m["rewards/accuracy"].item() == 1.0
    assert close(m["logps/chosen"], -10.0) and close(m["logps/rejected"], -12.0)
    assert all(not v.requires_grad for v in dpo(*case(requires_grad=True))[1].values())


def test_dpo_at_initialisation_is_log_2_with_gradient_minus_half_beta():
    pc = T([-7.0, -30.0], requires_grad=True)
    pr = T([-9.0, -25.0], requires_grad=True)
    loss, m = dpo(pc, pr, pc.detach().clone(), pr.detach().clone(), beta=0.1)
    assert close(loss, 0.693147)
    loss.backward()
    # mean over B = 2 pairs: each pair's dL/dh = −β/2 = −0.05, divided by 2
    assert torch.allclose(pc.grad, T([-0.025, -0.025])) and torch.allclose(pr.grad, T([0.025, 0.025]))
    assert m["rewards/accuracy"].item() == 0.0  # an exact tie of implicit rewards is not a correct order


def test_dpo_single_pair_gradient_at_init_is_minus_0_05():
    pc = T([-7.0], requires_grad=True)
    dpo(pc, T([-9.0]), T([-7.0]), T([-9.0]), beta=0.1)[0].backward()
    assert close(pc.grad.item(), -0.05)


def test_swapping_chosen_and_rejected_maps_h_to_minus_h():
    pc, pr, rc, rr = case()
    loss, m = dpo(pr, pc, rr, rc, beta=0.1)
    assert close(loss, 0.798139)  # −log σ(−0.2)
    assert close(m["rewards/margin"], -0.2) and m["rewards/accuracy"].item() == 0.0


def test_dpo_depends_only_on_h():
    # policy −20 / −21, reference −30 / −29: h = 10 − 8 = 2 again
    assert close(dpo(T([-20.0]), T([-21.0]), T([-30.0]), T([-29.0]), beta=0.1)[0], 0.598139)


def test_dpo_is_finite_for_huge_margins():
    loss, _ = dpo(T([0.0]), T([-5000.0]), T([0.0]), T([0.0]), beta=0.1)  # βh = 500
    assert close(loss, 0.0)
    loss, _ = dpo(T([-5000.0]), T([0.0]), T([0.0]), T([0.0]), beta=0.1)  # βh = −500
    assert close(loss, 500.0, tol=1e-3)


def test_dpo_on_bfloat16_inputs_computes_in_float32():
    # The inputs are exact in bf16 (spacing 1 in [128, 256)); the loss must still come out in fp32 at
    # full precision (a bf16 loss would be 0.5977 here), h = (−200 + 201) − (−202 + 201) = 2.
    pc, pr = T([-200.0], dtype=torch.bfloat16), T([-202.0], dtype=torch.bfloat16)
    rc, rr = T([-201.0], dtype=torch.bfloat16), T([-201.0], dtype=torch.bfloat16)
    loss, _ = dpo(pc, pr, rc, rr, beta=0.1)
    assert loss.dtype == torch.float32 and close(loss, 0.598139)


# ---------------------------------------------------------------- cDPO, robust, hinge, IPO, SimPO


def test_cdpo_label_smoothing():
    assert close(dpo(*case(), beta=0.1, label_smoothing=0.1)[0], 0.618139)  # 0.9·0.598139 + 0.1·0.798139


def test_cdpo_gradient_vanishes_where_sigma_equals_one_minus_eps():
    # βh = log(0.9/0.1) = 2.197225: cDPO's optimum, while plain DPO still pushes
    h = math.log(9.0) / 0.1
    pc = T([h], requires_grad=True)
    dpo(pc, T([0.0]), T([0.0]), T([0.0]), beta=0.1, label_smoothing=0.1)[0].backward()
    assert abs(pc.grad.item()) < 1e-7
    pc.grad = None
    dpo(pc, T([0.0]), T([0.0]), T([0.0]), beta=0.1)[0].backward()
    assert close(pc.grad.item(), -0.01)  # −β σ(−log 9) = −0.1 · 0.1


def test_robust_dpo():
    assert close(robust_dpo(*case(), beta=0.1, label_smoothing=0.1)[0], 0.573139)  # (0.9·0.598139 − 0.1·0.798139)/0.8
    assert close(robust_dpo(*case(), beta=0.1, label_smoothing=0.0)[0], 0.598139)  # ε = 0 is DPO


@pytest.mark.parametrize("eps", [0.5, 0.7, -0.1])
def test_robust_dpo_rejects_eps_outside_zero_to_half(eps):
    with pytest.raises(ValueError, match="label_smoothing"):
        robust_dpo(*case(), label_smoothing=eps)


def test_cdpo_rejects_eps_outside_zero_to_half():
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo(*case(), label_smoothing=0.6)


def test_hinge():
    assert close(hinge(*case(), beta=0.1)[0], 0.8)  # ReLU(1 − 0.2)
    # past βh = 1 the pair contributes nothing, not even gradient
    pc = T([0.0], requires_grad=True)
    loss, _ = hinge(pc, T([-20.0]), T([0.0]), T([0.0]), beta=0.1)
    loss.backward()
    assert loss.item() == 0.0 and pc.grad.item() == 0.0


def test_ipo_value_and_minimum():
    assert close(ipo(*case(), beta=0.1)[0], 9.0, tol=1e-5)  # (2 − 1/(2·0.1))² = (2 − 5)²
    # h = (−6 + 11) − (−12 + 12) = 5 = 1/(2β): the minimum, loss and gradient 0
    pc = T([-6.0], requires_grad=True)
    loss, _ = ipo(pc, T([-12.0]), T([-11.0]), T([-12.0]), beta=0.1)
    loss.backward()
    assert close(loss, 0.0) and close(pc.grad.item(), 0.0)


def test_simpo():
    # means −1 (sum −10 / 10 tokens) vs −1.5 (sum −30 / 20 tokens): 2.5·(−1) − 2.5·(−1.5) − 1.375 = −0.125
    loss, m = simpo(T([-1.0]), T([-1.5]), beta=2.5, gamma=1.375)
    assert close(loss, 0.757599)  # −log σ(−0.125)
    assert close(m["rewards/chosen"], -2.5) and close(m["rewards/rejected"], -3.75)
    assert close(m["rewards/margin"], 1.25) and m["rewards/accuracy"].item() == 1.0
    assert close(m["logps/chosen"], -1.0) and close(m["logps/rejected"], -1.5)


def test_dpo_losses_dict_shares_one_signature():
    assert set(DPO_LOSSES) == {"sigmoid", "robust", "ipo", "hinge"}
    expected = {"sigmoid": 0.598139, "robust": 0.573139, "ipo": 9.0, "hinge": 0.8}
    for name, fn in DPO_LOSSES.items():
        loss, m = fn(*case(), beta=0.1)
        assert close(loss, expected[name], tol=1e-5), name
        assert close(m["rewards/margin"], 0.2)


# ---------------------------------------------------------------- rankings


def test_listwise_with_two_responses_equals_dpo():
    g = torch.Generator().manual_seed(0)
    policy, ref = -10 * torch.rand(6, 2, generator=g), -10 * torch.rand(6, 2, generator=g)
    ranks = T([[0, 1]] * 6)
    expected, m_pair = dpo(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=0.3)
    loss, m_list = listwise_dpo(policy, ref, ranks, beta=0.3)
    assert torch.allclose(loss, expected, atol=1e-6)
    for key, value in m_pair.items():  # best-vs-rest metrics reduce to the pairwise ones
        assert torch.allclose(m_list[key], value, atol=1e-6), key


def test_listwise_k2_swapped_slots_equals_dpo():
    # the winner need not sit in slot 0: ranks say which is which
    policy, ref = T([[-12.0, -10.0]]), T([[-11.0, -11.0]])
    loss, m = listwise_dpo(policy, ref, T([[1, 0]]), beta=0.1)
    assert close(loss, 0.598139) and close(m["rewards/margin"], 0.2)


def test_dpop_penalises_only_a_chosen_answer_that_fell_below_the_reference():
    # chosen fell by 1 nat, rejected by 1: h = 0, DPO log 2; DPOP λ 2, β 0.1: −log σ(0.1·(0 − 2·1)) = log(1 + e^0.2)
    fell = T([-5.0]), T([-6.0]), T([-4.0]), T([-5.0])
    assert close(dpo(*fell, beta=0.1)[0], math.log(2))
    assert close(dpo(*fell, beta=0.1, dpop_lambda=2.0)[0], 0.798139)
    # chosen above its reference: no penalty at all, whatever λ (h = 2 → DPO's 0.598139)
    assert close(dpo(*case(), beta=0.1, dpop_lambda=50.0)[0], 0.598139)
    # the penalty's gradient pushes the fallen chosen log-prob up: d/dπ_w = −β(1 + λ)σ(−z)
    pc = T([-5.0], requires_grad=True)
    dpo(pc, *fell[1:], beta=0.1, dpop_lambda=2.0)[0].backward()
    assert close(pc.grad, -0.1 * 3 * torch.sigmoid(T(0.2)))


def test_listwise_dpop_with_two_responses_equals_dpop_and_penalises_the_best_group_only():
    g = torch.Generator().manual_seed(1)
    policy, ref = -10 * torch.rand(6, 2, generator=g), -10 * torch.rand(6, 2, generator=g)
    expected, _ = dpo(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], beta=0.3, dpop_lambda=5.0)
    loss, _ = listwise_dpo(policy, ref, T([[0, 1]] * 6), beta=0.3, dpop_lambda=5.0)
    assert torch.allclose(loss, expected, atol=1e-6)
    # K = 3: only the best-ranked response (slot 1 here) can be penalised; a fallen worse one is not
    policy, ref, ranks = T([[-9.0, -5.0, -7.0]]), T([[-4.0, -4.0, -4.0]]), T([[2, 0, 1]])
    shifted = policy.clone()
    shifted[0, 1] -= 5.0 * 1.0  # rewards are β(π − π_ref − λ·fall) for the best: the same as π lowered by λ·fall
    loss, metrics = listwise_dpo(policy, ref, ranks, beta=0.1, dpop_lambda=5.0)
    assert torch.allclose(loss, listwise_dpo(shifted, ref, ranks, beta=0.1)[0], atol=1e-6)
    # the logged implicit rewards are the plain ones, as `dpo` logs them
    assert close(metrics["rewards/chosen"], listwise_dpo(policy, ref, ranks, beta=0.1)[1]["rewards/chosen"])


def test_listwise_is_invariant_to_a_constant_per_row():
    g = torch.Generator().manual_seed(1)
    policy, ref = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    ranks = T([[0, 1, 2], [2, 0, 1], [0, 0, 1], [1, 0, -1]])
    loss, _ = listwise_dpo(policy, ref, ranks, beta=0.5)
    shift = T([[3.0], [-7.0], [50.0], [0.5]])
    shifted, _ = listwise_dpo(policy + shift, ref, ranks, beta=0.5)
    assert torch.allclose(shifted, loss, atol=1e-5)
    assert not torch.allclose(listwise_dpo(policy + T([[3.0, 0.0, 0.0]]), ref, ranks, beta=0.5)[0], loss)


def test_listwise_k3_hand_number():
    # β·(π − ref) = [2, 1, 0] ranked 1 ≻ 2 ≻ 3: Plackett-Luce NLL 0.720868 (docs/algorithms.md §10)
    loss, m = listwise_dpo(T([[10.0, 0.0, -10.0]]), T([[-10.0, -10.0, -10.0]]), T([[0, 1, 2]]), beta=0.1)
    assert close(loss, 0.720868)
    assert close(m["rewards/chosen"], 2.0) and close(m["rewards/rejected"], 0.5)  # best vs mean of the rest
    assert close(m["rewards/margin"], 1.5) and m["rewards/accuracy"].item() == 1.0


def test_all_pairs_dpo_k3_is_the_mean_of_three_dpo_losses():
    policy = T([[-3.0, -5.0, -4.0]])
    ref = T([[-4.0, -4.0, -4.5]])
    ranks = T([[0, 2, 1]])  # slot 0 ≻ slot 2 ≻ slot 1

    def pair(i: int, j: int) -> float:
        return dpo(policy[0, [i]], policy[0, [j]], ref[0, [i]], ref[0, [j]], beta=0.5)[0].item()

    loss, m = all_pairs_dpo(policy, ref, ranks, beta=0.5)
    assert close(loss, (pair(0, 2) + pair(0, 1) + pair(2, 1)) / 3)
    # the same thing as a literal: implicit rewards [0.5, −0.5, 0.25], pair losses
    # −log σ(0.25), −log σ(1.0), −log σ(0.75) = 0.575939, 0.313262, 0.386871
    assert close(loss, (0.575939 + 0.313262 + 0.386871) / 3)
    assert m["rewards/accuracy"].item() == 1.0


def test_all_pairs_dpo_skips_tied_pairs():
    policy, ref = T([[-10.0, -12.0, -11.0]]), T([[-11.0, -11.0, -11.0]])
    # slots 1 and 2 tied below slot 0: pairs (0,1) with h = 2 and (0,2) with h = 1
    loss, _ = all_pairs_dpo(policy, ref, T([[0, 1, 1]]), beta=0.1)
    assert close(loss, (0.598139 + 0.644397) / 2)  # −log σ(0.2), −log σ(0.1)


@pytest.mark.parametrize("fn", [listwise_dpo, all_pairs_dpo])
def test_padded_slots_get_zero_gradient_even_when_nan(fn):
    policy = T([[-3.0, -5.0, float("nan"), -4.0], [-2.0, -6.0, -1.0, 0.0]], requires_grad=True)
    ref = T([[-4.0, -4.0, 0.0, -4.0], [-3.0, -3.0, -3.0, float("nan")]])
    ranks = T([[0, 2, -1, 1], [1, 2, 0, -1]])
    loss, m = fn(policy, ref, ranks, beta=0.5)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in m.values())
    assert policy.grad[0, 2].item() == 0.0 and policy.grad[1, 3].item() == 0.0
    assert policy.grad[0, 0].item() < 0 and policy.grad[0, 1].item() > 0  # best pushed up, worst down
    # padding changes nothing: the loss equals the unpadded batch's
    unpadded = torch.stack([fn(policy.detach()[i, keep][None], ref[i, keep][None], ranks[i, keep][None], beta=0.5)[0]
                            for i, keep in [(0, [0, 1, 3]), (1, [0, 1, 2])]]).mean()
    assert torch.allclose(loss, unpadded, atol=1e-6)
