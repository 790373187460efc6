"""``alignkit <command> [--config FILE.yaml] [--preset NAME] [key=value ...]``.

Parses, validates and dispatches; no training logic lives here. Bad input (a config key, a data
file, a model dir) is reported as one line on stderr with exit code 2 — never a traceback.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from alignkit.config import (
    ArenaConfig,
    ArenaExportConfig,
    ArenaLeaderboardConfig,
    ArenaSimulateConfig,
    BonConfig,
    ChatConfig,
    DPOConfig,
    EvalConfig,
    GenerateConfig,
    GRPOConfig,
    PPOConfig,
    PrefsConfig,
    PretrainConfig,
    RMConfig,
    RunConfig,
    SFTConfig,
    WorldConfig,
    describe,
    load_config,
    preset_file,
    read_yaml,
)
from alignkit.errors import AlignkitError

USAGE_KEYS = "key=value overrides, e.g. max_steps=100 lr=1e-3 (nested: pretrain.max_steps=100)"
ARENA_ACTIONS = ("serve", "leaderboard", "export", "simulate")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever downloaded at run time
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-file "Loading weights" bars would drown alignkit's own
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["arena"] and len(argv) > 1 and not set(argv[1:]) & {*ARENA_ACTIONS, "-h", "--help"}:
        argv.insert(1, "serve")  # `alignkit arena models=...` serves; the other actions are named
    parser = _parser()
    # key=value pairs may come before or after options such as --preset: collect the stray ones too
    args, extra = parser.parse_known_args(argv)
    for item in extra:
        if item.startswith("-") or "=" not in item or not hasattr(args, "overrides"):
            parser.error(f"unrecognized argument: {item}")
        args.overrides.append(item)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # chat handles Ctrl-C itself (it stops a reply, not the chat), the arena's server as uvicorn does (it stops
    # serving); SIGTERM ends them as by default
    previous = _interrupt_once() if args.func not in (cmd_chat, cmd_arena) else {}
    try:
        args.func(args)
    except AlignkitError as e:
        print(f"alignkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.func is cmd_run:
            how = "to resume, run the same command again"
        elif args.func in (cmd_pretrain, cmd_sft, cmd_rm, cmd_dpo, cmd_ppo, cmd_grpo):
            how = "to resume, add resume=true to the same command"
        elif args.func in (cmd_prefs, cmd_bon):
            how = "it does not resume: run it again with overwrite=true"
        else:
            how = "run it again"
        print(f"alignkit: interrupted ({how})", file=sys.stderr)
        return 130
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _interrupt_once(exit_fn=os._exit) -> dict:
    """Ctrl-C and SIGTERM (``kill``, a job scheduler, ``docker stop``) stop a command the same way: the first
    raises KeyboardInterrupt (checkpoints stay resumable, ``alignkit run`` stops its worker processes); a
    second while it stops only says how to quit at once, so that the clean-up is not broken off with a
    traceback; a third quits at once. Returns the handlers it replaced ({} when not in the main thread,
    where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    count = 0

    def interrupt(signum, frame):
        nonlocal count
        count += 1
        if count == 1:
            raise KeyboardInterrupt
        if count == 2:
            print("alignkit: stopping (press Ctrl-C again to quit at once)", file=sys.stderr, flush=True)
        else:
            exit_fn(130)

    return {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}


# ----------------------------------------------------------------------------------------------------
# commands

def cmd_run(args: argparse.Namespace) -> None:
    from alignkit import pipeline

    base = run_preset(args.preset)
    cfg = load_config(RunConfig, config_file=args.config, overrides=args.overrides, base=copy.deepcopy(base))
    pipeline.check_run_keys(cfg, load_config(RunConfig, base=base))
    pipeline.check_run_values(cfg)
    summary = pipeline.run(cfg)
    pipeline.print_table(summary)


def run_preset(preset: str) -> dict:
    """The keys `alignkit run --preset PRESET` starts from: the preset's run.yaml and each stage's YAML."""
    base: dict = {"preset": preset}
    run_keys = preset_file(preset, "run")  # top-level keys of the run, e.g. rm_curve
    if run_keys.is_file():
        base.update(read_yaml(run_keys))
    for stage in ("world", "tokenizer", "pretrain", "sft", "eval", "prefs", "rm", "bon", "dpo", "ppo", "grpo"):
        path = preset_file(preset, stage)
        if path.is_file():
            base[stage] = read_yaml(path)
    return base


def cmd_pretrain(args: argparse.Namespace) -> None:
    from alignkit.stages import pretrain

    base = read_yaml(preset_file(args.preset, "pretrain")) if args.preset else None
    cfg = load_config(PretrainConfig, config_file=args.config, overrides=args.overrides, base=base)
    with _holding(cfg.out):
        pretrain.run(cfg)


def cmd_sft(args: argparse.Namespace) -> None:
    from alignkit.stages import sft

    base = read_yaml(preset_file(args.preset, "sft")) if args.preset else None
    cfg = load_config(SFTConfig, config_file=args.config, overrides=args.overrides, base=base)
    with _holding(cfg.out):
        sft.run(cfg)


def cmd_prefs(args: argparse.Namespace) -> None:
    from alignkit.stages import prefs

    cfg = load_config(PrefsConfig, config_file=args.config, overrides=args.overrides,
                      base=_preset(args.preset, "prefs"))
    world = _world(args.world_config)
    with _holding(cfg.out):
        prefs.run(cfg, world)


def cmd_rm(args: argparse.Namespace) -> None:
    from alignkit.stages import rm

    cfg = load_config(RMConfig, config_file=args.config, overrides=args.overrides, base=_preset(args.preset, "rm"))
    with _holding(cfg.out):
        rm.run(cfg)


def cmd_dpo(args: argparse.Namespace) -> None:
    from alignkit.stages import dpo

    cfg = load_config(DPOConfig, config_file=args.config, overrides=args.overrides, base=_preset(args.preset, "dpo"))
    with _holding(cfg.out):
        dpo.run(cfg)


def cmd_ppo(args: argparse.Namespace) -> None:
    from alignkit.stages import ppo

    cfg = load_config(PPOConfig, config_file=args.config, overrides=args.overrides, base=_preset(args.preset, "ppo"))
    world = _world(args.world_config) if cfg.prompts == "world" else None
    with _holding(cfg.out):
        summary = ppo.run(cfg, world)
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}, indent=1))


