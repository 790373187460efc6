"""Critic-free policy-gradient pieces (GRPO and its family), as pure functions.

Group advantages — one scalar per response, shared by all its tokens — from the rewards of the G
responses sampled for one prompt, shape (N prompts, G); a NaN reward marks an unscorable response,
which is left out of its group's baseline and gets advantage 0:

    grpo          (r − mean) / (std + ε)        Shao et al. 2024 (DeepSeekMath), arXiv 2402.03300, §4.1.2
    dr_grpo       r − mean                      Liu et al. 2025 (Dr. GRPO), arXiv 2503.20783
    rloo          r − mean of the others        Ahmadian et al. 2024, arXiv 2402.14740  (= G/(G−1)·(r − mean))
    reinforce_pp  (r − mean) / std over the whole batch of centred rewards   Hu et al. 2025, arXiv 2501.03262

``unbiased`` picks the std convention (n − 1, as TRL and verl, by default; n for the population std).

Loss aggregation of a per-token loss (B, T) with its mask:

    seq_mean_token_mean       (1/B) Σ_i (1/|o_i|) Σ_t ℓ_it       GRPO eq. 3
    token_mean                Σ_it ℓ_it / Σ_i |o_i|              DAPO (Yu et al. 2025, arXiv 2503.14476)
    seq_mean_token_sum_norm   Σ_it ℓ_it / (B · L_max)            Dr. GRPO (a constant normaliser)
"""

from __future__ import annotations

import torch
from torch import Tensor

ADVANTAGES = ("grpo", "dr_grpo", "rloo", "reinforce_pp")
AGGREGATIONS = ("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm")


def group_advantages(rewards: Tensor, mode: str = "grpo", *, unbiased: bool = True, eps: float = 1e-4) -> Tensor:
    """Advantages (N, G) from rewards (N, G); NaN rewards are unscorable (advantage 0, not in the baseline).

    ``eps`` is added to the std (grpo) so that a group of equal rewards gets 0, not NaN; TRL uses 1e-4.
    Every group's advantages sum to 0.
    """
    if mode not in ADVANTAGES:
        raise ValueError(f"unknown advantage '{mode}' (one of {', '.join(ADVANTAGES)})")
    valid = ~torch.isnan(rewards)
    r = torch.where(valid, rewards, torch.zeros_like(rewards)).double()
    n = valid.sum(dim=1, keepdim=True).double()
    mean = r.sum(dim=1, keepdim=True) / n.clamp(min=1)
    centred = torch.where(valid, r - mean, torch.zeros_like(r))
    if mode == "grpo":
        var = centred.pow(2).sum(dim=1, keepdim=True) / (n - 1 if unbiased else n).clamp(min=1)
        out = centred / (var.sqrt() + eps)
    elif mode == "dr_grpo":
        out = centred
    elif mode == "rloo":
        out = centred * n / (n - 1).clamp(min=1)
    else:
        count = valid.sum()
        var = centred.pow(2).sum() / (count - 1 if unbiased else count).clamp(min=1)
        out = centred / (var.sqrt() + eps)
    return torch.where(valid, out, torch.zeros_like(out)).to(rewards.dtype)


def aggregate(per_token: Tensor, mask: Tensor, mode: str = "token_mean", *, max_len: int | None = None) -> Tensor:
    """A per-token loss (B, T) reduced to a scalar as ``mode`` says (see the module docstring)."""
    mask = mask.to(per_token.dtype)
    total = per_token * mask
    if mode == "token_mean":
        return total.sum() / mask.sum().clamp(min=1)
    if mode == "seq_mean_token_mean":
        return (total.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).mean()
    if mode == "seq_mean_token_sum_norm":
        if not max_len:
            raise ValueError("seq_mean_token_sum_norm needs max_len (the generation budget L_max)")
        return total.sum() / (per_token.size(0) * max_len)
    raise ValueError(f"unknown aggregation '{mode}' (one of {', '.join(AGGREGATIONS)})")


def overlong_penalty(lengths: Tensor, *, max_len: int, cache: int) -> Tensor:
    """DAPO's soft overlong punishment, added to the reward: 0 up to L_max − L_cache, then a linear ramp
    to −1 at L_max, and −1 beyond."""
    lengths = lengths.double()
    ramp = ((max_len - cache) - lengths) / cache
    out = torch.where(lengths <= max_len - cache, torch.zeros_like(lengths), ramp)
    return torch.where(lengths > max_len, torch.full_like(lengths, -1.0), out).float()
