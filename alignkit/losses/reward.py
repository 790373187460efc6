"""Reward-model losses: Bradley-Terry pairs, K-wise rankings, ties, and reward centring.

    BT:  L = -E[log σ(r_w - r_l - m)]                           (InstructGPT eq. 1; Llama 2 margin)
    PL:  L = -E[Σ_k r_τ(k) - log Σ_{j≥k} exp r_τ(j)]            (Plackett-Luce; DPO appendix A.3)

Rankings arrive as padded groups: ``rewards`` (B, K) float, one row per prompt, and ``ranks`` (B, K)
long, the position of each response's tie group in the best→worst order (0 = best group, equal rank =
tied, -1 = padding). The K-wise losses build every pair of a prompt from one (B, K, K) comparison, so a
prompt's pairs stay one batch element: InstructGPT §3.5 found that shuffling them as independent
examples overfits within an epoch. Padded rewards may hold any value (even NaN); they are replaced
before use and get exactly zero gradient.

Deliberate simplifications: every usable pair of a prompt weighs the same; ties use either a pairwise
tie model (Rao-Kupper, Davidson) or, in Plackett-Luce, Breslow's approximation.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from alignkit.losses.reduce import masked_mean

# Both defaults make win, tie and loss equally likely (1/3 each) when two rewards are equal, the point
# where a tie is most probable: an uninformative prior over the three outcomes.
# Rao-Kupper: P(tie | d=0) = tanh(η/2) = 1/3 ⇒ θ = 2.  Davidson: P(tie | d=0) = ν/(2+ν) = 1/3 ⇒ ν = 1.
RAO_KUPPER_LOG_THETA = math.log(2.0)
DAVIDSON_NU = 1.0


def bradley_terry(r_chosen: Tensor, r_rejected: Tensor, *,
                  margin: Tensor | None = None) -> tuple[Tensor, dict]:
    """-mean log σ(r_w - r_l - m) over (B,) chosen/rejected rewards, optional (B,) margins (Llama 2)."""
    diff = r_chosen.float() - r_rejected.float()
    shifted = diff if margin is None else diff - margin.float()
    loss = -F.logsigmoid(shifted).mean()  # logsigmoid, not log(sigmoid): finite for any difference
    return loss, {"accuracy": (diff > 0).float().mean().detach(), "margin": diff.mean().detach()}


# ---------------------------------------------------------------- pairwise tie models


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _check_strength(name: str, value: float, tie: Tensor) -> None:
    # A zero strength gives a tie probability 0, so a single observed tie would make the loss infinite.
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if value == 0 and bool(tie.any()):
        raise ValueError(f"{name}=0 gives ties probability 0, but ties were given; use {name} > 0")


def rao_kupper_log_probs(r_a: Tensor, r_b: Tensor, *,
                         log_theta: float = RAO_KUPPER_LOG_THETA) -> tuple[Tensor, Tensor]:
    """(log P(a≻b), log P(a~b)) under Rao & Kupper (1967), η = log θ; any broadcastable shapes.

    P(a≻b) = σ(d - η), d = r_a - r_b. P(tie) = 1 - σ(d - η) - σ(-d - η) cancels catastrophically for
    large |d|, so it is computed from the equal product (e^{2η} - 1)·σ(d - η)·σ(-d - η), in log space.
    """
    d = r_a - r_b
    log_win = F.logsigmoid(d - log_theta)
    log_tie = _log(math.expm1(2 * log_theta)) + log_win + F.logsigmoid(-d - log_theta)
    return log_win, log_tie


def davidson_log_probs(r_a: Tensor, r_b: Tensor, *, nu: float = DAVIDSON_NU) -> tuple[Tensor, Tensor]:
    """(log P(a≻b), log P(a~b)) under Davidson (1970); any broadcastable shapes.

    P(a≻b) = e^{r_a}/D, P(tie) = ν e^{(r_a+r_b)/2}/D, D = e^{r_a} + e^{r_b} + ν e^{(r_a+r_b)/2}.
    """
    r_a, r_b = torch.broadcast_tensors(r_a, r_b)
    log_tie_term = _log(nu) + (r_a + r_b) / 2
    log_denom = torch.logsumexp(torch.stack([r_a, r_b, log_tie_term]), dim=0)
    return r_a - log_denom, log_tie_term - log_denom


def _tie_nll(log_win: Tensor, log_tie: Tensor, tie: Tensor, diff: Tensor) -> tuple[Tensor, dict]:
    loss = -torch.where(tie, log_tie, log_win).mean()
    return loss, {"accuracy": masked_mean((diff > 0).float(), ~tie).detach(),
                  "tie_prob": log_tie.exp().mean().detach()}


def rao_kupper(r_a: Tensor, r_b: Tensor, tie: Tensor, *,
               log_theta: float = RAO_KUPPER_LOG_THETA) -> tuple[Tensor, dict]:
    """-mean log P(observed) under Rao-Kupper; (B,) rewards, (B,) bool ``tie``; a is preferred where not tied.

    ``log_theta`` = 0 reduces strict rows to Bradley-Terry; with ties present it raises ValueError.
    """
    _check_strength("log_theta", log_theta, tie)
    r_a, r_b = r_a.float(), r_b.float()
    return _tie_nll(*rao_kupper_log_probs(r_a, r_b, log_theta=log_theta), tie, r_a - r_b)


def davidson(r_a: Tensor, r_b: Tensor, tie: Tensor, *, nu: float = DAVIDSON_NU) -> tuple[Tensor, dict]:
    """-mean log P(observed) under Davidson; (B,) rewards, (B,) bool ``tie``; a is preferred where not tied.

    ``nu`` = 0 is Bradley-Terry; with ties present it raises ValueError.
    """
    _check_strength("nu", nu, tie)
    r_a, r_b = r_a.float(), r_b.float()
    return _tie_nll(*davidson_log_probs(r_a, r_b, nu=nu), tie, r_a - r_b)


# tie_model name -> (log-probabilities given a strength, default strength)
TIE_MODELS = {
    "rao_kupper": (lambda a, b, s: rao_kupper_log_probs(a, b, log_theta=s), RAO_KUPPER_LOG_THETA),
    "davidson": (lambda a, b, s: davidson_log_probs(a, b, nu=s), DAVIDSON_NU),
}


# ---------------------------------------------------------------- K-wise rankings


def _pairs(rewards: Tensor, ranks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Float rewards with padding zeroed, and the (B, K, K) strict (i above j) and tied (i < j) pair masks."""
    present = ranks >= 0
    # masked_fill, not multiplication: a NaN in a padded slot must not leak into sums or gradients
    rewards = rewards.float().masked_fill(~present, 0.0)
    both = present[:, :, None] & present[:, None, :]
    strict = both & (ranks[:, :, None] < ranks[:, None, :])
    upper = torch.ones_like(both[0]).triu(1)  # each tied pair once
    tied = both & (ranks[:, :, None] == ranks[:, None, :]) & upper
    return rewards, strict, tied


