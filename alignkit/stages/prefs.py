"""Preference collection: the SFT model answers each train prompt k times, simulated labellers compare.

This is the data-collection step of RLHF (InstructGPT §3.4, arXiv 2203.02155): labellers see several
outputs of the current model for one prompt and rank them. Like a labelling interface, the stage shows
k *distinct* answers: it samples 2k and keeps the first k distinct ones (a prompt the policy answers
the same way every time may yield fewer; one with a single distinct answer is skipped and counted). On the built-in world the labeller is
:class:`alignkit.world.oracle.Labeller` — gold score plus Bradley-Terry / Plackett-Luce noise, with
"tie" and "both bad" answers — so the same responses yield

- ``rankings.jsonl``  ``{prompt, responses[k], ranking, category, meta}``: a full ranking of the k responses
  (Plackett-Luce with utilities gold / T; near-equal neighbours may be grouped as a tie);
- ``pairs.jsonl``     ``{prompt, chosen, rejected, category, meta}``: pairwise comparisons of the same
  responses, each an independent label as a pairwise interface would collect: the first two, then the
  next two, then the other pairs (:func:`pair_schedule`) — every pair by default, the first
  ``pairs_per_prompt`` otherwise (``meta.comparison`` says which: 1 = answers 1-2);
- ``labels.jsonl``    ``{prompt, responses[2], label, category, meta}``: those comparisons answered
  "tie" or "both_bad";
- ``heldout.jsonl``   ``{prompt, responses, gold, category, labeller}``: fresh samples on the held-out
  prompts with their gold scores, to evaluate reward models against the noise-free oracle.

With probability ``ideal_fraction`` the labeller also writes the ideal answer for a prompt (as human
labellers sometimes do), and it replaces one of the first two responses — so behaviours the SFT model
almost never shows (saying "I don't know", correcting a false premise, refusing a harmful request) can
still be preferred. With probability ``ideal_unsolved`` it also writes it where none of the shown
answers does what the prompt asks — as a labeller who sees only failures writes what was wanted — which
puts the written answers where the policy fails instead of on random prompts. ``meta`` records how
each record was produced: the sampling temperature and which responses the labeller wrote.

The work splits into ``parts`` (every ``parts``-th prompt, each part with its own seeds) that
:func:`merge` joins, so that ``alignkit run`` can collect them in two processes; one part is the whole.

    alignkit prefs model=runs/demo/sft/model out=runs/mine/prefs k=4
"""

from __future__ import annotations

import itertools
import json
import random
import time
from pathlib import Path

from alignkit.config import PrefsConfig, dump_yaml
from alignkit.data.sources import write_jsonl
from alignkit.data.templates import render_prompt
from alignkit.errors import AlignkitError
from alignkit.rollout.sampler import sample
from alignkit.training.checkpoint import write_json_atomic
from alignkit.training.logging import info
from alignkit.training.setup import prepare_out_dir, resolve_device
from alignkit.world.oracle import Labeller

FILES = ("rankings", "pairs", "labels", "heldout")


