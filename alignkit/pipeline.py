"""The recipe, as a short list of stage calls: world → tokenizer → pretrain → SFT → evaluation →
preferences → reward model (+ its data-efficiency curve) → best-of-n → DPO (+ a β sweep) → PPO → GRPO.

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
from alignkit.errors import AlignkitError
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

    # 2. tokenizer: byte-level BPE on the pretraining corpus (which the SFT data proportion does not change)
    fp_corpus = fingerprint({k: v for k, v in to_dict(cfg.world).items() if not k.startswith("sft_")})
    fp_tok = fingerprint(to_dict(cfg.tokenizer), fp_corpus)
    stages["tokenizer"] = run_stage(run_dir / "tokenizer", fp_tok, lambda d: _train_tokenizer(cfg, d))

    # 3. pretrain
    from alignkit.stages import pretrain
    pcfg = replace(cfg.pretrain, data=str(run_dir / "world" / "pretrain.jsonl"), tokenizer=str(run_dir / "tokenizer"),
                   model="", out=str(run_dir / "pretrain"))
    fp_pre = fingerprint(_identity(pcfg), fp_tok)
    stages["pretrain"] = run_stage(run_dir / "pretrain", fp_pre,
                                   lambda d, resume: pretrain.run(replace(pcfg, resume=resume, overwrite=not resume)),
                                   resumable=True)

    # 4. supervised fine-tuning on the world's demonstrations
    from alignkit.stages import sft
    scfg = replace(cfg.sft, model=str(run_dir / "pretrain" / "model"), data=str(run_dir / "world" / "sft.jsonl"),
                   out=str(run_dir / "sft"))
    fp_sft = fingerprint(_identity(scfg), fp_pre, fp_world)
    stages["sft"] = run_stage(run_dir / "sft", fp_sft,
                              lambda d, resume: sft.run(replace(scfg, resume=resume, overwrite=not resume)),
                              resumable=True)

    # 5. evaluation: base zero-shot and few-shot, SFT; win rates and KL against SFT
    fp_eval = fingerprint(to_dict(cfg.eval), fp_sft, fp_world)
    evals = run_stage(run_dir / "eval", fp_eval, lambda d: _evaluate(cfg, world, run_dir, d))
    evals = {k: v for k, v in evals.items() if k != "fingerprint"}  # the stage marker, not a model

    # 6. preferences: the SFT model's own answers to train prompts, ranked by simulated labellers
    from alignkit.stages import bon, prefs, rm
    prefs_dir = run_dir / "prefs"
    qcfg = replace(cfg.prefs, model=str(run_dir / "sft" / "model"), out=str(prefs_dir), overwrite=True)
    fp_prefs = fingerprint(_identity(qcfg), fp_sft, fp_world)
    stages["prefs"] = run_stage(prefs_dir, fp_prefs, lambda d: prefs.run(qcfg, world))

    # 7. the reward model on those rankings, evaluated against the oracle on held-out samples
    rcfg = replace(cfg.rm, model=str(run_dir / "sft" / "model"), data=str(prefs_dir / "rankings.jsonl"),
                   eval_data=str(prefs_dir / "heldout.jsonl"), out=str(run_dir / "rm"))
    fp_rm = fingerprint(_identity(rcfg), fp_sft, fp_prefs)
    stages["rm"] = run_stage(run_dir / "rm", fp_rm,
                             lambda d, resume: rm.run(replace(rcfg, resume=resume, overwrite=not resume)),
                             resumable=True)
    if cfg.rm_curve:
        fp_curve = fingerprint({"counts": cfg.rm_curve}, fp_rm)
        stages["rm_curve"] = run_stage(run_dir / "rm_curve", fp_curve, lambda d: _rm_curve(cfg, rcfg, prefs_dir, d))

    # 8. best-of-n with the reward model, against the oracle's own choice
    bcfg = replace(cfg.bon, model=str(run_dir / "sft" / "model"), rm=str(run_dir / "rm" / "model"),
                   out=str(run_dir / "bon"), eval=cfg.eval, overwrite=True)
    fp_bon = fingerprint(_identity(bcfg), fp_rm)
    stages["bon"] = run_stage(run_dir / "bon", fp_bon, lambda d: bon.run(bcfg, world))
    evals[f"best_of_{stages['bon']['samples_per_prompt']}"] = stages["bon"]["eval"]

    # 9. DPO on the same rankings (loss from the dpo config; the tiny preset: listwise), and a β sweep for
    #    its reward-vs-KL frontier
    from alignkit.stages import dpo
    for beta in [cfg.dpo.beta, *[b for b in cfg.dpo_betas if float(b) != cfg.dpo.beta]]:
        name = "dpo" if beta == cfg.dpo.beta else f"dpo_beta_{beta}"
        dcfg = replace(cfg.dpo, model=str(run_dir / "sft" / "model"), data=str(prefs_dir / "rankings.jsonl"),
                       out=str(run_dir / name), beta=float(beta))
        fp_dpo = fingerprint(_identity(dcfg), fp_sft, fp_prefs, to_dict(cfg.eval))
        stages[name] = run_stage(run_dir / name, fp_dpo, lambda d, resume, dcfg=dcfg: _train_and_evaluate(
            dpo.run, replace(dcfg, resume=resume, overwrite=not resume), cfg, world, run_dir), resumable=True)
        evals[name] = stages[name]["eval"]

    # 10. PPO: the SFT policy against the reward model on the train prompts (critic: cfg.ppo.value_model)
    from alignkit.eval import plots
    if cfg.run_ppo:
        from alignkit.stages import ppo
        ocfg = replace(cfg.ppo, model=str(run_dir / "sft" / "model"), rm=str(run_dir / "rm" / "model"),
                       prompts="world", out=str(run_dir / "ppo"))
        fp_ppo = fingerprint(_identity(ocfg), fp_sft, fp_rm, fp_world, to_dict(cfg.eval))
        stages["ppo"] = run_stage(run_dir / "ppo", fp_ppo, lambda d, resume: _train_and_evaluate(
            lambda c: ppo.run(c, world), replace(ocfg, resume=resume, overwrite=not resume), cfg, world, run_dir),
            resumable=True)
        evals["ppo"] = stages["ppo"]["eval"]
        plots.plot_ppo(stages["ppo"]["curve"], run_dir / "ppo.png")

    # 11. GRPO: the reward model on every category, and a checker (verifiable reward) on its categories
    if cfg.run_grpo:
        from alignkit.stages import grpo
        runs = [("grpo", replace(cfg.grpo, reward="rm", rm=str(run_dir / "rm" / "model"), categories=[]))]
        if cfg.grpo_checker:
            runs.append((f"grpo_{'_'.join(cfg.grpo_checker_categories) or 'checker'}",
                         replace(cfg.grpo, reward=cfg.grpo_checker, rm="", categories=list(cfg.grpo_checker_categories))))
        for name, gcfg in runs:
            gcfg = replace(gcfg, model=str(run_dir / "sft" / "model"), prompts="world", out=str(run_dir / name))
            fp_grpo = fingerprint(_identity(gcfg), fp_sft, fp_rm if gcfg.rm else "", fp_world, to_dict(cfg.eval))
            stages[name] = run_stage(run_dir / name, fp_grpo, lambda d, resume, gcfg=gcfg: _train_and_evaluate(
                lambda c: grpo.run(c, world), replace(gcfg, resume=resume, overwrite=not resume), cfg, world, run_dir),
                resumable=True)
            evals[name] = stages[name]["eval"]

    # 12. figures: best-of-n over-optimisation, the reward model's data efficiency, the reward-vs-KL frontier
    plots.plot_best_of_n(stages["bon"]["curve"], stages["bon"]["sft_gold_reward"], run_dir / "best_of_n.png")
    if "rm_curve" in stages:
        plots.plot_rm_curve(stages["rm_curve"]["points"], run_dir / "rm_curve.png")
    plots.plot_frontier(evals, run_dir / "frontier.png")

    summary = {
        "preset": cfg.preset,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
        "stages": stages,
        "models": {k: evals[k] for k in sorted(evals, key=_model_rank)},
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
    """A training stage's keys that change its result (not progress bars, threads, resume/overwrite, out)."""
    d = to_dict(pcfg)
    for k in ("progress", "resume", "overwrite", "threads", "out"):
        d.pop(k, None)
    return d


