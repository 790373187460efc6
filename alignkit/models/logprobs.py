"""Token log-probabilities of completions: the one place they are gathered (eval now; DPO, PPO, GRPO).

For a left-padded prompt x and a right-padded completion a, returns log π(a_t | x, a_<t) for every
completion token. The logits at position i predict token i+1; they are divided by the sampling
temperature, because the ratio and the KL must use the distribution that was sampled (Huang et al.,
"The N Implementation Details of RLHF with PPO", 2024). The chosen token's log-prob is gathered as
``logit[token] − logsumexp(logits)`` in fp32, at the positions that predict a real completion token only.

The forward pass does not read the batch as it is given (each row's prompt left-padded to the longest
prompt, its completion right-padded to the longest completion): :func:`layout` lays each sequence's
real tokens out from position 0 and packs short sequences together, so that a random minibatch of
rollouts, whose lengths vary several-fold, costs its real tokens rather than its longest prompt plus
its longest completion per row; the output layer runs only from the first position that predicts a
completion token on (``logits_to_keep``, where the model's forward takes it).
"""

from __future__ import annotations

import inspect
import weakref

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
    batch_size: rows per forward pass (None: all B at once), grouped by length (:func:`by_length`); the
        values do not depend on it.

    One forward pass per micro-batch, without KV cache. Gradients flow unless the caller wraps the call
    in ``torch.no_grad()``. The result lives on the model's device.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return by_length(lambda *ids: completion_logprobs_and_hidden(model, *ids, temperature=temperature, hidden=False)[0],
                     prompt_ids, prompt_mask, completion_ids, completion_mask, batch_size=batch_size)


def by_length(fn, prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor, *,
              batch_size: int | None = None):
    """``fn(prompt_ids, prompt_mask, completion_ids, completion_mask)`` → a (b, A, ...) tensor or a tuple of
    them, computed over micro-batches of ``batch_size`` rows of similar length (rows sorted by prompt +
    completion length) and put back in row order: (B, A, ...). Rows of similar length pack and pad
    little (:func:`layout`), and the results, row by row, are the same. Gradients flow through the
    reassembly.
    """
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    ids = (prompt_ids, prompt_mask, completion_ids, completion_mask)
    B = completion_ids.size(0)
    if batch_size is None or batch_size >= B:
        return fn(*ids)
    groups = torch.argsort(prompt_mask.sum(dim=1) + completion_mask.sum(dim=1), stable=True).split(batch_size)
    parts = [fn(*(x[rows] for x in ids)) for rows in groups]
    inverse = torch.argsort(torch.cat(groups))
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(column, dim=0)[inverse.to(column[0].device)] for column in zip(*parts))
    return torch.cat(parts, dim=0)[inverse.to(parts[0].device)]


