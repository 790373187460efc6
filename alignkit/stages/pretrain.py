"""Pretraining: next-token prediction from scratch on packed documents.

    L(θ) = -(1/N) Σ_docs Σ_t log p_θ(x_t | x_<t)        (N = target tokens of the optimizer step)

Documents are separated by EOS and packed into ``block_size`` rows with no cross-document attention
(position ids restart per document; see ``alignkit/data/collators.py``). AdamW, linear warm-up then
cosine decay, gradient accumulation normalised by the step's global token count, gradient clipping,
held-out loss/perplexity every ``eval_every`` steps, atomic checkpoints and exact resume.

Deliberate simplifications: the whole tokenised corpus is held in memory (fine up to ~10^8 tokens),
one process (the data order is a pure function of the step, so sharding by rank is a slice away).

    alignkit pretrain --config alignkit/configs/tiny/pretrain.yaml out=runs/mine/pretrain
    alignkit pretrain data=corpus.jsonl tokenizer=runs/demo/tokenizer max_steps=500 resume=true
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch

from alignkit.config import PretrainConfig, TokenizerConfig, dump_yaml
from alignkit.data.collators import pack_documents
from alignkit.errors import AlignkitError
from alignkit.models.load import check_tokenizer_fits, count_params
from alignkit.models.lora import maybe_lora, save_trained
from alignkit.models.tokenizer import save_tokenizer
from alignkit.training.checkpoint import write_json_atomic
from alignkit.training.logging import info
from alignkit.training.loop import lm_forward_loss, mean_nll, train_loop
from alignkit.training.optim import build_optimizer, build_scheduler
from alignkit.training.order import EpochOrder
from alignkit.training.setup import begin_training, check_length_fits, open_out_dir, resolve_device


def run(cfg: PretrainConfig, *, stop_after: int | None = None) -> dict:
    """Pretrain as ``cfg`` says; returns (and writes) the stage summary. ``stop_after`` stops after that
    many optimizer steps as a crash would (used by the resume test)."""
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    if cfg.lora and not cfg.model:
        raise AlignkitError("lora=true adapts an existing model: pass model=DIR (continued pretraining), or drop lora")
    docs = load_documents(cfg.data)  # bad data fails here, before anything is written
    begin_training(out, cfg)

    # 1. data: documents → tokenizer → packed blocks, train / held-out split by document
    model, tokenizer = _model_and_tokenizer(cfg, docs, device)
    check_length_fits(model, "block_size", cfg.block_size)
    if not cfg.model:  # a new model: its tokenizer must survive the save at the end
        check_tokenizer_fits(model, tokenizer)
    if tokenizer.eos_token_id is None:
        raise AlignkitError("the tokenizer has no eos token, which pretraining puts between documents; give it one "
                            "(eos_token in tokenizer_config.json)")
    train_blocks, heldout_blocks = _tokenize_and_pack(docs, tokenizer, cfg)
    model = maybe_lora(model, cfg)
    open_out_dir(out, cfg)
    if not cfg.model and not cfg.tokenizer:  # the BPE trained on the corpus
        save_tokenizer(tokenizer, out / "tokenizer")
    info(f"pretrain: {len(docs)} documents → {len(train_blocks['input_ids'])} train / "
         f"{len(heldout_blocks['input_ids'])} held-out blocks of {cfg.block_size} tokens")
    dump_yaml(cfg, out / "config.yaml")

    # 2. optimisation: one shared loop; the data of step s is a pure function of s (exact resume)
    optimizer = build_optimizer(model, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, warmup_steps=cfg.warmup_steps, max_steps=cfg.max_steps,
                                min_lr_ratio=cfg.min_lr_ratio)
    order = EpochOrder(len(train_blocks["input_ids"]), seed=cfg.seed)

    def micro_batches(step: int) -> list[dict]:
        first = step * cfg.batch_size * cfg.grad_accum
        return [_take(train_blocks, order.indices(first + i * cfg.batch_size, cfg.batch_size))
                for i in range(cfg.grad_accum)]

    def evaluate() -> dict:
        n = len(heldout_blocks["input_ids"])
        starts = range(0, min(n, cfg.batch_size * cfg.eval_batches), cfg.batch_size)
        loss = mean_nll(model, (_take(heldout_blocks, torch.arange(s, min(n, s + cfg.batch_size))) for s in starts),
                        device)
        return {"pretrain/heldout_loss": loss, "pretrain/heldout_ppl": math.exp(loss)}

    result = train_loop(model=model, optimizer=optimizer, scheduler=scheduler,
                        micro_batches=micro_batches, evaluate=evaluate, cfg=cfg, out_dir=out, prefix="pretrain",
                        device=device, loss_fn=lm_forward_loss, stop_after=stop_after)
    if result.stopped_early:
        return {}

    # 3. artifacts: the HF checkpoint and summary.json
    save_trained(model, tokenizer, out)
    final = result.last_eval or evaluate()
    summary = {
        "heldout_loss": final["pretrain/heldout_loss"],
        "heldout_ppl": final["pretrain/heldout_ppl"],
        "vocab_size": len(tokenizer),
        "uniform_ppl": len(tokenizer),
        "tokens_seen": result.tokens_seen,
        "params": count_params(model),
        "train_seconds": round(result.train_seconds, 2),
        "steps": result.step,
        "train_blocks": len(train_blocks["input_ids"]),
        "block_size": cfg.block_size,
        "device": str(device),
    }
    write_json_atomic(out / "summary.json", summary)
    info(f"pretrain: held-out loss {summary['heldout_loss']:.3f}, perplexity {summary['heldout_ppl']:.2f} "
         f"(uniform {summary['vocab_size']}), {summary['tokens_seen']:,} tokens in {summary['train_seconds']:.0f}s")
    return summary


def load_documents(data: str) -> list[str]:
    """``world`` → the built-in world's corpus (default world config); else a file/dir of {text} records."""
    if data == "world":
        from dataclasses import asdict

        from alignkit.config import WorldConfig
        from alignkit.world import build_world
        docs = build_world(**asdict(WorldConfig())).pretraining_documents()
    else:
        from alignkit.data.sources import load_records
        docs = [r["text"] for r in load_records(data, "text")]
    if not docs:
        raise AlignkitError(f"{data}: the corpus is empty")
    return docs


