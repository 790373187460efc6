"""Supervised fine-tuning (instruction tuning): the base model learns to answer as the assistant.

    L(θ) = -(1/N) Σ_(x,y) Σ_t log π_θ(y_t | x, y_<t)      (N = assistant tokens of the optimizer step)

Each conversation is rendered with the tokenizer's chat template (our documented default for
tokenizers without one) and only assistant tokens are targets: system and user turns and the role
headers are masked, the end-of-turn token closing each assistant turn is trained (so the model learns
to stop), and every assistant turn of a multi-turn conversation is trained (InstructGPT §3.5,
arXiv 2203.02155; masking as in ``alignkit/data/templates.py``). Same engine as pretraining:
gradient accumulation normalised by the step's assistant-token count, warm-up + cosine, metrics.jsonl,
atomic checkpoints, exact resume. ``pack=true`` packs the examples of a micro-batch into as few rows
as fit, with position ids restarting per example (no attention across examples).

Deliberate simplifications: the tokenised dataset is held in memory; examples longer than
``max_length`` are truncated at the end.

    alignkit sft model=runs/demo/pretrain/model out=runs/mine/sft
    alignkit sft model=my-hf-model data=chats.jsonl out=runs/mine/sft epochs=2 pack=true
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from alignkit.config import SFTConfig, dump_yaml
from alignkit.data.collators import pack_examples, pad_examples
from alignkit.data.formats import to_messages
from alignkit.data.templates import each_record, render_chat
from alignkit.errors import AlignkitError
from alignkit.models.lora import maybe_lora, save_trained
from alignkit.training.checkpoint import write_json_atomic
from alignkit.training.logging import info
from alignkit.training.loop import lm_forward_loss, mean_nll, train_loop
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.order import EpochOrder, split_heldout, steps_for
from alignkit.training.setup import begin_training, check_length_fits, open_out_dir, resolve_device


def run(cfg: SFTConfig, *, stop_after: int | None = None) -> dict:
    """Fine-tune ``cfg.model`` on ``cfg.data``; returns (and writes) the stage summary."""
    from alignkit.models.load import load_model

    if not cfg.model:
        raise AlignkitError("sft needs model=DIR (a Hugging Face causal-LM directory, e.g. runs/demo/pretrain/model)")
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    records = load_conversations(cfg.data)  # bad data fails here, before anything is written
    model, tokenizer = load_model(cfg.model, device=str(device))
    check_length_fits(model, "max_length", cfg.max_length)
    begin_training(out, cfg)
    model = maybe_lora(model, cfg)

    # 1. data: conversations → chat template → ids + assistant-only labels; train / validation split
    examples = each_record(records, cfg.data, lambda r: render_chat(tokenizer, to_messages(r), max_length=cfg.max_length))
    kept = [e for e in examples if any(label >= 0 for label in e["labels"])]
    if len(kept) < len(examples):
        info(f"sft: {len(examples) - len(kept)} of {len(examples)} examples dropped: no assistant token within "
             f"max_length={cfg.max_length}")
    examples = kept
    if len(examples) < 2:
        raise AlignkitError(f"{cfg.data}: fewer than 2 examples with assistant tokens within max_length")
    train, val = split_heldout(examples, cfg.heldout_fraction, seed=cfg.seed)
    per_step = cfg.batch_size * cfg.grad_accum
    steps = steps_for(cfg, len(train))
    cfg = replace(cfg, max_steps=steps)
    n_targets = sum(sum(label >= 0 for label in e["labels"]) for e in train)
    info(f"sft: {len(train)} train / {len(val)} validation examples, {n_targets:,} assistant tokens; {steps} steps")
    open_out_dir(out, cfg)
    dump_yaml(cfg, out / "config.yaml")

    # 2. optimisation on the shared loop
    pad_id = tokenizer.pad_token_id
    collate = ((lambda b: pack_examples(b, max_length=cfg.max_length, pad_id=pad_id)) if cfg.pack
               else (lambda b: pad_examples(b, pad_id=pad_id)))
    stream = EpochOrder(len(train), seed=cfg.seed)

    def micro_batches(step: int) -> list[dict]:
        first = step * per_step
        return [collate([train[int(i)] for i in stream.indices(first + k * cfg.batch_size, cfg.batch_size)])
                for k in range(cfg.grad_accum)]

    def evaluate() -> dict:
        starts = range(0, min(len(val), cfg.batch_size * cfg.eval_batches), cfg.batch_size)
        loss = mean_nll(model, (collate(val[s:s + cfg.batch_size]) for s in starts), device)
        return {"sft/val_loss": loss}

    model.config.use_cache = False
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, warmup_steps=cfg.warmup_steps, max_steps=steps,
                                min_lr_ratio=cfg.min_lr_ratio)
    result = train_loop(model=model, optimizer=optimizer, scheduler=scheduler, micro_batches=micro_batches,
                        evaluate=evaluate, cfg=cfg, out_dir=out, prefix="sft", device=device,
                        loss_fn=lm_forward_loss, stop_after=stop_after)
    if result.stopped_early:
        return {}

    # 3. artifacts
    model.config.use_cache = True
    save_trained(model, tokenizer, out)
    final = result.last_eval or evaluate()
    summary = {
        "val_loss": final["sft/val_loss"],
        "train_examples": len(train),
        "assistant_tokens": n_targets,
        "epochs": round(result.step * per_step / len(train), 2),
        "steps": result.step,
        "tokens_seen": result.tokens_seen,
        "train_seconds": round(result.train_seconds, 2),
        "device": str(device),
    }
    write_json_atomic(out / "summary.json", summary)
    info(f"sft: validation loss {summary['val_loss']:.3f} after {steps} steps in {summary['train_seconds']:.0f}s")
    return summary


def load_conversations(data: str) -> list[dict]:
    """``world`` → the built-in world's demonstrations (default world config); else chat records."""
    if data == "world":
        from dataclasses import asdict

        from alignkit.config import WorldConfig
        from alignkit.world import build_world
        return build_world(**asdict(WorldConfig())).sft_records()
    from alignkit.data.sources import load_records
    return load_records(data, "chat")
