"""Peak memory of PPO with and without LoRA on the same ~100M-parameter random Llama.

Full fine-tuning keeps four backbones (policy, reference, value, reward model) and AdamW's two moments
for the two trained ones; with LoRA the reference is the policy with adapters disabled, the value model
is the reward model with adapters, and AdamW holds moments for the adapters only. Each configuration
runs in its own process (two PPO iterations: rollout, scoring, GAE, updates) and reports its peak
resident memory (CPU) or peak allocated GPU memory (CUDA), next to the process's memory before the
models were loaded.

    .venv/bin/python benchmarks/ppo_memory.py            # CPU, about 2 minutes on 2 cores
    .venv/bin/python benchmarks/ppo_memory.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

SIZE = dict(hidden_size=768, num_layers=14, num_heads=12, num_kv_heads=12, intermediate_size=2048,
            max_positions=512)


def build(root: Path) -> None:
    from alignkit.data.sources import write_jsonl
    from alignkit.models.heads import new_scalar_model
    from alignkit.models.load import build_config, count_params, new_model, save_model
    from alignkit.models.tokenizer import train_tokenizer
    from alignkit.world import build_world

    world = build_world()
    tokenizer = train_tokenizer(world.pretraining_documents()[:2000], vocab_size=1024)
    model = new_model(build_config("llama", SIZE, tokenizer), seed=0)
    save_model(model, tokenizer, root / "policy")
    rm, rm_tok = new_scalar_model(root / "policy", seed=1)
    rm.save_pretrained(root / "rm")
    rm_tok.save_pretrained(root / "rm")
    write_jsonl(root / "prompts.jsonl", [{"prompt": t.prompt} for t in world.tasks("train")[:64]])
    print(f"model: {count_params(model) / 1e6:.1f}M parameters (Llama, hidden 768, 14 layers)", flush=True)


def child(root: Path, lora: bool, device: str) -> None:
    import resource

    import torch

    from alignkit.config import PPOConfig
    from alignkit.stages import ppo

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = PPOConfig(model=str(root / "policy"), rm=str(root / "rm"), reward="rm", value_model="rm",
                    prompts=str(root / "prompts.jsonl"), out=str(root / f"ppo-{'lora' if lora else 'full'}"),
                    rollout_batch=16, minibatch=8, ppo_epochs=1, steps=2, max_new_tokens=32, lora=lora,
                    lr=1e-4 if lora else 1e-5, save_every=1000, overwrite=True, progress=False, device=device)
    ppo.run(cfg)
    result = {"lora": lora, "rss_before_mib": before,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--lora", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(Path(args.child), args.lora, args.device)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build(root)
        rows = []
        for lora in (False, True):
            cmd = [sys.executable, __file__, "--child", str(root), "--device", args.device] + (["--lora"] if lora else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            rows.append(json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]))
    key = "peak_cuda_mib" if args.device == "cuda" else "peak_rss_mib"
    full, lora = (r[key] for r in rows)
    for r in rows:
        print(f"{'LoRA' if r['lora'] else 'full':>5}: peak {r[key]:,.0f} MiB ({key}), process before loading "
              f"{r['rss_before_mib']:,.0f} MiB")
    print(f"LoRA / full: {lora / full:.2f}")


if __name__ == "__main__":
    main()
