"""GRPO and the critic-free family: no value model — each response is judged against its own group.

Each step (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300 §4; with the fixes of Dr. GRPO, arXiv
2503.20783, and DAPO, arXiv 2503.14476):

1. **sample** — G responses for each of ``prompts_per_step`` prompts (KV cache, stops at end of turn);
2. **score** — the reward sources of ``alignkit/rollout/rewards.py`` (checkers such as
   ``alignkit.world.checkers:arithmetic``, the reward model, or a weighted sum); a response no source can
   score is left out of its group's baseline; optional DAPO soft overlong penalty; optional dynamic
   sampling (groups whose rewards are all equal carry no signal: dropped, and more prompts sampled);
3. **advantages** — ``losses/policy.group_advantages`` (grpo / dr_grpo / rloo / reinforce_pp), one value
   per response, for every one of its tokens;
4. **update** — μ passes of the clipped surrogate (clip-higher optional) plus β·k3(π ‖ π_ref) *in the
   loss*, aggregated per ``loss_agg``; with β = 0 no reference model is loaded, and with LoRA the
   reference is the policy with its adapters disabled. With μ = 1 the ratio is 1 and the old log-probs
   are the current ones, detached.

Per step ``metrics.jsonl`` gets the reward (mean and std per source), the fraction of groups with zero
advantage, KL to the reference, clip fraction, entropy, length, truncation rate, and on world prompts
the gold (oracle) reward of the samples.

    alignkit grpo model=runs/demo/sft/model reward=alignkit.world.checkers:arithmetic categories=[arithmetic]
    alignkit grpo model=my-sft prompts=math.jsonl reward=my_pkg.checks:exact_match beta=0 advantage=dr_grpo
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from alignkit.config import GRPOConfig, dump_yaml
from alignkit.data.formats import as_messages
from alignkit.data.templates import render_prompt
from alignkit.errors import AlignkitError
from alignkit.losses.policy import aggregate, group_advantages, overlong_penalty
from alignkit.losses.ppo import clipped_surrogate, kl_per_token, surrogate_metrics
from alignkit.losses.reduce import masked_mean
from alignkit.models.logprobs import completion_logprobs
from alignkit.models.lora import adapters_disabled, maybe_lora, save_trained
from alignkit.rollout.prompts import check_prompt_lengths, prompt_rows
from alignkit.rollout.rewards import build_reward, parse_reward, total_reward
from alignkit.rollout.sampler import sample
from alignkit.training.checkpoint import latest_state, load_state, save_state, write_json_atomic
from alignkit.training.logging import MetricsLog, fmt, info, progress_bar
from alignkit.training.optim import build_rl_optimizer, trainable
from alignkit.training.order import EpochOrder
from alignkit.training.setup import begin_training, disable_dropout, open_out_dir, resolve_device

REFILL_ROUNDS = 3


def run(cfg: GRPOConfig, world=None, *, stop_after: int | None = None) -> dict:
    """Train ``cfg.model`` with GRPO; returns (and writes) the stage summary."""
    from alignkit.models.heads import load_scalar_model
    from alignkit.models.load import load_model

    if not cfg.model:
        raise AlignkitError("grpo needs model=DIR (the policy to start from, e.g. runs/demo/sft/model)")
    if cfg.dtype != "float32":
        raise AlignkitError(f"grpo trains in float32 only (it has no autocast yet); drop dtype={cfg.dtype}")
    if "rm" in [name for _, name in parse_reward(cfg.reward)] and not cfg.rm:
        raise AlignkitError("grpo needs rm=DIR (a reward model from `alignkit rm`) for reward=rm")
    if cfg.prompts == "world" and world is None:
        from alignkit.world import build_world
        world = build_world()
    rows = prompt_rows(cfg.prompts, world, cfg.categories)  # bad data fails here, before anything is written
    judge = world if cfg.prompts == "world" else None
    out = Path(cfg.out)
    device = resolve_device(cfg.device)

    policy, tokenizer = load_model(cfg.model, device=str(device))
    check_prompt_lengths(rows, cfg.prompts, policy, tokenizer, cfg.max_new_tokens)
    reference = None
    if cfg.beta > 0 and not cfg.lora:
        reference, _ = load_model(cfg.model, device=str(device))
        reference.eval().requires_grad_(False)
        disable_dropout(reference)
    rm, rm_tokenizer = load_scalar_model(cfg.rm, device=str(device)) if cfg.rm else (None, None)
    if rm is not None:
        rm.eval().requires_grad_(False)
    terms = build_reward(cfg.reward, rm=rm, rm_tokenizer=rm_tokenizer, world=judge)
    begin_training(out, cfg)
    policy = maybe_lora(policy, cfg)
    disable_dropout(policy)
    open_out_dir(out, cfg)
    dump_yaml(cfg, out / "config.yaml")

    responses_per_step = cfg.prompts_per_step * cfg.group_size
    minibatch = cfg.minibatch or responses_per_step
    total_updates = cfg.steps * cfg.mu * math.ceil(responses_per_step / minibatch)
    optimizer, scheduler = build_rl_optimizer([{"params": trainable(policy), "lr": cfg.lr}],
                                              total_updates=total_updates)

    step, seconds_before, consumed = 0, 0.0, 0
    state_dir = out / "state"
    ckpt = latest_state(state_dir) if cfg.resume else None
    if ckpt is not None:
        saved = load_state(ckpt, model=policy, optimizer=optimizer, scheduler=scheduler)
        step, seconds_before, consumed = saved["step"], saved["train_seconds"], saved["prompts_consumed"]
        info(f"grpo: resuming from {ckpt} (step {step})")
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if ckpt else None)
    order = EpochOrder(len(rows), seed=cfg.seed)
    info(f"grpo: {len(rows)} prompts, reward {cfg.reward}, {cfg.steps} steps of {cfg.prompts_per_step} prompts × "
         f"{cfg.group_size}, advantage {cfg.advantage}, β {cfg.beta}")

    start = time.perf_counter()
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task("grpo", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            if stop_after is not None and step >= stop_after:
                return {}
            t0 = time.perf_counter()
            batch, row, consumed = collect(cfg, step, rows, order, consumed, policy, tokenizer, terms, judge)
            t1 = time.perf_counter()
            row.update(update(cfg, step, batch, policy, reference, optimizer, scheduler, minibatch))
            step += 1
            row.update({"lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0,
                        "seconds/sampling": row.pop("sampling_seconds"), "seconds/update": time.perf_counter() - t1})
            log.log(step, {f"grpo/{k}": v for k, v in row.items()})
            bar.update(task, completed=step, info=f"reward {row['reward']:+.3f}")
            if step % cfg.save_every == 0 or step == cfg.steps:
                save_state(state_dir, step, model=policy, optimizer=optimizer, scheduler=scheduler,
                           extra={"train_seconds": seconds_before + time.perf_counter() - start,
                                  "prompts_consumed": consumed})

    train_seconds = seconds_before + time.perf_counter() - start
    save_trained(policy, tokenizer, out)
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = {"steps": step, "responses": step * responses_per_step, "reward": cfg.reward,
               "advantage": cfg.advantage, "loss_agg": cfg.loss_agg, "beta": cfg.beta,
               "final_reward": history[-1]["grpo/reward"], "train_seconds": round(train_seconds, 2),
               "sampling_share": round(sum(r["grpo/seconds/sampling"] for r in history)
                                       / max(1e-9, sum(r["grpo/seconds"] for r in history)), 3),
               "device": str(device),
               "curve": [{k.removeprefix("grpo/"): r[k] for k in ("step", "grpo/reward", "grpo/gold", "grpo/kl")
                          if k in r} for r in history]}
    write_json_atomic(out / "summary.json", summary)
    info(f"grpo: {step} steps in {train_seconds:.0f}s; last reward {fmt(summary['final_reward'])}")
    return summary


# ----------------------------------------------------------------------------------------------------
# one step: collect scored groups, then update

@torch.no_grad()
def collect(cfg: GRPOConfig, step: int, rows: list[dict], order: EpochOrder, consumed: int, policy, tokenizer,
            terms, judge) -> tuple[dict, dict, int]:
    """Sample and score groups until the step holds ``prompts_per_step`` of them (with dynamic sampling:
    groups with some signal). Returns the padded batch, the step's diagnostics and the prompts consumed."""
    G = cfg.group_size
    groups: list[tuple] = []  # (prompt ids, prompt mask, completion ids, rewards (G,), finished (G,))
    gold: list[float] = []
    dropped, sampling, first_parts = 0, 0.0, {}
    for attempt in range(1 + (REFILL_ROUNDS if cfg.dynamic_sampling else 0)):
        need = cfg.prompts_per_step - len(groups)
        if need <= 0:
            break
        batch_rows = [rows[int(i)] for i in order.indices(consumed, need)]
        consumed += need
        prompts = [render_prompt(tokenizer, as_messages(r["prompt"], "user")) for r in batch_rows for _ in range(G)]
        ts = time.perf_counter()
        samples = sample(policy, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                         batch_size=len(prompts), seed=cfg.seed * 1_000_003 + step * 16 + attempt)
        sampling += time.perf_counter() - ts
        texts = [t.strip() for t in samples.texts]
        rewards, parts = total_reward(terms, [r for r in batch_rows for _ in range(G)], texts)
        lengths = samples.completion_lengths
        if cfg.overlong_cache:
            rewards = rewards + overlong_penalty(lengths, max_len=cfg.max_new_tokens, cache=cfg.overlong_cache)
        for k, r in enumerate(batch_rows):
            sl = slice(k * G, (k + 1) * G)
            values = rewards[sl]
            known = values[~torch.isnan(values)]
            if cfg.dynamic_sampling and (len(known) < 2 or bool((known == known[0]).all())):
                dropped += 1
                continue
            ids = [samples.completion_ids[i][: int(samples.completion_mask[i].sum())].tolist()
                   for i in range(k * G, (k + 1) * G)]
            groups.append((samples.prompt_ids[sl], samples.prompt_mask[sl], ids, values, samples.finished[sl]))
            if judge is not None:
                gold.extend(judge.oracle.score_prompt(r["prompt"], t) for t in texts[sl])
        first_parts = first_parts or parts
    if not groups:
        raise AlignkitError("grpo: every group of the step had equal rewards (no signal); "
                            "turn dynamic_sampling off or check the reward")
    batch = _pad(groups, tokenizer.pad_token_id)
    rewards = batch.pop("rewards")
    advantages = group_advantages(rewards, cfg.advantage, unbiased=cfg.std == "unbiased")
    batch["advantages"] = advantages.reshape(-1)
    finished = batch["finished"].float()
    row = {"reward": float(torch.nanmean(rewards)), **first_parts,
           "zero_advantage_groups": float((advantages.abs().sum(dim=1) == 0).float().mean()),
           "dropped_groups": dropped, "length": float(batch["completion_mask"].sum(1).float().mean()),
           "truncated": float(1 - finished.mean()), "sampling_seconds": sampling,
           "unscorable": float(torch.isnan(rewards).float().mean())}
    if gold:
        row["gold"] = sum(gold) / len(gold)
    return batch, row, consumed


