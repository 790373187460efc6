"""Load on one arena server: many simulated voters at once, every acknowledged vote checked in the database.

    .venv/bin/python benchmarks/arena_load.py                       # 50 voters, 1,000 votes, three tiny models
    .venv/bin/python benchmarks/arena_load.py --run runs/demo       # the run's SFT, DPO, PPO and GRPO models
    .venv/bin/python benchmarks/arena_load.py --voters 50 --votes 1000 --out load.json

The server is `alignkit arena` in its own process (one torch thread, as a 2-core machine leaves it with the
voters beside it), on 127.0.0.1, answering `max_new_tokens` tokens per answer; the voters are
`alignkit.serve.arena.simulate` threads (each with its own cookie: open the page, ask for a battle on a
random world prompt, read the event stream, vote as the world's labeller). Without --run the models are three
randomly initialised models of the tiny preset's size (their answers run to max_new_tokens: the most work
per battle). Prints votes per second and the p50 / p95 latency of a battle (asked → both answers done) and of
a vote (posted → acknowledged after its commit), then checks that the database holds every acknowledged
vote, passes `PRAGMA integrity_check` and has no battle with two votes; exits 1 on any error.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
from pathlib import Path


def random_models(root: Path, world, n: int = 3) -> list[str]:
    from alignkit.models.load import build_config, new_model, save_model
    from alignkit.models.tokenizer import train_tokenizer

    tokenizer = train_tokenizer([t.prompt + " " + t.ideal for t in world.tasks("train")], vocab_size=1024)
    dirs = []
    for i in range(n):
        d = root / f"tiny{i}"
        save_model(new_model(build_config("llama", "tiny", tokenizer), seed=i), tokenizer, d)
        dirs.append(f"tiny{i}={d}")
    return dirs


def run_models(run: Path) -> list[str]:
    names = [n for n in ("sft", "dpo", "ppo", "grpo") if (run / n / "model" / "config.json").is_file()]
    if len(names) < 2:
        raise SystemExit(f"{run} has fewer than two of sft, dpo, ppo, grpo as model dirs")
    return [f"{n}={run / n / 'model'}" for n in names]


def check_store(db: Path, acknowledged: list[str]) -> dict:
    with sqlite3.connect(db) as conn:
        stored = {r[0] for r in conn.execute("SELECT battle_id FROM votes")}
        return {"integrity": conn.execute("PRAGMA integrity_check").fetchone()[0],
                "votes_in_db": len(stored), "acknowledged_missing": len(set(acknowledged) - stored),
                "battles_with_two_votes": len(conn.execute(
                    "SELECT battle_id FROM votes GROUP BY battle_id HAVING COUNT(*) > 1").fetchall())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, default=None, help="a finished run: serve its sft, dpo, ppo, grpo models")
    ap.add_argument("--voters", type=int, default=50)
    ap.add_argument("--votes", type=int, default=1000)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--server-threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="write the statistics here as JSON")
    args = ap.parse_args()

    from alignkit.serve.arena.server import free_port, spawn
    from alignkit.serve.arena.simulate import simulate
    from alignkit.world import build_world

    world = build_world()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = run_models(args.run) if args.run else random_models(tmp, world)
        port, db = free_port(), tmp / "arena.db"
        server = spawn([f"models={','.join(models)}", f"votes={db}", f"max_new_tokens={args.max_new_tokens}",
                              "batch_size=64"], port, threads=args.server_threads)
        try:
            stats = simulate(f"http://127.0.0.1:{port}", world, voters=args.voters, votes=args.votes, timeout=300)
        finally:
            server.terminate()
            server.wait()
        stats.update(check_store(db, stats["acknowledged"]))
    stats.pop("acknowledged")
    stats["models"] = [m.split("=")[0] for m in models]
    print(json.dumps(stats, indent=1))
    if args.out:
        args.out.write_text(json.dumps(stats, indent=1) + "\n")
    ok = (stats["errors"] == 0 and stats["votes"] == args.votes and stats["acknowledged_missing"] == 0
          and stats["integrity"] == "ok" and stats["battles_with_two_votes"] == 0)
    print(f"{stats['votes']} votes by {args.voters} voters in {stats['wall_seconds']:.1f} s: "
          f"{stats['votes_per_second']:.1f} votes/s; battle p50 {stats['battle_seconds']['p50']:.2f} s, "
          f"p95 {stats['battle_seconds']['p95']:.2f} s; vote p50 {stats['vote_seconds']['p50'] * 1000:.1f} ms, "
          f"p95 {stats['vote_seconds']['p95'] * 1000:.1f} ms; {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
