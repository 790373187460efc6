"""Token log-probabilities of completions: the one place they are gathered (eval now; DPO, PPO, GRPO).

For a left-padded prompt x and a right-padded completion a, returns log π(a_t | x, a_<t) for every
completion token. The logits at position i predict token i+1; they are divided by the sampling
temperature (the ratio and the KL must use the distribution that was sampled — "The N implementation
details of RLHF with PPO", Huang et al. 2024) and the chosen token's log-prob is gathered as
``logit[token] − logsumexp(logits)`` in fp32, so no full-vocabulary log-softmax is kept.
"""

from __future__ import annotations

import torch
from torch import Tensor


def completion_logprobs(model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                        completion_mask: Tensor, *, temperature: float = 1.0,
                        batch_size: int | None = None) -> Tensor:
    """log π(a_t | x, a_<t): (B, A), 0 where ``completion_mask`` is 0.

    prompt_ids, prompt_mask: (B, P) left-padded; completion_ids, completion_mask: (B, A) right-padded.
    Gradients flow unless the caller wraps the call in ``torch.no_grad()``.
    """
    B = prompt_ids.size(0)
    step = batch_size or B
    parts = [_logprobs(model, prompt_ids[i:i + step], prompt_mask[i:i + step], completion_ids[i:i + step],
                       completion_mask[i:i + step], temperature) for i in range(0, B, step)]
    return torch.cat(parts, dim=0)


def _logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature) -> Tensor:
    device = next(model.parameters()).device
    ids = torch.cat([prompt_ids, completion_ids], dim=1).to(device)
    mask = torch.cat([prompt_mask, completion_mask], dim=1).to(device)
    position_ids = (mask.long().cumsum(dim=1) - 1).clamp(min=0)  # left padding: real tokens start at 0
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).logits
    P, A = prompt_ids.size(1), completion_ids.size(1)
    logits = logits[:, P - 1:P - 1 + A, :].float() / temperature  # positions that predict the completion
    targets = completion_ids.to(device)
    chosen = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logps = chosen - torch.logsumexp(logits, dim=-1)
    return logps * completion_mask.to(device).to(logps.dtype)


def sequence_logprob(token_logps: Tensor, mask: Tensor) -> Tensor:
    """Σ_t log π(a_t | ·) over the completion: (B, A) → (B,)."""
    return (token_logps * mask.to(token_logps.dtype)).sum(dim=-1)
