"""Zero-shot vs few-shot prompting of a base (pretrained-only) model, judged by the world's oracle.

A pure language model continues text: given a bare question it tends to write more questions, as
the forum pages of its corpus do. Placing a few solved ``Q: … / A: …`` examples before the question
turns the continuation into an answer — in-context learning (GPT-3, Brown et al. 2020, arXiv
2005.14165). Both modes see the same held-out questions and stop at the first blank line.
"""

from __future__ import annotations

from statistics import mean

from alignkit.config import BaseEvalConfig
from alignkit.rollout.sampler import sample

STOP = ["\n\n"]


def evaluate_base(model, tokenizer, world, cfg: BaseEvalConfig, *, progress: bool = False) -> dict:
    """``{"base_zero_shot": EVAL, "base_few_shot": EVAL}`` on the same held-out prompts."""
    tasks = _spread(world.tasks("heldout", categories=list(cfg.categories)), cfg.n_prompts)
    prompts = {
        "base_zero_shot": [world.zero_shot_prompt(t.prompt) for t in tasks],
        "base_few_shot": [world.few_shot_prompt(t.prompt, shots=cfg.shots, seed=cfg.seed + i)
                          for i, t in enumerate(tasks)],
    }
    results = {}
    for mode, texts in prompts.items():
        samples = sample(model, tokenizer, texts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                         batch_size=cfg.batch_size, seed=cfg.seed, stop_strings=STOP, show_progress=progress)
        responses = [t.strip() for t in samples.texts]
        lengths = samples.completion_mask.sum(dim=1).tolist()
        results[mode] = summarise(world, tasks, responses, lengths)
    return results


def summarise(world, tasks: list, responses: list[str], lengths: list[float]) -> dict:
    """Gold reward overall and per category, helpful accuracy, and a few examples."""
    judgements = [world.oracle.judge(t, r) for t, r in zip(tasks, responses)]
    per_category: dict = {}
    for t, j in zip(tasks, judgements):
        per_category.setdefault(t.category, []).append(j)
    return {
        "gold_reward": mean(j.score for j in judgements),
        "rates": {"helpful": mean(float(j.correct) for j in judgements),
                  "proper_ending": mean(float(j.proper_ending) for j in judgements)},
        "per_category": {c: {"gold_reward": mean(j.score for j in js), "accuracy": mean(float(j.correct) for j in js),
                             "n": len(js)} for c, js in sorted(per_category.items())},
        "mean_length": mean(lengths),
        "n_prompts": len(tasks),
        "examples": [{"prompt": t.prompt, "response": r, "gold": j.score}
                     for t, r, j in list(zip(tasks, responses, judgements))[:: max(1, len(tasks) // 6)]][:6],
    }


def _spread(tasks: list, n: int) -> list:
    """Up to ``n`` tasks, alternating between categories so each is equally represented."""
    by_cat: dict = {}
    for t in tasks:
        by_cat.setdefault(t.category, []).append(t)
    out, i = [], 0
    while len(out) < n and any(i < len(v) for v in by_cat.values()):
        out.extend(v[i] for v in by_cat.values() if i < len(v))
        i += 1
    return out[:n]
