"""Reward sources for online RL (PPO now, GRPO later): what scores a sampled completion.

A reward is a weighted sum of terms, written as a string:

    rm                       the trained reward model (normalised: SFT samples score mean 0, std 1)
    oracle                   the built-in world's gold judge — a *ceiling experiment*, not a recipe:
                             a real assistant never gets to see the gold reward
    my_pkg.checks:reward     any Python function f(prompt, completion, **fields) -> float, where
                             fields are the prompt record's other fields (e.g. `answer`)
    rm + 0.5*my_pkg.checks:reward      several terms, each with an optional weight

Every source maps (rows, completions) to one float per completion; ``rows`` are the prompt records
(``{"prompt": ..., **fields}``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import torch

from alignkit.errors import AlignkitError

_TERM = re.compile(r"^\s*(?:(?P<weight>[0-9.eE+-]+)\s*\*\s*)?(?P<name>[A-Za-z_][\w.]*(?::[A-Za-z_]\w*)?)\s*$")


@dataclass
class RewardTerm:
    name: str
    weight: float
    score: Callable[[list[dict], list[str]], list[float]]


def parse_reward(spec: str) -> list[tuple[float, str]]:
    """``"rm + 0.5*pkg.mod:fn"`` → [(1.0, "rm"), (0.5, "pkg.mod:fn")]; a malformed spec is a one-line error."""
    terms = []
    for part in spec.split("+"):
        m = _TERM.match(part)
        if not m or not part.strip():
            raise AlignkitError(f"reward: cannot read the term '{part.strip()}' of '{spec}' "
                                "(expected rm, oracle or module:function, optionally as WEIGHT*TERM)")
        name = m.group("name")
        if name not in ("rm", "oracle") and ":" not in name:
            raise AlignkitError(f"reward: unknown source '{name}' (rm, oracle, or a Python function as module:function)")
        try:
            weight = float(m.group("weight")) if m.group("weight") else 1.0
        except ValueError:
            raise AlignkitError(f"reward: '{m.group('weight')}' in '{spec}' is not a number") from None
        terms.append((weight, name))
    return terms


def build_reward(spec: str, *, rm=None, rm_tokenizer=None, world=None, batch_size: int = 64,
                 normalized: bool = True) -> list[RewardTerm]:
    """The terms of ``spec`` as callables. ``rm`` terms need a reward model (scored with its stored
    normalisation unless ``normalized=False``), ``oracle`` terms the world."""
    terms = []
    for weight, name in parse_reward(spec):
        if name == "rm":
            if rm is None:
                raise AlignkitError("reward 'rm' needs a reward model: pass rm=DIR (e.g. runs/demo/rm/model)")
            terms.append(RewardTerm(name, weight, _rm_scorer(rm, rm_tokenizer, batch_size, normalized)))
        elif name == "oracle":
            if world is None:
                raise AlignkitError("reward 'oracle' is the built-in world's gold judge: it needs prompts=world")
            terms.append(RewardTerm(name, weight, _oracle_scorer(world)))
        else:
            terms.append(RewardTerm(name, weight, _function_scorer(name)))
    return terms


def total_reward(terms: list[RewardTerm], rows: list[dict], completions: list[str]) -> tuple[torch.Tensor, dict]:
    """Σ weight · term for each completion: (B,) fp32, and each term's mean (for the logs)."""
    total = torch.zeros(len(completions))
    parts = {}
    for term in terms:
        values = torch.tensor(term.score(rows, completions), dtype=torch.float32)
        total += term.weight * values
        parts[f"reward/{term.name}"] = float(values.mean())
    return total, parts


def _rm_scorer(rm, tokenizer, batch_size: int, normalized: bool):
    from alignkit.models.heads import score_responses
    from alignkit.models.lora import adapters_disabled

    def score(rows: list[dict], completions: list[str]) -> list[float]:
        with adapters_disabled(rm):  # PPO with LoRA shares the reward model's weights with the value model
            return score_responses(rm, tokenizer, [r["prompt"] for r in rows], completions, batch_size=batch_size,
                                   normalized=normalized).tolist()
    return score


def _oracle_scorer(world):
    def score(rows: list[dict], completions: list[str]) -> list[float]:
        return [world.oracle.score_prompt(r["prompt"], c) for r, c in zip(rows, completions)]
    return score


def _function_scorer(path: str):
    module_name, _, attr = path.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise AlignkitError(f"reward: cannot import {path} ({e})") from None
    if not callable(fn):
        raise AlignkitError(f"reward: {path} is not a function")

    def score(rows: list[dict], completions: list[str]) -> list[float]:
        out = []
        for r, c in zip(rows, completions):
            fields = {k: v for k, v in r.items() if k != "prompt"}
            value = fn(r["prompt"], c, **fields)
            try:
                out.append(float(value))
            except (TypeError, ValueError):
                raise AlignkitError(f"reward: {path} returned {value!r}, not a number") from None
        return out
    return score
