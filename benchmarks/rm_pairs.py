"""The reward model on pairwise comparisons alone against the one on rankings, over seeds, for a finished run.

    .venv/bin/python benchmarks/rm_pairs.py runs/demo --seeds 0 1 2
    .venv/bin/python benchmarks/rm_pairs.py runs/demo --seeds 0 1 2 --comparisons 2 --no-rankings

For every seed it trains the run's reward model (`rm`, `rm_prior`: the same loss, prior, epochs and
held-out pairs) twice — on the run's `pairs.jsonl` + `labels.jsonl` (as the run's `rm_pairs` stage),
and on its `rankings.jsonl` (as the run's `rm`) — each with that seed's initialisation and data order,
and prints each held-out accuracy against the noise-free oracle and the means. `--comparisons N` keeps
only the first N comparisons of each prompt (`meta.comparison`, in the order of
`alignkit.stages.prefs.pair_schedule`: what `prefs pairs_per_prompt=N` would have labelled);
`--no-rankings` skips the rankings' models.

Target (reward-model issue): held-out accuracy ≥ 0.85 with pairwise data, checked on the mean over
seeds of the pairs' models. Exits 1 when it is not reached. One seed costs about 105 s for the pairs
(every pair of four answers, 4,775 comparisons) and 45 s for the rankings on one thread of a 2-core
Intel Xeon with AVX-512.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

TARGET = 0.85


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="a finished `alignkit run` folder (runs/<name>)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--comparisons", type=int, default=0,
                    help="the first N comparisons of each prompt only (default 0: all the run labelled)")
    ap.add_argument("--no-rankings", action="store_true", help="train the pairs' models only")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    from alignkit.config import RunConfig, load_config
    from alignkit.data.sources import load_records, write_jsonl
    from alignkit.pipeline import rm_config, setup_worker
    from alignkit.stages import rm

    setup_worker(args.threads)  # as the run's workers: one thread, no per-file bars between the results
    run = args.run_dir
    cfg = load_config(RunConfig, config_file=run / "config.yaml")
    rcfg = replace(rm_config(cfg, run), progress=False, overwrite=True)
    prefs = run / "prefs"
    results = {"pairs": [], "rankings": []}
    surprise_memo = {}  # the prior's surprise at each answer, computed once for all the models
    with tempfile.TemporaryDirectory() as tmp:  # the models go here, not into the run
        tmp = Path(tmp)
        compared = (load_records(prefs / "pairs.jsonl", "pair")
                    + load_records(prefs / "labels.jsonl", "label", allow_empty=True))
        if args.comparisons:
            compared = [r for r in compared if (r.get("meta") or {}).get("comparison", 1) <= args.comparisons]
        data = {"pairs": str(write_jsonl(tmp / "pairs.jsonl", compared)), "rankings": str(prefs / "rankings.jsonl")}
        forms = ["pairs"] if args.no_rankings else ["pairs", "rankings"]
        for seed in args.seeds:
            for form in forms:
                s = rm.run(replace(rcfg, data=data[form], out=str(tmp / f"{form}-{seed}"), seed=seed),
                           surprise_memo=surprise_memo)
                results[form].append(s["heldout_accuracy"])
                print(json.dumps({"seed": seed, "form": form, "heldout_accuracy": round(s["heldout_accuracy"], 4),
                                  "train_comparisons": s["train_comparisons"], "train_prompts": s["train_prompts"],
                                  "train_seconds": s["train_seconds"]}), flush=True)

    print(f"\nheld-out accuracy against the noise-free oracle, {len(args.seeds)} seed(s)")
    for form in forms:
        values = results[form]
        print(f"{form:>9}  " + "  ".join(f"{v:.3f}" for v in values) + f"   mean {sum(values) / len(values):.3f}")
    mean = sum(results["pairs"]) / len(results["pairs"])
    ok = mean >= TARGET
    print(f"pairs alone: {mean:.3f} on average (target ≥ {TARGET}): {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
