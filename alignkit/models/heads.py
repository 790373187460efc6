"""Scalar heads on a causal-LM backbone: the reward model (and, later, the value model).

A reward model is a Hugging Face ``*ForSequenceClassification`` model with one label: the causal LM's
transformer (``model.base_model``) and a linear ``score`` head (hidden → 1, no bias) on its last hidden
states. It is saved with ``save_pretrained`` (config.json + model.safetensors holding backbone and head,
plus the tokenizer), so it loads without alignkit:

    AutoModelForSequenceClassification.from_pretrained("runs/demo/rm/model")

alignkit reads the head at the **last real token** of prompt + response, located from the attention
mask, so left and right padding give the same scores (transformers' own ``forward`` finds it from the
pad id instead, which agrees whenever the pad id is distinct from every real token, as alignkit ensures).

After training the reward is normalised: ``normalized = gain · raw + bias`` so that samples of the
reference (SFT) policy score mean 0 and std 1 (Ziegler et al. 2019, arXiv 1909.08593; OpenAI
lm-human-preferences ``normalize_after``). gain and bias are stored in config.json as
``reward_normalization`` and applied by :func:`reward_scores` (``normalized=True``).

The head of a new reward model is drawn from N(0, 1/√(d+1)) as in OpenAI's lm-human-preferences; a value
head starts at zero (so the first value estimates are 0).

**Prior surprise** (optional, ``alignkit rm prior=DIR``): the reward adds a fixed multiple of how surprised
a frozen causal LM (by default the SFT model) is by the response,

    r(x, y) = head(x, y) + c · min_t log p_prior(y_t | x, y_<t)

— the log-probability of the response's least likely token (end-of-turn token included). A wrong sum or
a wrong name is one unlikely token in an otherwise fluent answer, which a small head read at the last
token misses but the language model that learned the facts notices: the largest token surprise is the
hallucination score of SelfCheckGPT's proxy-LM variant (Manakul et al. 2023, arXiv 2303.08896, "Max(−log p)").
The head is trained with the term in place, so it learns what the prior gets wrong (refusals are
unlikely under an SFT model that rarely refuses). c is stored in config.json as ``reward_prior`` together
with the prior's directory (relative to the reward model's own directory, so a moved run folder keeps
working); :func:`load_scalar_model` loads the prior next to the model and :func:`score_responses`
returns the whole reward. :func:`reward_scores` is the head alone.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel

from alignkit.errors import AlignkitError

NORMALIZATION_KEY = "reward_normalization"
PRIOR_KEY = "reward_prior"


@dataclass
class Prior:
    """The frozen language model of the prior-surprise term and its coefficient (see the module docstring)."""
    model: PreTrainedModel
    tokenizer: object
    coef: float


def new_scalar_model(backbone_dir: str | Path, *, head_init: str = "reward", seed: int = 0,
                     device: str = "cpu") -> tuple[PreTrainedModel, object]:
    """A causal-LM directory (e.g. the SFT model) → (sequence-classification model with one output, tokenizer).

    head_init: "reward" — N(0, 1/√(d+1)); "zero" — all zeros (value heads). The backbone weights are the
    causal LM's; its unembedding is dropped.
    """
    from alignkit.models.load import check_model_dir

    check_model_dir(Path(backbone_dir))
    tokenizer = AutoTokenizer.from_pretrained(backbone_dir, local_files_only=True)
    with _quiet_transformers():  # "score.weight newly initialised" is the point here, not a warning
        model = AutoModelForSequenceClassification.from_pretrained(backbone_dir, num_labels=1, local_files_only=True)
    _prepare_tokenizer(model, tokenizer)
    d = model.score.weight.shape[1]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if head_init == "zero":
            model.score.weight.zero_()
        else:
            model.score.weight.normal_(0.0, 1 / math.sqrt(d + 1))
    model.config.problem_type = "regression"
    return model.to(device).eval(), tokenizer


def load_scalar_model(path: str | Path, *, device: str = "cpu") -> tuple[PreTrainedModel, object]:
    """A reward-model directory written by alignkit (or any one-label sequence-classification model)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise AlignkitError(f"{path} is not a reward-model directory (no config.json); train one with `alignkit rm`")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if getattr(config, "num_labels", None) != 1 or not any(a.endswith("ForSequenceClassification")
                                                         for a in (config.architectures or [])):
        raise AlignkitError(f"{path} holds a {config.architectures} model, not a reward model "
                            "(a *ForSequenceClassification with one label, as `alignkit rm` writes)")
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(path, local_files_only=True)
    _prepare_tokenizer(model, tokenizer)
    prior = getattr(config, PRIOR_KEY, None)
    if prior:
        prior_dir = path / prior["model"]
        if not (prior_dir / "config.json").is_file():
            raise AlignkitError(f"{path}: its reward adds the surprise of the language model at {prior_dir} "
                                f"({PRIOR_KEY} in config.json), which is not there")
        attach_prior(model, prior_dir, coef=prior["coef"], device=device)
    return model.to(device).eval(), tokenizer


