"""The prompts an online RL stage (PPO, GRPO) samples from."""

from __future__ import annotations

from alignkit.errors import AlignkitError


def prompt_rows(prompts: str, world, categories: list | tuple = ()) -> list[dict]:
    """``world`` → the world's train prompts (optionally of some categories) with their category and
    verifiable answer, which reward functions receive as fields; else a file of {prompt, ...} records."""
    if prompts == "world":
        try:
            tasks = world.tasks("train", list(categories) or None)
        except ValueError as e:
            raise AlignkitError(f"categories: {e}") from None
        if not tasks:
            raise AlignkitError(f"no world train prompts in categories {list(categories)}")
        return [{"prompt": t.prompt, "category": t.category, "answer": t.answer} for t in tasks]
    from alignkit.data.sources import load_records
    return load_records(prompts, "prompt")