def _train_and_evaluate(train, scfg, cfg: RunConfig, world, run_dir: Path) -> dict:
    """Train a policy stage, then evaluate its model against SFT (win rate, rates, KL) into <out>/eval/."""
    from alignkit.eval.harness import evaluate_dirs

    summary = train(scfg)
    if not summary:
        return summary
    ecfg = replace(cfg.eval, out=str(Path(scfg.out) / "eval"))
    evaluation = evaluate_dirs(Path(scfg.out) / "model", world, ecfg, reference_dir=run_dir / "sft" / "model",
                               reference_name="sft")
    return {**summary, "eval": evaluation}


def _rm_curve(cfg: RunConfig, rcfg, prefs_dir: Path, stage_dir: Path) -> dict:
    """Held-out accuracy against the number of labelled prompts: one comparison of two answers per prompt
    (pairs.jsonl + its tie / both_bad labels) vs one ranking of k answers per prompt, on the same prompts."""
    from alignkit.data.sources import load_records, write_jsonl
    from alignkit.stages import rm

    rankings = load_records(prefs_dir / "rankings.jsonl", "ranking")
    comparisons = (load_records(prefs_dir / "pairs.jsonl", "pair") + load_records(prefs_dir / "labels.jsonl", "label"))
    points = []
    for n in cfg.rm_curve:
        keep = {r["prompt"] for r in rankings[:n]}
        for form, records in (("pairs", comparisons), ("rankings", rankings)):
            out = stage_dir / f"{form}-{n}"
            data = write_jsonl(stage_dir / f"{form}-{n}.jsonl", [r for r in records if r["prompt"] in keep])
            try:
                s = rm.run(replace(rcfg, data=str(data), out=str(out), overwrite=True, progress=False,
                                   normalize=False))
            except AlignkitError as e:  # e.g. a tiny subset with no usable comparison: the point is missing
                points.append({"form": form, "prompts": len(keep), "heldout_accuracy": None, "skipped": str(e)})
                continue
            points.append({"form": form, "prompts": len(keep), "heldout_accuracy": s["heldout_accuracy"],
                           "spearman_gold": s["spearman_gold"], "train_seconds": s["train_seconds"]})
            shutil.rmtree(out / "state", ignore_errors=True)
    return {"points": points}


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


