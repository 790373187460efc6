"""Direct preference optimisation: preferences straight into the policy, no reward model, no sampling.

The policy's log-ratio to the reference is the implicit reward, r̂(x, y) = β log π_θ(y|x)/π_ref(y|x),
and the Bradley-Terry likelihood of the preferences under it is maximised (Rafailov et al. 2023,
arXiv 2305.18290, eq. 7):

    L = -E log σ(β [log π_θ(y_w|x)/π_ref(y_w|x) − log π_θ(y_l|x)/π_ref(y_l|x)])

with the family in ``alignkit/losses/preference.py`` (cDPO / robust / IPO / hinge / SimPO, and the
Plackett-Luce "listwise" form for K-wise rankings, DPO paper appendix A.3). Sequence log-probs are sums
over the completion tokens (end-of-turn token included), gathered by ``alignkit/models/logprobs.py``;
all responses of a batch — chosen and rejected, or the K of a ranking — go through one forward pass.

The reference model is used once: its log-probs are computed before training in one pass over the
data and cached in ``out/ref_logps.pt`` with a fingerprint of the data, the reference weights and the
tokenisation, so a resumed or repeated run does not recompute them; training then runs one model.
Dropout is switched off in the policy (and the reference), so at step 0 the loss is exactly log 2.
Pairwise losses train on every strict pair of a ranking; tie and both_bad labels are skipped.

    alignkit dpo model=runs/demo/sft/model data=runs/demo/prefs/pairs.jsonl out=runs/mine/dpo beta=0.1
    alignkit dpo model=my-sft data=rankings.jsonl loss=listwise
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from alignkit.config import DPOConfig, dump_yaml
from alignkit.data.collators import pad_sequences
from alignkit.data.formats import comparison_places, prompt_key
from alignkit.data.templates import alike_within, dropped_within, each_record, render_completion
from alignkit.errors import AlignkitError
from alignkit.losses.preference import DPO_LOSSES, all_pairs_dpo, listwise_dpo, simpo
from alignkit.models.logprobs import completion_logprobs, sequence_logprob
from alignkit.models.lora import adapters_disabled, maybe_lora, save_trained
from alignkit.models.tokenizer import load_tokenizer, same_vocabulary
from alignkit.training.checkpoint import atomic_path, write_json_atomic
from alignkit.training.logging import info
from alignkit.training.loop import train_loop
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.order import EpochOrder, check_split, split_heldout, steps_for
from alignkit.training.setup import (
    begin_training,
    check_length_fits,
    disable_dropout,
    open_out_dir,
    resolve_device,
)

RANKING_LOSSES = {"listwise": listwise_dpo, "all_pairs": all_pairs_dpo}


@dataclass
class Group:
    """One prompt's responses, tokenised, with their places (0 = best) and reference log-probs."""
    prompt_ids: list[int]
    completions: list[list[int]]   # K completions (chosen first for pairs)
    places: list[int]              # K
    ref_logps: list[float] | None = None   # K sequence log-probs under the reference


