"""Reward sources for online RL (PPO now, GRPO later): what scores a sampled completion.

A reward is a weighted sum of terms, written as a string:

    rm                       the trained reward model (normalised: SFT samples score mean 0, std 1)
    oracle                   the built-in world's gold judge — a *ceiling experiment*, not a recipe:
                             a real assistant never gets to see the gold reward
    my_pkg.checks:reward     any Python function f(prompts, completions, **fields) -> list of floats
                             (None: unscorable), called once per batch; each of `fields` is the list
                             of one of the prompt records' other fields (e.g. `answer`)
    rm + 0.5*my_pkg.checks:reward      several terms, each with an optional weight

Every source maps (rows, completions) to one float per completion; ``rows`` are the prompt records
(``{"prompt": ..., **fields}``).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
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
        if ":" in name:
            load_function(name)  # a function that cannot be imported fails here, before any model is loaded
        terms.append((weight, name))
    return terms


def load_function(path: str):
    """``module:function`` → the function; the module is looked up on sys.path and then in the current directory
    (as ``python -m`` would find it)."""
    module_name, _, attr = path.partition(":")
    try:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            if os.getcwd() in sys.path:
                raise
            sys.path.append(os.getcwd())
            module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as e:
        raise AlignkitError(f"reward: cannot import {path} ({e})") from None
    if not callable(fn):
        raise AlignkitError(f"reward: {path} is not a function")
    return fn


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
    """Σ weight · term for each completion: (B,) fp32, and each term's mean and std (for the logs).

    A term that cannot score a completion (None → NaN) is left out of that completion's sum; when no
    term can score it, the total is NaN (unscorable)."""
    total = torch.zeros(len(completions))
    scored = torch.zeros(len(completions), dtype=torch.bool)
    parts = {}
    for term in terms:
        values = torch.tensor(term.score(rows, completions), dtype=torch.float32)
        ok = ~torch.isnan(values)
        total += torch.where(ok, term.weight * values, torch.zeros_like(values))
        scored |= ok
        parts[f"reward/{term.name}"] = float(values[ok].mean()) if ok.any() else float("nan")
        parts[f"reward/{term.name}/std"] = float(values[ok].std()) if ok.sum() > 1 else 0.0
    return torch.where(scored, total, torch.full_like(total, float("nan"))), parts


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
    fn = load_function(path)

    def score(rows: list[dict], completions: list[str]) -> list[float]:
        fields = {k for r in rows for k in r if k != "prompt"}
        columns = {k: [r.get(k) for r in rows] for k in sorted(fields)}
        try:
            values = fn([r["prompt"] for r in rows], list(completions), **columns)
        except Exception as e:  # a user function: name it, one line
            raise AlignkitError(f"reward: {path} raised {type(e).__name__}: {e}") from None
        if not isinstance(values, (list, tuple)) or len(values) != len(completions):
            got = f"{len(values)} values" if isinstance(values, (list, tuple)) else repr(type(values).__name__)
            raise AlignkitError(f"reward: {path} returned {got} for {len(completions)} completions")
        out = []
        for v in values:
            if v is None:
                out.append(float("nan"))  # unscorable
                continue
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                raise AlignkitError(f"reward: {path} returned {v!r}, not a number or None") from None
        return out
    return score