def completion_logprobs_and_hidden(model: torch.nn.Module, prompt_ids: Tensor, prompt_mask: Tensor,
                                   completion_ids: Tensor, completion_mask: Tensor, *, temperature: float = 1.0,
                                   hidden: bool = True) -> tuple[Tensor, Tensor | None]:
    """One forward pass: the log-probs of :func:`completion_logprobs` (B, A), and with ``hidden`` the last
    hidden states at the positions that predict each completion token (B, A, d) — what a value head on
    the policy's own trunk reads (PPO with a shared trunk). The pass reads the rows as :func:`layout`
    lays them out, packed where the model keeps packed sequences apart."""
    device = next(model.parameters()).device
    prompt_ids, prompt_mask, completion_ids, completion_mask = (
        x.to(device) for x in (prompt_ids, prompt_mask, completion_ids, completion_mask))
    ids, position_ids, row, col = layout(prompt_ids, prompt_mask, completion_ids, completion_mask,
                                         pack=lambda: _packs(model))
    B, A = col.shape
    real = completion_mask.bool()
    # logits only from the first position that predicts a completion token on
    first = int(col[real].min()) if _keeps_logits(model) and bool(real.any()) else 0
    keep = {"logits_to_keep": ids.size(1) - first} if first > 0 else {}
    out = model(input_ids=ids, position_ids=position_ids, use_cache=False, output_hidden_states=hidden, **keep)
    # the full-vocabulary work only where a real completion token is predicted
    kept = out.logits.size(1)
    flat = (row[:, None] * kept + col - first)[real]
    logits = out.logits.reshape(-1, out.logits.size(-1)).index_select(0, flat).float() / temperature  # (N, V)
    chosen = logits.gather(-1, completion_ids[real].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    logps = torch.zeros(B, A, device=device, dtype=chosen.dtype).masked_scatter(real, chosen)
    if not hidden:
        return logps, None
    states = out.hidden_states[-1]
    width = states.size(1)
    return logps, states.reshape(-1, states.size(-1))[(row[:, None] * width + col).flatten()].view(B, A, -1)


def layout(prompt_ids: Tensor, prompt_mask: Tensor, completion_ids: Tensor, completion_mask: Tensor, *,
           pack=lambda: False) -> tuple[Tensor, Tensor | None, Tensor, Tensor]:
    """The batch as a causal model reads it fastest: each sequence's real tokens — prompt, then
    completion — one after the other from position 0, padded at the end only.

    Returns ``ids`` (R, W), ``position_ids`` (R, W) or None, and for each completion token the row (B,)
    and column (B, A) of the position that predicts it (masked tokens: the sequence's last column).

    Unpacked (R = B), a row holds one sequence: a causal model's real tokens never attend to what follows
    them, so the pass needs no attention mask (the padding is token 0, never attended) and no position
    ids, and the batch is as wide as its longest sequence rather than its longest prompt plus its longest
    completion. Packed — when ``pack()`` says the model keeps packed sequences apart, and packing saves a
    quarter of the positions — sequences share rows (first fit, longest first, rows of up to twice the
    longest sequence) and ``position_ids`` restart at 0 with each, which is how transformers models mark
    where one packed sequence ends and the next begins; random minibatches of rollouts, whose lengths
    vary several-fold, shrink by a third or more.
    """
    device = completion_ids.device
    prompt_mask, completion_mask = prompt_mask.bool(), completion_mask.bool()
    prompt_len = prompt_mask.sum(dim=1)
    lengths = prompt_len + completion_mask.sum(dim=1)
    B, A = completion_ids.shape
    longest = max(int(lengths.max()), 1) if B else 1
    row, offset, width = torch.arange(B, device=device), torch.zeros(B, dtype=torch.long, device=device), longest
    packed = False
    if B > 1 and longest > 1:
        sizes = lengths.tolist()
        bins = _first_fit(sizes, capacity=2 * longest)
        if len(bins) * max(sum(sizes[r] for r in b) for b in bins) <= 0.75 * B * longest and pack():
            packed = True
            fill = [0] * len(bins)
            rows, offsets = [0] * B, [0] * B
            for k, members in enumerate(bins):
                for r in members:
                    rows[r], offsets[r] = k, fill[k]
                    fill[k] += sizes[r]
            row, offset = torch.tensor(rows, device=device), torch.tensor(offsets, device=device)
            width = max(fill)
    R = int(row.max()) + 1 if B else 1
    ids = torch.zeros(R, width, dtype=torch.long, device=device)
    positions = torch.zeros(R, width, dtype=torch.long, device=device)
    prompt_pos = prompt_mask.long().cumsum(dim=1) - 1
    completion_pos = prompt_len[:, None] + completion_mask.long().cumsum(dim=1) - 1
    for mask, pos, tokens in ((prompt_mask, prompt_pos, prompt_ids), (completion_mask, completion_pos, completion_ids)):
        r = row[:, None].expand_as(mask)[mask]
        c = (offset[:, None] + pos)[mask]
        ids[r, c] = tokens[mask]
        positions[r, c] = pos[mask]
    col = offset[:, None] + (prompt_len[:, None] - 1 + torch.arange(A, device=device)).clamp(min=0)
    col = torch.minimum(col, (offset + lengths - 1).clamp(min=0)[:, None])
    if not packed:
        return ids, None, row, col
    # each row's padding is a sequence of its own, from position 0
    used = torch.zeros(R, dtype=torch.long, device=device).index_add_(0, row, lengths)
    cols = torch.arange(width, device=device)[None, :]
    positions = torch.where(cols >= used[:, None], cols - used[:, None], positions)
    return ids, positions, row, col


def _first_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sequence indices in bins of at most ``capacity`` tokens: first fit, longest first."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        k = next((k for k, free in enumerate(room) if free >= lengths[i]), None)
        if k is None:
            bins.append([])
            room.append(capacity)
            k = len(bins) - 1
        bins[k].append(i)
        room[k] -= lengths[i]
    return bins


_PACKING: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _packs(model: torch.nn.Module) -> bool:
    """Whether ``model`` keeps sequences packed in one row apart when their position ids restart at 0
    (transformers 5 builds a block-diagonal causal mask from them). Checked once per model, on two
    short sequences: the second's logits packed behind the first must be its logits alone."""
    known = _PACKING.get(model)
    if known is None:
        device = next(model.parameters()).device
        vocab = model.get_input_embeddings().weight.size(0)
        ids = torch.tensor([[1, 2, 3, 4, 5, 1, 2, 3]], device=device) % vocab
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                both = model(input_ids=ids, position_ids=torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]], device=device),
                             use_cache=False).logits[0, 5:].float()
                alone = model(input_ids=ids[:, 5:], use_cache=False).logits[0].float()
            # 1 % of the largest logit: above half precision's rounding between two kernels, far below what
            # attending to the other sequence changes (about 40 % on the tiny models, fp32, bf16 and fp16)
            known = bool((both - alone).abs().max() <= 1e-2 * alone.abs().max() + 1e-5)
        except Exception:  # a model that cannot take position ids this way is simply not packed
            known = False
        finally:
            model.train(was_training)
        _PACKING[model] = known
    return known


def _keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the model's forward computes logits for only the last n positions when asked
    (``logits_to_keep``: transformers 5 causal LMs; under a LoRA wrapper, the model it wraps)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def sequence_logprob(token_logps: Tensor, mask: Tensor) -> Tensor:
    """log π(a | x) = Σ_t log π(a_t | x, a_<t) over the unmasked tokens: (B, A), (B, A) → (B,)."""
    return torch.where(mask.bool(), token_logps, torch.zeros_like(token_logps)).sum(dim=-1)
