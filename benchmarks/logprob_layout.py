"""Milliseconds per log-probability pass: the batch as it is stored against alignkit's layout.

A rollout batch is stored with each prompt left-padded to the longest prompt and each response
right-padded to the longest response. The straightforward pass reads it that way, less the columns
that are padding in every row (attention mask, position ids counted over real tokens, logits at every
position); `completion_logprobs` lays each
sequence out from position 0 and packs short ones together (`alignkit.models.logprobs.layout`). Both
run on the same rollouts — the policy's own samples of the world's train prompts, 64 per batch,
48-token responses at temperature 0.7 — as PPO uses them: a minibatch of 16 rollouts with its backward
pass, and a no-gradient pass over 64 (the straightforward one all at once, alignkit's in micro-batches
of 16 by length, as PPO's rollout passes run). The two are timed in alternating rounds; medians are
printed, with the largest difference between their log-probs.

    .venv/bin/python benchmarks/logprob_layout.py [--run runs/demo] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

BATCH, MINIBATCH, LENGTH, TEMPERATURE = 64, 16, 48, 0.7


def padded_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature: float):
    """The batch as stored: one forward pass over [left-padded prompt | right-padded completion], less
    the columns that are padding in every row (a minibatch's longest prompt and response are often
    shorter than its batch's); the log-probs of the cut columns are 0, as those of any padding."""
    from alignkit.stages.ppo import trim_padding

    width = completion_ids.size(1)
    names = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
    trimmed = trim_padding(dict(zip(names, (prompt_ids, prompt_mask, completion_ids, completion_mask))))
    prompt_ids, prompt_mask, completion_ids, completion_mask = (trimmed[k] for k in names)
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1).long()
    logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(dim=1) - 1).clamp(min=0),
                   use_cache=False).logits
    P, A = prompt_ids.size(1), completion_ids.size(1)
    logits = logits[:, P - 1:P - 1 + A].float() / temperature
    logps = logits.gather(-1, completion_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    logps = torch.where(completion_mask.bool(), logps, torch.zeros_like(logps))
    return torch.cat([logps, logps.new_zeros(logps.size(0), width - A)], dim=1)


def rollouts(model, tokenizer, batches: int) -> list[tuple]:
    from alignkit.data.formats import as_messages
    from alignkit.data.templates import render_prompt
    from alignkit.rollout.sampler import sample
    from alignkit.world import build_world

    tasks = build_world().tasks("train")
    out = []
    for b in range(batches):
        prompts = [render_prompt(tokenizer, as_messages(t.prompt, "user")) for t in tasks[b::batches][:BATCH]]
        s = sample(model, tokenizer, prompts, max_new_tokens=LENGTH, temperature=TEMPERATURE, batch_size=BATCH, seed=b)
        out.append((s.prompt_ids, s.prompt_mask, s.completion_ids, s.completion_mask))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="run dir whose sft/model to use (else a tiny random model)")
    parser.add_argument("--batches", type=int, default=4, help="rollout batches of 64")
    parser.add_argument("--rounds", type=int, default=7, help="alternating timing rounds")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from alignkit.models.load import build_config, load_model, new_model, save_model
    from alignkit.models.logprobs import completion_logprobs

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.run) / "sft" / "model"
        if not path.is_dir():
            from alignkit.models.tokenizer import train_tokenizer
            from alignkit.world import build_world

            tokenizer = train_tokenizer(build_world().pretraining_documents()[:2000], vocab_size=1024)
            path = Path(tmp) / "policy"
            save_model(new_model(build_config("llama", "tiny", tokenizer), seed=0), tokenizer, path)
        model, tokenizer = load_model(path)
    model.eval()
    data = rollouts(model, tokenizer, args.batches)
    passes = {
        "stored layout": (lambda b, bs: padded_logprobs(model, *b, TEMPERATURE), None),
        "alignkit layout": (lambda b, bs: completion_logprobs(model, *b, temperature=TEMPERATURE, batch_size=bs),
                            MINIBATCH),
    }
    with torch.no_grad():
        diff = max(float((passes["stored layout"][0](b, None) - passes["alignkit layout"][0](b, MINIBATCH)).abs().max())
                   for b in data)
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for name, (fn, bs) in passes.items():
            t = time.perf_counter()
            with torch.no_grad():
                for b in data:
                    fn(b, bs)
            times.setdefault((name, "no-gradient pass over 64 rollouts"), []).append((time.perf_counter() - t) / len(data))
            t = time.perf_counter()
            for b in data:
                for start in range(0, BATCH, MINIBATCH):
                    model.zero_grad(set_to_none=True)
                    fn(tuple(x[start:start + MINIBATCH] for x in b), None).sum().backward()
            times.setdefault((name, "forward + backward, minibatch of 16"), []).append(
                (time.perf_counter() - t) / (len(data) * BATCH // MINIBATCH))
    real = sum(int(b[1].sum() + b[3].sum()) for b in data)
    stored = sum(b[0].numel() + b[2].numel() for b in data)
    print(f"model: {path}; {len(data)} batches of {BATCH} rollouts: {real} real tokens in {stored} positions")
    for what in ("forward + backward, minibatch of 16", "no-gradient pass over 64 rollouts"):
        a, b = (statistics.median(times[(name, what)]) * 1000 for name in passes)
        print(f"{what}: stored {a:.1f} ms, alignkit {b:.1f} ms ({a / b:.2f}x; medians of {args.rounds} rounds)")
    print(f"largest difference between the two passes' log-probs: {diff:.1e}")


if __name__ == "__main__":
    main()