def attach_prior(model: PreTrainedModel, prior_dir: str | Path, *, coef: float, device: str = "cpu") -> Prior:
    """Load the frozen prior LM and hang it on ``model`` (a plain attribute: not a submodule, never saved)."""
    from alignkit.models.load import load_model

    lm, tokenizer = load_model(prior_dir, device=device)
    lm.requires_grad_(False)
    prior = Prior(lm, tokenizer, float(coef))
    _unwrapped(model).alignkit_prior = prior
    return prior


@contextmanager
def prior_detached(model: PreTrainedModel):
    """Within the block ``model`` has no prior: its scores are the head's alone, and saving or copying it
    leaves the prior LM out."""
    holder = _unwrapped(model)
    prior = holder.__dict__.pop("alignkit_prior", None)
    try:
        yield prior
    finally:
        if prior is not None:
            holder.alignkit_prior = prior


def record_prior(model: PreTrainedModel, prior_dir: str | Path, model_dir: str | Path, *, coef: float) -> None:
    """Write the prior's directory (relative to ``model_dir``, where the model will be saved) and c into the
    model's config, so that :func:`load_scalar_model` finds them."""
    relative = os.path.relpath(Path(prior_dir).resolve(), Path(model_dir).resolve())
    setattr(model.config, PRIOR_KEY, {"model": relative, "coef": float(coef),
                                      "feature": "min_token_logprob"})


@torch.no_grad()
def prior_surprise(lm: PreTrainedModel, tokenizer, prompts: list, responses: list, *, batch_size: int = 64,
                   max_length: int | None = None, memo: dict | None = None) -> Tensor:
    """min_t log p(y_t | x, y_<t) over each response's tokens (end-of-turn included) under ``lm``: (N,) fp32 on
    the CPU. Identical (prompt, response) token sequences are computed once (best-of-n and the preference
    samples repeat answers), rows are batched by length, and the values do not depend on the batching.
    memo: a dict kept by the caller across calls *with the same lm and tokenizer* (token ids → value)."""
    from alignkit.data.collators import pad_sequences
    from alignkit.data.templates import render_completion
    from alignkit.models.logprobs import completion_logprobs

    keys = [tuple(map(tuple, render_completion(tokenizer, p, r, max_length=max_length)))
            for p, r in zip(prompts, responses)]
    memo = {} if memo is None else memo
    todo = sorted({k for k in keys if k not in memo}, key=lambda k: len(k[0]) + len(k[1]))
    device = next(lm.parameters()).device
    for start in range(0, len(todo), batch_size):
        rows = todo[start:start + batch_size]
        p, pm = pad_sequences([list(k[0]) for k in rows], pad_id=tokenizer.pad_token_id, left=True)
        c, cm = pad_sequences([list(k[1]) for k in rows], pad_id=tokenizer.pad_token_id)
        if c.size(1) == 0:  # every response cut away by max_length: no token, no surprise
            memo.update((k, 0.0) for k in rows)
            continue
        logps = completion_logprobs(lm, p.to(device), pm.to(device), c.to(device), cm.to(device))
        logps = torch.where(cm.to(device).bool(), logps, torch.full_like(logps, math.inf))
        # a response cut to no token has min +inf: the clamp makes it 0
        memo.update(zip(rows, logps.min(dim=1).values.clamp(max=0.0).tolist()))
    return torch.tensor([memo[k] for k in keys], dtype=torch.float32)


