"""The sampler's token draw against `torch.multinomial`, side by side, and a whole sampling call.

    .venv/bin/python benchmarks/sampler_draw.py [--run runs/demo] [--threads 1]

1. One draw of a token for each of B rows from a (B, V) probability matrix: `torch.multinomial(probs, 1)`
   (what `generate` does: an exponential variate per entry) against `alignkit.rollout.sampler.draw`
   (inverse CDF from one uniform per row), for the tiny preset's vocabulary and a 150k one, medians of
   alternating rounds.
2. `sample` on the run's SFT model (128 train prompts × 4 answers, batches of 256, 48 tokens at
   temperature 0.7) with the draw as it is, and with `draw` replaced by a multinomial draw from the
   same probabilities (the same loop otherwise): what the draw costs in a rollout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch


def timed(fn, repeats: int, *args) -> float:
    fn(*args)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn(*args)
    return (time.perf_counter() - t0) / repeats


def multinomial_draw(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="run dir whose sft/model to sample (part 2; skipped if absent)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from alignkit.rollout import sampler

    gen = torch.Generator().manual_seed(0)
    for B, V in ((64, 1542), (256, 1542), (64, 151_936)):
        probs = torch.softmax(torch.randn(B, V, generator=gen) * 3, dim=-1)
        u = torch.rand(B, generator=gen)
        ours, theirs = [], []
        for _ in range(args.rounds):
            theirs.append(timed(multinomial_draw, 20, probs, u))
            ours.append(timed(sampler.draw, 20, probs, u))
        a, t = statistics.median(ours), statistics.median(theirs)
        print(f"B {B:>3} × V {V:>7}: multinomial {t * 1e3:7.3f} ms, inverse CDF {a * 1e3:7.3f} ms — {t / a:5.1f}×")

    model_dir = Path(args.run) / "sft" / "model"
    if not model_dir.is_dir():
        print(f"{model_dir}: not there — part 2 skipped")
        return
    from alignkit.data.formats import as_messages
    from alignkit.data.templates import render_prompt
    from alignkit.models.load import load_model
    from alignkit.world import build_world

    model, tok = load_model(str(model_dir))
    prompts = [render_prompt(tok, as_messages(t.prompt, "user")) for t in build_world().tasks("train")[:128]
               for _ in range(4)]

    def run() -> None:
        sampler.sample(model, tok, prompts, max_new_tokens=48, temperature=0.7, batch_size=256, seed=0)

    ours, theirs = [], []
    original = sampler.draw
    for _ in range(args.rounds):
        ours.append(timed(run, 1))
        sampler.draw = multinomial_draw
        try:
            theirs.append(timed(run, 1))
        finally:
            sampler.draw = original
    a, t = statistics.median(ours), statistics.median(theirs)
    print(f"sample(), 512 prompts: multinomial draw {t:.2f} s, inverse CDF {a:.2f} s — {t / a:.2f}× "
          f"(medians of {args.rounds} alternating rounds)")


if __name__ == "__main__":
    main()
