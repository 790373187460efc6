"""The record schema shared by every stage, and its validation (see DESIGN.md, "The record schema").

Records stay plain dicts; this module only checks them and normalises the few shapes that vary:

    text        {"text": str}                                                    pretrain
    chat        {"messages": [{"role", "content"}, ...]}                         sft
                or {"prompt": str | messages, "completion": str | messages}
    pair        {"prompt", "chosen", "rejected", "margin"?: number}              rm, dpo
    ranking     {"prompt", "responses": [r0, r1, ...], "ranking": [2, [0, 1], 3]}
                best -> worst indices into responses; a nested list is a group of tied responses
    label       {"prompt", "responses": [a, b], "label": "tie" | "both_bad"}
    preference  any of pair / ranking / label, told apart by their fields
    prompt      {"prompt": str | messages}                                       ppo, grpo
    scored      {"prompt", "responses": [r0, r1, ...], "gold": [g0, g1, ...]}   reward-model evaluation
                gold scores (numbers, one per response) from an oracle or a trusted judge

Responses (completion, chosen, rejected, responses[i]) are strings or message lists. Extra fields
(`category`, `answer`, ...) are kept untouched. Every problem raises `DataError("<where>: ...")` with a
one-line message naming the field, where `where` is `file.jsonl:12` or `file.parquet:row 5`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from alignkit.errors import DataError

ROLES = ("system", "user", "assistant")
LABELS = ("tie", "both_bad")
KINDS = ("text", "chat", "pair", "ranking", "label", "preference", "prompt", "scored")

# The fields that tell the preference forms apart.
_KEY_FIELDS = {"pair": ("chosen", "rejected"), "ranking": ("ranking",), "label": ("label",)}

_NEEDS = {
    "text": "text records need text",
    "chat": "chat records need messages, or prompt and completion",
    "pair": "pair records need prompt, chosen, rejected",
    "ranking": "ranking records need prompt, responses, ranking",
    "label": "label records need prompt, responses, label",
    "prompt": "prompt records need prompt",
    "scored": "scored records need prompt, responses, gold",
}


# ---------------------------------------------------------------- public helpers


def validate(kind: str, record: Any, where: str) -> dict:
    """Check `record` against the schema of `kind` and return it (the same dict, unchanged).

    `where` locates the record for the error message, e.g. "data.jsonl:12" or "prefs.parquet:row 5".
    """
    if kind not in _CHECKS:
        raise ValueError(f"unknown record kind {kind!r} (expected one of {', '.join(KINDS)})")
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {_type(record)}")
    _CHECKS[kind](record, where)
    return record


def preference_kind(record: dict, where: str = "record") -> str:
    """Which preference form a record uses: "pair", "ranking" or "label"."""
    found = [kind for kind, fields in _KEY_FIELDS.items() if any(_has(record, f) for f in fields)]
    if len(found) > 1:
        fields = " and ".join(repr(_KEY_FIELDS[k][0]) for k in found)
        raise DataError(
            f"{where}: record has both {fields}; a preference record is one of pair, ranking or label"
        )
    if not found:
        raise DataError(
            f"{where}: record has none of 'chosen', 'ranking', 'label' (preference records are pair: prompt, "
            "chosen, rejected; ranking: prompt, responses, ranking; or label: prompt, responses, label)"
        )
    return found[0]


def as_messages(value: str | list[dict], role: str) -> list[dict]:
    """A string becomes one message with `role`; a message list is returned as a (shallow) copy."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return list(value)


def to_messages(record: dict) -> list[dict]:
    """The conversation of a (validated) chat record: `messages`, or prompt (user) + completion (assistant)."""
    if _has(record, "messages"):
        return list(record["messages"])
    return as_messages(record["prompt"], "user") + as_messages(record["completion"], "assistant")


def comparison_places(record: dict) -> tuple[list, list[int]]:
    """A validated preference record → (responses, places): each response's place in the best → worst
    order, 0 = best, equal places tied. pair → [chosen, rejected], [0, 1]; ranking → from its groups;
    label (tie / both_bad) → both at place 0."""
    kind = preference_kind(record)
    if kind == "pair":
        return [record["chosen"], record["rejected"]], [0, 1]
    responses = list(record["responses"])
    places = [0] * len(responses)
    if kind == "ranking":
        for place, tied in enumerate(ranking_groups(record["ranking"])):
            for i in tied:
                places[i] = place
    return responses, places