def run(cfg: DPOConfig, *, stop_after: int | None = None) -> dict:
    """Train ``cfg.model`` on the preferences in ``cfg.data``; returns (and writes) the stage summary."""
    from alignkit.models.load import load_model
    from alignkit.stages.rm import load_preferences

    if not cfg.model or not cfg.data:
        raise AlignkitError("dpo needs model=DIR (the policy, e.g. runs/demo/sft/model) and data=FILE (preferences)")
    if cfg.dpop_lambda and cfg.loss not in ("sigmoid", "listwise"):
        raise AlignkitError(f"dpop_lambda={cfg.dpop_lambda:g} works with loss=sigmoid or loss=listwise, not loss={cfg.loss}")
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    records = load_preferences(cfg.data)  # bad data fails here, before anything is written
    model, tokenizer = load_model(cfg.model, device=str(device))
    check_length_fits(model, "max_length", cfg.max_length)
    if cfg.ref_model and cfg.loss != "simpo" and not same_vocabulary(load_tokenizer(cfg.ref_model), tokenizer):
        raise AlignkitError(f"ref_model={cfg.ref_model} has another tokenizer than model={cfg.model}; the reference "
                            "scores the policy's token ids, so it needs the same one")
    begin_training(out, cfg)
    model = maybe_lora(model, cfg)
    disable_dropout(model)

    # 1. data: records → groups (pairs, or whole rankings for the ranking losses); train / validation split
    per_record = each_record(records, cfg.data, lambda r: to_groups(r, tokenizer, cfg))
    groups = [g for record_groups in per_record if record_groups for g in record_groups]
    keys = [prompt_key(r) for r, record_groups in zip(records, per_record) if record_groups for _ in record_groups]
    if cut := sum(g is None for g in per_record):
        info(dropped_within("dpo", cut, len(records), cfg.max_length))
    if len(groups) < 2:
        raise AlignkitError(f"{cfg.data}: fewer than 2 usable comparisons (tie and both_bad labels are skipped; "
                            f"{cut} records have responses that are the same within max_length={cfg.max_length})")
    train, val = split_heldout(groups, cfg.heldout_fraction, seed=cfg.seed, keys=keys)
    check_split(cfg.data, train, keys)
    open_out_dir(out, cfg)
    ref_seconds = ref_logps(groups, cfg, tokenizer, out, device, policy=model)  # filled in place: train's too
    steps = steps_for(cfg, len(train))
    cfg = replace(cfg, max_steps=steps)
    per_step = cfg.batch_size * cfg.grad_accum
    info(f"dpo: {len(train)} train / {len(val)} validation comparisons, loss {cfg.loss}, β {cfg.beta}; {steps} steps")
    dump_yaml(cfg, out / "config.yaml")

    # 2. optimisation on the shared loop: one policy forward per micro-batch, the reference precomputed
    pad_id = tokenizer.pad_token_id
    stream = EpochOrder(len(train), seed=cfg.seed)

    def micro_batches(step: int) -> list[dict]:
        first = step * per_step
        return [collate([train[int(i)] for i in stream.indices(first + k * cfg.batch_size, cfg.batch_size)], pad_id)
                for k in range(cfg.grad_accum)]

    def loss_fn(model, batch: dict, normalizer: float):
        loss, m = objective(cfg, *policy_logps(model, batch), batch)
        share = batch["places"].size(0) / normalizer
        return loss * share, {"log": {k: float(v) * share for k, v in m.items()}}

    def evaluate() -> dict:
        return {f"dpo/val_{k}": v for k, v in validate(model, val, cfg, pad_id).items()}

    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, warmup_steps=cfg.warmup_steps, max_steps=steps,
                                min_lr_ratio=cfg.min_lr_ratio)
    model.config.use_cache = False
    result = train_loop(model=model, optimizer=optimizer, scheduler=scheduler, micro_batches=micro_batches,
                        evaluate=evaluate, cfg=cfg, out_dir=out, prefix="dpo", device=device, loss_fn=loss_fn,
                        count_fn=lambda b: b["places"].size(0), stop_after=stop_after)
    if result.stopped_early:
        return {}

    # 3. artifacts
    model.config.use_cache = True
    save_trained(model, tokenizer, out)
    final = result.last_eval or evaluate()
    summary = {"val_loss": final["dpo/val_loss"], "val_accuracy": final["dpo/val_rewards/accuracy"],
               "val_margin": final["dpo/val_rewards/margin"], "loss": cfg.loss, "beta": cfg.beta,
               "train_comparisons": len(train), "steps": result.step, "ref_seconds": round(ref_seconds, 2),
               "train_seconds": round(result.train_seconds, 2), "device": str(device)}
    write_json_atomic(out / "summary.json", summary)
    info(f"dpo: validation loss {summary['val_loss']:.3f}, preference accuracy {summary['val_accuracy']:.3f} "
         f"after {result.step} steps in {summary['train_seconds']:.0f}s")
    return summary


# ----------------------------------------------------------------------------------------------------
# data

