"""Seconds per GRPO step: alignkit's GRPO against TRL 1.12's GRPOTrainer, side by side, and the share of
each step spent generating.

Same policy (a run's SFT model, or a tiny random one), same prompts (the world's arithmetic train
prompts), same reward (``alignkit.world.checkers:arithmetic``), G = 4 responses for each of 16 prompts
per step, 48-token responses at temperature 0.7, β = 0.04 with a reference model, one optimisation pass
per step, no activation checkpointing, generation stopping at the end of the chat turn, CPU. Each trainer runs ``--steps`` steps after one warm-up step; medians are compared. TRL is
not a dependency of alignkit; install it beside the project for this script only:

    .venv/bin/pip install --no-deps --target /tmp/bench-trl trl==1.12.0
    PYTHONPATH=/tmp/bench-trl .venv/bin/python benchmarks/grpo_vs_trl.py [--run runs/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

G, PROMPTS, LENGTH, TEMPERATURE, BETA = 4, 16, 48, 0.7, 0.04
REWARD = "alignkit.world.checkers:arithmetic"


def policy_dir(run: Path, root: Path) -> Path:
    if (run / "sft" / "model").is_dir():
        return run / "sft" / "model"
    from alignkit.models.load import build_config, new_model, save_model
    from alignkit.models.tokenizer import train_tokenizer
    from alignkit.world import build_world

    tokenizer = train_tokenizer(build_world().pretraining_documents()[:2000], vocab_size=1024)
    save_model(new_model(build_config("llama", "tiny", tokenizer), seed=0), tokenizer, root / "policy")
    return root / "policy"


def alignkit_seconds(policy: Path, root: Path, steps: int) -> tuple[list[float], list[float]]:
    from alignkit.config import GRPOConfig
    from alignkit.stages import grpo

    cfg = GRPOConfig(model=str(policy), reward=REWARD, categories=["arithmetic"], out=str(root / "alignkit"),
                     group_size=G, prompts_per_step=PROMPTS, max_new_tokens=LENGTH, temperature=TEMPERATURE,
                     beta=BETA, steps=steps + 1, save_every=10_000, progress=False, device="cpu")
    grpo.run(cfg)
    rows = [json.loads(line) for line in (root / "alignkit" / "metrics.jsonl").read_text().splitlines()][1:]
    return [r["grpo/seconds"] for r in rows], [r["grpo/seconds/sampling"] for r in rows]


def trl_seconds(policy: Path, root: Path, steps: int) -> list[float]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from alignkit.world import build_world
    from alignkit.world.checkers import arithmetic

    tokenizer = AutoTokenizer.from_pretrained(str(policy), padding_side="left")
    tasks = build_world().tasks("train", ["arithmetic"])
    data = Dataset.from_dict({
        "prompt": [tokenizer.apply_chat_template([{"role": "user", "content": t.prompt}], tokenize=False,
                                                 add_generation_prompt=True) for t in tasks],
        "answer": [t.answer for t in tasks], "category": [t.category for t in tasks]})

    def reward(prompts, completions, answer, category, **_):
        return arithmetic(prompts, completions, answer=answer, category=category)

    model = AutoModelForCausalLM.from_pretrained(str(policy), local_files_only=True, dtype=torch.float32)
    # stop at the chat turn's end as alignkit does (TRL stops at the tokenizer's EOS otherwise), and no
    # activation checkpointing (TRL's default recomputes the forward pass in the backward)
    args = GRPOConfig(output_dir=str(root / "trl"), per_device_train_batch_size=G * PROMPTS, num_generations=G,
                      gradient_accumulation_steps=1, max_completion_length=LENGTH, temperature=TEMPERATURE,
                      beta=BETA, max_steps=steps + 1, report_to="none", save_strategy="no", logging_steps=10_000,
                      use_cpu=True, learning_rate=1e-5, seed=0, loss_type="grpo", gradient_checkpointing=False,
                      generation_kwargs={"eos_token_id": model.generation_config.eos_token_id})
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data, processing_class=tokenizer,
                          callbacks=[Clock()])
    trainer.train()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="run dir whose sft/model to use")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per trainer (after a warm-up)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the two trainers, one after the other; the median of the rounds' ratios "
                             "is reported (a shared machine's speed drifts within minutes)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for both trainers (0: torch's default)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("TRL is not importable; see the instructions at the top of this file")
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy = policy_dir(Path(args.run), root)
        print(f"model: {policy}")
        for r in range(args.repeats):
            work = root / f"round-{r}"
            work.mkdir()
            ours, sampling = alignkit_seconds(policy, work, args.steps)
            theirs = trl_seconds(policy, work, args.steps)
            a, t = statistics.median(ours), statistics.median(theirs)
            ratios.append(t / a)
            print(f"round {r + 1} of {args.repeats}:")
            print(f"  alignkit: {a:.2f} s per step (median of {len(ours)}: {', '.join(f'{x:.2f}' for x in ours)}); "
                  f"generation {sum(sampling) / sum(ours):.0%} of the step")
            print(f"  TRL 1.12: {t:.2f} s per step (median of {len(theirs)}: {', '.join(f'{x:.2f}' for x in theirs)})")
            print(f"  TRL / alignkit: {t / a:.2f}x")
    if args.repeats > 1:
        print(f"TRL / alignkit, median of {len(ratios)} rounds: {statistics.median(ratios):.2f}x "
              f"(rounds: {', '.join(f'{x:.2f}' for x in sorted(ratios))})")


if __name__ == "__main__":
    main()
