"""Write the world's datasets as JSONL files in the record schema (see DESIGN.md).

=====================  ==============================================================================
pretrain.jsonl         ``{"text"}`` — the pretraining corpus
sft.jsonl              ``{"messages": [user, assistant], "category"}`` — demonstrations: train-split ideal
                       answers, honest/harmless ones kept only at ``sft_rare_fraction`` (World.sft_tasks)
prompts.jsonl          ``{"prompt", "category", "ideal", "answer"?}`` — train split (PPO / GRPO)
eval_prompts.jsonl     the same for the held-out split (evaluation)
pairs.jsonl            ``{"prompt", "chosen", "rejected", "category"}`` — one labelled pair per train task
rankings.jsonl         ``{"prompt", "responses", "ranking", "category"}`` — K=4, ties as nested lists
labels.jsonl           ``{"prompt", "responses": [a, b], "label": "tie" | "both_bad", "category"}``
=====================  ==============================================================================

Candidate responses are :func:`alignkit.world.variants.variants` of each task (the ideal answer and
flawed versions of it), labelled by a simulated :class:`~alignkit.world.oracle.Labeller`. Comparisons the
labeller calls a tie or "both bad" go to labels.jsonl instead of pairs.jsonl.
"""

from __future__ import annotations

import random
from pathlib import Path

from alignkit.data.sources import write_jsonl
from alignkit.world import World
from alignkit.world.oracle import Labeller
from alignkit.world.tasks import Task

RANKING_SIZE = 4


def _prompt_record(t: Task) -> dict:
    record = {"prompt": t.prompt, "category": t.category, "ideal": t.ideal}
    if t.answer is not None:
        record["answer"] = t.answer
    return record


def export_world(world: World, out_dir: str | Path, *, labeller: Labeller | None = None,
                 seed: int = 0) -> dict[str, Path]:
    """Write every dataset of ``world`` under ``out_dir``; returns {name: path}."""
    out = Path(out_dir)
    labeller = labeller or Labeller(world.oracle, seed=seed)
    rng = random.Random(f"alignkit-world:{world.seed}:export:{seed}")
    train = world.tasks("train")

    pairs, rankings, labels = [], [], []
    for t in train:
        candidates = world.variants(t, rng)
        a, b = rng.sample(candidates, 2)
        verdict = labeller.compare(t, a, b, rng)
        if verdict in ("a", "b"):
            chosen, rejected = (a, b) if verdict == "a" else (b, a)
            pairs.append({"prompt": t.prompt, "chosen": chosen, "rejected": rejected, "category": t.category})
        else:
            labels.append({"prompt": t.prompt, "responses": [a, b], "label": verdict, "category": t.category})
        responses = rng.sample(candidates, min(RANKING_SIZE, len(candidates)))
        rankings.append({"prompt": t.prompt, "responses": responses,
                         "ranking": labeller.rank(t, responses, rng), "category": t.category})

    files = {
        "pretrain": ("pretrain.jsonl", ({"text": d} for d in world.pretraining_documents())),
        "sft": ("sft.jsonl", world.sft_records()),
        "prompts": ("prompts.jsonl", (_prompt_record(t) for t in train)),
        "eval_prompts": ("eval_prompts.jsonl", (_prompt_record(t) for t in world.tasks("heldout"))),
        "pairs": ("pairs.jsonl", pairs),
        "rankings": ("rankings.jsonl", rankings),
        "labels": ("labels.jsonl", labels),
    }
    return {name: write_jsonl(out / filename, records) for name, (filename, records) in files.items()}
