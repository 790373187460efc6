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


def check_prompt_lengths(rows: list[dict], source: str, model, tokenizer, max_new_tokens: int) -> None:
    """Every prompt, rendered with the chat template, leaves room for ``max_new_tokens`` within the model's
    positions: checked once before training, so a long prompt is named (``source``: record n) instead of
    stopping the run at the step that samples it."""
    from alignkit.data.formats import as_messages
    from alignkit.data.templates import each_record, render_prompt
    from alignkit.rollout.sampler import position_limit

    limit = position_limit(model)
    texts = each_record(rows, source, lambda r: render_prompt(tokenizer, as_messages(r["prompt"], "user")))
    if not limit:
        return
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    for n, length in enumerate(lengths, start=1):
        if length + max_new_tokens > limit:
            raise AlignkitError(f"{source}: record {n}: the prompt has {length} tokens; with max_new_tokens="
                                f"{max_new_tokens} that exceeds the model's {limit} positions")
