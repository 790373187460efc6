"""Votes → training data: the arena's database as record-schema JSONL that `alignkit rm` and `alignkit dpo` read.

    alignkit arena export votes=arena.db out=runs/arena-data
    alignkit rm  model=runs/demo/sft/model data=runs/arena-data/pairs.jsonl,runs/arena-data/labels.jsonl ...
    alignkit dpo model=runs/demo/sft/model data=runs/arena-data/pairs.jsonl ...

``pairs.jsonl``: one ``{prompt, chosen, rejected}`` per "A is better" / "B is better" vote; ``labels.jsonl``: one
``{prompt, responses: [a, b], label: "tie" | "both_bad"}`` per tie or both-bad vote. Every record also carries
the battle's id, the models' names and the voter's anonymous id, which the stages keep as extra fields. A
decisive vote between two identical answers says nothing about them and is left out (the record schema
refuses such a pair); the summary counts it. The same file names as `alignkit prefs` writes.
"""

from __future__ import annotations

from pathlib import Path

from alignkit.data.formats import validate
from alignkit.data.sources import write_jsonl
from alignkit.serve.arena.store import Store


def vote_records(store: Store) -> tuple[list[dict], list[dict], int]:
    """(pair records, label records, decisive votes left out because both answers were the same)."""
    pairs, labels, same = [], [], 0
    for row in store.voted():
        extra = {"battle_id": row["id"], "voter": row["vote_voter"]}
        a, b = row["answer_a"] or "", row["answer_b"] or ""
        if row["vote"] in ("a", "b"):
            if a == b:
                same += 1
                continue
            win, lose = ("a", "b") if row["vote"] == "a" else ("b", "a")
            pairs.append({"prompt": row["prompt"], "chosen": row[f"answer_{win}"] or "",
                          "rejected": row[f"answer_{lose}"] or "", "model_chosen": row[f"model_{win}"],
                          "model_rejected": row[f"model_{lose}"], **extra})
        else:
            labels.append({"prompt": row["prompt"], "responses": [a, b], "label": row["vote"],
                           "models": [row["model_a"], row["model_b"]], **extra})
    for i, r in enumerate(pairs):
        validate("pair", r, f"pairs.jsonl:{i + 1}")
    for i, r in enumerate(labels):
        validate("label", r, f"labels.jsonl:{i + 1}")
    return pairs, labels, same


def export_votes(store: Store, out: str | Path) -> dict:
    """Write out/pairs.jsonl and out/labels.jsonl; returns their paths and the counts."""
    out = Path(out)
    pairs, labels, same = vote_records(store)
    return {"pairs": str(write_jsonl(out / "pairs.jsonl", pairs)), "labels": str(write_jsonl(out / "labels.jsonl", labels)),
            "n_pairs": len(pairs), "n_labels": len(labels), "n_same_answers": same}
