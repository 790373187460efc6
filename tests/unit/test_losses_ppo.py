"""PPO plumbing (alignkit.losses.ppo): the hand-checked numbers of docs/algorithms.md §10, plus identities."""

import math

import pytest
import torch

from alignkit.losses.ppo import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    kl_per_token,
    policy_loss,
    token_rewards,
    value_loss,
    whiten,
)

T = torch.tensor


def objective(ratio: float, advantage: float, **kw) -> float:
    """The clipped objective (to maximise) of one token: −policy_loss."""
    old = torch.zeros(1, 1)
    loss, _ = policy_loss(old + math.log(ratio), old, T([[advantage]]), torch.ones(1, 1), **kw)
    return -float(loss)


@pytest.mark.parametrize("ratio,advantage,expected", [
    (1.5, 2.0, 2.4),          # clipped at 1 + ε
    (0.2 / 0.3, 2.0, 4 / 3),  # below 1 − ε but the advantage is positive: unclipped min
    (1.5, -2.0, -3.0),        # pessimistic branch unclipped: the gradient flows
    (0.2 / 0.3, -2.0, -1.6),  # clipped at 1 − ε
    (1.0, 0.7, 0.7),          # at ratio 1 the objective is the advantage
])
def test_clipped_objective(ratio, advantage, expected):
    assert objective(ratio, advantage) == pytest.approx(expected, abs=1e-6)


def test_clip_higher_and_dual_clip():
    assert objective(1.25, 1.0) == pytest.approx(1.2)
    assert objective(1.25, 1.0, clip_high=0.28) == pytest.approx(1.25)
    assert objective(5.0, -1.0) == pytest.approx(-5.0)
    assert objective(5.0, -1.0, dual_clip=3.0) == pytest.approx(-3.0)
    assert objective(5.0, 1.0, dual_clip=3.0) == pytest.approx(1.2)  # positive advantages are untouched
    with pytest.raises(ValueError):
        objective(1.0, -1.0, dual_clip=1.0)


def test_policy_gradient_is_zero_where_clipped_and_vanilla_at_ratio_one():
    mask = torch.ones(1, 2)
    old = torch.zeros(1, 2)
    logp = T([[math.log(0.2 / 0.3), 0.0]], requires_grad=True)
    loss, metrics = policy_loss(logp, old, T([[-2.0, 3.0]]), mask)
    loss.backward()
    assert logp.grad[0, 0] == 0  # clipped token: no gradient
    assert float(logp.grad[0, 1]) == pytest.approx(-3.0 / 2)  # −Â / n_tokens, vanilla policy gradient
    assert float(metrics["policy/clipfrac"]) == pytest.approx(0.5)


def test_padding_does_not_count():
    old = torch.zeros(1, 3)
    logp = T([[math.log(1.5), 0.0, 50.0]])  # a huge ratio on a padded position
    loss, _ = policy_loss(logp, old, T([[2.0, 1.0, 9.0]]), T([[1, 1, 0]]))
    assert float(loss) == pytest.approx(-(2.4 + 1.0) / 2)


def test_per_token_kl_reward_sums_to_score_minus_beta_kl():
    logp, ref = T([[-1.0, -2.0, -0.5]]), T([[-1.2, -1.5, -0.5]])
    rewards, kl = token_rewards(logp, ref, torch.ones(1, 3), T([1.0]), beta=0.05)
    assert kl[0].tolist() == pytest.approx([0.2, -0.5, 0.0])
    assert rewards[0].tolist() == pytest.approx([-0.01, 0.025, 1.0])
    assert float(rewards.sum()) == pytest.approx(1.015)


def test_score_lands_on_the_last_real_token():
    mask = T([[1, 1, 0, 0], [1, 1, 1, 1]])
    zeros = torch.zeros(2, 4)
    rewards, _ = token_rewards(zeros, zeros, mask, T([2.0, -1.0]), beta=0.1)
    assert rewards.tolist() == [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]]


def test_kl_estimators():
    for log_r, k1, k3 in [(-0.1, 0.1, 0.004837), (0.1, -0.1, 0.005171), (math.log(2), -math.log(2), 0.306853)]:
        logp, ref = torch.zeros(1), T([log_r])  # log r = ref − logp
        assert float(kl_per_token(logp, ref, "k1")) == pytest.approx(k1, abs=1e-6)
        assert float(kl_per_token(logp, ref, "k3")) == pytest.approx(k3, abs=1e-6)
    assert float(kl_per_token(T([-1.0]), T([-1.0]), "k3")) == 0
    with pytest.raises(ValueError):
        kl_per_token(T([0.0]), T([0.0]), "k9")


def test_gae():
    advantages, returns = gae(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), torch.ones(1, 3), gamma=1.0, lam=0.95)
    assert advantages[0].tolist() == pytest.approx([0.46575, 0.385, 0.3])
    assert returns[0].tolist() == pytest.approx([0.96575, 0.985, 1.0])


def test_gae_ignores_what_comes_after_the_last_token():
    mask = T([[1, 1, 1, 0, 0]])
    padded_a, padded_r = gae(T([[0.0, 0.0, 1.0, 5.0, 5.0]]), T([[0.5, 0.6, 0.7, 9.0, 9.0]]), mask)
    a, r = gae(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.6, 0.7]]), torch.ones(1, 3))
    assert padded_a[0, :3].tolist() == pytest.approx(a[0].tolist())
    assert padded_a[0, 3:].tolist() == [0.0, 0.0] and padded_r[0, 3:].tolist() == [0.0, 0.0]


def test_value_clip():
    loss, metrics = value_loss(T([[0.9]]), T([[0.5]]), T([[1.0]]), torch.ones(1, 1), clip=0.2)
    assert float(loss) == pytest.approx(0.045)
    assert float(metrics["value/clipfrac"]) == 1.0
    unclipped, _ = value_loss(T([[0.9]]), T([[0.5]]), T([[1.0]]), torch.ones(1, 1), clip=None)
    assert float(unclipped) == pytest.approx(0.005)


def test_whitening_conventions():
    x, mask = T([[1.0, 2.0, 3.0, 4.0, 100.0]]), T([[1, 1, 1, 1, 0]])
    assert whiten(x, mask)[0, :4].tolist() == pytest.approx([-1.1619, -0.3873, 0.3873, 1.1619], abs=1e-4)
    assert whiten(x, mask, unbiased=False)[0, :4].tolist() == pytest.approx([-1.3416, -0.4472, 0.4472, 1.3416],
                                                                            abs=1e-4)
    kept = whiten(x, mask, shift_mean=False)[0, :4]
    assert kept.tolist() == pytest.approx([1.3381, 2.1127, 2.8873, 3.6619], abs=1e-4)
    assert float(whiten(x, mask)[0, 4]) == 0.0


def test_explained_variance():
    mask = torch.ones(1, 4)
    returns = T([[1.0, 2.0, 3.0, 4.0]])
    assert float(explained_variance(returns, returns, mask)) == pytest.approx(1.0)
    assert float(explained_variance(torch.full_like(returns, 2.5), returns, mask)) == pytest.approx(0.0)


@pytest.mark.parametrize("kl,expected", [(8.0, 0.151536), (3.0, 0.148464), (6.0, 0.15)])
def test_adaptive_kl_controller(kl, expected):
    ctl = AdaptiveKLController(0.15, target=6.0, horizon=10000)
    ctl.update(kl, n_steps=512)
    assert ctl.beta == pytest.approx(expected, abs=1e-6)


def test_fixed_kl_controller_stays():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, n_steps=512)
    assert ctl.beta == 0.05