def update(cfg: GRPOConfig, step: int, batch: dict, policy, reference, optimizer, scheduler, minibatch: int) -> dict:
    """μ passes of the clipped surrogate + β·k3 over the step's responses, in minibatches."""
    device = next(policy.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    ids = (batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"], batch["completion_mask"])
    mask = batch["completion_mask"].float()
    if cfg.mask_truncated:
        mask = mask * batch["finished"].float().unsqueeze(1)
    with torch.no_grad():
        old = completion_logprobs(policy, *ids, temperature=cfg.temperature) if cfg.mu > 1 else None
        ref = None
        if cfg.beta > 0:
            with adapters_disabled(reference if reference is not None else policy) as ref_model:
                ref = completion_logprobs(ref_model, *ids, temperature=cfg.temperature)
    policy.train()
    N = mask.size(0)
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    sums: dict[str, float] = {}
    n = 0
    for _ in range(cfg.mu):
        perm = torch.randperm(N, generator=generator).to(device) if minibatch < N else torch.arange(N, device=device)
        for start in range(0, N, minibatch):
            idx = perm[start:start + minibatch]
            logp = completion_logprobs(policy, *(x[idx] for x in ids), temperature=cfg.temperature)
            old_logp = old[idx] if old is not None else logp.detach()
            adv = batch["advantages"][idx].unsqueeze(1).expand_as(logp)
            per_token, was_clipped = clipped_surrogate(logp, old_logp, adv, clip_low=cfg.clip,
                                                       clip_high=cfg.clip_high or None)
            metrics = surrogate_metrics(logp, old_logp, was_clipped, mask[idx])
            if ref is not None:
                kl = kl_per_token(logp, ref[idx], "k3")
                per_token = per_token + cfg.beta * kl
                metrics["kl"] = (kl.detach() * mask[idx]).sum(1).mean()  # k3 per response, nats
            loss = aggregate(per_token, mask[idx], cfg.loss_agg, max_len=cfg.max_new_tokens)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable(policy), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            metrics["loss"] = loss.detach()
            metrics["entropy"] = -masked_mean(logp.detach(), mask[idx])
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            n += 1
    return {k: v / n for k, v in sums.items()}


# ----------------------------------------------------------------------------------------------------
# data

def _pad(groups: list, pad_id: int) -> dict:
    """The step's groups as one batch: prompts re-padded on the left, responses on the right (B = groups × G)."""
    from alignkit.data.collators import pad_sequences

    prompts = [p[m.bool()].tolist() for ps, ms, *_ in groups for p, m in zip(ps, ms)]
    completions = [c for _, _, ids, _, _ in groups for c in ids]
    prompt_ids, prompt_mask = pad_sequences(prompts, pad_id=pad_id, left=True)
    completion_ids, completion_mask = pad_sequences([c or [pad_id] for c in completions], pad_id=pad_id)
    for i, c in enumerate(completions):
        if not c:
            completion_mask[i] = 0
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "finished": torch.tensor([f for *_, fin in groups for f in fin], dtype=torch.bool),
            "rewards": torch.stack([values for *_, values, _ in groups])}
