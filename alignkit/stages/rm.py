"""Reward modelling: a scalar score r_φ(x, y) learned from human comparisons.

Every preference record becomes one group — a prompt, its responses, and each response's place in the
best → worst order (equal places = tied):

    pair     {prompt, chosen, rejected, margin?}  → 2 responses, places [0, 1]
    ranking  {prompt, responses, ranking}          → k responses, places from the ranking ([2, [0, 1], 3])
    label    {prompt, responses, label: tie}       → places [0, 0]; ``both_bad`` is dropped or a tie (config)

and the loss is taken per group, over one forward pass per response (never one per pair):

    plackett_luce  -log Π_k exp r_τ(k) / Σ_{j ≥ k} exp r_τ(j)      listwise (Plackett 1975; Luce 1959),
                   tied groups by Breslow's rule; K = 2 is Bradley-Terry
    all_pairs      mean over the C(K, 2) pairs of -log σ(r_w - r_l - m)   (InstructGPT eq. 1, arXiv 2203.02155);
                   tied pairs by the Rao-Kupper or Davidson tie model
    + center_coef · (2 · mean_k r_k)²                                   (Eisenstein et al., arXiv 2312.09244)

The backbone is a causal LM (the SFT model by default), the head a linear layer read at the last real
token (``alignkit/models/heads.py``). After training the reward is normalised to mean 0, std 1 on the
policy's own responses, and — given ``eval_data`` with gold scores — evaluated against the noise-free
preference (``alignkit/eval/rm.py``). Same engine as SFT: accumulation normalised by the step's prompt
count, warm-up + cosine, metrics.jsonl, atomic checkpoints, exact resume.

With ``prior=DIR`` (the run uses the SFT model) the reward adds a fixed c times the prior LM's surprise at
the response, min_t log p_prior(y_t | x, y_<t), computed once per response before training; the head is
trained with it in place (``alignkit/models/heads.py``).

Deliberate simplifications: the tokenised dataset is held in memory; sequences longer than
``max_length`` are cut at the end (so their read-out is not the end-of-turn token), and a record
whose responses are then the same (a prompt that fills ``max_length``) is dropped.

    alignkit rm model=runs/demo/sft/model data=runs/demo/prefs/rankings.jsonl out=runs/mine/rm
    alignkit rm model=my-sft data=pairs.jsonl,rankings.jsonl objective=all_pairs tie_model=davidson
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from alignkit.config import RMConfig, dump_yaml
from alignkit.data.collators import pad_sequences
from alignkit.data.formats import comparison_places, prompt_key
from alignkit.data.sources import load_records
from alignkit.data.templates import alike_within, dropped_within, each_record, render_response
from alignkit.errors import AlignkitError, DataError
from alignkit.losses.reward import all_pairs, centering, plackett_luce
from alignkit.models.heads import (
    attach_prior,
    new_scalar_model,
    prior_detached,
    prior_surprise,
    record_prior,
    reward_scores,
    score_responses,
    set_normalization,
)
from alignkit.models.lora import maybe_lora, save_trained
from alignkit.training.checkpoint import write_json_atomic
from alignkit.training.logging import info
from alignkit.training.loop import train_loop
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.order import EpochOrder, check_split, split_heldout, steps_for
from alignkit.training.setup import begin_training, check_length_fits, open_out_dir, resolve_device

OBJECTIVES = {"plackett_luce": plackett_luce, "all_pairs": all_pairs}


@dataclass
class Group:
    """One prompt's comparisons, tokenised."""
    input_ids: list[list[int]]   # K rows: prompt + response i
    places: list[int]            # K: 0 = best; equal places are tied
    margin: float                # for pair records with a `margin` (0 otherwise)
    surprise: list[float] = field(default_factory=list)  # K: the prior's surprise term (empty: no prior)


