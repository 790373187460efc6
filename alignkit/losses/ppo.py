"""PPO for language models, as pure functions: per-token rewards, GAE, whitening, the clipped losses.

Shapes: B responses, A response tokens (right-padded); ``mask`` (B, A) is 1 on the tokens the policy
chose (up to and including the end-of-turn token), 0 after. The recipe is InstructGPT's
(Ouyang et al. 2022, arXiv 2203.02155, eq. 2) as implemented in Ziegler et al. 2019 (arXiv 1909.08593):

    r_t   = −β · (log π_old(y_t) − log π_ref(y_t))  +  [t = last] · R_RM(x, y)     per-token KL reward
    δ_t   = r_t + γ V_{t+1} − V_t,   Â_t = δ_t + γλ Â_{t+1}                       GAE (Schulman et al. 2016)
    L^π   = −mean_t min(ρ_t Â_t, clip(ρ_t, 1−ε_low, 1+ε_high) Â_t),  ρ_t = π/π_old   PPO (arXiv 1707.06347)
    L^V   = ½ mean_t max((V − R)², (V_old + clip(V − V_old, ±ε_v) − R)²)           clipped value loss

Means are over the tokens of the minibatch (token-mean). Every loss returns ``(loss, metrics)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alignkit.losses.reduce import masked_mean, masked_sum


def kl_per_token(logp: Tensor, ref_logp: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(π ‖ π_ref) from samples of π (Schulman, "Approximating KL Divergence").

    k1 = log π − log π_ref (unbiased, can be negative); k3 = (r − 1) − log r with r = π_ref / π
    (unbiased, ≥ 0). Both are 0 where π = π_ref.
    """
    log_ratio = logp - ref_logp
    if estimator == "k1":
        return log_ratio
    if estimator == "k3":
        return torch.expm1(-log_ratio) + log_ratio
    raise ValueError(f"unknown KL estimator '{estimator}' (k1 or k3)")


def last_token_index(mask: Tensor) -> Tensor:
    """Index of the last 1 in each row of a right-padded (B, A) mask; 0 for an empty row."""
    return (mask.long().sum(dim=1) - 1).clamp(min=0)


def token_rewards(logp: Tensor, ref_logp: Tensor, mask: Tensor, scores: Tensor, *, beta: float,
                  estimator: str = "k1") -> tuple[Tensor, Tensor]:
    """Per-token rewards −β·KL_t, plus the sequence score on each response's last token: (B, A), (B, A).

    logp / ref_logp: (B, A) log-probs of the sampled tokens under the rollout policy and the reference
    (no gradient); scores: (B,) the reward model's (or any reward source's) score per response.
    Returns the rewards and the per-token KL estimate, both 0 on padding.
    """
    kl = torch.where(mask.bool(), kl_per_token(logp, ref_logp, estimator), torch.zeros_like(logp))
    rewards = -beta * kl
    last = last_token_index(mask).unsqueeze(1)
    rewards = rewards.scatter_add(1, last, scores.to(rewards.dtype).unsqueeze(1))
    return rewards * mask, kl


def gae(rewards: Tensor, values: Tensor, mask: Tensor, *, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv 1506.02438): advantages, returns.

    rewards, values, mask: (B, A), right-padded; the value after the last real token is 0 (the episode
    ends there). Returns = advantages + values, computed before any whitening.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    last = torch.zeros_like(values[:, 0])
    A = values.size(1)
    for t in reversed(range(A)):
        next_value = values[:, t + 1] if t + 1 < A else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