def _model_and_tokenizer(cfg: PretrainConfig, docs: list[str], device: torch.device):
    from alignkit.models.load import build_config, load_model, new_model
    from alignkit.models.tokenizer import load_tokenizer, train_tokenizer

    if cfg.model:
        return load_model(cfg.model, device=str(device))
    if cfg.tokenizer:
        tokenizer = load_tokenizer(cfg.tokenizer)
    else:
        tcfg = TokenizerConfig()
        info(f"pretrain: no tokenizer given; training a {tcfg.vocab_size}-token BPE on the corpus")
        tokenizer = train_tokenizer(docs, vocab_size=tcfg.vocab_size, min_frequency=tcfg.min_frequency)
    model = new_model(build_config(cfg.arch, cfg.size, tokenizer), seed=cfg.seed)
    return model.to(device), tokenizer


def _tokenize_and_pack(docs: list[str], tokenizer, cfg: PretrainConfig) -> tuple[dict, dict]:
    t0 = time.perf_counter()
    ids = tokenizer(docs, add_special_tokens=False)["input_ids"]
    order = list(range(len(docs)))
    random.Random(cfg.seed).shuffle(order)
    n_heldout = max(1, round(len(docs) * cfg.heldout_fraction))
    heldout = set(order[:n_heldout])
    eos = tokenizer.eos_token_id
    splits = {"train": [ids[i] for i in range(len(ids)) if i not in heldout],
              "held-out": [ids[i] for i in sorted(heldout)]}
    packed = {}
    for name, split in splits.items():
        try:
            packed[name] = pack_documents(split, block_size=cfg.block_size, eos_id=eos)
        except ValueError as e:
            raise AlignkitError(f"{cfg.data}: the {name} split ({len(split)} of {len(docs)} documents, "
                                f"heldout_fraction={cfg.heldout_fraction}): {e} (lower block_size, change "
                                "heldout_fraction or add data)") from None
    train, held = packed["train"], packed["held-out"]
    info(f"pretrain: tokenised {sum(map(len, ids)):,} tokens in {time.perf_counter() - t0:.1f}s")
    return train, held


def _take(blocks: dict, idx: torch.Tensor) -> dict:
    return {k: v[idx] for k, v in blocks.items()}
