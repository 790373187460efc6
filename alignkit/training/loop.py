"""The one optimisation loop every supervised stage uses (pretrain, SFT; later RM and DPO).

A stage supplies ``micro_batches(step)`` — the micro-batches of optimizer step ``step``, a pure
function of the step so that a resumed run sees exactly the data an uninterrupted one would — and
``evaluate()``. The loop does gradient accumulation normalised by the step's global count of what the
loss averages over (target tokens for language modelling, prompts for the reward model), clipping, the
LR schedule, metrics.jsonl, the progress bar and atomic, resumable checkpoints.

``loss_fn(model, micro_batch, normalizer) -> (loss, metrics)`` returns this micro-batch's share of the
step's loss (its sum divided by the step's ``normalizer``), so the shares add up to the step's mean;
``metrics["log"]``, if present, holds more such shares (e.g. accuracy), summed and logged the same way.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignkit.losses.lm import causal_lm_loss, count_targets
from alignkit.training.checkpoint import latest_state, load_state, save_state
from alignkit.training.logging import MetricsLog, info, progress_bar


@dataclass
class LoopResult:
    step: int                 # optimizer steps done
    tokens_seen: int          # input tokens processed (all positions of all micro-batches)
    train_seconds: float      # wall time spent in this stage's loop, summed over resumed segments
    last_eval: dict           # metrics of the final evaluation
    stopped_early: bool       # True when ``stop_after`` interrupted the run (tests simulate a crash)


def lm_forward_loss(model: torch.nn.Module, batch: dict, normalizer: float) -> tuple[torch.Tensor, dict]:
    """Causal-LM loss of one micro-batch: ``input_ids``, ``labels``, optional ``position_ids`` /
    ``attention_mask``; divided by the whole step's target count."""
    inputs = {k: batch[k] for k in ("input_ids", "position_ids", "attention_mask") if k in batch}
    # No KV cache: with one, transformers would not turn packed position_ids into a block-diagonal mask.
    logits = model(**inputs, use_cache=False).logits
    return causal_lm_loss(logits, batch["labels"], normalizer=normalizer)


@torch.no_grad()
def mean_nll(model: torch.nn.Module, batches: Iterable[dict], device: torch.device) -> float:
    """Mean NLL per target token over ``batches`` (held-out loss; exp of it is the perplexity)."""
    model.eval()
    nll, count = 0.0, 0
    for batch in batches:
        _, m = lm_forward_loss(model, {k: v.to(device) for k, v in batch.items()}, normalizer=1.0)
        nll += float(m["nll_sum"])
        count += int(m["n_tokens"])
    return nll / max(1, count)


def train_loop(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
               micro_batches: Callable[[int], list[dict]], evaluate: Callable[[], dict], cfg: Any,
               out_dir: Path, prefix: str, device: torch.device,
               loss_fn: Callable = lm_forward_loss, count_fn: Callable[[dict], int] | None = None,
               stop_after: int | None = None) -> LoopResult:
    """Train ``model`` for ``cfg.max_steps`` optimizer steps (``cfg`` also gives grad_clip, eval_every,
    save_every, resume, progress, dtype). ``count_fn(micro_batch)`` gives the micro-batch's summand of the
    step's normalizer (default: its target tokens). Writes ``out_dir/metrics.jsonl`` and ``out_dir/state/``."""
    count_fn = count_fn or (lambda mb: count_targets(mb["labels"]))
    state_dir = out_dir / "state"
    step, tokens_seen, seconds_before = 0, 0, 0.0
    ckpt = latest_state(state_dir) if cfg.resume else None
    if ckpt is not None:
        saved = load_state(ckpt, model=model, optimizer=optimizer, scheduler=scheduler)
        step, tokens_seen, seconds_before = saved["step"], saved["tokens_seen"], saved["train_seconds"]
        info(f"{prefix}: resuming from {ckpt} (step {step})")
    metrics_log = MetricsLog(out_dir / "metrics.jsonl", resume_step=step if ckpt else None)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if cfg.dtype == "bfloat16"
                else contextlib.nullcontext())

    model.train()
    start = time.perf_counter()
    last_eval: dict = {}
    with progress_bar(cfg.progress) as bar:
        task = bar.add_task(prefix, total=cfg.max_steps, completed=step, info="")
        while step < cfg.max_steps:
            if stop_after is not None and step >= stop_after:
                return LoopResult(step, tokens_seen, seconds_before + time.perf_counter() - start, last_eval, True)
            t0 = time.perf_counter()
            batches = [{k: v.to(device) for k, v in mb.items()} for mb in micro_batches(step)]
            normalizer = max(1, sum(count_fn(mb) for mb in batches))
            step_loss, logged = 0.0, {}
            for mb in batches:
                with autocast:
                    loss, m = loss_fn(model, mb, normalizer)
                loss.backward()
                step_loss += float(loss.detach())
                for k, v in m.get("log", {}).items():
                    logged[k] = logged.get(k, 0.0) + float(v)
                tokens_seen += mb["input_ids"].numel()
            grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0
                         else _grad_norm(model))
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            dt = time.perf_counter() - t0
            n_tok = sum(mb["input_ids"].numel() for mb in batches)
            row = {f"{prefix}/loss": step_loss, **{f"{prefix}/{k}": v for k, v in logged.items()}, f"{prefix}/lr": lr,
                   f"{prefix}/grad_norm": float(grad_norm), f"{prefix}/tokens_per_s": n_tok / dt,
                   f"{prefix}/tokens_seen": tokens_seen}
            if step % cfg.eval_every == 0 or step == cfg.max_steps:
                last_eval = evaluate()
                model.train()
                row.update(last_eval)
            metrics_log.log(step, row)
            bar.update(task, completed=step,
                       info=f"loss {row[f'{prefix}/loss']:.3f}  {n_tok / dt:,.0f} tok/s")
            if step % cfg.save_every == 0 or step == cfg.max_steps:
                save_state(state_dir, step, model=model, optimizer=optimizer,
                           scheduler=scheduler,
                           extra={"tokens_seen": tokens_seen,
                                  "train_seconds": seconds_before + time.perf_counter() - start})
    return LoopResult(step, tokens_seen, seconds_before + time.perf_counter() - start, last_eval, False)


def _grad_norm(model: torch.nn.Module) -> torch.Tensor:
    grads = [p.grad.norm() for p in model.parameters() if p.grad is not None]
    return torch.stack(grads).norm() if grads else torch.tensor(0.0)