def _pair_accuracy(rewards: Tensor, strict: Tensor) -> Tensor:
    right = (rewards[:, :, None] > rewards[:, None, :]) & strict
    return (right.sum() / strict.sum().clamp(min=1)).detach()


def all_pairs(rewards: Tensor, ranks: Tensor, *, margin: Tensor | None = None, tie_model: str | None = None,
              tie_strength: float | None = None) -> tuple[Tensor, dict]:
    """InstructGPT K-wise loss (arXiv 2203.02155 eq. 1): per prompt, the mean over its pairs of -log P.

    rewards: (B, K); ranks: (B, K) long (0 = best, equal = tied, -1 = padding); margin: (B,) per prompt,
    subtracted from the winner of each strict pair. ``tie_model`` None: BT on strict pairs, tied pairs
    skipped. "rao_kupper" / "davidson": strict pairs use that model's P(i≻j), tied pairs add -log P(tie);
    ``tie_strength`` is its log θ / ν (default RAO_KUPPER_LOG_THETA / DAVIDSON_NU). The batch loss is
    the mean over prompts with at least one usable pair. Metrics count pairs over the whole batch.
    """
    rewards, strict, tied = _pairs(rewards, ranks)
    r_i, r_j = rewards[:, :, None], rewards[:, None, :]  # (B, K, 1), (B, 1, K)
    r_win = r_i if margin is None else r_i - margin.float()[:, None, None]
    if tie_model is None:
        nll, used = -F.logsigmoid(r_win - r_j), strict
    else:
        if tie_model not in TIE_MODELS:
            raise ValueError(f"tie_model must be None or one of {', '.join(TIE_MODELS)}, got {tie_model!r}")
        log_probs, default = TIE_MODELS[tie_model]
        strength = default if tie_strength is None else tie_strength
        _check_strength("tie_strength", strength, tied)
        # tied pairs are scored without the margin, which only handicaps a winner
        nll = -torch.where(tied, log_probs(r_i, r_j, strength)[1], log_probs(r_win, r_j, strength)[0])
        used = strict | tied
    n_used = used.sum((1, 2))
    per_prompt = torch.where(used, nll, 0.0).sum((1, 2)) / n_used.clamp(min=1)  # (B,)
    loss = masked_mean(per_prompt, n_used > 0)
    return loss, {"accuracy": _pair_accuracy(rewards, strict), "n_pairs": strict.sum(),
                  "n_tied_pairs": tied.sum()}


