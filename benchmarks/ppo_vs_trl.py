"""Seconds per PPO iteration: alignkit's PPO against TRL 1.12's experimental PPOTrainer, side by side.

Same policy, reward model and value model (a run's SFT and reward model, or tiny random ones), same
prompts, same batch (64 rollouts per iteration, minibatches of 16, 2 PPO epochs), same response length
(48 tokens, temperature 0.7), same device (alignkit also with the value head on the policy's trunk);
each trainer runs ``--iterations`` iterations after one warm-up iteration, and the median seconds per
iteration are compared. TRL is not a dependency of
alignkit; install it beside the project for this script only:

    .venv/bin/pip install --no-deps --target /tmp/bench-trl trl==1.12.0
    PYTHONPATH=/tmp/bench-trl .venv/bin/python benchmarks/ppo_vs_trl.py [--run runs/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

BATCH, MINIBATCH, EPOCHS, LENGTH, TEMPERATURE = 64, 16, 2, 48, 0.7


def models(run: Path | None, root: Path) -> tuple[Path, Path]:
    """(policy dir, reward-model dir): the run's SFT and reward model, or tiny random ones.

    The run's reward model is copied without its prior (``reward_prior`` in config.json, the SFT model's
    surprise added to the head): TRL loads the directory as a plain sequence-classification model and
    scores with the head alone, so alignkit must score with the same head for the two to do the same work.
    """
    if run is not None and (run / "sft" / "model").is_dir() and (run / "rm" / "model").is_dir():
        from alignkit.models.heads import PRIOR_KEY

        shutil.copytree(run / "rm" / "model", root / "rm")
        config = json.loads((root / "rm" / "config.json").read_text())
        config.pop(PRIOR_KEY, None)
        (root / "rm" / "config.json").write_text(json.dumps(config, indent=2))
        return run / "sft" / "model", root / "rm"
    from alignkit.models.heads import new_scalar_model
    from alignkit.models.load import build_config, new_model, save_model
    from alignkit.models.tokenizer import train_tokenizer
    from alignkit.world import build_world

    tokenizer = train_tokenizer(build_world().pretraining_documents()[:2000], vocab_size=1024)
    save_model(new_model(build_config("llama", "tiny", tokenizer), seed=0), tokenizer, root / "policy")
    rm, rm_tok = new_scalar_model(root / "policy", seed=1)
    rm.save_pretrained(root / "rm")
    rm_tok.save_pretrained(root / "rm")
    return root / "policy", root / "rm"


def prompts(n: int) -> list[str]:
    from alignkit.world import build_world

    return [t.prompt for t in build_world().tasks("train")[:n]]


def alignkit_seconds(policy: Path, rm: Path, root: Path, iterations: int, value_model: str = "rm") -> list[float]:
    from alignkit.config import PPOConfig
    from alignkit.data.sources import write_jsonl
    from alignkit.stages import ppo

    write_jsonl(root / "prompts.jsonl", [{"prompt": p} for p in prompts(BATCH * (iterations + 1))])
    out = root / f"alignkit-{value_model}"
    cfg = PPOConfig(model=str(policy), rm=str(rm), prompts=str(root / "prompts.jsonl"), out=str(out),
                    value_model=value_model,
                    rollout_batch=BATCH, minibatch=MINIBATCH, ppo_epochs=EPOCHS, max_new_tokens=LENGTH,
                    temperature=TEMPERATURE, steps=iterations + 1, save_every=10_000, progress=False, device="cpu")
    ppo.run(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["ppo/seconds"] for r in rows[1:]]


def trl_seconds(policy: Path, rm: Path, root: Path, iterations: int) -> list[float]:
    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(policy), padding_side="left")
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in prompts(BATCH * (iterations + 1))]
    data = Dataset.from_dict({"input_ids": [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]})
    args = PPOConfig(output_dir=str(root / "trl"), per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
                     num_mini_batches=BATCH // MINIBATCH, num_ppo_epochs=EPOCHS, response_length=LENGTH,
                     temperature=TEMPERATURE, total_episodes=BATCH * (iterations + 1), stop_token="eos",
                     local_rollout_forward_batch_size=BATCH, num_sample_generations=0, report_to="none",
                     save_strategy="no", logging_steps=10_000, use_cpu=True, learning_rate=1e-5, seed=0)
    stamps: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *a, **k):
            stamps.append(time.perf_counter())

    load = dict(local_files_only=True, dtype=torch.float32)
    trainer = PPOTrainer(args=args, processing_class=tokenizer,
                         model=AutoModelForCausalLM.from_pretrained(str(policy), **load),
                         ref_model=AutoModelForCausalLM.from_pretrained(str(policy), **load),
                         reward_model=AutoModelForSequenceClassification.from_pretrained(str(rm), num_labels=1, **load),
                         value_model=AutoModelForSequenceClassification.from_pretrained(str(rm), num_labels=1, **load),
                         train_dataset=data, callbacks=[Clock()])
    trainer.train()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="run dir whose sft/model and rm/model to use")
    parser.add_argument("--iterations", type=int, default=5, help="timed iterations per trainer (after a warm-up)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="rounds of the three trainers, one after the other; each round gives its own ratios, "
                             "and their median is reported (a shared machine's speed drifts by tens of percent "
                             "within minutes: ratios within a round are steadier than times across rounds)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads for both trainers (0: torch's default, one per core; `alignkit run` "
                             "gives each of its side-by-side jobs one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        import trl  # noqa: F401
    except ImportError:
        sys.exit("TRL is not importable; see the instructions at the top of this file")
    names = ("alignkit, value model from the RM (as TRL)", "alignkit, value head on the policy (shared)", "TRL 1.12")
    ratios: dict[str, list[float]] = {name: [] for name in names[:2]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy, rm = models(Path(args.run), root)
        print(f"model: {policy}")
        for r in range(args.repeats):
            work = root / f"round-{r}"
            work.mkdir()
            times = (alignkit_seconds(policy, rm, work, args.iterations),
                     alignkit_seconds(policy, rm, work, args.iterations, value_model="shared"),
                     trl_seconds(policy, rm, work, args.iterations))
            t = statistics.median(times[2])
            print(f"round {r + 1} of {args.repeats}:")
            for name, seconds in zip(names, times):
                m = statistics.median(seconds)
                line = f"  {name}: {m:.2f} s per iteration (median of {len(seconds)}: {', '.join(f'{x:.2f}' for x in seconds)})"
                if name in ratios:
                    ratios[name].append(t / m)
                    line += f"; TRL / this: {t / m:.2f}x"
                print(line)
    if args.repeats > 1:
        for name, values in ratios.items():
            print(f"{name}: TRL / this, median of {len(values)} rounds: {statistics.median(values):.2f}x "
                  f"(rounds: {', '.join(f'{x:.2f}' for x in sorted(values))})")


if __name__ == "__main__":
    main()