def run(cfg: PrefsConfig, world, *, part: tuple[int, int] = (0, 1)) -> dict:
    """Sample, label and write the preference datasets of ``world``; returns the stage summary.

    ``part`` = (i, n): only every n-th train and held-out prompt from the i-th, with seeds of their own
    (part 0 keeps the stage's seeds, so (0, 1) is the whole stage)."""
    from alignkit.models.load import load_model

    i, n = part
    if not cfg.model:
        raise AlignkitError("prefs needs model=DIR (the policy to compare, e.g. runs/demo/sft/model)")
    out = Path(cfg.out)
    device = resolve_device(cfg.device)
    model, tokenizer = load_model(cfg.model, device=str(device))
    prepare_out_dir(out, resume=None, overwrite=cfg.overwrite)
    dump_yaml(cfg, out / "config.yaml")
    t0 = time.perf_counter()
    seed = cfg.seed + 1000 * i
    labeller = Labeller(world.oracle, temperature=cfg.labeller_temperature, tie_margin=cfg.tie_margin,
                        both_bad_threshold=cfg.both_bad_threshold, tie_prob=cfg.tie_prob, seed=seed)
    rng = random.Random(f"alignkit-prefs:{cfg.seed}" + (f":{i}/{n}" if i else ""))
    pair_rng = random.Random(f"alignkit-prefs-pairs:{cfg.seed}:{i}/{n}")
    ideal_rng = random.Random(f"alignkit-prefs-ideal:{cfg.seed}:{i}/{n}")

    # 1. the policy answers every train prompt; a labelling interface shows k *distinct* answers, so
    #    2k are sampled and the first k distinct kept (a memorised prompt may leave fewer, or only one)
    tasks = world.tasks("train")
    if cfg.n_prompts:
        tasks = random.Random(cfg.seed).sample(tasks, min(cfg.n_prompts, len(tasks)))
    tasks = tasks[i::n]
    groups = _sample_groups(model, tokenizer, tasks, 2 * cfg.k, cfg.temperature, cfg, seed=seed)

    # 2. the labeller sometimes writes the ideal answer, then ranks the answers and compares them in pairs
    rankings, pairs, labels = [], [], []
    agree, n_strict, single = 0, 0, 0
    for task, sampled in zip(tasks, groups):
        responses = _distinct(sampled)
        written = []
        write = rng.random() < cfg.ideal_fraction
        if not write and cfg.ideal_unsolved and not any(labeller.acceptable(task, r) for r in responses[:cfg.k]):
            write = ideal_rng.random() < cfg.ideal_unsolved
        if write:
            at = rng.randrange(min(2, len(responses) + 1))
            responses = _distinct(responses[:at] + [task.ideal] + responses[at + 1:])
            written = [responses.index(task.ideal)]
        responses = responses[:cfg.k]
        if len(responses) < 2:
            single += 1
            continue
        meta = {"temperature": cfg.temperature, "labeller_written": written}
        base = {"prompt": task.prompt, "category": task.category}
        rankings.append({**base, "responses": responses, "ranking": labeller.rank(task, responses, rng), "meta": meta})
        # pairwise comparisons (answers 1-2, 3-4, then the other pairs, see pair_schedule): the later ones with
        # a random stream of their own, so that the rankings and first comparisons do not depend on how many
        # are asked for
        for j, (x, y) in enumerate(pair_schedule(len(responses))[:cfg.pairs_per_prompt or None]):
            a, b = responses[x], responses[y]
            verdict = labeller.compare(task, a, b, rng if j == 0 else pair_rng)
            pair_meta = {**meta, "comparison": j + 1, "labeller_written": [(x, y).index(w) for w in written
                                                                           if w in (x, y)]}
            if verdict in ("a", "b"):
                chosen = 0 if verdict == "a" else 1
                pairs.append({**base, "chosen": (a, b)[chosen], "rejected": (a, b)[1 - chosen],
                              "meta": {**pair_meta, "labeller_written": [("chosen" if w == chosen else "rejected")
                                                                         for w in pair_meta["labeller_written"]]}})
                gap = world.oracle.score(task, a) - world.oracle.score(task, b)
                if abs(gap) > cfg.tie_margin:
                    n_strict += 1
                    agree += (gap > 0) == (verdict == "a")
            else:
                labels.append({**base, "responses": [a, b], "label": verdict, "meta": pair_meta})

    # 3. held-out samples with gold scores (the policy's own temperature), for reward-model evaluation
    heldout = []
    if cfg.heldout_k:
        held_tasks = world.tasks("heldout")[i::n]
        held = _sample_groups(model, tokenizer, held_tasks, cfg.heldout_k, cfg.heldout_temperature, cfg,
                              seed=seed + 1)
        heldout = [{"prompt": t.prompt, "category": t.category, "responses": rs,
                    "gold": [world.oracle.score(t, r) for r in rs],
                    "labeller": {"temperature": cfg.labeller_temperature, "tie_margin": cfg.tie_margin}}
                   for t, rs in zip(held_tasks, held)]

    files = {"rankings": rankings, "pairs": pairs, "labels": labels, "heldout": heldout}
    for name, records in files.items():
        write_jsonl(out / f"{name}.jsonl", records)
    summary = _summary(cfg, {name: len(records) for name, records in files.items()}, len(tasks), single,
                       [r["label"] for r in labels], sum(bool(r["meta"]["labeller_written"]) for r in rankings),
                       agree, n_strict, time.perf_counter() - t0)
    write_json_atomic(out / "summary.json", summary)
    _log(summary)
    return summary