def run(cfg: RMConfig, *, stop_after: int | None = None, surprise_memo: dict | None = None) -> dict:
    """Train a reward model on ``cfg.data``; returns (and writes) the stage summary. ``surprise_memo``: the
    prior's surprise at responses already scored, shared by reward models with the same prior and
    max_length (see :func:`alignkit.models.heads.prior_surprise`)."""
    if not cfg.model:
        raise AlignkitError("rm needs model=DIR (the backbone, a causal-LM dir such as runs/demo/sft/model)")
    if not cfg.data:
        raise AlignkitError("rm needs data=FILE (pairs, rankings or tie labels; several files separated by commas)")
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    records = load_preferences(cfg.data)  # bad data fails here, before anything is written
    eval_records = load_records(cfg.eval_data, "scored") if cfg.eval_data else []
    model, tokenizer = new_scalar_model(cfg.model, seed=cfg.seed, device=str(device))
    check_length_fits(model, "max_length", cfg.max_length)
    try:
        prior = attach_prior(model, cfg.prior, coef=cfg.prior_coef, device=str(device)) if cfg.prior else None
    except AlignkitError as e:
        raise AlignkitError(f"prior={cfg.prior}: {e}") from None
    begin_training(out, cfg)
    model = maybe_lora(model, cfg, task="SEQ_CLS")

    # 1. data: records → groups of tokenised responses with their places (and the prior's surprise at
    # each response, once); train / validation split
    per_record = each_record(records, cfg.data, lambda r: to_group(r, tokenizer, cfg))
    kept = [(r, g) for r, g in zip(records, per_record) if isinstance(g, Group)]
    groups = [g for _, g in kept]
    if cut := sum(g is CUT for g in per_record):
        info(dropped_within("rm", cut, len(records), cfg.max_length))
    # one memo for this run at least: without eval_data the normalisation below scores the training answers again
    surprise_memo = {} if surprise_memo is None else surprise_memo
    if prior is not None:
        add_surprise(kept, prior, cfg, surprise_memo)
    if len(groups) < 2:
        raise AlignkitError(f"{cfg.data}: fewer than 2 usable comparisons (both_bad labels count only with "
                            f"both_bad=tie, tie labels only with a tie_model; {cut} records have responses that "
                            f"are the same within max_length={cfg.max_length})")
    keys = [prompt_key(r) for r, _ in kept]  # a prompt's comparisons all on one side of the split
    train, val = split_heldout(groups, cfg.heldout_fraction, seed=cfg.seed, keys=keys)
    check_split(cfg.data, train, keys)
    per_step = cfg.batch_size * cfg.grad_accum
    steps = steps_for(cfg, len(train))
    cfg = replace(cfg, max_steps=steps)
    n_seqs = sum(len(g.places) for g in train)
    in_train = {id(g) for g in train}
    n_prompts = len({k for g, k in zip(groups, keys) if id(g) in in_train})
    info(f"rm: {len(train)} train / {len(val)} validation comparisons ({n_prompts} train prompts), {n_seqs:,} "
         f"responses; {steps} steps")
    open_out_dir(out, cfg)
    dump_yaml(cfg, out / "config.yaml")

    # 2. optimisation on the shared loop: one step = batch_size · grad_accum prompts
    pad_id = tokenizer.pad_token_id
    stream = EpochOrder(len(train), seed=cfg.seed)
    objective = _objective(cfg)

    def micro_batches(step: int) -> list[dict]:
        first = step * per_step
        return [collate([train[int(i)] for i in stream.indices(first + k * cfg.batch_size, cfg.batch_size)], pad_id)
                for k in range(cfg.grad_accum)]

    def loss_fn(model, batch: dict, normalizer: float):
        rewards = group_rewards(model, batch)
        loss, m = objective(rewards, batch["places"], batch["margin"])
        if cfg.center_coef:
            loss = loss + centering(rewards, batch["places"] >= 0, coef=cfg.center_coef)[0]
        share = batch["places"].size(0) / normalizer  # this micro-batch's part of the step's mean over prompts
        return loss * share, {"log": {"accuracy": float(m["accuracy"]) * share}}

    def evaluate() -> dict:
        loss, acc = validate(model, val, objective, pad_id, cfg.batch_size)
        return {"rm/val_loss": loss, "rm/val_accuracy": acc}

    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, warmup_steps=cfg.warmup_steps, max_steps=steps,
                                min_lr_ratio=cfg.min_lr_ratio)
    result = train_loop(model=model, optimizer=optimizer, scheduler=scheduler, micro_batches=micro_batches,
                        evaluate=evaluate, cfg=cfg, out_dir=out, prefix="rm", device=device, loss_fn=loss_fn,
                        count_fn=lambda b: b["places"].size(0), stop_after=stop_after)
    if result.stopped_early:
        return {}
    final = result.last_eval or evaluate()

    # 3. normalise on the policy's own responses, evaluate against gold, save
    summary = {"val_accuracy": final["rm/val_accuracy"], "val_loss": final["rm/val_loss"],
               "train_prompts": n_prompts, "train_comparisons": len(train), "train_responses": n_seqs,
               "steps": result.step,
               "objective": cfg.objective, "tie_model": cfg.tie_model,
               "train_seconds": round(result.train_seconds, 2), "device": str(device)}
    norm_source = eval_records or records
    prompts = [r["prompt"] for r in norm_source for _ in _responses(r)]
    responses = [x for r in norm_source for x in _responses(r)]
    with prior_detached(model):
        head = score_responses(model, tokenizer, prompts, responses, max_length=cfg.max_length,
                               batch_size=cfg.eval_batch_size, normalized=False)
    surprise = (prior_surprise(prior.model, prior.tokenizer, prompts, responses, batch_size=cfg.eval_batch_size,
                               max_length=cfg.max_length, memo=surprise_memo) if prior is not None else None)
    raw = head if prior is None else head + prior.coef * surprise
    if cfg.normalize:
        summary["normalization"] = set_normalization(model, raw)
    if eval_records:
        summary.update(evaluate_gold(eval_records, raw))
        if prior is not None:  # what each part of the reward gets right alone
            summary["heldout_accuracy_head"] = evaluate_gold(eval_records, head)["heldout_accuracy"]
            summary["heldout_accuracy_prior"] = evaluate_gold(eval_records, surprise)["heldout_accuracy"]
        num = lambda key: "-" if summary[key] is None else f"{summary[key]:.3f}"  # noqa: E731 (no pairs: None)
        info(f"rm: held-out accuracy vs gold {num('heldout_accuracy')} (labeller ceiling "
             f"{num('accuracy_ceiling')}), Spearman {num('spearman_gold')} over {summary['n_pairs']} pairs")
    if prior is not None:
        summary["prior"] = {"model": cfg.prior, "coef": prior.coef}
        record_prior(model, cfg.prior, out / "model", coef=prior.coef)
    with prior_detached(model):
        save_trained(model, tokenizer, out)
    write_json_atomic(out / "summary.json", summary)
    info(f"rm: validation accuracy {summary['val_accuracy']:.3f} after {result.step} steps "
         f"in {summary['train_seconds']:.0f}s")
    return summary