def to_groups(record: dict, tokenizer, cfg: DPOConfig) -> list[Group] | None:
    """A preference record → groups: the whole ranking for ranking losses, else each strict pair. None when
    ``max_length`` leaves two of its responses the same (:func:`alignkit.data.templates.alike_within`)."""
    if record.get("label") is not None:
        return []  # ties and both_bad say nothing about which response to prefer
    responses, places = comparison_places(record)
    tokenised = [render_completion(tokenizer, record["prompt"], r, max_length=cfg.max_length) for r in responses]
    prompt_ids = tokenised[0][0]
    completions = [c for _, c in tokenised]
    if alike_within(responses, completions):
        return None
    if cfg.loss in RANKING_LOSSES:
        return [Group(prompt_ids, completions, places)] if len(set(places)) > 1 else []
    return [Group(prompt_ids, [completions[i], completions[j]], [0, 1])
            for i in range(len(places)) for j in range(len(places)) if places[i] < places[j]]


def collate(groups: list[Group], pad_id: int) -> dict:
    """Every response of the batch as one row: left-padded prompts, right-padded completions, (B, K) grid."""
    rows = [(g.prompt_ids, c) for g in groups for c in g.completions]
    prompt_ids, prompt_mask = pad_sequences([p for p, _ in rows], pad_id=pad_id, left=True)            # (N, P)
    completion_ids, completion_mask = pad_sequences([c for _, c in rows], pad_id=pad_id)              # (N, A)
    k = max(len(g.places) for g in groups)
    places = torch.full((len(groups), k), -1, dtype=torch.long)                                       # (B, K)
    ref = torch.zeros((len(groups), k))                                                               # (B, K)
    for b, g in enumerate(groups):
        places[b, :len(g.places)] = torch.tensor(g.places)
        if g.ref_logps is not None:
            ref[b, :len(g.ref_logps)] = torch.tensor(g.ref_logps)
    return {"input_ids": torch.cat([prompt_ids, completion_ids], dim=1),  # what the forward pass sees (counted)
            "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "places": places, "ref_logps": ref,
            "group": torch.tensor([b for b, g in enumerate(groups) for _ in g.completions]),
            "slot": torch.tensor([i for g in groups for i in range(len(g.completions))])}


def policy_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass over every response → (sequence log-probs, completion lengths), both (B, K)."""
    token_logps = completion_logprobs(model, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                                      batch["completion_mask"])
    seq = sequence_logprob(token_logps, batch["completion_mask"])                                     # (N,)
    index = (batch["group"], batch["slot"])
    grid = seq.new_zeros(batch["places"].shape).index_put(index, seq)
    lengths = seq.new_ones(batch["places"].shape).index_put(index, batch["completion_mask"].sum(1).float())
    return grid, lengths


def objective(cfg: DPOConfig, logps: torch.Tensor, lengths: torch.Tensor, batch: dict):
    """The configured loss on (B, K) policy log-probs, plus ``sft_coef`` × the chosen responses' NLL."""
    loss, m = preference_loss(cfg, logps, lengths, batch)
    if cfg.sft_coef:
        places = batch["places"]
        best = (places == places.masked_fill(places < 0, 10**9).min(dim=1, keepdim=True).values)
        nll = -(logps / lengths)[best].mean()  # per-token NLL of the best-ranked response(s)
        loss = loss + cfg.sft_coef * nll
        m = {**m, "nll/chosen": nll.detach()}
    return loss, m


def preference_loss(cfg: DPOConfig, logps: torch.Tensor, lengths: torch.Tensor, batch: dict):
    """The configured preference loss; pairs sit at slots 0 (chosen) and 1 (rejected)."""
    ref = batch["ref_logps"].to(logps.device)
    if cfg.loss in RANKING_LOSSES:
        extra = {"dpop_lambda": cfg.dpop_lambda} if cfg.loss == "listwise" else {}
        return RANKING_LOSSES[cfg.loss](logps, ref, batch["places"], beta=cfg.beta, **extra)
    if cfg.loss == "simpo":
        means = logps / lengths
        return simpo(means[:, 0], means[:, 1], beta=cfg.beta, gamma=cfg.simpo_gamma)
    extra = {"label_smoothing": cfg.label_smoothing} if cfg.loss in ("sigmoid", "robust") else {}
    if cfg.loss == "sigmoid":
        extra["dpop_lambda"] = cfg.dpop_lambda
    return DPO_LOSSES[cfg.loss](logps[:, 0], logps[:, 1], ref[:, 0], ref[:, 1], beta=cfg.beta, **extra)


