"""Verifiable rewards for the built-in world: checkers, not learned models.

Each is a reward function in the form ``alignkit/rollout/rewards.py`` calls — one batch of prompts and
completions plus the prompt records' fields as lists — returning 1.0 (right), 0.0 (wrong) or None
(the checker does not apply to that prompt, e.g. an arithmetic checker on a story request):

    reward=alignkit.world.checkers:arithmetic     the number the completion gives equals `answer`
    reward=alignkit.world.checkers:sentiment      the completion names the right label (`answer`)
    reward=alignkit.world.checkers:ending         the completion ends like a finished answer

They read answers the way the oracle does (``alignkit/world/oracle.py``) but see only the completion and
the record's ``answer`` field, so they work on exported prompt files too.
"""

from __future__ import annotations

from alignkit.world.oracle import answer_number, declarative, norm, proper_ending


def arithmetic(prompts: list, completions: list[str], answer: list | None = None, category: list | None = None,
               **_) -> list[float | None]:
    """1 when the first number the completion states as a result equals ``answer``; None off arithmetic."""
    out: list[float | None] = []
    for i, text in enumerate(completions):
        if not _applies(i, answer, category, "arithmetic"):
            out.append(None)
            continue
        n = answer_number(text)
        out.append(1.0 if n is not None and str(n) == str(answer[i]) else 0.0)
    return out


def sentiment(prompts: list, completions: list[str], answer: list | None = None, category: list | None = None,
              **_) -> list[float | None]:
    """1 when the completion names exactly the right label (positive / negative); None off sentiment."""
    out: list[float | None] = []
    for i, text in enumerate(completions):
        if not _applies(i, answer, category, "sentiment"):
            out.append(None)
            continue
        said = {label for label in ("positive", "negative") if f" {label} " in norm(declarative(text))}
        out.append(1.0 if said == {answer[i]} else 0.0)
    return out


def ending(prompts: list, completions: list[str], **_) -> list[float]:
    """1 when the completion ends like a finished answer (a full stop, no dangling words)."""
    return [1.0 if proper_ending(text) else 0.0 for text in completions]


def _applies(i: int, answer: list | None, category: list | None, name: str) -> bool:
    if answer is None or answer[i] in (None, ""):
        return False
    return category is None or category[i] in (None, name)