def _unwrapped(model: PreTrainedModel) -> PreTrainedModel:
    """The transformers model under a LoRA (peft) wrapper, whose layers carry the adapters; else ``model``."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def last_token_index(attention_mask: Tensor) -> Tensor:
    """(B, T) mask → (B,) index of the rightmost real token (works for left and right padding)."""
    positions = torch.arange(attention_mask.size(1), device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=1)


def scalar_outputs(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """The head at every position: (B, T) fp32. Position ids count real tokens, so padding does not shift them;
    ``attention_mask=None`` reads every row from position 0 with no mask (rows padded at the end only).
    A LoRA (peft) model is read through its wrapped model, whose layers carry the adapters."""
    model = _unwrapped(model)
    position_ids = None if attention_mask is None else (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)
    hidden = model.base_model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False).last_hidden_state
    return model.score(hidden).squeeze(-1).float()


def reward_scores(model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor, *,
                  normalized: bool = False) -> Tensor:
    """r(x, y) read at the last real token of each row: (B,) fp32; optionally with the stored normalisation."""
    values = scalar_outputs(model, input_ids, attention_mask)
    scores = values.gather(1, last_token_index(attention_mask).unsqueeze(1)).squeeze(1)
    if normalized:
        gain, bias = normalization(model)
        scores = gain * scores + bias
    return scores


def normalization(model: PreTrainedModel) -> tuple[float, float]:
    """(gain, bias) stored with the model; (1, 0) when it was never normalised."""
    norm = getattr(model.config, NORMALIZATION_KEY, None) or {}
    return float(norm.get("gain", 1.0)), float(norm.get("bias", 0.0))


def set_normalization(model: PreTrainedModel, raw_scores: Tensor, *, target_mean: float = 0.0,
                      target_std: float = 1.0) -> dict:
    """Choose gain and bias so that ``raw_scores`` (reference-policy samples) map to the target mean and std."""
    mean, std = float(raw_scores.mean()), float(raw_scores.std())
    gain = target_std / max(std, 1e-6)
    norm = {"gain": gain, "bias": target_mean - gain * mean, "raw_mean": mean, "raw_std": std,
            "n_samples": int(raw_scores.numel())}
    setattr(model.config, NORMALIZATION_KEY, norm)
    return norm


def _prepare_tokenizer(model: PreTrainedModel, tokenizer) -> None:
    """Distinct pad token and a chat template, as for causal LMs; config.pad_token_id set for HF's forward."""
    from alignkit.models.tokenizer import complete_tokenizer

    complete_tokenizer(tokenizer)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id


class _quiet_transformers:
    def __enter__(self):
        self.logger = logging.getLogger("transformers")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


@torch.no_grad()
def score_responses(model: PreTrainedModel, tokenizer, prompts: list, responses: list, *,
                    max_length: int | None = None, batch_size: int = 64, normalized: bool = True) -> Tensor:
    """r(prompt_i, response_i) for each i: (N,) fp32 on the CPU — the head, plus the prior-surprise term when
    the model has a prior. Prompts and responses are strings or message lists, rendered with
    :func:`alignkit.data.templates.render_response`; rows are batched by length (right padding), so the
    order of the inputs does not change any score."""
    from alignkit.data.collators import pad_sequences
    from alignkit.data.templates import render_response

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    ids = [render_response(tokenizer, p, r, max_length=max_length) for p, r in zip(prompts, responses)]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = torch.zeros(len(ids))
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            input_ids, mask = pad_sequences([ids[i] for i in rows], pad_id=tokenizer.pad_token_id)
            out[rows] = reward_scores(model, input_ids.to(device), mask.to(device)).cpu()
    finally:
        model.train(was_training)
    prior = getattr(model, "alignkit_prior", None)
    if prior is not None:
        out += prior.coef * prior_surprise(prior.model, prior.tokenizer, prompts, responses, batch_size=batch_size,
                                           max_length=max_length)
    if normalized:
        gain, bias = normalization(model)
        out = gain * out + bias
    return out
