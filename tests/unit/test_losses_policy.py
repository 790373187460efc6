"""Critic-free advantages and loss aggregation (alignkit.losses.policy) against docs/algorithms.md §10."""

import math

import pytest
import torch

from alignkit.losses.policy import aggregate, group_advantages, overlong_penalty

T = torch.tensor


def adv(rewards, mode="grpo", **kw):
    return group_advantages(T([rewards], dtype=torch.float64), mode, **kw)[0].tolist()


@pytest.mark.parametrize("rewards,mode,kw,expected", [
    ([1, 0, 0, 1], "grpo", {"eps": 0.0}, [0.866025, -0.866025, -0.866025, 0.866025]),
    ([1, 0, 0, 1], "grpo", {}, [0.865875, -0.865875, -0.865875, 0.865875]),                 # TRL, std + 1e-4
    ([1, 0, 0, 1], "grpo", {"eps": 0.0, "unbiased": False}, [1.0, -1.0, -1.0, 1.0]),
    ([1, 0, 0, 1], "dr_grpo", {}, [0.5, -0.5, -0.5, 0.5]),
    ([1, 0, 0, 1], "rloo", {}, [2 / 3, -2 / 3, -2 / 3, 2 / 3]),
    ([1, 0, 0, 0], "grpo", {"eps": 0.0}, [1.5, -0.5, -0.5, -0.5]),
    ([1, 0, 0, 0], "grpo", {"eps": 0.0, "unbiased": False}, [1.732051, -0.577350, -0.577350, -0.577350]),
    ([1, 0], "grpo", {"eps": 0.0}, [0.707107, -0.707107]),
])
def test_group_advantage_table(rewards, mode, kw, expected):
    assert adv(rewards, mode, **kw) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("mode", ["grpo", "dr_grpo", "rloo", "reinforce_pp"])
def test_advantages_sum_to_zero_and_equal_rewards_give_zero(mode):
    rewards = torch.rand(5, 6, generator=torch.Generator().manual_seed(0))
    rewards[2] = 0.7  # a group with equal rewards
    a = group_advantages(rewards, mode)
    torch.testing.assert_close(a.sum(dim=1), torch.zeros(5), atol=1e-5, rtol=0)
    assert torch.all(a[2] == 0) and not torch.isnan(a).any()


def test_rloo_is_k_over_k_minus_one_times_centred():
    rewards = torch.rand(3, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(group_advantages(rewards, "rloo"), 4 / 3 * group_advantages(rewards, "dr_grpo"))
    baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / 3  # mean of the others
    torch.testing.assert_close(group_advantages(rewards, "rloo"), rewards - baseline)


def test_difficulty_bias():
    one = adv([1] + [0] * 7, eps=0.0)
    four = adv([1] * 4 + [0] * 4, eps=0.0)
    assert one[0] == pytest.approx(2.4749, abs=1e-4) and four[0] == pytest.approx(0.9354, abs=1e-4)
    assert adv([1] + [0] * 7, "dr_grpo")[0] == pytest.approx(0.875)
    assert adv([1] * 4 + [0] * 4, "dr_grpo")[0] == pytest.approx(0.5)


def test_reinforce_pp_divides_by_the_batch_std_of_centred_rewards():
    rewards = T([[1.0, 0.0], [3.0, 1.0]])
    centred = T([[0.5, -0.5], [1.0, -1.0]])
    torch.testing.assert_close(group_advantages(rewards, "reinforce_pp", eps=0.0), centred / centred.std())


def test_unscorable_responses_are_left_out_of_the_baseline():
    a = group_advantages(T([[1.0, float("nan"), 0.0, 0.0]]), "dr_grpo")[0].tolist()
    assert a == pytest.approx([2 / 3, 0.0, -1 / 3, -1 / 3])
    assert group_advantages(T([[float("nan")] * 3]), "grpo").tolist() == [[0.0, 0.0, 0.0]]
    with pytest.raises(ValueError):
        group_advantages(T([[1.0, 0.0]]), "ppo")


@pytest.mark.parametrize("mode,kw,short,long", [
    ("seq_mean_token_mean", {}, 0.05, 0.005),                       # GRPO: 1 / (G · |o_i|)
    ("token_mean", {}, 1 / 110, 1 / 110),                          # DAPO: 1 / Σ|o_i|
    ("seq_mean_token_sum_norm", {"max_len": 100}, 0.005, 0.005),   # Dr. GRPO: 1 / (G · L_max)
])
def test_length_bias_per_token_weights(mode, kw, short, long):
    mask = torch.zeros(2, 100)
    mask[0, :10], mask[1, :100] = 1, 1
    per_token = torch.zeros(2, 100, requires_grad=True)
    aggregate(per_token, mask, mode, **kw).backward()
    assert float(per_token.grad[0, 0]) == pytest.approx(short)
    assert float(per_token.grad[1, 0]) == pytest.approx(long)
    assert float(per_token.grad[0, 50]) == 0  # padding


def test_aggregate_needs_a_budget_for_the_constant_normaliser():
    with pytest.raises(ValueError):
        aggregate(torch.zeros(1, 2), torch.ones(1, 2), "seq_mean_token_sum_norm")
    with pytest.raises(ValueError):
        aggregate(torch.zeros(1, 2), torch.ones(1, 2), "sum")


def test_dapo_soft_overlong_penalty():
    values = overlong_penalty(T([16384, 18432, 20480, 20481]), max_len=20480, cache=4096).tolist()
    assert values == pytest.approx([0.0, -0.5, -1.0, -1.0])
    assert overlong_penalty(T([50, 90, 110]), max_len=100, cache=20).tolist() == pytest.approx([0.0, -0.5, -1.0])
    assert math.isclose(float(overlong_penalty(T([80]), max_len=100, cache=20)), 0.0)
