"""Batched sampling with a KV cache: prompts in, `Samples` out (the rollout step of PPO/GRPO, and eval).

Uses `model.generate` with one GenerationConfig built here from our arguments only: the model's own
generation_config.json may carry sampling defaults (temperature 0.7, repetition_penalty 1.05, ...) that
would silently change the distribution we later compute log-probs for, so the logits-changing settings
(penalties, top-k/p, min-p, typical, cutoffs) are pinned to neutral values. Only the stop (eos) ids are
taken from the model.

Plain sampling (temperature only, or greedy) without stop strings takes a shorter road: `_decode` runs
the KV-cached loop itself and drops each row from the batch once it has ended, where `generate` keeps
computing finished rows until the batch's longest answer ends (at a batch of 256 short answers, about
2.5× the useful work). Greedy, its tokens are `generate`'s (tested). Sampling, it draws each token by
inverse CDF from one uniform per row and step, drawn up front — the same distribution as `generate`'s
`torch.multinomial`, whose exponential draw over the whole vocabulary for every row (finished ones
included) cost a quarter of a rollout on CPU; each row's tokens depend only on its own uniforms, so
dropping finished rows changes none of them (tested against a plain loop without a cache).
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator

import torch
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

from alignkit.data.collators import pad_sequences
from alignkit.errors import AlignkitError
from alignkit.rollout.types import Samples


def sample(
    model,
    tokenizer,
    prompts: list[str],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    batch_size: int = 32,
    seed: int = 0,
    stop_strings: list[str] | None = None,
    show_progress: bool = False,
) -> Samples:
    """Complete each prompt (already-rendered text) with the model; temperature 0 is greedy.

    A completion ends at the first eos id of `model.generation_config` (the eos token is kept in
    `completion_ids` and the mask), at the first of `stop_strings` (its tokens are kept and masked in, the
    text is cut before it), or after `max_new_tokens`. The same seed gives the same samples. Prompts are
    left-padded here (the tokenizer's padding_side is not touched); the model's train/eval mode is restored.
    """
    validate_sampling(prompts, max_new_tokens, temperature, top_p, top_k, batch_size, stop_strings)
    if tokenizer.pad_token_id is None:
        raise AlignkitError(
            "the tokenizer has no pad token; load the model with alignkit.models.load.load_model"
        )
    pad_id = int(tokenizer.pad_token_id)
    eos_ids = stop_token_ids(model, tokenizer)
    stops = list(stop_strings or [])
    prompt_tokens = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts else []
    _check_lengths(model, prompt_tokens, max_new_tokens)
    gen_config = sampling_config(max_new_tokens, temperature, top_p, top_k, eos_ids, pad_id)

    device = next(model.parameters()).device
    was_training = model.training
    direct = can_decode(model, temperature, top_p, top_k, stops)
    completions: list[list[int]] = []
    starts = range(0, len(prompts), batch_size)
    if show_progress:
        from rich.progress import track

        starts = track(starts, description="sampling", total=len(starts))
    try:
        model.eval()
        with torch.no_grad(), seeded(seed, device):
            for start in starts:
                # left padding: a decoder-only model continues every row from the same right edge
                input_ids, attention_mask = pad_sequences(prompt_tokens[start : start + batch_size], pad_id=pad_id, left=True)
                if direct:
                    completions.extend(_decode(model, input_ids.to(device), attention_mask.to(device),
                                               max_new_tokens=max_new_tokens, temperature=temperature,
                                               eos_ids=eos_ids, pad_id=pad_id))
                    continue
                n_prompt = input_ids.shape[1]
                criteria = StoppingCriteriaList([_StopStrings(tokenizer, stops, n_prompt)] if stops else [])
                out = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=gen_config,
                    stopping_criteria=criteria,
                )
                completions.extend(out[:, n_prompt:].tolist())
    finally:
        model.train(was_training)

    cut = [_cut(tokenizer, ids, eos_ids, stops) for ids in completions]
    texts = [text for _, text, _ in cut]
    finished = [done for _, _, done in cut]
    prompt_ids, prompt_mask = pad_sequences(prompt_tokens, pad_id=pad_id, left=True)
    completion_ids, completion_mask = pad_sequences([ids for ids, _, _ in cut], pad_id=pad_id)
    return Samples(
        prompts=list(prompts),
        texts=texts,
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=completion_mask,
        finished=finished,
    )


# Settings of a model's generation_config that `generate` would turn into logits processors; `_decode`
# applies none of them, so a model that sets one is sampled through `generate`.
_PROCESSOR_SETTINGS = ("suppress_tokens", "begin_suppress_tokens", "bad_words_ids", "forced_bos_token_id",
                       "forced_eos_token_id", "sequence_bias", "exponential_decay_length_penalty",
                       "renormalize_logits", "guidance_scale", "watermarking_config")


def can_decode(model, temperature: float, top_p: float, top_k: int, stops: list[str]) -> bool:
    """Whether `_decode` gives what `generate` would: temperature-only sampling or greedy, no stop strings,
    a model whose forward takes a cache and `logits_to_keep` (transformers 5 decoders; not a peft wrapper)
    and whose generation_config adds no logits processor."""
    if stops or (temperature > 0 and (top_p < 1 or top_k > 0)):
        return False
    params = inspect.signature(model.forward).parameters
    if not {"cache", "logits_to_keep", "position_ids"} <= params.keys():
        return False
    config = model.generation_config
    return not any(getattr(config, name, None) for name in _PROCESSOR_SETTINGS)


def _decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
            temperature: float, eos_ids: list[int], pad_id: int) -> list[list[int]]:
    """Complete a left-padded batch with the KV cache: (B, max_new_tokens) token lists, pad after a row's eos,
    like `generate`'s completions (see :func:`decode_steps`)."""
    tokens = torch.full((input_ids.size(0), max_new_tokens), pad_id, dtype=torch.long, device=input_ids.device)
    for step, (rows, next_tokens) in enumerate(decode_steps(model, input_ids, attention_mask, max_new_tokens=max_new_tokens,
                                                            temperature=temperature, eos_ids=eos_ids)):
        tokens[rows, step] = next_tokens
    return tokens.tolist()


def decode_steps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, max_new_tokens: int,
                 temperature: float, eos_ids: list[int],
                 generator: torch.Generator | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Decode a left-padded batch with the KV cache, one token per step, dropping finished rows; yields
    ``(rows, tokens)`` per step: the batch indices still decoding (R,) and the token each drew (R,), so a
    caller can stream them (the arena) or collect them (:func:`_decode`). A row's last token is its eos.

    Row i's token at step t is drawn with the uniform ``u[i, t]`` (:func:`draw`), all of them drawn before
    the first step, so a row's tokens do not depend on when the others end; from ``generator`` when given
    (a thread of its own), else from torch's global RNG. Call under ``torch.no_grad()``."""
    B = input_ids.size(0)
    mask = attention_mask.long()
    out = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=1)
    cache, logits = out.cache, out.logits[:, -1].float()
    active = torch.arange(B, device=input_ids.device)  # the rows still being decoded, in batch order
    eos = torch.tensor(eos_ids, device=input_ids.device)
    uniforms = None
    if temperature > 0:
        uniforms = torch.rand(B, max_new_tokens, device=input_ids.device, generator=generator)
    for step in range(max_new_tokens):
        if uniforms is not None:
            next_tokens = draw(torch.softmax(logits / temperature, dim=-1), uniforms[active, step])
        else:
            next_tokens = logits.argmax(dim=-1)
        yield active, next_tokens
        done = torch.isin(next_tokens, eos)
        if step == max_new_tokens - 1 or bool(done.all()):
            return
        if bool(done.any()):
            keep = (~done).nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            active, mask, next_tokens = active[keep], mask[keep], next_tokens[keep]
        mask = torch.cat([mask, mask.new_ones(mask.size(0), 1)], dim=1)
        out = model(input_ids=next_tokens[:, None], attention_mask=mask, position_ids=mask.sum(dim=1, keepdim=True) - 1,
                    cache=cache, use_cache=True)
        cache, logits = out.cache, out.logits[:, -1].float()


def draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One token per row of ``probs`` (B, V; rows need not sum to 1) by inverse CDF: the first token whose
    cumulative probability exceeds ``u`` (B, uniform in [0, 1)) times the row's total — token j with
    probability p_j / Σp, never a token of probability 0."""
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1]
    if not bool((torch.isfinite(total) & (total > 0)).all()):
        raise AlignkitError("sampling: the model's next-token probabilities are not finite or all zero "
                            "(NaN or inf logits; in float16, try dtype=bfloat16 or float32)")
    tokens = torch.searchsorted(cdf, (u * total).unsqueeze(1), right=True).squeeze(1)
    over = tokens >= probs.size(-1)  # u · Σp rounded up to Σp: the last token of non-zero probability
    if bool(over.any()):
        last = probs.size(-1) - 1 - (probs[over] > 0).flip(-1).float().argmax(dim=-1)
        tokens[over] = last
    return tokens


def validate_sampling(prompts, max_new_tokens, temperature, top_p, top_k, batch_size, stop_strings) -> None:
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise AlignkitError("prompts must be a list of strings (rendered prompt texts)")
    if any(p == "" for p in prompts):
        raise AlignkitError(f"prompt {list(prompts).index('')} is empty; every prompt needs a token")
    if max_new_tokens < 1:
        raise AlignkitError(f"max_new_tokens={max_new_tokens} must be at least 1")
    if temperature < 0:
        raise AlignkitError(f"temperature={temperature} must be >= 0 (0 = greedy)")
    if not 0 < top_p <= 1:
        raise AlignkitError(f"top_p={top_p} must be in (0, 1]")
    if top_k < 0:
        raise AlignkitError(f"top_k={top_k} must be >= 0 (0 = off)")
    if batch_size < 1:
        raise AlignkitError(f"batch_size={batch_size} must be at least 1")
    if stop_strings is not None and (
        isinstance(stop_strings, str) or not all(isinstance(s, str) and s for s in stop_strings)
    ):
        raise AlignkitError("stop_strings must be a list of non-empty strings")


def sampling_config(max_new_tokens, temperature, top_p, top_k, eos_ids, pad_id) -> GenerationConfig:
    # generate() fills every field left None from the model's generation_config.json, so each setting that
    # changes the logits is given a neutral value here.
    neutral = dict(
        num_beams=1, num_return_sequences=1, repetition_penalty=1.0, no_repeat_ngram_size=0, min_length=0
    )
    sampling = dict(do_sample=False)  # greedy: argmax, the warpers below are not applied
    if temperature > 0:
        sampling = dict(
            do_sample=True,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,  # 0 = off
            min_p=0.0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
        )
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
        use_cache=True,
        **sampling,
        **neutral,
    )


def stop_token_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise AlignkitError("neither the model's generation_config nor the tokenizer defines an eos token")
    return [int(e) for e in eos] if isinstance(eos, (list, tuple)) else [int(eos)]


def position_limit(model) -> int | None:
    """How many positions (prompt + new tokens) the model can attend over, when its config says."""
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def _check_lengths(model, prompt_tokens: list[list[int]], max_new_tokens: int) -> None:
    limit = position_limit(model)
    for i, tokens in enumerate(prompt_tokens):
        if not tokens:
            raise AlignkitError(f"prompt {i} encodes to no tokens")
        if limit and len(tokens) + max_new_tokens > limit:
            raise AlignkitError(
                f"prompt {i} has {len(tokens)} tokens; with max_new_tokens={max_new_tokens} that exceeds "
                f"the model's {limit} positions"
            )


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch for this call only; the caller's RNG state is restored on exit."""
    devices = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class _StopStrings(StoppingCriteria):
    """Stops a row once its decoded completion contains a stop string.

    Looks at the completion only (from `n_prompt` on), so a prompt that ends in part of a stop string does
    not stop the completion early; `_cut` decodes the same way, so both agree on where a row ends.
    """

    def __init__(self, tokenizer, stop_strings: list[str], n_prompt: int):
        self.tokenizer, self.stop_strings, self.n_prompt = tokenizer, stop_strings, n_prompt

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.n_prompt :], skip_special_tokens=True)
        done = [any(s in t for s in self.stop_strings) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def _cut(tokenizer, ids: list[int], eos_ids: list[int], stops: list[str]) -> tuple[list[int], str, bool]:
    """One generated row → (kept ids, text, finished). Kept: up to and including eos / the stop string."""
    eos = set(eos_ids)
    end = next((i + 1 for i, t in enumerate(ids) if t in eos), None)
    finished = end is not None
    ids = ids[:end] if finished else ids
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [(text.find(s), s) for s in stops if s in text]
    if hits:
        pos = min(hits)[0]
        # the shortest prefix whose text already holds a stop string (monotone in length: binary search)
        lo, hi = 1, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if any(s in tokenizer.decode(ids[:mid], skip_special_tokens=True) for s in stops):
                hi = mid
            else:
                lo = mid + 1
        ids, text, finished = ids[:lo], text[:pos], True
    return ids, text, finished
