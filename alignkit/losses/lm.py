"""Next-token cross-entropy for pretraining and SFT.

    L = -(1/N) Σ_t log p_θ(x_t | x_<t),   N = number of target tokens (labels != ignore_index)

The logits at position t predict token t+1, so logits[:, :-1] are scored against labels[:, 1:].
``normalizer`` lets the caller divide by the token count of the whole effective batch (all
micro-batches of one optimizer step) instead of this micro-batch's own count: averaging per
micro-batch and then over accumulation steps weighs tokens unequally when micro-batches hold
different numbers of targets (the gradient-accumulation bug fixed in transformers in 2024).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100


def causal_lm_loss(logits: Tensor, labels: Tensor, *, normalizer: float | Tensor | None = None,
                   ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, dict]:
    """Token-level NLL of ``labels`` under ``logits``.

    logits: (B, T, V) model outputs; labels: (B, T) token ids aligned with the inputs, ``ignore_index``
    where no loss is taken (prompt, padding, the first token of a packed document).
    Returns the summed NLL divided by ``normalizer`` (default: this batch's target count) and metrics
    ``{"nll_sum", "n_tokens"}`` for exact aggregation across micro-batches.
    """
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    nll_sum = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1),
                              ignore_index=ignore_index, reduction="sum")
    n_tokens = (shift_labels != ignore_index).sum()
    denom = n_tokens.clamp(min=1) if normalizer is None else normalizer
    loss = nll_sum / denom
    return loss, {"nll_sum": nll_sum.detach(), "n_tokens": n_tokens.detach()}


def count_targets(labels: Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """Number of tokens ``causal_lm_loss`` scores in ``labels`` (B, T): the global normaliser's summand."""
    return int((labels[:, 1:] != ignore_index).sum())


__all__ = ["IGNORE_INDEX", "causal_lm_loss", "count_targets"]