# ----------------------------------------------------------------------------------------------------
# data

def load_preferences(data: str) -> list[dict]:
    """Preference records from one or more files (comma-separated), in order; of several, one may be empty
    (a run whose labellers said no "tie" or "both_bad" writes an empty labels.jsonl), not all."""
    paths = [p.strip() for p in data.split(",") if p.strip()]
    records = [r for path in paths for r in load_records(path, "preference", allow_empty=len(paths) > 1)]
    if not records:
        raise DataError(f"{data}: no records")
    return records


CUT = "cut"  # to_group's answer for a record whose responses max_length leaves the same


def to_group(record: dict, tokenizer, cfg: RMConfig) -> Group | str | None:
    """A validated preference record → a tokenised group; None when the config drops it, :data:`CUT` when
    ``max_length`` leaves two of its responses the same (:func:`alignkit.data.templates.alike_within`)."""
    if record.get("label") == "both_bad" and cfg.both_bad == "drop":
        return None
    responses, places = comparison_places(record)
    if len(set(places)) == 1 and cfg.tie_model == "none":
        return None  # nothing but ties, and ties carry no information without a tie model
    margin = float(record.get("margin") or 0.0) if cfg.use_margin else 0.0
    ids = [render_response(tokenizer, record["prompt"], r, max_length=cfg.max_length) for r in responses]
    return CUT if alike_within(responses, ids) else Group(ids, places, margin)


