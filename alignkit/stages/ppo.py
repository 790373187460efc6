"""RLHF with PPO, the InstructGPT way: the policy against a reward model, kept near the SFT model.

Each iteration is the loop below, top to bottom (Ouyang et al. 2022, arXiv 2203.02155; Ziegler et al.
2019, arXiv 1909.08593; Huang et al., "The N+ Implementation Details of RLHF with PPO", arXiv 2403.17031):

1. **rollout** — the policy samples one response per prompt (KV cache, stops at the end-of-turn token);
2. **score** — the reward (the reward model read at the last real token, normalised; or any source of
   ``alignkit/rollout/rewards.py``), minus ``missing_eos_penalty`` for a response cut at max_new_tokens;
3. **per-token rewards** — −β·(log π_old − log π_ref) on every token, plus the score on the last one;
   log-probs at the sampling temperature; β fixed or adapted towards ``kl_target``;
4. **values** — the critic at every response position: a separate value model initialised from the
   reward model or from the policy with a zero head, or a zero head on the policy's own trunk
   (``value_model=shared``: one model, one forward pass for log-probs and values);
5. **GAE** (γ, λ) → returns; advantages whitened over the batch;
6. **updates** — ``ppo_epochs`` passes over minibatches of the clipped policy loss + ``vf_coef`` × the
   clipped value loss, and with ``ptx_coef`` > 0 a next-token loss on pretraining text (PPO-ptx).

Dropout is off in every model; the reference is a frozen copy of the starting policy. With a separate
value model (``value_model=rm`` or ``policy``) full fine-tuning keeps four backbones in memory (policy,
reference, value, reward model) plus AdamW's two moments for the two trained ones; ``value_model=shared``
keeps three (the critic is a head on the policy). With ``lora=true`` the reference is the policy with its
adapters disabled, and a value model initialised from the reward model is the reward model with
adapters (scoring turns them off): two backbones, and optimizer state for the adapters only. Losses
are in ``alignkit/losses/ppo.py``.

Every iteration logs the reward (and each of its terms), the KL to the reference, β, the losses, clip
fractions, approx-KL, explained variance, entropy and response length to metrics.jsonl; on the built-in
world it also logs the gold (oracle) reward of the same rollouts, which never trains — proxy and gold
side by side show reward over-optimisation as KL grows.

    alignkit ppo model=runs/demo/sft/model rm=runs/demo/rm/model out=runs/mine/ppo
    alignkit ppo model=my-sft prompts=prompts.jsonl reward=my_pkg.checks:reward value_model=shared
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from alignkit.config import PPOConfig, dump_yaml
from alignkit.data.formats import as_messages
from alignkit.data.templates import render_prompt
from alignkit.errors import AlignkitError
from alignkit.losses.ppo import (
    AdaptiveKLController,
    FixedKLController,
    explained_variance,
    gae,
    policy_loss,
    token_rewards,
    value_loss,
    whiten,
)
from alignkit.losses.reduce import masked_mean
from alignkit.models.logprobs import (
    by_length,
    completion_logprobs,
    completion_logprobs_and_hidden,
    layout,
)
from alignkit.models.lora import adapters_disabled, add_lora, save_adapter, save_trained
from alignkit.models.tokenizer import same_vocabulary
from alignkit.rollout.prompts import check_prompt_lengths, prompt_rows
from alignkit.rollout.rewards import build_reward, parse_reward, total_reward
from alignkit.rollout.sampler import sample
from alignkit.training.checkpoint import latest_state, save_pretrained_atomic, write_json_atomic
from alignkit.training.logging import MetricsLog, fmt, info, progress_bar
from alignkit.training.optim import build_rl_optimizer, trainable
from alignkit.training.order import EpochOrder
from alignkit.training.setup import begin_training, disable_dropout, open_out_dir, resolve_device


def run(cfg: PPOConfig, world=None, *, stop_after: int | None = None) -> dict:
    """Train ``cfg.model`` with PPO; returns (and writes) the stage summary. ``world`` supplies the prompts
    when ``prompts=world`` (and the gold reward logged beside the proxy)."""
    from alignkit.models.heads import load_scalar_model, new_scalar_model
    from alignkit.models.load import load_model

    if not cfg.model:
        raise AlignkitError("ppo needs model=DIR (the policy to start from, e.g. runs/demo/sft/model)")
    if cfg.dtype != "float32":
        raise AlignkitError(f"ppo trains in float32 only (it has no autocast yet); drop dtype={cfg.dtype}")
    bad = [s for s in cfg.snapshots if not (isinstance(s, int) and 1 <= s <= cfg.steps)]
    if bad:
        raise AlignkitError(f"snapshots={list(cfg.snapshots)}: each must be an iteration in 1..steps={cfg.steps}")
    terms_spec = [name for _, name in parse_reward(cfg.reward)]
    if ("rm" in terms_spec or cfg.value_model == "rm") and not cfg.rm:
        raise AlignkitError("ppo needs rm=DIR (a reward model from `alignkit rm`) for reward=rm or value_model=rm")
    if cfg.prompts == "world" and world is None:
        from alignkit.world import build_world
        world = build_world()
    rows = prompt_rows(cfg.prompts, world)  # bad data fails here, before anything is written
    judge = world if cfg.prompts == "world" else None  # the oracle knows only the world's own prompts
    out = Path(cfg.out)
    device = resolve_device(cfg.device)

    # the models: policy (trained), reference (frozen), critic (trained: a value model, or a head on the
    # policy's trunk), reward model (frozen); with LoRA the reference is the policy with its adapters
    # disabled, and a value model initialised from the reward model shares its weights (scoring disables
    # the value adapters)
    policy, tokenizer = load_model(cfg.model, device=str(device))
    check_prompt_lengths(rows, cfg.prompts, policy, tokenizer, cfg.max_new_tokens)
    rm, rm_tokenizer = load_scalar_model(cfg.rm, device=str(device)) if cfg.rm else (None, None)
    if rm is not None:
        rm.eval().requires_grad_(False)
    if cfg.value_model == "rm" and not same_vocabulary(rm_tokenizer, tokenizer):
        raise AlignkitError(f"value_model=rm: the reward model {cfg.rm} has another tokenizer than the policy "
                            f"{cfg.model}, and the critic reads the policy's token ids; use value_model=policy or shared")
    begin_training(out, cfg)  # the seed, before the LoRA adapters are drawn
    if cfg.lora:
        policy, reference = add_lora(policy, cfg), None
    else:
        reference, _ = load_model(cfg.model, device=str(device))
        reference.eval().requires_grad_(False)
    if cfg.value_model == "rm":
        value = add_lora(rm, cfg, task="SEQ_CLS") if cfg.lora else load_scalar_model(cfg.rm, device=str(device))[0]
        if cfg.lora:
            rm = value
    elif cfg.value_model == "policy":
        value, _ = new_scalar_model(cfg.model, head_init="zero", device=str(device))
        value = add_lora(value, cfg, task="SEQ_CLS") if cfg.lora else value
    else:
        value = ValueHead(policy.config.hidden_size).to(device)
    for m in (policy, reference, value, rm):
        if m is not None and not isinstance(m, ValueHead):
            disable_dropout(m)
    terms = build_reward(cfg.reward, rm=rm, rm_tokenizer=rm_tokenizer, world=judge, normalized=cfg.normalize_reward,
                         batch_size=cfg.minibatch)
    torch.manual_seed(cfg.seed)  # what follows draws the same numbers whichever critic was built above
    open_out_dir(out, cfg)
    dump_yaml(cfg, out / "config.yaml")

    # optimisation state: one AdamW over both models (policy and value learning rates), linear decay to 0
    n_minibatches = math.ceil(cfg.rollout_batch / cfg.minibatch)
    total_updates = cfg.steps * cfg.ppo_epochs * n_minibatches
    optimizer, scheduler = build_rl_optimizer([{"params": trainable(policy), "lr": cfg.lr},
                                               {"params": trainable(value), "lr": cfg.value_lr}],
                                              total_updates=total_updates)
    kl_ctl = (AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon) if cfg.kl_target > 0
              else FixedKLController(cfg.kl_coef))
    ptx = pretraining_blocks(cfg.ptx_data, world, tokenizer) if cfg.ptx_coef > 0 else None

    step, seconds_before = 0, 0.0
    state_dir = out / "state"
    ckpt = latest_state(state_dir) if cfg.resume else None
    if ckpt is not None:
        saved = load_ppo_state(ckpt, policy, value, optimizer, scheduler)
        step, seconds_before, kl_ctl.beta = saved["step"], saved["train_seconds"], saved["beta"]
        info(f"ppo: resuming from {ckpt} (iteration {step})")
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if ckpt else None)
    order = EpochOrder(len(rows), seed=cfg.seed)
    ptx_order = EpochOrder(len(ptx["input_ids"]), seed=cfg.seed) if ptx is not None else None
    info(f"ppo: {len(rows)} prompts, reward {cfg.reward}, {cfg.steps} iterations of {cfg.rollout_batch} rollouts, "
         f"β {kl_ctl.beta}{f' → KL {cfg.kl_target}' if cfg.kl_target else ''}")

    start = time.perf_counter()
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task("ppo", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            if stop_after is not None and step >= stop_after:
                return {}
            t0 = time.perf_counter()
            batch_rows = [rows[int(i)] for i in order.indices(step * cfg.rollout_batch, cfg.rollout_batch)]
            roll, row = rollout(cfg, step, batch_rows, policy, reference, value, tokenizer, terms, kl_ctl.beta, judge)
            t1 = time.perf_counter()
            row.update(update(cfg, step, roll, policy, value, optimizer, scheduler, ptx, ptx_order))
            row.update({"seconds/rollout": t1 - t0, "seconds/update": time.perf_counter() - t1})
            kl_ctl.update(row["kl"], n_steps=len(batch_rows))
            step += 1
            row.update({"beta": kl_ctl.beta, "lr": scheduler.get_last_lr()[0], "seconds": time.perf_counter() - t0})
            log.log(step, {f"ppo/{k}": v for k, v in row.items()})
            bar.update(task, completed=step, info=f"reward {row['reward']:+.3f}  KL {row['kl']:.2f}")
            if step in cfg.snapshots:
                save_trained(policy, tokenizer, out / "snapshots" / f"step-{step}")
            if step % cfg.save_every == 0 or step == cfg.steps:
                save_ppo_state(state_dir, step, policy, value, optimizer, scheduler,
                               {"train_seconds": seconds_before + time.perf_counter() - start, "beta": kl_ctl.beta})

    # artifacts: the policy (a plain HF causal LM; merged when trained with LoRA) and the critic
    train_seconds = seconds_before + time.perf_counter() - start
    save_trained(policy, tokenizer, out)
    if isinstance(value, ValueHead):
        save_file(value.state_dict(), str(out / "value_head.safetensors"))
    elif cfg.lora:
        # the value model's adapter (and head), with what `alignkit merge` needs to rebuild it
        save_adapter(value, tokenizer, out / "value", config_dir=Path(cfg.rm if cfg.value_model == "rm" else cfg.model))
    else:
        save_pretrained_atomic(value, tokenizer, out / "value")
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = history[-1]
    summary = {"steps": step, "episodes": step * cfg.rollout_batch, "reward": cfg.reward,
               "final_reward": last["ppo/reward"], "final_kl": last["ppo/kl"], "final_beta": last["ppo/beta"],
               "train_seconds": round(train_seconds, 2), "device": str(device),
               "curve": [{k.removeprefix("ppo/"): r[k] for k in ("step", "ppo/reward", "ppo/reward/rm", "ppo/gold",
                                                                  "ppo/kl") if k in r} for r in history]}
    write_json_atomic(out / "summary.json", summary)
    info(f"ppo: {step} iterations in {train_seconds:.0f}s; last reward {fmt(summary['final_reward'])}, "
         f"KL {fmt(summary['final_kl'], '.2f')}")
    return summary


# ----------------------------------------------------------------------------------------------------
# the loop's two halves

@torch.no_grad()
def rollout(cfg: PPOConfig, step: int, rows: list[dict], policy, reference, value, tokenizer, terms, beta: float,
            world) -> tuple[dict, dict]:
    """Sample, score, and turn the scores into advantages and returns; everything the updates need."""
    prompts = [render_prompt(tokenizer, as_messages(r["prompt"], "user")) for r in rows]
    t0 = time.perf_counter()
    samples = sample(policy, tokenizer, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                     batch_size=len(prompts), seed=cfg.seed * 1_000_003 + step)
    sampling_seconds = time.perf_counter() - t0
    texts = [t.strip() for t in samples.texts]
    device = next(policy.parameters()).device
    batch = {"prompt_ids": samples.prompt_ids.to(device), "prompt_mask": samples.prompt_mask.to(device),
             "completion_ids": samples.completion_ids.to(device), "completion_mask": samples.completion_mask.to(device)}
    mask = batch["completion_mask"].float()
    old_logp, old_values = logprobs_and_values(policy, value, batch, cfg.temperature, batch_size=cfg.minibatch)
    with adapters_disabled(reference if reference is not None else policy) as ref_model:
        ref_logp = completion_logprobs(ref_model, *batch.values(), temperature=cfg.temperature,
                                       batch_size=cfg.minibatch)

    scores, parts = total_reward(terms, rows, texts)
    unscorable = torch.isnan(scores)  # no reward term could score it: no reward signal beyond the KL
    scores = torch.where(unscorable, torch.zeros_like(scores), scores)
    finished = torch.tensor(samples.finished, dtype=torch.bool)
    scores = torch.where(finished, scores, scores - cfg.missing_eos_penalty).to(device)
    rewards, kl = token_rewards(old_logp, ref_logp, mask, scores, beta=beta, estimator=cfg.kl_estimator)
    if cfg.whiten_rewards:
        rewards = whiten(rewards, mask, shift_mean=False)
    advantages, returns = gae(rewards, old_values, mask, gamma=cfg.gamma, lam=cfg.lam)
    advantages = whiten(advantages, mask)

    row = {"reward": float(scores.mean()), **parts, "kl": float((kl * mask).sum(1).mean()),
           "entropy": float(-masked_mean(old_logp, mask)),  # per-token estimate −E log π on own samples
           "length": float(mask.sum(1).mean()), "finished": float(finished.float().mean()),
           "unscorable": float(unscorable.float().mean()),
           "value/explained_variance": float(explained_variance(old_values, returns, mask)),
           "seconds/sampling": sampling_seconds}
    if world is not None:
        row["gold"] = sum(world.oracle.score_prompt(r["prompt"], t) for r, t in zip(rows, texts)) / len(rows)
    roll = {**batch, "mask": mask, "old_logp": old_logp, "old_values": old_values, "advantages": advantages,
            "returns": returns}
    return roll, row


def update(cfg: PPOConfig, step: int, roll: dict, policy, value, optimizer, scheduler, ptx, ptx_order) -> dict:
    """``ppo_epochs`` passes over shuffled minibatches; returns the mean of each loss and diagnostic."""
    from alignkit.training.loop import lm_forward_loss

    policy.train()
    value.train()
    B = roll["mask"].size(0)
    generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    sums: dict[str, float] = {}
    n = 0
    for epoch in range(cfg.ppo_epochs):
        perm = torch.randperm(B, generator=generator)
        for k, start in enumerate(range(0, B, cfg.minibatch)):
            idx = perm[start:start + cfg.minibatch].to(roll["mask"].device)
            mb = trim_padding({key: v[idx] for key, v in roll.items()})
            logp, values = logprobs_and_values(policy, value, mb, cfg.temperature)
            p_loss, p_metrics = policy_loss(logp, mb["old_logp"], mb["advantages"], mb["mask"], clip_low=cfg.clip)
            v_loss, v_metrics = value_loss(values, mb["old_values"], mb["returns"], mb["mask"],
                                           clip=cfg.value_clip or None)
            loss = p_loss + cfg.vf_coef * v_loss
            metrics = {"policy/loss": p_loss, "value/loss": v_loss, **p_metrics, **v_metrics}
            if ptx is not None:
                first = ((step * cfg.ppo_epochs + epoch) * math.ceil(B / cfg.minibatch) + k) * cfg.ptx_batch
                blocks = {key: v[ptx_order.indices(first, cfg.ptx_batch)].to(logp.device) for key, v in ptx.items()}
                ptx_loss, _ = lm_forward_loss(policy, blocks, normalizer=max(1, int((blocks["labels"] != -100).sum())))
                loss = loss + cfg.ptx_coef * ptx_loss
                metrics["ptx/loss"] = ptx_loss
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable(policy) + trainable(value), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            for key, v in metrics.items():
                sums[key] = sums.get(key, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
            n += 1
    return {key: v / n for key, v in sums.items()}


def trim_padding(mb: dict) -> dict:
    """Drop the columns that are padding in every row of a minibatch: the leading ones of the
    left-padded prompts and the trailing ones of the right-padded responses (the rollout batch is
    padded to its longest response; a minibatch's longest is often shorter). Values are unchanged."""
    first = int(mb["prompt_mask"].any(dim=0).long().argmax())
    last = int(mb["completion_mask"].sum(dim=1).max())
    out = {k: v[:, first:] for k, v in mb.items() if k.startswith("prompt_")}
    out.update({k: v[:, :last] for k, v in mb.items() if not k.startswith("prompt_")})
    return out


class ValueHead(torch.nn.Module):
    """The critic on the policy's own trunk (``value_model=shared``): hidden → 1, zero at the start
    (OpenAI lm-human-preferences), so the first value estimates are 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.score = torch.nn.Linear(hidden_size, 1, bias=False)
        torch.nn.init.zeros_(self.score.weight)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.score(hidden).squeeze(-1).float()


def logprobs_and_values(policy, value, batch: dict, temperature: float,
                        batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs of the response tokens under the policy and the critic's values at the same positions,
    (B, A) each: one forward pass with a shared trunk, one per model otherwise; over micro-batches of
    ``batch_size`` rows of similar length (None: all at once)."""
    def both(*ids):
        if isinstance(value, ValueHead):
            logp, hidden = completion_logprobs_and_hidden(policy, *ids, temperature=temperature)
            return logp, value(hidden) * ids[3]
        return completion_logprobs(policy, *ids, temperature=temperature), response_values(value, *ids)

    return by_length(both, batch["prompt_ids"], batch["prompt_mask"], batch["completion_ids"],
                     batch["completion_mask"], batch_size=batch_size)


def response_values(value, prompt_ids, prompt_mask, completion_ids, completion_mask) -> torch.Tensor:
    """V(x, y_<t) at every response position: the head at the position that predicts token t; (B, A) fp32."""
    from alignkit.models.heads import scalar_outputs

    ids, _, _, col = layout(prompt_ids, prompt_mask, completion_ids, completion_mask)  # one sequence a row, no mask
    return scalar_outputs(value, ids, None).gather(1, col) * completion_mask


# ----------------------------------------------------------------------------------------------------
# data

def pretraining_blocks(data: str, world, tokenizer, block_size: int = 256) -> dict:
    """Pretraining text for PPO-ptx (the built-in world's corpus, or {text} records), tokenised and packed."""
    from alignkit.data.collators import pack_documents
    from alignkit.stages.pretrain import load_documents

    docs = world.pretraining_documents() if data == "world" and world is not None else load_documents(data)
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    try:
        return pack_documents(ids, block_size=block_size, eos_id=tokenizer.eos_token_id)
    except ValueError as e:
        raise AlignkitError(f"ptx_data={data}: {e}") from None


# ----------------------------------------------------------------------------------------------------
# checkpoints: both models' weights in one safetensors file, optimizer, scheduler and β beside it

def save_ppo_state(state_dir: Path, step: int, policy, value, optimizer, scheduler, extra: dict) -> None:
    from alignkit.training.checkpoint import save_state

    save_state(state_dir, step, model=_Pair(policy, value), optimizer=optimizer, scheduler=scheduler, extra=extra)


def load_ppo_state(path: Path, policy, value, optimizer, scheduler) -> dict:
    from alignkit.training.checkpoint import load_state

    return load_state(path, model=_Pair(policy, value), optimizer=optimizer, scheduler=scheduler)


class _Pair(torch.nn.Module):
    """Policy and value as one module, so the shared checkpoint code saves and restores both."""

    def __init__(self, policy, value):
        super().__init__()
        self.policy, self.value = policy, value

    def save_pretrained(self, path: Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        weights, seen = {}, set()
        for name, tensor in self.state_dict().items():  # a tied output head is the embedding: saved once
            if tensor.data_ptr() not in seen:
                seen.add(tensor.data_ptr())
                weights[name] = tensor.contiguous()
        save_file(weights, str(Path(path) / "model.safetensors"))