def merge(cfg: PrefsConfig, parts: list[Path], out: Path) -> dict:
    """Join the parts' files (in part order) and summaries into one stage in ``out``."""
    from alignkit.data.sources import iter_jsonl

    prepare_out_dir(out, resume=False, overwrite=True)
    dump_yaml(cfg, out / "config.yaml")
    counts = {}
    for name in FILES:
        rows = [row for d in parts for _, row in iter_jsonl(Path(d) / f"{name}.jsonl")]
        write_jsonl(out / f"{name}.jsonl", rows)
        counts[name] = len(rows)
    sums = [json.loads((Path(d) / "summary.json").read_text()) for d in parts]
    total = lambda key: sum(s[key] for s in sums)  # noqa: E731
    labels = [v for s in sums for v, c in s["label_counts"].items() for _ in range(c)]
    summary = _summary(cfg, counts, total("prompts"), total("prompts_with_one_answer"), labels,
                       total("labeller_written"), total("pair_label_agree"), total("pair_label_strict"),
                       max(s["seconds"] for s in sums))
    summary["parts"] = len(parts)
    write_json_atomic(out / "summary.json", summary)
    _log(summary)
    return summary


def _summary(cfg: PrefsConfig, counts: dict, prompts: int, single: int, labels: list[str], written: int,
             agree: int, n_strict: int, seconds: float) -> dict:
    return {
        "prompts": prompts, "prompts_with_one_answer": single, "k": cfg.k, "temperature": cfg.temperature,
        "records": counts,
        "label_counts": {v: labels.count(v) for v in ("tie", "both_bad")},
        "labeller_written": written,
        # how often a pair label agrees with the noise-free preference (pairs the oracle does not call a tie)
        "pair_label_accuracy": agree / n_strict if n_strict else None,
        "pair_label_agree": agree, "pair_label_strict": n_strict,
        "seconds": round(seconds, 1),
    }


def _log(summary: dict) -> None:
    r = summary["records"]
    info(f"prefs: {r['rankings']} rankings of {summary['k']}, {r['pairs']} pairs, {r['labels']} tie/both_bad "
         f"labels, {r['heldout']} held-out groups in {summary['seconds']:.0f}s")


def pair_schedule(k: int) -> list[tuple[int, int]]:
    """The order in which the labeller compares k answers pairwise: the disjoint pairs 1-2, 3-4, … first,
    then each next pair the one whose two answers have been compared least so far (ties: the first in
    lexicographic order) — all C(k, 2) pairs, each answer in about as many as the others at every length.
    k = 4: (0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2)."""
    order = [(i, i + 1) for i in range(0, k - 1, 2)]
    rest = [p for p in itertools.combinations(range(k), 2) if p not in order]
    while rest:
        seen = [sum(i in p for p in order) for i in range(k)]
        order.append(min(rest, key=lambda p: (seen[p[0]] + seen[p[1]], p)))
        rest.remove(order[-1])
    return order


def _distinct(texts: list[str]) -> list[str]:
    return list(dict.fromkeys(texts))


def _sample_groups(model, tokenizer, tasks: list, k: int, temperature: float, cfg: PrefsConfig, *,
                   seed: int) -> list[list[str]]:
    """k responses per task (chat template), as k lists of strings per task."""
    prompts = [render_prompt(tokenizer, [{"role": "user", "content": t.prompt}]) for t in tasks]
    samples = sample(model, tokenizer, [p for p in prompts for _ in range(k)], max_new_tokens=cfg.max_new_tokens,
                     temperature=temperature, batch_size=cfg.batch_size, seed=seed, show_progress=cfg.progress)
    texts = [t.strip() for t in samples.texts]
    return [texts[i * k:(i + 1) * k] for i in range(len(tasks))]
