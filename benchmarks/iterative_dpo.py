"""Iterative DPO on a finished run: more rounds of preferences, each on the latest policy's own answers.

Round 1 is the run's DPO (trained on preferences between SFT's answers). Each further round r:

1. the round r − 1 policy answers every train prompt of the world ``k`` times and the simulated
   labellers rank the answers (`alignkit prefs`, sampling seed r − 1);
2. DPO with the tiny preset trains round r from the round r − 1 policy, which is also its reference
   (`alignkit dpo`, listwise with the RPO term);
3. round r is evaluated on the held-out prompts against the run's SFT answers (`alignkit eval
   --reference-samples`), like every model of the run.

This is the iterated recipe of InstructGPT and Llama 2 (comparisons of the current model's answers,
collected in rounds) with DPO in place of RM + PPO (Xiong et al. 2024, "Iterative Preference Learning
from Human Feedback", arXiv 2312.11456). Each round labels as many prompts again as the run's
preferences, so round r costs r times the comparisons of round 1.

    .venv/bin/python benchmarks/iterative_dpo.py --run runs/demo --rounds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def alignkit(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "alignkit", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="runs/demo", help="a finished `alignkit run --preset tiny` folder")
    parser.add_argument("--rounds", type=int, default=3, help="the last round (round 1 is the run's DPO)")
    parser.add_argument("--out", default="", help="where the rounds go (default: <run>/iterative_dpo)")
    args = parser.parse_args()
    run = Path(args.run)
    out = Path(args.out) if args.out else run / "iterative_dpo"
    sft_answers = run / "eval" / "sft" / "samples.jsonl"
    for needed in (run / "dpo" / "model", run / "dpo" / "eval" / "summary.json", sft_answers):
        if not needed.exists():
            sys.exit(f"{needed} is missing: --run must be a finished `alignkit run` folder")
    quiet = "progress=false"
    rows = [(1, json.loads((run / "dpo" / "eval" / "summary.json").read_text()), None)]
    policy = run / "dpo" / "model"
    for r in range(2, args.rounds + 1):
        t0 = time.perf_counter()
        prefs, dpo = out / f"prefs_round_{r}", out / f"dpo_round_{r}"
        alignkit("prefs", f"model={policy}", f"out={prefs}", f"seed={r - 1}", "heldout_k=0", "overwrite=true", quiet)
        alignkit("dpo", "--preset", "tiny", f"model={policy}", f"ref_model={policy}",
                 f"data={prefs / 'rankings.jsonl'}", f"out={dpo}", "overwrite=true", quiet)
        seconds = time.perf_counter() - t0
        alignkit("eval", "--model", str(dpo / "model"), "--reference", str(run / "sft" / "model"),
                 "--reference-samples", str(sft_answers), f"out={dpo / 'eval'}", quiet)
        rows.append((r, json.loads((dpo / "eval" / "summary.json").read_text()), seconds))
        policy = dpo / "model"

    print("| round | win vs SFT [95 % CI] | gold | helpful % | honest % | harmless % | over-refusal % "
          "| KL to SFT | seconds (prefs + DPO) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r, s, seconds in rows:
        win = s.get("win_rate_vs_sft", s.get("win_rate_vs_reference"))
        ci = s.get("win_rate_ci", s.get("win_rate_vs_reference_ci"))
        rates = s["rates"]
        kl = s.get("kl_to_sft", s.get("kl_to_reference"))
        print(f"| {r} | {win:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] | {s['gold_reward']:+.3f} | {100 * rates['helpful']:.0f} "
              f"| {100 * rates['honest']:.0f} | {100 * rates['harmless']:.0f} | {100 * rates['over_refusal']:.0f} "
              f"| {kl:.2f} | {'the run' if seconds is None else f'{seconds:.0f}'} |")


if __name__ == "__main__":
    main()
