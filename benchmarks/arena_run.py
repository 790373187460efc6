"""The arena on a finished run: simulated people vote on its models, and their votes train a reward model.

    .venv/bin/python benchmarks/arena_run.py runs/demo                    # 1,200 votes, 16 voters
    .venv/bin/python benchmarks/arena_run.py runs/demo --votes 2000 --seeds 0 1 2

1. `alignkit arena` serves the run's SFT, PPO, DPO and GRPO models and the base model prompted few-shot
   (`few_shot=base`), drawing random prompts from the world's train prompts; `alignkit arena simulate`'s
   voters (the world's labellers: gold score + Bradley-Terry noise, ties, both-bad) cast ``--votes`` votes
   through the HTTP API.
2. The leaderboard (Bradley-Terry with Davidson ties, bootstrap intervals) is compared with the oracle:
   Kendall's τ between the arena's ratings and each model's gold reward in the run's evaluation (held-out
   prompts, summary.json), and with the mean gold reward of the model's own answers in the arena. Goal: τ ≥ 0.8.
3. The votes are exported (`alignkit arena export`) and a reward model is trained on them with the run's
   reward-model settings (`rm`, `rm_prior`); another on the same number of the run's own comparisons
   (`prefs/pairs.jsonl` + `labels.jsonl`, drawn at random, seeded); both are scored on the run's held-out
   comparisons against the noise-free oracle (`prefs/heldout.jsonl`).

Writes RUN/arena/summary.json (and leaves RUN/arena/arena.db, the exported votes and both reward models there).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

MODELS = {"sft": "sft", "ppo": "ppo", "dpo": "dpo", "grpo": "grpo", "base_few_shot": "pretrain"}
GOAL_TAU = 0.8


def arena_gold(rows: list[dict], oracle) -> dict[str, float]:
    """Mean gold reward of each model's answers in the arena's voted battles."""
    scores: dict[str, list[float]] = {}
    for row in rows:
        task = oracle.task(row["prompt"])
        for side in "ab":
            scores.setdefault(row[f"model_{side}"], []).append(oracle.score(task, row[f"answer_{side}"] or ""))
    return {m: sum(s) / len(s) for m, s in scores.items()}


def serve_and_vote(run: Path, cfg, world, db: Path, out: Path, *, voters: int, votes: int, threads: int) -> dict:
    """Step 1: the arena on the run's models, and the simulated voters' statistics."""
    from alignkit.config import dump_yaml
    from alignkit.serve.arena.server import free_port, spawn
    from alignkit.serve.arena.simulate import simulate

    dump_yaml(cfg.world, out / "world.yaml")  # the server draws its prompts from the run's world
    models = ",".join(f"{name}={run / d / 'model'}" for name, d in MODELS.items())
    port = free_port()
    server = spawn([f"models={models}", "few_shot=base_few_shot", f"votes={db}", "batch_size=64",
                          "--world-config", str(out / "world.yaml"),
                          f"max_new_tokens={cfg.eval.max_new_tokens}", f"temperature={cfg.eval.temperature}"],
                         port, threads=threads)
    try:
        stats = simulate(f"http://127.0.0.1:{port}", world, voters=voters, votes=votes, timeout=300)
    finally:
        server.terminate()
        server.wait()
    print(json.dumps({k: stats[k] for k in ("votes", "by_vote", "errors", "wall_seconds", "votes_per_second")}))
    return {"votes": stats["votes"], "by_vote": stats["by_vote"], "errors": stats["errors"],
            "simulate": {k: stats[k] for k in ("voters", "wall_seconds", "votes_per_second", "battle_seconds",
                                               "vote_seconds")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--votes", type=int, default=1200)
    ap.add_argument("--voters", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="reward-model seeds (each trains both)")
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--reuse", action="store_true", help="keep RUN/arena/arena.db's votes: skip step 1")
    args = ap.parse_args()

    from alignkit.config import RunConfig, load_config
    from alignkit.data.sources import load_records, write_jsonl
    from alignkit.pipeline import rm_config, setup_worker
    from alignkit.serve.arena.export import export_votes
    from alignkit.serve.arena.ratings import kendall_tau, leaderboard
    from alignkit.serve.arena.store import Store
    from alignkit.stages import rm
    from alignkit.world import build_world

    setup_worker(1)
    run = args.run_dir
    cfg = load_config(RunConfig, config_file=run / "config.yaml")
    summary = json.loads((run / "summary.json").read_text())
    world = build_world(**asdict(cfg.world))
    out = run / "arena"
    out.mkdir(exist_ok=True)
    db = out / "arena.db"
    if db.exists() and not args.reuse:
        raise SystemExit(f"{db} exists: move it away to measure again, or pass --reuse to keep its votes")
    t0 = time.perf_counter()
    if args.reuse:
        stats = json.loads((out / "summary.json").read_text())
    else:
        stats = serve_and_vote(run, cfg, world, db, out, voters=args.voters, votes=args.votes,
                               threads=args.server_threads)

    # 2. the leaderboard against the oracle
    store = Store(db)
    board = leaderboard(store.outcomes())
    ratings = {m["name"]: m["rating"] for m in board["models"]}
    gold_eval = {name: summary["models"][name]["gold_reward"] for name in MODELS}
    gold_arena = arena_gold(store.voted(), world.oracle)
    tau_eval, tau_arena = kendall_tau(ratings, gold_eval), kendall_tau(ratings, gold_arena)
    for m in board["models"]:
        print(f"{m['name']:>14}  {m['rating']:7.1f} [{m['ci'][0]:7.1f}, {m['ci'][1]:7.1f}]  votes {m['votes']:4d}  "
              f"gold (eval) {gold_eval[m['name']]:+.3f}  gold (arena answers) {gold_arena[m['name']]:+.3f}")
    print(f"Kendall's τ: {tau_eval:.3f} against the run's evaluation, {tau_arena:.3f} against the arena's answers")

    # 3. reward models: on the votes, and on as many of the run's own comparisons
    exported = export_votes(store, out / "votes")
    store.close()
    n = exported["n_pairs"] + exported["n_labels"]
    prefs = run / "prefs"
    own = load_records(prefs / "pairs.jsonl", "pair") + load_records(prefs / "labels.jsonl", "label", allow_empty=True)
    rcfg = replace(rm_config(cfg, run), progress=False, overwrite=True)
    accuracies: dict[str, list[float]] = {"votes": [], "prefs": []}
    for seed in args.seeds:
        sample = random.Random(seed).sample(own, min(n, len(own)))
        data = {"votes": f"{exported['pairs']},{exported['labels']}",
                "prefs": str(write_jsonl(out / f"prefs_{seed}.jsonl", sample))}
        for form in ("votes", "prefs"):
            s = rm.run(replace(rcfg, data=data[form], out=str(out / f"rm_{form}_{seed}"), seed=seed))
            accuracies[form].append(s["heldout_accuracy"])
            print(json.dumps({"seed": seed, "data": form, "comparisons": n,
                              "heldout_accuracy": round(s["heldout_accuracy"], 4)}), flush=True)

    result = {
        "models": list(MODELS), "votes": stats["votes"], "by_vote": stats["by_vote"], "errors": stats["errors"],
        "simulate": stats["simulate"],
        "leaderboard": board, "gold_eval": gold_eval, "gold_arena": gold_arena,
        "kendall_tau_eval": tau_eval, "kendall_tau_arena": tau_arena, "goal_tau": GOAL_TAU,
        "export": {k: v for k, v in exported.items() if k.startswith("n_")},
        "rm_heldout_accuracy": {form: {"seeds": v, "mean": sum(v) / len(v)} for form, v in accuracies.items()},
        "rm_comparisons": n, "seeds": args.seeds, "wall_seconds": time.perf_counter() - t0,
    }
    (out / "summary.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"reward model on {n} arena votes {result['rm_heldout_accuracy']['votes']['mean']:.3f}, on {n} of the run's "
          f"comparisons {result['rm_heldout_accuracy']['prefs']['mean']:.3f} (held-out accuracy vs the oracle); "
          f"wrote {out / 'summary.json'}")
    return 0 if min(tau_eval, tau_arena) >= GOAL_TAU else 1


if __name__ == "__main__":
    sys.exit(main())