@torch.no_grad()
def validate(model, groups: list[Group], cfg: DPOConfig, pad_id: int) -> dict:
    """Mean loss and implicit-reward metrics over held-out comparisons."""
    device = next(model.parameters()).device
    model.eval()
    sums: dict[str, float] = {}
    for start in range(0, len(groups), cfg.batch_size):
        chunk = groups[start:start + cfg.batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        loss, m = objective(cfg, *policy_logps(model, batch), batch)
        for k, v in {"loss": loss, **m}.items():
            sums[k] = sums.get(k, 0.0) + float(v) * len(chunk)
    return {k: v / len(groups) for k, v in sums.items()}


# ----------------------------------------------------------------------------------------------------
# the reference, once

@torch.no_grad()
def ref_logps(groups: list[Group], cfg: DPOConfig, tokenizer, out: Path, device, *, policy) -> float:
    """Fill ``group.ref_logps`` from the reference model, or from ``out/ref_logps.pt`` when its
    fingerprint (data, reference weights, tokenisation) matches; returns the seconds it took."""
    t0 = time.perf_counter()
    if cfg.loss == "simpo":
        return 0.0  # reference-free
    ref_dir = cfg.ref_model or cfg.model
    key = _fingerprint(groups, ref_dir)
    cache = out / "ref_logps.pt"
    if cache.is_file():
        try:
            saved = torch.load(cache, weights_only=True)
        except Exception:  # a cut file (a crash while it was written by an older version): recompute it
            saved = {}
        if isinstance(saved, dict) and saved.get("fingerprint") == key:
            for g, values in zip(groups, saved["ref_logps"]):
                g.ref_logps = values
            info(f"dpo: reference log-probs from {cache}")
            return time.perf_counter() - t0
    if cfg.ref_model and Path(cfg.ref_model).resolve() != Path(cfg.model).resolve():
        from alignkit.models.load import load_model
        reference, _ = load_model(cfg.ref_model, device=str(device))
    else:
        reference = policy  # not yet trained (with LoRA: its adapters are disabled below)
    disable_dropout(reference)
    reference.eval()
    flat = [(gi, g.prompt_ids, c) for gi, g in enumerate(groups) for c in g.completions]
    values: list[list[float]] = [[] for _ in groups]
    for start in range(0, len(flat), cfg.eval_batch_size):
        chunk = flat[start:start + cfg.eval_batch_size]
        p, pm = pad_sequences([x[1] for x in chunk], pad_id=tokenizer.pad_token_id, left=True)
        c, cm = pad_sequences([x[2] for x in chunk], pad_id=tokenizer.pad_token_id)
        with adapters_disabled(reference):
            seq = sequence_logprob(completion_logprobs(reference, p.to(device), pm.to(device), c.to(device),
                                                       cm.to(device)), cm.to(device)).cpu().tolist()
        for (gi, _, _), v in zip(chunk, seq):
            values[gi].append(v)
    for g, v in zip(groups, values):
        g.ref_logps = v
    with atomic_path(cache) as tmp:  # written whole or not at all: a kill leaves no cut cache
        torch.save({"fingerprint": key, "ref_logps": values}, tmp)
    return time.perf_counter() - t0


def _fingerprint(groups: list[Group], ref_dir: str) -> str:
    h = hashlib.sha256()
    for g in groups:
        h.update(json.dumps([g.prompt_ids, g.completions]).encode())
    for f in sorted(Path(ref_dir).glob("*.safetensors")):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]