def prompt_key(record: dict) -> str:
    """The record's prompt as one string (a message list as JSON): what tells comparisons of one prompt apart
    from another's, e.g. to keep them on one side of a train / validation split."""
    prompt = record["prompt"]
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def ranking_groups(ranking: list) -> list[list[int]]:
    """[2, [0, 1], 3] -> [[2], [0, 1], [3]]: best -> worst groups of tied response indices."""
    return [list(item) if isinstance(item, list) else [item] for item in ranking]


# ---------------------------------------------------------------- one check per kind


def _check_text(r: dict, where: str) -> None:
    text = _require(r, "text", "text", where)
    if not isinstance(text, str):
        _fail(where, "text", f"is {_type(text)} (expected a string)")
    if not text.strip():
        _fail(where, "text", "is empty")


def _check_chat(r: dict, where: str) -> None:
    if _has(r, "messages"):
        if _has(r, "prompt") or _has(r, "completion"):
            raise DataError(
                f"{where}: record has both 'messages' and 'prompt'/'completion' (chat records use one or the other)"
            )
        messages = r["messages"]
        _check_messages(messages, "messages", where)
        if not any(m["role"] == "assistant" for m in messages):
            _fail(where, "messages", "has no assistant message (chat records need at least one)")
        first = next(i for i, m in enumerate(messages) if m["role"] != "system")
        if messages[first]["role"] == "assistant":
            _fail(where, f"messages[{first}].role", "is 'assistant' before any user message (the assistant answers "
                  "a user turn)")
        return
    if not _has(r, "prompt"):
        _fail(where, "messages", f"is missing ({_NEEDS['chat']})")
    _check_prompt_value(r["prompt"], where)
    _check_response(_require(r, "completion", "chat", where), "completion", where)


def _check_pair(r: dict, where: str) -> None:
    _check_prompt_value(_require(r, "prompt", "pair", where), where)
    _check_response(_require(r, "chosen", "pair", where), "chosen", where)
    _check_response(_require(r, "rejected", "pair", where), "rejected", where)
    if r["chosen"] == r["rejected"]:
        _fail(where, "rejected", "is the same as 'chosen' (a comparison needs two different responses)")
    margin = r.get("margin")
    if margin is not None and (not _is_number(margin) or not math.isfinite(margin)):
        _fail(where, "margin", f"is {_show(margin)} (expected a finite number)")


def _check_ranking(r: dict, where: str) -> None:
    _check_prompt_value(_require(r, "prompt", "ranking", where), where)
    n = _check_responses(_require(r, "responses", "ranking", where), where)
    ranking = _require(r, "ranking", "ranking", where)
    if not isinstance(ranking, list) or not ranking:
        _fail(
            where,
            "ranking",
            f"is {_show(ranking)} (expected a non-empty list of response indices, best first)",
        )
    seen: set[int] = set()
    for item in ranking:
        group = item if isinstance(item, list) else [item]
        if isinstance(item, list) and not item:
            _fail(where, "ranking", "has an empty tie group []")
        for index in group:
            if isinstance(index, list):
                _fail(
                    where, "ranking", f"has a list inside a tie group {_show(item)} (ties are one level deep)"
                )
            if not isinstance(index, int) or isinstance(index, bool):
                _fail(where, "ranking", f"has {_show(index)} (expected integer indices into responses)")
            if not 0 <= index < n:
                _fail(
                    where, "ranking", f"lists index {index} but there are {n} responses (indices 0..{n - 1})"
                )
            if index in seen:
                _fail(
                    where, "ranking", f"lists index {index} twice (every response index appears exactly once)"
                )
            seen.add(index)
    missing = [i for i in range(n) if i not in seen]
    if missing:
        _fail(
            where, "ranking", f"does not list index {missing[0]} (every response index appears exactly once)"
        )


def _check_label(r: dict, where: str) -> None:
    _check_prompt_value(_require(r, "prompt", "label", where), where)
    _check_responses(_require(r, "responses", "label", where), where)
    label = _require(r, "label", "label", where)
    if label not in LABELS or not isinstance(label, str):
        _fail(where, "label", f"is {_show(label)} (expected one of {', '.join(repr(x) for x in LABELS)})")


def _check_preference(r: dict, where: str) -> None:
    _CHECKS[preference_kind(r, where)](r, where)


