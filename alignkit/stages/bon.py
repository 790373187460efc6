"""Best-of-n: the simplest use of a reward model — sample n responses, keep the one it scores highest.

For each held-out prompt the policy samples ``max(n)`` responses; best-of-n for a smaller n picks among
the first n of them, so one sampling pass gives the whole curve. Each n is reported twice: selecting by
the reward model (the proxy) and by the oracle's gold score (the ceiling a perfect reward model would
reach). The KL of best-of-n to the policy has a closed form (Stiennon et al. 2020, arXiv 2009.01325;
Gao et al. 2022, arXiv 2210.10760):

    KL(π_bon ‖ π) = log n − (n − 1) / n

(exact when the n samples are distinct; an upper bound otherwise). Plotting proxy and gold reward
against it is the first picture of reward over-optimisation: the proxy keeps rising with n while the
gold reward rises more slowly, or turns down.

The reference for win rates is the policy's own single response per prompt, sampled exactly as
``alignkit eval`` samples it (same seed), so "win rate vs SFT" means the same thing in every row.

    alignkit bon model=runs/demo/sft/model rm=runs/demo/rm/model out=runs/mine/bon
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from statistics import mean

from alignkit.config import BonConfig, dump_yaml
from alignkit.errors import AlignkitError
from alignkit.eval import harness
from alignkit.eval.metrics import win_rate
from alignkit.rollout.sampler import sample
from alignkit.training.checkpoint import write_json_atomic
from alignkit.training.logging import info
from alignkit.training.setup import prepare_out_dir, resolve_device


def bon_kl(n: int) -> float:
    """Analytic KL(best-of-n ‖ policy) in nats: log n − (n − 1)/n."""
    return math.log(n) - (n - 1) / n


def run(cfg: BonConfig, world) -> dict:
    """Best-of-n curves on the held-out prompts of ``world``; returns (and writes) the stage summary."""
    from alignkit.models.heads import load_scalar_model, score_responses
    from alignkit.models.load import load_model

    if not cfg.model or not cfg.rm:
        raise AlignkitError("bon needs model=DIR (the policy) and rm=DIR (a reward model from `alignkit rm`)")
    ns = sorted({_as_n(n) for n in cfg.n})
    if not ns:
        raise AlignkitError("bon needs at least one n (e.g. n=[1,2,4,8,16])")
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    policy, tokenizer = load_model(cfg.model, device=str(device))
    rm, rm_tokenizer = load_scalar_model(cfg.rm, device=str(device))
    prepare_out_dir(out, resume=None, overwrite=cfg.overwrite)
    dump_yaml(cfg, out / "config.yaml")
    ecfg = cfg.eval
    t0 = time.perf_counter()

    # 1. the reference: the policy's own response, as `alignkit eval` samples it
    tasks = harness.eval_tasks(world, ecfg)
    reference = harness.run_model(policy, tokenizer, world, tasks, "chat", ecfg)
    ref_gold = [j.score for j in reference.judgements]

    # 2. n_max fresh samples per prompt (another seed), scored by the reward model and by the oracle
    N = ns[-1]
    prompts, _ = harness.prompts_for(world, tokenizer, tasks, "chat", ecfg)
    samples = sample(policy, tokenizer, [p for p in prompts for _ in range(N)], max_new_tokens=ecfg.max_new_tokens,
                     temperature=ecfg.temperature, top_p=ecfg.top_p, batch_size=cfg.batch_size,
                     seed=ecfg.seed + 1, show_progress=ecfg.progress)
    texts = [t.strip() for t in samples.texts]
    proxy = score_responses(rm, rm_tokenizer, [t.prompt for t in tasks for _ in range(N)], texts,
                            batch_size=cfg.batch_size).tolist()
    gold = [world.oracle.score(t, texts[i * N + j]) for i, t in enumerate(tasks) for j in range(N)]

    # 3. best of the first n, by the proxy and by the oracle
    curve = []
    for n in ns:
        by_rm = [i * N + max(range(n), key=lambda j: proxy[i * N + j]) for i in range(len(tasks))]
        by_gold = [i * N + max(range(n), key=lambda j: gold[i * N + j]) for i in range(len(tasks))]
        wr = win_rate([gold[k] for k in by_rm], ref_gold, tie_margin=ecfg.tie_margin)
        wr_oracle = win_rate([gold[k] for k in by_gold], ref_gold, tie_margin=ecfg.tie_margin)
        curve.append({"n": n, "kl": bon_kl(n), "proxy_reward": mean(proxy[k] for k in by_rm),
                      "gold_reward": mean(gold[k] for k in by_rm), "win_rate_vs_sft": wr["win_rate"],
                      "win_rate_ci": wr["ci"], "oracle_gold_reward": mean(gold[k] for k in by_gold),
                      "oracle_win_rate_vs_sft": wr_oracle["win_rate"]})
        info(f"bon: n={n:<3} KL {bon_kl(n):.2f}  proxy {curve[-1]['proxy_reward']:+.3f}  "
             f"gold {curve[-1]['gold_reward']:+.3f} (oracle-selected {curve[-1]['oracle_gold_reward']:+.3f})  "
             f"win vs sft {wr['win_rate']:.2f}")

    # 4. best-of-n_max as a model of the comparison table (EVAL block; its KL is the analytic one)
    best = curve[-1]
    chosen = [i * N + max(range(N), key=lambda j: proxy[i * N + j]) for i in range(len(tasks))]
    run_best = harness.ModelRun("chat", tasks, [texts[k] for k in chosen],
                                [world.oracle.judge(t, texts[k]) for t, k in zip(tasks, chosen)],
                                samples.select(chosen))
    evaluation = harness.summarise(run_best, ecfg, references={"sft": reference})
    evaluation["kl_to_sft"] = best["kl"]
    evaluation["n"] = N
    harness.write_run(run_best, evaluation, out / f"best_of_{N}")
    summary = {"n": ns, "curve": curve, "eval": evaluation, "sft_gold_reward": mean(ref_gold),
               "samples_per_prompt": N, "n_prompts": len(tasks), "seconds": round(time.perf_counter() - t0, 1)}
    write_json_atomic(out / "summary.json", summary)
    return summary


def _as_n(value) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise AlignkitError(f"bon: n must be a list of positive integers, got {value!r}") from None
    if n < 1 or str(value).strip() != str(n):
        raise AlignkitError(f"bon: n must be a list of positive integers, got {value!r}")
    return n