def whiten(values: Tensor, mask: Tensor, *, shift_mean: bool = True, unbiased: bool = True,
           eps: float = 1e-8) -> Tensor:
    """(x − mean) / std over the masked positions (``shift_mean=False`` adds the mean back); 0 on padding.

    ``unbiased`` uses Bessel's correction (PyTorch's convention); ``False`` the population variance of
    the original TensorFlow code.
    """
    mask = mask.to(values.dtype)
    mean = masked_mean(values, mask)
    n = mask.sum()
    var = masked_sum((values - mean) ** 2, mask) / torch.clamp(n - 1 if unbiased else n, min=1.0)
    out = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def clipped_surrogate(logp: Tensor, old_logp: Tensor, advantages: Tensor, *, clip_low: float = 0.2,
                      clip_high: float | None = None, dual_clip: float | None = None) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate per token (the loss, i.e. −objective) and where the clip was active; (B, T) each.

    ``clip_high`` (DAPO's clip-higher) defaults to ``clip_low``. dual_clip c > 1 (Ye et al. 2020,
    arXiv 1912.09729) caps the loss of negative-advantage tokens at −c·Â, so a huge ratio on a bad token
    cannot dominate.
    """
    clip_high = clip_low if clip_high is None else clip_high
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        per_token = torch.where(advantages < 0, torch.minimum(per_token, -dual_clip * advantages), per_token)
    return per_token, (clipped > unclipped).detach()


def policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, clip_low: float = 0.2,
                clip_high: float | None = None, dual_clip: float | None = None) -> tuple[Tensor, dict]:
    """:func:`clipped_surrogate`, token-mean over ``mask``. Metrics: clip fraction, approx-KL
    ½·mean (log π − log π_old)², mean ratio."""
    per_token, was_clipped = clipped_surrogate(logp, old_logp, advantages, clip_low=clip_low, clip_high=clip_high,
                                               dual_clip=dual_clip)
    return masked_mean(per_token, mask), surrogate_metrics(logp, old_logp, was_clipped, mask)


def surrogate_metrics(logp: Tensor, old_logp: Tensor, was_clipped: Tensor, mask: Tensor) -> dict:
    with torch.no_grad():
        log_ratio = logp - old_logp
        return {"policy/clipfrac": masked_mean(was_clipped.float(), mask),
                "policy/approx_kl": masked_mean(0.5 * log_ratio ** 2, mask),
                "policy/ratio": masked_mean(torch.exp(log_ratio), mask)}


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, *,
               clip: float | None = 0.2) -> tuple[Tensor, dict]:
    """Clipped value loss ½·max((V − R)², (V_clip − R)²), token-mean; ``clip=None`` is plain ½(V − R)²."""
    error = (values - returns) ** 2
    if clip is None:
        per_token, clipfrac = error, torch.zeros((), device=values.device)
    else:
        v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
        error_clip = (v_clip - returns) ** 2
        per_token = torch.maximum(error, error_clip)
        clipfrac = masked_mean((error_clip > error).float().detach(), mask)
    return 0.5 * masked_mean(per_token, mask), {"value/clipfrac": clipfrac}


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 − Var(R − V) / Var(R) over the masked positions: 1 is a perfect critic, ≤ 0 a useless one."""
    mask = mask.to(values.dtype)

    def var(x: Tensor) -> Tensor:
        return masked_mean((x - masked_mean(x, mask)) ** 2, mask)

    return 1.0 - var(returns - values) / torch.clamp(var(returns), min=1e-8)


class FixedKLController:
    """A constant KL coefficient β."""

    def __init__(self, beta: float):
        self.beta = beta

    def update(self, kl: float, n_steps: int) -> None:
        pass


class AdaptiveKLController:
    """Ziegler et al. 2019 §2.2: β ← β·(1 + clip(KL / target − 1, ±0.2) · n / horizon).

    n is the number of episodes (responses) in the batch that measured ``kl``; KL is per response (nats).
    """

    def __init__(self, beta: float, target: float, horizon: int = 10000):
        if target <= 0 or horizon <= 0:
            raise ValueError("the adaptive KL controller needs target > 0 and horizon > 0")
        self.beta, self.target, self.horizon = beta, target, horizon

    def update(self, kl: float, n_steps: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_steps / self.horizon