def _check_prompt(r: dict, where: str) -> None:
    _check_prompt_value(_require(r, "prompt", "prompt", where), where)


def _check_scored(r: dict, where: str) -> None:
    _check_prompt_value(_require(r, "prompt", "scored", where), where)
    n = _check_responses(_require(r, "responses", "scored", where), where)
    gold = _require(r, "gold", "scored", where)
    if not isinstance(gold, list) or len(gold) != n:
        _fail(where, "gold", f"is {_show(gold)} (expected a list of {n} numbers, one per response)")
    for g in gold:
        if not _is_number(g) or not math.isfinite(g):
            _fail(where, "gold", f"has {_show(g)} (expected finite numbers)")


_CHECKS = {
    "text": _check_text,
    "chat": _check_chat,
    "pair": _check_pair,
    "ranking": _check_ranking,
    "label": _check_label,
    "preference": _check_preference,
    "prompt": _check_prompt,
    "scored": _check_scored,
}


# ---------------------------------------------------------------- field checks


def _check_prompt_value(prompt: Any, where: str) -> None:
    if isinstance(prompt, str):
        if not prompt.strip():
            _fail(where, "prompt", "is empty")
        return
    if not isinstance(prompt, list):
        _fail(where, "prompt", f"is {_type(prompt)} (expected a string or a list of messages)")
    _check_messages(prompt, "prompt", where)


def _check_response(value: Any, field: str, where: str) -> None:
    """A completion/chosen/rejected/response: any string, or messages containing an assistant turn."""
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        _fail(where, field, f"is {_type(value)} (expected a string or a list of messages)")
    _check_messages(value, field, where)
    if not any(m["role"] == "assistant" for m in value):
        _fail(where, field, "has no assistant message")


def _check_responses(responses: Any, where: str) -> int:
    if not isinstance(responses, list):
        _fail(where, "responses", f"is {_type(responses)} (expected a list of at least 2 responses)")
    if len(responses) < 2:
        _fail(where, "responses", f"has {len(responses)} response(s) (expected at least 2)")
    for i, response in enumerate(responses):
        _check_response(response, f"responses[{i}]", where)
    return len(responses)


def _check_messages(messages: Any, field: str, where: str) -> None:
    if not isinstance(messages, list):
        _fail(where, field, f"is {_type(messages)} (expected a list of messages)")
    if not messages:
        _fail(where, field, "is an empty list (expected at least one message)")
    for i, m in enumerate(messages):
        name = f"{field}[{i}]"
        if not isinstance(m, dict):
            _fail(where, name, f"is {_type(m)} (expected an object with role and content)")
        role = m.get("role")
        if role is None:
            _fail(where, f"{name}.role", "is missing")
        if role not in ROLES or not isinstance(role, str):
            _fail(where, f"{name}.role", f"is {_show(role)} (expected one of {', '.join(ROLES)})")
        content = m.get("content")
        if content is None:
            _fail(where, f"{name}.content", "is missing")
        if not isinstance(content, str):
            _fail(where, f"{name}.content", f"is {_type(content)} (expected a string)")


# ---------------------------------------------------------------- small utilities


def _has(record: dict, field: str) -> bool:
    # Columnar sources (parquet, datasets) give every row every column, so null means absent.
    return record.get(field) is not None


def _require(record: dict, field: str, kind: str, where: str) -> Any:
    if field not in record:
        _fail(where, field, f"is missing ({_NEEDS[kind]})")
    if record[field] is None:
        _fail(where, field, f"is null ({_NEEDS[kind]})")
    return record[field]


def _fail(where: str, field: str, problem: str) -> None:
    raise DataError(f"{where}: field '{field}' {problem}")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _type(x: Any) -> str:
    """The JSON name of a value's type, with an article: 'a string', 'a list', 'null'."""
    if x is None:
        return "null"
    if isinstance(x, bool):
        return "a boolean"
    if _is_number(x):
        return "a number"
    if isinstance(x, str):
        return "a string"
    if isinstance(x, list | tuple):
        return "a list"
    if isinstance(x, dict):
        return "an object"
    return type(x).__name__


def _show(x: Any, width: int = 40) -> str:
    """A short one-line rendering of a value for an error message."""
    if isinstance(x, dict | list | tuple) and len(repr(x)) > width:
        return _type(x)
    text = repr(x)  # repr escapes newlines, so the message stays on one line
    return text if len(text) <= width else text[: width - 3] + "..."
