"""The recipe, as a short list of stage calls: world → tokenizer → pretrain → base-model evaluation.

Each stage writes into ``runs/<name>/<stage>/`` and records a fingerprint of its resolved config and
of its inputs' fingerprints. A stage whose fingerprint is unchanged and whose ``summary.json`` exists
is skipped; one that was interrupted (same fingerprint, no summary) is resumed; one whose config or
inputs changed is run again from scratch.

    alignkit run                      # tiny preset into runs/demo
    alignkit run --preset smoke name=quick pretrain.max_steps=20
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch

from alignkit.config import RunConfig, dump_yaml, to_dict
from alignkit.training.checkpoint import write_json_atomic
from alignkit.training.logging import info


def run(cfg: RunConfig) -> dict:
    """Run (or skip) every stage of the recipe so far; writes and returns ``runs/<name>/summary.json``."""
    from alignkit.world import build_world

    start = time.perf_counter()
    run_dir = Path(cfg.runs_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, run_dir / "config.yaml")
    world = build_world(**asdict(cfg.world))
    stages: dict = {}

    # 1. the world: every dataset exported as JSONL in the record schema
    fp_world = fingerprint(to_dict(cfg.world))
    stages["world"] = run_stage(run_dir / "world", fp_world, lambda d: _export_world(world, d))

    # 2. tokenizer: byte-level BPE on the pretraining corpus
    fp_tok = fingerprint(to_dict(cfg.tokenizer), fp_world)
    stages["tokenizer"] = run_stage(run_dir / "tokenizer", fp_tok, lambda d: _train_tokenizer(cfg, d))

    # 3. pretrain
    from alignkit.stages import pretrain
    pcfg = replace(cfg.pretrain, data=str(run_dir / "world" / "pretrain.jsonl"), tokenizer=str(run_dir / "tokenizer"),
                   model="", out=str(run_dir / "pretrain"))
    fp_pre = fingerprint(_identity(pcfg), fp_tok)
    stages["pretrain"] = run_stage(run_dir / "pretrain", fp_pre,
                                   lambda d, resume: pretrain.run(replace(pcfg, resume=resume, overwrite=not resume)),
                                   resumable=True)

    # 4. the base model, zero-shot vs few-shot
    fp_eval = fingerprint(to_dict(cfg.base_eval), fp_pre)
    stages["base_eval"] = run_stage(run_dir / "base_eval", fp_eval, lambda d: _evaluate_base(cfg, world, run_dir, d))

    summary = {
        "preset": cfg.preset,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
        "stages": {k: v for k, v in stages.items() if k != "base_eval"},
        "models": {k: stages["base_eval"][k] for k in ("base_zero_shot", "base_few_shot")},
    }
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


def run_stage(stage_dir: Path, fp: str, fn: Callable, *, resumable: bool = False) -> dict:
    """Run ``fn`` unless ``stage_dir`` already holds a finished run with fingerprint ``fp``."""
    name = stage_dir.name
    marker = stage_dir / ".fingerprint"
    same = marker.is_file() and marker.read_text().strip() == fp
    if same and (stage_dir / "summary.json").is_file():
        info(f"{name}: unchanged, skipped ({stage_dir})")
        return json.loads((stage_dir / "summary.json").read_text())
    if not (same and resumable):
        shutil.rmtree(stage_dir, ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(fp + "\n")
    info(f"{name}: {'resuming' if same and resumable else 'running'} → {stage_dir}")
    summary = fn(stage_dir, same) if resumable else fn(stage_dir)
    summary = {**summary, "fingerprint": fp}
    write_json_atomic(stage_dir / "summary.json", summary)
    return summary


def fingerprint(config: dict, *inputs: str) -> str:
    """Hash of a resolved config and the fingerprints of the stage's inputs."""
    blob = json.dumps({"config": config, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def machine() -> dict:
    return {"cpus": os.cpu_count(), "device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__.split("+")[0], "python": platform.python_version()}


def _identity(pcfg) -> dict:
    """The pretrain keys that change the result (not progress bars, resume or overwrite flags)."""
    d = to_dict(pcfg)
    for k in ("progress", "resume", "overwrite", "threads", "out"):
        d.pop(k)
    return d


def _export_world(world, stage_dir: Path) -> dict:
    from alignkit.world.export import export_world

    t0 = time.perf_counter()
    files = export_world(world, stage_dir)
    counts = {name: sum(1 for _ in open(path)) for name, path in files.items()}
    return {"files": {k: str(v) for k, v in files.items()}, "records": counts,
            "seconds": round(time.perf_counter() - t0, 2)}


def _train_tokenizer(cfg: RunConfig, stage_dir: Path) -> dict:
    from alignkit.data.sources import load_records
    from alignkit.models.tokenizer import save_tokenizer, train_tokenizer

    t0 = time.perf_counter()
    texts = [r["text"] for r in load_records(Path(cfg.runs_dir) / cfg.name / "world" / "pretrain.jsonl", "text")]
    tokenizer = train_tokenizer(texts, vocab_size=cfg.tokenizer.vocab_size, min_frequency=cfg.tokenizer.min_frequency)
    save_tokenizer(tokenizer, stage_dir)
    return {"vocab_size": len(tokenizer), "seconds": round(time.perf_counter() - t0, 2)}


def _evaluate_base(cfg: RunConfig, world, run_dir: Path, stage_dir: Path) -> dict:
    from alignkit.eval.base import evaluate_base
    from alignkit.models.load import load_model

    t0 = time.perf_counter()
    model, tokenizer = load_model(run_dir / "pretrain" / "model")
    results = evaluate_base(model, tokenizer, world, cfg.base_eval, progress=cfg.pretrain.progress)
    dump_yaml(cfg.base_eval, stage_dir / "config.yaml")
    return {**results, "seconds": round(time.perf_counter() - t0, 2)}


def print_table(summary: dict) -> None:
    """The short end-of-run table: perplexity, and the base model zero-shot vs few-shot."""
    from rich.console import Console
    from rich.table import Table

    pre = summary["stages"]["pretrain"]
    models = summary["models"]
    table = Table(title="alignkit run — the recipe so far")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("held-out perplexity", f"{pre['heldout_ppl']:.2f}  (uniform = vocab = {pre['vocab_size']})")
    table.add_row("pretraining", f"{pre['params']:,} params, {pre['tokens_seen']:,} tokens, {pre['train_seconds']:.0f} s")
    for mode in ("base_zero_shot", "base_few_shot"):
        m = models[mode]
        cats = ", ".join(f"{c} {v['gold_reward']:+.2f}" for c, v in m["per_category"].items())
        table.add_row(f"{mode} gold reward", f"{m['gold_reward']:+.3f}  ({cats}; helpful {m['rates']['helpful']:.0%})")
    table.add_row("wall time", f"{summary['wall_seconds']:.0f} s")
    console = Console()
    console.print(table)
    examples = Table(title="the base model on held-out prompts (zero-shot vs few-shot)", show_lines=True)
    for col in ("prompt", "zero-shot", "few-shot"):
        examples.add_column(col, overflow="fold")
    zs, fs = models["base_zero_shot"]["examples"], models["base_few_shot"]["examples"]
    for z, f in list(zip(zs, fs))[:4]:
        examples.add_row(z["prompt"], f"{z['response'][:120]!r} ({z['gold']:+.2f})",
                         f"{f['response'][:120]!r} ({f['gold']:+.2f})")
    console.print(examples)
