"""Token log-probabilities of completions: the one place they are gathered (eval now; DPO, PPO, GRPO).

For a left-padded prompt x and a right-padded completion a, returns log π(a_t | x, a_<t) for every
completion token. The logits at position i predict token i+1; they are divided by the sampling
temperature, because the ratio and the KL must use the distribution that was sampled (Huang et al.,
"The N Implementation Details of RLHF with PPO", 2024). The chosen token's log-prob is gathered as
``logit[token] − logsumexp(logits)`` in fp32, so no full-vocabulary log-softmax is kept.
"""

from __future__ import annotations

import torch
from torch import Tensor


def completion_logprobs(model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
                        completion_mask: Tensor, *, temperature: float = 1.0,
                        batch_size: int | None = None) -> Tensor:
    """log π(a_t | x, a_<t) of each completion token: (B, A) fp32, exactly 0 where ``completion_mask`` is 0.

    prompt_ids, prompt_mask: (B, P), left-padded; every prompt needs at least one real token, since the
    last prompt position predicts the first completion token.
    completion_ids, completion_mask: (B, A), right-padded (`rollout.types.Samples` has this layout).
    temperature: the sampling temperature; logits are divided by it before normalising.
    batch_size: rows per forward pass (None: all B at once); the values do not depend on it.

    One forward pass per micro-batch, without KV cache. Gradients flow unless the caller wraps the call
    in ``torch.no_grad()``. The result lives on the model's device.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    B = prompt_ids.size(0)
    step = batch_size or max(B, 1)
    parts = [_logprobs(model, prompt_ids[i:i + step], prompt_mask[i:i + step], completion_ids[i:i + step],
                       completion_mask[i:i + step], temperature) for i in range(0, B, step)]
    return torch.cat(parts, dim=0)


def _logprobs(model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor,
              completion_mask: Tensor, temperature: float) -> Tensor:
    return completion_logprobs_and_hidden(model, prompt_ids, prompt_mask, completion_ids, completion_mask,
                                          temperature=temperature, hidden=False)[0]


def completion_logprobs_and_hidden(model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor,
                                   completion_ids: Tensor, completion_mask: Tensor, *, temperature: float = 1.0,
                                   hidden: bool = True) -> tuple[Tensor, Tensor | None]:
    """One forward pass: the log-probs of :func:`completion_logprobs` (B, A), and with ``hidden`` the last
    hidden states at the positions that predict each completion token (B, A, d) — what a value head on
    the policy's own trunk reads (PPO with a shared trunk)."""
    device = next(model.parameters()).device
    ids = torch.cat([prompt_ids, completion_ids], dim=1).to(device)
    mask = torch.cat([prompt_mask, completion_mask], dim=1).to(device).long()
    # With left padding the first real token must sit at position 0, as it did when the prompt was
    # encoded alone; pad positions get 0 too (they are masked out, so any value would do).
    position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False,
                output_hidden_states=hidden)
    P, A = prompt_ids.size(1), completion_ids.size(1)
    logits = out.logits[:, P - 1:P - 1 + A, :].float() / temperature  # (B, A, V): the positions predicting a
    targets = completion_ids.to(device).unsqueeze(-1)
    logps = logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    # where, not multiply: a non-finite value at a padded position must not leak into the result as NaN
    logps = torch.where(completion_mask.to(device).bool(), logps, torch.zeros_like(logps))
    return logps, (out.hidden_states[-1][:, P - 1:P - 1 + A] if hidden else None)


def sequence_logprob(token_logps: Tensor, mask: Tensor) -> Tensor:
    """log π(a | x) = Σ_t log π(a_t | x, a_<t) over the unmasked tokens: (B, A), (B, A) → (B,)."""
    return torch.where(mask.bool(), token_logps, torch.zeros_like(token_logps)).sum(dim=-1)