def cmd_grpo(args: argparse.Namespace) -> None:
    from alignkit.stages import grpo

    cfg = load_config(GRPOConfig, config_file=args.config, overrides=args.overrides, base=_preset(args.preset, "grpo"))
    world = _world(args.world_config) if cfg.prompts == "world" else None
    with _holding(cfg.out):
        summary = grpo.run(cfg, world)
    print(json.dumps({k: v for k, v in summary.items() if k != "curve"}, indent=1))


def cmd_bon(args: argparse.Namespace) -> None:
    from alignkit.stages import bon

    cfg = load_config(BonConfig, config_file=args.config, overrides=args.overrides, base=_preset(args.preset, "bon"))
    world = _world(args.world_config)
    with _holding(cfg.out):
        summary = bon.run(cfg, world)
    print(f"{'n':>4}{'KL':>7}{'proxy':>9}{'gold':>9}{'win vs sft':>12}{'oracle-selected gold':>22}")
    for row in summary["curve"]:
        print(f"{row['n']:>4}{row['kl']:>7.2f}{row['proxy_reward']:>+9.3f}{row['gold_reward']:>+9.3f}"
              f"{row['win_rate_vs_sft']:>12.2f}{row['oracle_gold_reward']:>+22.3f}")


def _holding(out: str):
    """The lock on a stage command's ``out`` for the command's duration (see :func:`alignkit.pipeline.out_lock`)."""
    from alignkit.pipeline import out_lock

    return out_lock(Path(out))


def _preset(preset: str | None, stage: str) -> dict | None:
    path = preset_file(preset, stage) if preset else None
    return read_yaml(path) if path is not None and path.is_file() else None


def _world(world_config: str | None):
    from alignkit.world import build_world

    return build_world(**asdict(load_config(WorldConfig, config_file=world_config)))


def cmd_eval(args: argparse.Namespace) -> None:
    from alignkit.eval.harness import evaluate_dirs, format_table
    from alignkit.world import build_world

    cfg = load_config(EvalConfig, config_file=args.config, overrides=args.overrides, base=_preset(args.preset, "eval"))
    world = build_world(**asdict(load_config(WorldConfig, config_file=args.world_config)))
    summary = evaluate_dirs(args.model, world, cfg, reference_dir=args.reference, mode=cfg.mode,
                            reference_samples=args.reference_samples)
    print(format_table({"model": summary}, reference="reference"))