def _evaluate(cfg: RunConfig, world, run_dir: Path, stage_dir: Path) -> dict:
    """Every model on the same held-out prompts; ``stage_dir/<model>/`` gets its summary and samples."""
    from alignkit.eval import harness
    from alignkit.models.load import load_model

    ecfg = cfg.eval
    tasks = harness.eval_tasks(world, ecfg)
    base, base_tok = load_model(run_dir / "pretrain" / "model")
    policy, tok = load_model(run_dir / "sft" / "model")
    runs = {"base_zero_shot": harness.run_model(base, base_tok, world, tasks, "zero_shot", ecfg),
            "base_few_shot": harness.run_model(base, base_tok, world, tasks, "few_shot", ecfg),
            "sft": harness.run_model(policy, tok, world, tasks, "chat", ecfg)}
    out = {}
    for name, r in runs.items():
        refs = {"sft": runs["sft"]} | ({"base_zero_shot": runs["base_zero_shot"]} if name == "sft" else {})
        summary = harness.summarise(r, ecfg, references=refs)
        # KL to SFT is defined for chat-mode policies; a base model prompted differently has none.
        summary["kl_to_sft"] = 0.0 if name == "sft" else None
        harness.write_run(r, summary, stage_dir / name)
        out[name] = summary
    dump_yaml(ecfg, stage_dir / "config.yaml")
    return out


def _model_rank(name: str) -> tuple[int, str]:
    """Table order: MODEL_ORDER, with best_of_<n> for any n in best-of-16's place."""
    key = "best_of_16" if name.startswith("best_of_") else name
    return (MODEL_ORDER.index(key) if key in MODEL_ORDER else len(MODEL_ORDER), name)


MODEL_ORDER = ("base_zero_shot", "base_few_shot", "sft", "best_of_16", "ppo", "ppo_ptx", "dpo", "grpo",
               "grpo_arithmetic")


def print_table(summary: dict) -> None:
    """The end-of-run summary: pretraining, SFT, and the model comparison table."""
    from alignkit.eval.harness import format_table

    pre, sft_s = summary["stages"]["pretrain"], summary["stages"]["sft"]
    print(f"\npretrain: {pre['params']:,} parameters, {pre['tokens_seen']:,} tokens in {pre['train_seconds']:.0f} s; "
          f"held-out perplexity {pre['heldout_ppl']:.2f} (uniform: vocab {pre['vocab_size']})")
    print(f"sft: {sft_s['train_examples']} demonstrations, {sft_s['steps']} steps in {sft_s['train_seconds']:.0f} s; "
          f"validation loss {sft_s['val_loss']:.3f}\n")
    st = summary["stages"]
    if "rm" in st:
        r = st["rm"]
        print(f"rm: {r['train_prompts']} ranked prompts, {r['objective']}, {r['train_seconds']:.0f} s; held-out accuracy "
              f"vs the noise-free oracle {_num(r.get('heldout_accuracy'))} (one labeller: "
              f"{_num(r.get('accuracy_ceiling'))}), Spearman with gold {_num(r.get('spearman_gold'))}")
    for p in st.get("rm_curve", {}).get("points", []):
        print(f"  rm curve: {p['form']:<9}{p['prompts']:>6} prompts  held-out accuracy {_num(p['heldout_accuracy'])}")
    if "bon" in st:
        print("best-of-n (selected by the RM; by the oracle in brackets):")
        for row in st["bon"]["curve"]:
            print(f"  n={row['n']:<3} KL {row['kl']:.2f}  proxy {row['proxy_reward']:+.3f}  gold {row['gold_reward']:+.3f} "
                  f"[{row['oracle_gold_reward']:+.3f}]  win vs sft {row['win_rate_vs_sft']:.2f}")
        print()
    models = summary["models"]
    print(format_table(models))
    if "sft" in models and "win_rate_vs_base_zero_shot" in models["sft"]:
        m = models["sft"]
        lo, hi = m["win_rate_vs_base_zero_shot_ci"]
        print(f"\nsft vs base zero-shot: win rate {m['win_rate_vs_base_zero_shot']:.2f} [{lo:.2f}, {hi:.2f}]")
    print(f"wall time {summary['wall_seconds']:.0f} s — details in runs/<name>/summary.json and eval/<model>/")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