def plackett_luce(rewards: Tensor, ranks: Tensor) -> tuple[Tensor, dict]:
    """Plackett-Luce NLL of each prompt's ranking, mean over prompts with two or more responses.

    DPO paper appendix A.3; Zhu, Jordan & Jiao (arXiv 2301.11270) show the full PL MLE is more
    efficient than splitting the ranking into pairs. rewards: (B, K); ranks: (B, K) as in ``all_pairs``.
    Ties use Breslow's approximation (Cox models): a tied group g scores Σ_{i∈g} r_i - |g|·logsumexp of
    every response ranked at or below g. Without ties this is exact PL, and K=2 is Bradley-Terry. A
    prompt that is one tie group scores -Σ_i log softmax(r)_i ≥ K·log K (equality at equal rewards), so
    its gradient pulls the group's rewards together rather than vanishing.
    """
    rewards, strict, _ = _pairs(rewards, ranks)
    present = ranks >= 0
    # Each response competes against its own tie group and all below it. The diagonal keeps a padded
    # row's logsumexp finite (its term is dropped anyway), so no -inf - -inf NaN reaches backward.
    risk = present[:, None, :] & (ranks[:, None, :] >= ranks[:, :, None])  # (B, K, K)
    risk = risk | torch.eye(ranks.size(1), dtype=torch.bool, device=ranks.device)
    log_denom = rewards[:, None, :].masked_fill(~risk, -math.inf).logsumexp(-1)  # (B, K)
    nll = torch.where(present, log_denom - rewards, 0.0).sum(-1)  # (B,)
    loss = masked_mean(nll, present.sum(-1) >= 2)
    # top-1: the highest-scored response is in the best group, over prompts with an order to get wrong
    best = rewards.masked_fill(~present, -math.inf).argmax(-1, keepdim=True)
    top1 = (ranks.gather(1, best).squeeze(1) == 0).float()
    return loss, {"accuracy": _pair_accuracy(rewards, strict),
                  "top1_accuracy": masked_mean(top1, strict.flatten(1).any(-1)).detach()}


def centering(rewards: Tensor, mask: Tensor, *, coef: float) -> tuple[Tensor, dict]:
    """Reward centring (Eisenstein et al., arXiv 2312.09244): coef · mean over prompts of (2·mean_k r_k)².

    rewards: (B, K); mask: (B, K), true for present responses (ranks >= 0). For K=2 the term is exactly
    coef·(r_w + r_l)², TRL's ``center_rewards_coefficient`` (recommended 1e-2). BT is blind to a constant
    shift of the rewards; this pins their mean at 0.
    """
    mask = mask.bool()
    rewards = rewards.float().masked_fill(~mask, 0.0)
    prompt_mean = masked_mean(rewards, mask, dim=-1)  # (B,)
    penalty = coef * masked_mean((2 * prompt_mean) ** 2, mask.any(-1))
    return penalty, {"reward_mean": masked_mean(rewards, mask).detach()}


__all__ = ["DAVIDSON_NU", "RAO_KUPPER_LOG_THETA", "TIE_MODELS", "all_pairs", "bradley_terry", "centering",
           "davidson", "davidson_log_probs", "plackett_luce", "rao_kupper", "rao_kupper_log_probs"]