def cmd_report(args: argparse.Namespace) -> None:
    from alignkit.eval.report import write_report

    files = write_report(args.run_dir)
    figures = [path.name for key, path in files.items() if key not in ("html", "md")]
    print(f"wrote {files['html']} (self-contained) and {files['md']}"
          + (f" with {', '.join(figures)} beside them" if figures else ""))


def cmd_chat(args: argparse.Namespace) -> None:
    from alignkit.models.load import load_model
    from alignkit.serve.chat import chat_loop

    cfg = load_config(ChatConfig, config_file=args.config, overrides=args.overrides)
    model, tokenizer = load_model(args.model)
    chat_loop(model, tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
              top_k=cfg.top_k, seed=cfg.seed, system=cfg.system or None)


def cmd_world_export(args: argparse.Namespace) -> None:
    from alignkit.world import build_world
    from alignkit.world.export import export_world

    cfg = load_config(WorldConfig, config_file=args.config, overrides=args.overrides)
    _keep_out(args.out, args.overwrite)
    files = export_world(build_world(**asdict(cfg)), args.out)
    for name, path in files.items():
        n = sum(1 for _ in open(path, encoding="utf-8"))
        print(f"{path}  ({n} {name} records)")


def _keep_out(out: str, overwrite: bool) -> None:
    """A command that writes files into ``out`` does not write over what is there without --overwrite."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise AlignkitError(f"--out {out} is a file, not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise AlignkitError(f"--out {out} is not empty; pass --overwrite to write over its files, or another --out")


def cmd_merge(args: argparse.Namespace) -> None:
    from alignkit.models.lora import merge_adapter

    _keep_out(args.out, args.overwrite)
    out = merge_adapter(args.adapter, args.out, base=args.base)
    print(f"merged {args.adapter} into {out}")


def cmd_generate(args: argparse.Namespace) -> None:
    from alignkit.models.load import load_model
    from alignkit.rollout.sampler import sample

    cfg = load_config(GenerateConfig, config_file=args.config, overrides=args.overrides)
    model, tokenizer = load_model(args.model)
    prompt = args.prompt
    if cfg.chat:
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)
    samples = sample(model, tokenizer, [prompt] * cfg.n, max_new_tokens=cfg.max_new_tokens,
                     temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, seed=cfg.seed)
    for i, text in enumerate(samples.texts):
        if cfg.n > 1:
            print(f"--- sample {i + 1}")
        print(text)


def cmd_arena(args: argparse.Namespace) -> None:
    from alignkit.serve.arena.server import serve

    cfg = load_config(ArenaConfig, config_file=args.config, overrides=args.overrides)
    world = _world(args.world_config) if cfg.prompts == "world" else None
    try:
        serve(cfg, world)
    except KeyboardInterrupt:  # uvicorn stops on the first Ctrl-C itself; a second one lands here
        pass


def cmd_arena_leaderboard(args: argparse.Namespace) -> None:
    from alignkit.serve.arena.ratings import format_leaderboard, leaderboard
    from alignkit.serve.arena.store import open_existing

    cfg = load_config(ArenaLeaderboardConfig, config_file=args.config, overrides=args.overrides)
    store = open_existing(cfg.votes)
    try:
        board = leaderboard(store.outcomes(), tie_model=cfg.tie_model, bootstrap=cfg.bootstrap, seed=cfg.seed)
    finally:
        store.close()
    print(json.dumps(board, indent=1) if cfg.json else format_leaderboard(board))


def cmd_arena_export(args: argparse.Namespace) -> None:
    from alignkit.serve.arena.export import export_votes
    from alignkit.serve.arena.store import open_existing

    cfg = load_config(ArenaExportConfig, config_file=args.config, overrides=args.overrides)
    if not cfg.out:
        raise AlignkitError("arena export needs out=DIR (where pairs.jsonl and labels.jsonl go)")
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise AlignkitError(f"out={out} is a file, not a directory")
    there = [name for name in ("pairs.jsonl", "labels.jsonl") if (out / name).exists()]
    if there and not cfg.overwrite:
        raise AlignkitError(f"{out} already holds {', '.join(there)}; pass overwrite=true to replace them, or another out=")
    store = open_existing(cfg.votes)
    try:
        result = export_votes(store, out)
    finally:
        store.close()
    print(f"{result['pairs']}  ({result['n_pairs']} pair records: A / B votes)")
    print(f"{result['labels']}  ({result['n_labels']} label records: tie / both_bad votes)")
    if result["n_same_answers"]:
        print(f"({result['n_same_answers']} decisive votes between two identical answers left out)")


def cmd_arena_simulate(args: argparse.Namespace) -> None:
    from alignkit.serve.arena.simulate import simulate

    cfg = load_config(ArenaSimulateConfig, config_file=args.config, overrides=args.overrides)
    labeller = {"temperature": cfg.labeller_temperature, "tie_margin": cfg.tie_margin,
                "both_bad_threshold": cfg.both_bad_threshold}
    stats = simulate(cfg.url.rstrip("/"), _world(args.world_config), voters=cfg.voters, votes=cfg.votes, seed=cfg.seed,
                     token=cfg.token, timeout=cfg.timeout, labeller=labeller)
    shown = {k: v for k, v in stats.items() if k != "acknowledged"}
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(stats, indent=1) + "\n")
    print(json.dumps(shown, indent=1))
    if stats["errors"]:
        raise AlignkitError(f"{stats['errors']} of the simulated requests failed; the first: {stats['first_errors'][0]}")


# ----------------------------------------------------------------------------------------------------
# argument parsing

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignkit",
        description="Train a chat assistant the way ChatGPT was built: pretrain → SFT → reward model → "
                    "PPO / DPO / GRPO. Runs on a laptop CPU with the built-in world, and on your own "
                    "Hugging Face models.",
        epilog="Every command with keys takes --config FILE.yaml and key=value overrides, and all but chat and "
               "generate --preset NAME; report, merge and world take only their own options. `alignkit <command> "
               "--help` lists its keys with defaults.",
    )
    sub = parser.add_subparsers(title="commands", metavar="<command>")

    p = _command(sub, "run", "run the whole recipe on the built-in world into runs/<name>/ and write its report",
                 RunConfig,
                 "Stages: world → tokenizer → pretrain → sft, then eval (base zero-shot, base few-shot, SFT), prefs "
                 "→ rm (+ rm_curve) → bon, ppo, ppo_ptx, grpo; prefs → dpo (+ the β sweep); grpo with a checker — "
                 "independent ones side by side in `workers` processes — and runs/<name>/report.html. "
                 "A stage whose config and inputs are unchanged is skipped; an interrupted one resumes.",
                 values=load_config(RunConfig, base=run_preset("tiny")),
                 header="keys (key=value of the tiny preset, the default  meaning [allowed]; the smoke and small "
                        "presets set other values)")
    p.add_argument("--preset", default="tiny", help="preset from alignkit/configs/: smoke (the whole recipe in "
                   "seconds, for tests), tiny (the laptop CPU default), small (a 27M-parameter model for one GPU); "
                   "default: tiny")
    p.set_defaults(func=cmd_run)

    p = _command(sub, "pretrain", "pretrain a causal LM from scratch (or continue one) on packed documents",
                 PretrainConfig, "Writes out/model (HF format), out/metrics.jsonl, out/summary.json, out/state "
                 "(resume with resume=true).")
    p.add_argument("--preset", default=None, help="start from alignkit/configs/<preset>/pretrain.yaml")
    p.set_defaults(func=cmd_pretrain)

    p = _command(sub, "sft", "supervised fine-tuning: loss on the assistant's tokens only", SFTConfig,
                 "Data: {messages} or {prompt, completion} records (JSONL, Parquet, datasets dir) or 'world'. "
                 "Writes out/model, out/metrics.jsonl, out/summary.json, out/state (resume with resume=true).")
    p.add_argument("--preset", default=None, help="start from alignkit/configs/<preset>/sft.yaml")
    p.set_defaults(func=cmd_sft)

    p = _command(sub, "prefs", "collect preferences: the policy answers each world prompt k times, simulated "
                 "labellers rank the answers", PrefsConfig,
                 "Writes out/rankings.jsonl, pairs.jsonl, labels.jsonl (tie / both_bad) and heldout.jsonl (held-out "
                 "samples with gold scores, for reward-model evaluation).")
    _world_options(p)
    p.set_defaults(func=cmd_prefs)

    p = _command(sub, "rm", "train a reward model on pairs, K-wise rankings and ties", RMConfig,
                 "Data: {prompt, chosen, rejected}, {prompt, responses, ranking} and {prompt, responses, label} "
                 "records. Writes out/model (a one-label *ForSequenceClassification checkpoint), metrics.jsonl, "
                 "summary.json (resume with resume=true).")
    p.add_argument("--preset", default=None, help="start from alignkit/configs/<preset>/rm.yaml")
    p.set_defaults(func=cmd_rm)

    p = _command(sub, "dpo", "direct preference optimisation (DPO and its family) on pairs and rankings", DPOConfig,
                 "Data: {prompt, chosen, rejected} and {prompt, responses, ranking} records. Reference log-probs are "
                 "computed once and cached in out/ref_logps.pt. Writes out/model, metrics.jsonl, summary.json "
                 "(resume with resume=true).")
    p.add_argument("--preset", default=None, help="start from alignkit/configs/<preset>/dpo.yaml")
    p.set_defaults(func=cmd_dpo)

    p = _command(sub, "ppo", "RLHF with PPO: the policy against a reward model, per-token KL penalty to the SFT "
                 "model, GAE, clipping; optional PPO-ptx", PPOConfig,
                 "Prompts: the built-in world's train prompts or {prompt, ...} records. Reward: the reward model, a "
                 "Python function, or the world oracle (a ceiling experiment). Writes out/model, the critic (out/value, or "
                 "out/value_head.safetensors with value_model=shared), "
                 "metrics.jsonl (reward, gold, KL, β, losses, clip fractions per iteration), summary.json "
                 "(resume with resume=true).")
    _world_options(p)
    p.set_defaults(func=cmd_ppo)

    p = _command(sub, "grpo", "GRPO and the critic-free family (Dr. GRPO, DAPO options, RLOO, REINFORCE++): G "
                 "responses per prompt, advantages relative to the group", GRPOConfig,
                 "Reward: checkers such as alignkit.world.checkers:arithmetic, a reward model, Python functions, or "
                 "a weighted sum. Writes out/model, metrics.jsonl (reward per source, zero-advantage groups, KL, "
                 "clip fraction, entropy, length, truncation), summary.json (resume with resume=true).")
    _world_options(p)
    p.set_defaults(func=cmd_grpo)

    p = _command(sub, "bon", "best-of-n: sample n responses per held-out prompt, keep the reward model's best",
                 BonConfig, "Reports proxy and gold reward, win rate vs the policy and the analytic KL for each n, "
                 "selecting by the reward model and by the oracle.")
    _world_options(p)
    p.set_defaults(func=cmd_bon)

    p = _command(sub, "eval", "sample held-out world prompts and judge them with the oracle", EvalConfig,
                 "Reports gold reward, category rates, and with --reference the win rate (95% CI) and "
                 "KL(model || reference). Writes summary.json and samples.jsonl.")
    p.add_argument("--preset", default=None, help="start from alignkit/configs/<preset>/eval.yaml")
    p.add_argument("--model", required=True, help="Hugging Face causal-LM directory to evaluate")
    p.add_argument("--reference", default=None, help="model dir to compare against (e.g. the SFT model)")
    p.add_argument("--reference-samples", default=None, metavar="FILE",
                   help="a samples.jsonl from an earlier evaluation of these prompts (e.g. runs/demo/eval/sft/"
                   "samples.jsonl): the win rate is against its gold scores instead of the reference's fresh "
                   "samples, so a model sampled at another temperature meets the SFT answers of the run")
    p.add_argument("--world-config", default=None, help="YAML of world keys, if the world is not the default")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("report", help="write report.html and report.md of a finished run (tables, figures, samples)",
                       description="Write a one-page report of a finished `alignkit run`: the model comparison table, "
                       "win rates vs SFT, the reward-vs-KL frontier, over-optimisation, the reward model, training "
                       "curves and side-by-side answers. RUN_DIR/report.html is self-contained (figures embedded); "
                       "RUN_DIR/report.md refers to the PNGs written beside it. Reads only what the run wrote "
                       "(summary.json, metrics.jsonl, samples.jsonl): nothing is recomputed, no model is loaded.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished run directory, e.g. runs/demo")
    p.set_defaults(func=cmd_report)

    p = _command(sub, "chat", "chat with a model in the terminal (/reset, /quit)", ChatConfig,
                 "Multi-turn, with the model's chat template; replies stream as they are sampled.")
    p.add_argument("--model", required=True, help="Hugging Face causal-LM directory")
    p.set_defaults(func=cmd_chat)

    arena = sub.add_parser("arena", help="the arena: people compare two anonymous answers and vote; "
                           "leaderboard, export of the votes, simulated voters",
                           description="`alignkit arena models=A,B[,C...] votes=arena.db` serves the battle page and "
                           "its JSON API (same as `alignkit arena serve ...`); the other actions read its votes.",
                           epilog="`alignkit arena <action> --help` lists its keys.")
    asub = arena.add_subparsers(title="actions", metavar="<action>")
    p = _command(asub, "serve", "serve the battle page, the leaderboard and the JSON API (the default action)",
                 ArenaConfig, "Two models drawn at random answer each prompt side by side, streamed, their names hidden "
                 "until the vote: A is better, B is better, tie, both bad. Battles and votes go to votes= (SQLite). "
                 "API: POST /api/battles, GET /api/battles/{id}[/stream], POST /api/battles/{id}/vote, "
                 "GET /api/leaderboard, GET /api/health (docs/arena.md).")
    p.add_argument("--world-config", default=None, help="YAML of world keys, if the world is not the default")
    p.set_defaults(func=cmd_arena)
    p = _command(asub, "leaderboard", "Bradley-Terry ratings of the arena's models with ties, bootstrap "
                 "intervals (95 percent), votes per model and the win-rate matrix", ArenaLeaderboardConfig, "")
    p.set_defaults(func=cmd_arena_leaderboard)
    p = _command(asub, "export", "write the votes as record-schema JSONL for `alignkit rm` and `alignkit dpo`",
                 ArenaExportConfig, "A / B votes become {prompt, chosen, rejected} in pairs.jsonl, tie and both-bad "
                 "votes {prompt, responses, label} in labels.jsonl, with the battle id and model names as extra fields.")
    p.set_defaults(func=cmd_arena_export)
    p = _command(asub, "simulate", "the built-in world's labellers vote through the arena's HTTP API",
                 ArenaSimulateConfig, "Each voter opens the page, asks for a battle on a random prompt, reads the "
                 "streamed answers, judges them (oracle + noise) and votes. The arena must serve prompts=world. "
                 "Prints votes per second and p50 / p95 latencies of battles and votes.")
    p.add_argument("--world-config", default=None, help="YAML of world keys, if the world is not the default")
    p.set_defaults(func=cmd_arena_simulate)
    arena.set_defaults(func=lambda a: arena.print_help())

    world = sub.add_parser("world", help="the built-in synthetic world", description="The built-in world.")
    wsub = world.add_subparsers(title="world commands", metavar="<world command>")
    p = _command(wsub, "export", "write every world dataset as JSONL in the record schema", WorldConfig,
                 "Files: pretrain.jsonl, sft.jsonl, prompts.jsonl, eval_prompts.jsonl, pairs.jsonl, "
                 "rankings.jsonl, labels.jsonl.")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="write over the files of a non-empty --out")
    p.set_defaults(func=cmd_world_export)
    world.set_defaults(func=lambda a: world.print_help())

    p = sub.add_parser("merge", help="merge a LoRA adapter (out/adapter of a lora=true stage) into a full model",
                       description="Merge a PEFT LoRA adapter into its base model (W = W0 + (alpha/r) B A) and write "
                       "a full Hugging Face checkpoint with the tokenizer.")
    p.add_argument("--adapter", required=True, help="PEFT adapter directory (adapter_config.json)")
    p.add_argument("--out", required=True, help="output directory of the merged model")
    p.add_argument("--base", default=None, help="base model dir (default: the one recorded in the adapter)")
    p.add_argument("--overwrite", action="store_true", help="write over the files of a non-empty --out")
    p.set_defaults(func=cmd_merge)

    p = _command(sub, "generate", "sample a continuation (or a chat reply with chat=true) from a model dir",
                 GenerateConfig, "")
    p.add_argument("--model", required=True, help="Hugging Face causal-LM directory")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.set_defaults(func=cmd_generate)
    return parser


def _world_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", default=None, help="start from the preset's config of this command")
    p.add_argument("--world-config", default=None, help="YAML of world keys, if the world is not the default")


def _command(sub, name: str, help: str, schema: type, details: str, values=None,
             header: str = "keys (key=default  meaning [allowed])") -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=f"{help}. {details}".strip(),
                       epilog=f"{header}:\n{describe(schema, values=values)}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="YAML file of keys (overridden by key=value)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=USAGE_KEYS)
    return p


if __name__ == "__main__":
    raise SystemExit(main())
