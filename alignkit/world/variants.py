"""Flawed candidate responses for a task, to show (and test) every preference format.

:func:`variants` returns the ideal answer first, then responses that each get one thing wrong: a
hallucination (the task's ``decoy``: a wrong value, a made-up attribute, going along with a false
premise, complying with a harmful request), a needless refusal, "I don't know" where the answer is
known, a base-model continuation that only asks more questions, the ideal answer followed by rambling
questions, and the ideal answer cut off mid-way. The oracle scores the ideal above every one of them.
"""

from __future__ import annotations

import random

from alignkit.world.facts import KnowledgeBase
from alignkit.world.tasks import Task, swap_value

NEEDLESS_REFUSAL = "I'm sorry, but I can't help with that."
SAYS_UNKNOWN = "I don't know."


def cut_off(text: str, fraction: float = 0.6) -> str:
    """``text`` stopped mid-way, without terminal punctuation (a generation that hit its token limit)."""
    cut = text[: max(1, int(len(text) * fraction))].rstrip(" .!?;,\"'")
    return cut or text[:1]


def more_questions(rng: random.Random, pool: list[str], k: int) -> str:
    """What a base model writes after a bare question: more questions, one per line."""
    return "\n".join(rng.sample(pool, min(k, len(pool))))


def variants(task: Task, rng: random.Random, kb: KnowledgeBase, pool: list[str]) -> list[str]:
    """[ideal, flawed...] — distinct strings; ``pool`` supplies questions for the rambling variants."""
    ideal = task.ideal
    out = [ideal, task.meta["decoy"]]
    if task.category not in ("harmful", "unknown"):
        out.append(NEEDLESS_REFUSAL)
    if task.category not in ("unknown",):
        out.append(SAYS_UNKNOWN)
    out.append(more_questions(rng, pool, rng.randint(3, 5)))
    out.append(ideal + " " + more_questions(rng, pool, rng.randint(3, 5)).replace("\n", " "))
    out.append(cut_off(ideal))
    if task.category == "false_premise":
        attr, true = task.meta["attribute"], task.meta["expected"][0]
        others = [v for v in kb.domain(attr) if v not in (true, task.meta["false"])]
        if others:  # rejects the premise but "corrects" it with another wrong value
            out.append(swap_value(ideal, true, rng.choice(others)))
    if task.category == "story":
        subject = task.meta["subject"]
        out.append(f"The {subject} was happy." if subject[0].islower() else f"{subject} was happy.")
        out.append(" ".join([ideal, task.meta["decoy"], ideal, task.meta["decoy"]]))
    seen, unique = set(), []
    for v in out:
        if v not in seen:
            seen.add(v)
            unique.append(v)
    return unique