def add_surprise(kept: list[tuple[dict, Group]], prior, cfg: RMConfig, memo: dict | None = None) -> None:
    """Fill ``group.surprise`` with c · the prior's surprise at each response, in one batched pass."""
    prompts = [r["prompt"] for r, g in kept for _ in g.places]
    responses = [x for r, _ in kept for x in comparison_places(r)[0]]
    values = (prior.coef * prior_surprise(prior.model, prior.tokenizer, prompts, responses,
                                          batch_size=cfg.eval_batch_size, max_length=cfg.max_length,
                                          memo=memo)).tolist()
    start = 0
    for _, g in kept:
        g.surprise = values[start:start + len(g.places)]
        start += len(g.places)


def collate(groups: list[Group], pad_id: int) -> dict:
    """Groups → one right-padded batch of every response, plus where each sits in the (B, K) reward grid."""
    rows = [ids for g in groups for ids in g.input_ids]
    input_ids, attention_mask = pad_sequences(rows, pad_id=pad_id)
    k = max(len(g.places) for g in groups)
    places = torch.full((len(groups), k), -1, dtype=torch.long)   # (B, K): -1 = no response there
    for b, g in enumerate(groups):
        places[b, :len(g.places)] = torch.tensor(g.places)
    group = torch.tensor([b for b, g in enumerate(groups) for _ in g.places])          # (N,)
    slot = torch.tensor([i for g in groups for i in range(len(g.places))])              # (N,)
    margin = torch.tensor([g.margin for g in groups], dtype=torch.float32)              # (B,)
    surprise = torch.tensor([x for g in groups for x in (g.surprise or [0.0] * len(g.places))])  # (N,)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "places": places, "group": group,
            "slot": slot, "margin": margin, "surprise": surprise}


def group_rewards(model, batch: dict) -> torch.Tensor:
    """One forward pass over every response of the batch → rewards on the (B, K) grid (0 where absent): the
    head plus the prior's (precomputed) surprise term."""
    r = reward_scores(model, batch["input_ids"], batch["attention_mask"]) + batch["surprise"]   # (N,)
    grid = r.new_zeros(batch["places"].shape)
    return grid.index_put((batch["group"], batch["slot"]), r)


def _objective(cfg: RMConfig):
    if cfg.objective == "plackett_luce":
        return lambda rewards, places, margin: plackett_luce(rewards, places)
    tie_model = None if cfg.tie_model == "none" else cfg.tie_model
    return lambda rewards, places, margin: all_pairs(rewards, places, margin=margin, tie_model=tie_model)


@torch.no_grad()
def validate(model, groups: list[Group], objective, pad_id: int, batch_size: int) -> tuple[float, float]:
    """Mean loss and pairwise accuracy (against the noisy labels) over held-out groups."""
    device = next(model.parameters()).device
    model.eval()
    loss_sum, acc_sum, n = 0.0, 0.0, 0
    for start in range(0, len(groups), batch_size):
        chunk = groups[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_id).items()}
        loss, m = objective(group_rewards(model, batch), batch["places"], batch["margin"])
        loss_sum += float(loss) * len(chunk)
        acc_sum += float(m["accuracy"]) * len(chunk)
        n += len(chunk)
    return loss_sum / n, acc_sum / n


def evaluate_gold(records: list[dict], raw_scores: torch.Tensor) -> dict:
    """Accuracy against the gold preference of ``records`` ({prompt, responses, gold}) given their scores."""
    from alignkit.eval.rm import gold_agreement

    scores, start = [], 0
    for r in records:
        scores.append(raw_scores[start:start + len(r["responses"])].tolist())
        start += len(r["responses"])
    labeller = records[0].get("labeller") or {}
    return gold_agreement(scores, [r["gold"] for r in records], categories=[r.get("category", "all") for r in records],
                          tie_margin=labeller.get("tie_margin", 0.0),
                          labeller_temperature=labeller.get("temperature"))


def _responses(record: dict) -> list:
    if "chosen" in record and record.get("chosen") is not None:
        return [record["chosen"], record["rejected"]]
    return list(record["responses"])
