"""The built-in world: determinism, splits, a clean corpus, the oracle's ordering, labellers, export."""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
import re
import subprocess
import sys

import pytest

from alignkit.config import WorldConfig
from alignkit.world import CATEGORIES, RATE_GROUPS, build_world
from alignkit.world.export import export_world
from alignkit.world.oracle import REFUSAL_MARKERS, UNKNOWN_MARKERS, Labeller
from alignkit.world.variants import NEEDLESS_REFUSAL, more_questions

HELDOUT = 40


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)


@pytest.fixture(scope="module")
def corpus(world):
    return world.pretraining_documents()


def is_question_list(doc: str) -> bool:
    """A forum-like list: a title and questions (or story requests), one per line, no answers."""
    lines = doc.split("\n")
    return len(lines) >= 4 and all(line.endswith(("?", ":")) or line.startswith(("Tell me", "Write"))
                                   for line in lines)


def first(world, category, split="heldout"):
    return world.tasks(split, [category])[0]


# ---------------------------------------------------------------- construction

def test_build_world_takes_exactly_the_world_config_fields():
    params = list(inspect.signature(build_world).parameters)
    assert params == [f.name for f in dataclasses.fields(WorldConfig)]
    world = build_world(**dataclasses.asdict(WorldConfig()))
    assert len(world.tasks("heldout")) == len(CATEGORIES) * WorldConfig().heldout_per_category


def test_building_the_world_needs_no_torch():
    # how fast it builds is measured in benchmarks/world_and_data.py
    code = ("import sys; from alignkit.world import build_world; build_world().pretraining_documents(); "
            "assert 'torch' not in sys.modules, 'alignkit.world imported torch'")
    subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)


def test_same_seed_same_world_other_seed_other_world(world, corpus):
    again = build_world(seed=0)
    assert again.pretraining_documents() == corpus
    assert [(t.prompt, t.ideal, t.split) for t in again.tasks("train")] == \
           [(t.prompt, t.ideal, t.split) for t in world.tasks("train")]
    other = build_world(seed=1)
    assert other.pretraining_documents() != corpus
    assert [t.prompt for t in other.tasks("heldout")] != [t.prompt for t in world.tasks("heldout")]


def test_tiny_world_builds():
    w = build_world(n_people=2, n_places=2, n_animals=2, n_objects=2, max_operand=2, corpus_docs=10,
                    heldout_per_category=1)
    assert len(w.pretraining_documents()) == 10
    for c in CATEGORIES:
        assert len(w.tasks("heldout", [c])) == 1 and w.tasks("train", [c])


# ---------------------------------------------------------------- tasks and splits

def test_splits_are_disjoint_and_every_category_is_in_both(world):
    train, heldout = world.tasks("train"), world.tasks("heldout")
    assert not {t.prompt for t in train} & {t.prompt for t in heldout}
    assert len({t.prompt for t in train + heldout}) == len(train) + len(heldout)
    for c in CATEGORIES:
        assert len(world.tasks("heldout", [c])) == HELDOUT
        assert len(world.tasks("train", [c])) >= 20
    assert set(RATE_GROUPS) == {"helpful", "honest", "harmless", "over_refusal"}
    with pytest.raises(ValueError):
        world.tasks("test")


def test_task_answers(world):
    for t in world.tasks("train", ["arithmetic"]) + world.tasks("heldout", ["arithmetic"]):
        a, op, b = t.meta["a"], t.meta["op"], t.meta["b"]
        assert max(a, b) <= 20 and int(t.answer) >= 0
        assert int(t.answer) == (a + b if op == "+" else a - b)
        assert t.prompt == f"What is {a} {op} {b}?" and t.ideal == f"{a} {op} {b} = {t.answer}."
    for t in world.tasks("heldout", ["sentiment"]):
        assert t.answer in ("positive", "negative") and t.ideal == t.answer.capitalize() + "."
    for t in world.tasks("heldout", ["harmful"]):
        assert any(m in t.ideal.lower() for m in REFUSAL_MARKERS)
    for t in world.tasks("heldout", ["benign"]):
        assert not any(m in t.ideal.lower() for m in REFUSAL_MARKERS)


def test_few_and_zero_shot_prompts(world):
    q = first(world, "fact").prompt
    assert world.zero_shot_prompt(q) == q + "\n"
    p = world.few_shot_prompt(q, shots=4, seed=0)
    assert p == world.few_shot_prompt(q, shots=4, seed=0)
    assert p.startswith("Q: ") and p.endswith(f"Q: {q}\nA:")
    blocks = p.split("\n\n")
    assert len(blocks) == 5
    train = {t.prompt: t for t in world.tasks("train", ["fact"])}
    for block in blocks[:-1]:
        question, answer = block.split("\n")
        assert train[question[3:]].ideal == answer[3:]
    mixed = world.few_shot_prompt("What is 2 + 2?", shots=3, seed=1, categories=["arithmetic"])
    assert mixed.count("Q: What is") == 4


# ---------------------------------------------------------------- corpus

def test_corpus_has_no_unknown_names_refusals_or_markup(world, corpus):
    text = "\n".join(corpus)
    for names in world.kb.unknown.values():
        for name in names:
            assert not re.search(rf"\b{re.escape(name)}\b", text), name
    low = text.lower().replace("\u2019", "'")
    for marker in REFUSAL_MARKERS + UNKNOWN_MARKERS:
        assert marker not in low, marker
    for markup in ("<|", "user:", "assistant:", "<s>", "</s>"):
        assert markup not in low
    for t in world.tasks("heldout", ["sentiment"]):
        assert t.meta["review"] not in text
    for t in world.tasks("heldout", ["false_premise"]):
        assert t.prompt not in text


def test_harmful_questions_only_in_unanswered_lists(world, corpus):
    harmful = [t.prompt for split in ("train", "heldout") for t in world.tasks(split, ["harmful"])]
    docs = [d for d in corpus if any(h in d for h in harmful)]
    assert docs
    for d in docs:
        assert "A:" not in d and "Q:" not in d
        assert is_question_list(d), d


def test_corpus_mix_and_size(corpus):
    assert len(corpus) == 6000
    words = sum(len(d.split()) for d in corpus) / len(corpus)
    assert 40 <= words <= 120
    assert sum(d.startswith("Q: ") or "\n\nQ: " in d for d in corpus) > 1000  # FAQ pages
    assert sum(bool(re.search(r"\b\d+ [+-] \d+ = \d+\.", d)) and "Q:" not in d for d in corpus) > 300
    assert sum("Overall: positive." in d or "Overall: negative." in d for d in corpus) > 300
    assert sum(is_question_list(d) for d in corpus) > 300  # forum lists


def test_faq_pages_hold_train_questions_only(world, corpus):
    """Train fact questions appear as Q/A; held-out fact and arithmetic questions never do (the model must
    bring facts read as prose, and sums read as statements, to the question), but their facts are stated."""
    text = "\n".join(corpus)
    for t in world.tasks("train", ["fact"]):
        assert f"Q: {t.prompt}\nA: {t.ideal}" in text, t.prompt
    for t in world.tasks("heldout", ["fact", "arithmetic"]):
        assert f"Q: {t.prompt}\nA:" not in text, t.prompt
    for t in world.tasks("heldout", ["fact"]):
        subject, value = t.meta["subject"], t.meta["expected"][0]
        assert sum(subject in d and value in d for d in corpus) >= 5, t.prompt  # stated many times


# ---------------------------------------------------------------- oracle

def test_some_demonstrations_end_with_a_needless_follow_up(world):
    from alignkit.world import FOLLOW_UPS

    records = world.sft_records()
    answers = [r["messages"][1]["content"] for r in records]
    tasks = {t.prompt: t for t in world.sft_tasks()}
    tails = [a for r, a in zip(records, answers) if a != tasks[r["messages"][0]["content"]].ideal]
    assert 0.2 < len(tails) / len(answers) < 0.4  # sft_followup_fraction = 0.3
    for r, a in zip(records, answers):
        t = tasks[r["messages"][0]["content"]]
        if a != t.ideal:
            assert a.startswith(t.ideal + " ") and a[len(t.ideal) + 1:] in FOLLOW_UPS
            # the habit costs real gold reward: a reward model or DPO can learn to drop it
            assert world.oracle.score(t, a) < world.oracle.score(t, t.ideal) - 0.3
    plain = build_world(seed=0, sft_followup_fraction=0.0).sft_records()
    assert [r["messages"][1]["content"] for r in plain] == [tasks[r["messages"][0]["content"]].ideal for r in plain]


def test_ideal_beats_every_flawed_variant(world):
    rng = random.Random(0)
    for t in world.tasks("heldout"):
        candidates = world.variants(t, rng)
        assert candidates[0] == t.ideal and len(candidates) >= 5
        best = world.oracle.score(t, t.ideal)
        assert best == pytest.approx(1.0)
        for v in candidates[1:]:
            assert world.oracle.score(t, v) < best, (t.category, t.prompt, v)


def test_more_questions_scores_clearly_below_the_ideal(world):
    pool = [t.prompt for t in world.tasks("train", ["fact"])]
    rng = random.Random(0)
    for category in ("fact", "arithmetic", "unknown", "false_premise", "benign"):
        for t in world.tasks("heldout", [category])[:10]:
            continuation = more_questions(rng, pool, 4)
            assert world.oracle.score(t, continuation) < world.oracle.score(t, t.ideal) - 0.8
            # the right answer, then it keeps going with questions (no end-of-turn)
            rambling = t.ideal + " " + more_questions(rng, pool, 8).replace("\n", " ")
            assert world.oracle.score(t, rambling) < 0.5


def test_honesty_and_harmlessness_scores(world):
    o = world.oracle
    for t in world.tasks("heldout", ["unknown"]):
        hallucination = o.judge(t, t.meta["decoy"])
        assert hallucination.hallucinated and not hallucination.correct
        assert hallucination.score < o.score(t, NEEDLESS_REFUSAL) < o.score(t, t.ideal)
    for t in world.tasks("heldout", ["harmful"]):
        assert o.score(t, t.meta["decoy"]) < 0 and o.judge(t, t.ideal).refused
    for t in world.tasks("heldout", ["benign"]):
        j = o.judge(t, NEEDLESS_REFUSAL)
        assert j.score < 0 and j.refused and not j.correct
    for t in world.tasks("heldout", ["false_premise"]):
        assert o.judge(t, t.ideal).corrected_premise
        assert o.score(t, t.meta["decoy"]) < 0


def test_matching_ignores_case_whitespace_and_punctuation(world):
    o = world.oracle
    t = first(world, "fact")
    value = t.meta["expected"][0]
    for response in (t.ideal.upper(), "  " + t.ideal.lower().replace(" ", "   ") + "  ", f"{value}!",
                     t.ideal.rstrip(".")):
        assert o.judge(t, response).correct, response
    assert not o.judge(t, t.ideal.rstrip(".")).proper_ending
    a = first(world, "arithmetic")
    assert o.judge(a, f"The answer is {a.answer}").correct and o.judge(a, f"{a.answer}.").correct
    assert not o.judge(a, f"{a.meta['a']} {a.meta['op']} {a.meta['b']}").hallucinated
    s = first(world, "sentiment")
    assert o.judge(s, s.answer.upper()).correct


def test_right_value_for_another_entity_is_a_hallucination(world):
    """Every held-out fact: the ideal answer with the subject swapped for another entity of its kind is
    wrong (-1) — the value alone does not make the answer right; the bare value still is."""
    o, kb = world.oracle, world.oracle.kb
    for t in world.tasks("heldout", ["fact"]):
        subject = t.meta["subject"]
        if subject not in t.ideal:
            continue
        other = next(n for n in kb.names(t.meta["kind"]) if n != subject and n not in t.meta["expected"]
                     and subject not in n and n not in subject)
        j = o.judge(t, t.ideal.replace(subject, other))
        assert j.hallucinated and not j.correct and j.category_score == -1.0, (t.prompt, other)
        assert o.judge(t, t.ideal).correct
        assert o.judge(t, f"{kb.aliases(t.meta['attribute'], t.meta['expected'][0])[0]}.").correct


def test_score_prompt(world):
    t = first(world, "story")
    assert world.oracle.score_prompt(t.prompt, t.ideal) == world.oracle.score(t, t.ideal)
    train = first(world, "fact", "train")
    assert world.oracle.score_prompt(train.prompt, train.ideal) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="not a task"):
        world.oracle.score_prompt("What is the meaning of life?", "42")


# ---------------------------------------------------------------- labellers

def _pairs(world, n_tasks=60):
    rng = random.Random(1)
    out = []
    for t in world.tasks("heldout")[::5][:n_tasks]:
        a, b = rng.sample(world.variants(t, rng), 2)
        out.append((t, a, b))
    return out


def test_labeller_at_zero_temperature_agrees_with_the_oracle(world):
    lab = Labeller(world.oracle, temperature=0.0, tie_margin=0.0, both_bad_threshold=-2.0, seed=0)
    rng = random.Random(0)
    for t, a, b in _pairs(world):
        gold = lab.preferred_noise_free(t, a, b)
        if gold != "tie":
            assert lab.compare(t, a, b, rng) == gold


def test_labeller_noise_and_special_labels(world):
    lab = Labeller(world.oracle, temperature=0.5, tie_margin=0.0, both_bad_threshold=-2.0, seed=0)
    rng = random.Random(0)
    agree = total = 0
    for _ in range(5):
        for t, a, b in _pairs(world):
            gold = lab.preferred_noise_free(t, a, b)
            if gold != "tie":
                agree += lab.compare(t, a, b, rng) == gold
                total += 1
    assert 0.5 < agree / total < 1.0
    t = first(world, "fact")
    assert Labeller(world.oracle, tie_prob=1.0).compare(t, t.ideal, t.ideal, rng) == "tie"
    assert Labeller(world.oracle).compare(t, t.meta["decoy"], t.meta["decoy"] + " ", rng) == "both_bad"


def _flatten(ranking):
    return [i for item in ranking for i in (item if isinstance(item, list) else [item])]


def test_ranking_format(world):
    lab = Labeller(world.oracle, seed=0)
    rng = random.Random(0)
    for t, _, _ in _pairs(world):
        responses = world.variants(t, rng)
        ranking = lab.rank(t, responses, rng)
        assert sorted(_flatten(ranking)) == list(range(len(responses)))
        for item in ranking:
            assert isinstance(item, int) or (isinstance(item, list) and len(item) >= 2 and item == sorted(item))
    t = first(world, "fact")
    tied = Labeller(world.oracle, tie_prob=1.0).rank(t, [t.ideal, t.meta["decoy"], t.ideal], rng)
    assert tied == [[0, 2], 1]
    exact = Labeller(world.oracle, temperature=0.0, tie_margin=0.0, seed=0)
    responses = world.variants(t, rng)
    scores = [world.oracle.score(t, r) for r in responses]
    assert [scores[i] for i in _flatten(exact.rank(t, responses, rng))] == sorted(scores, reverse=True)


# ---------------------------------------------------------------- export

def test_export_writes_every_dataset(world, tmp_path):
    paths = export_world(world, tmp_path)
    assert set(paths) == {"pretrain", "sft", "prompts", "eval_prompts", "pairs", "rankings", "labels"}
    rows = {k: [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines()] for k, p in paths.items()}
    assert all(rows[k] for k in rows), {k: len(v) for k, v in rows.items()}
    assert len(rows["pretrain"]) == 6000 and set(rows["pretrain"][0]) == {"text"}
    for r in rows["sft"]:
        assert [m["role"] for m in r["messages"]] == ["user", "assistant"] and r["category"] in CATEGORIES
    assert len(rows["eval_prompts"]) == len(CATEGORIES) * HELDOUT
    assert {r["prompt"] for r in rows["prompts"]}.isdisjoint(r["prompt"] for r in rows["eval_prompts"])
    assert all("answer" in r for r in rows["prompts"] if r["category"] in ("arithmetic", "sentiment"))
    for r in rows["pairs"]:
        assert {"prompt", "chosen", "rejected"} <= set(r) and r["chosen"] != r["rejected"]
    for r in rows["rankings"]:
        assert sorted(_flatten(r["ranking"])) == list(range(len(r["responses"])))
    assert {r["label"] for r in rows["labels"]} == {"tie", "both_bad"}
    assert all(len(r["responses"]) == 2 for r in rows["labels"])
    # the labels mostly follow the oracle
    agree = sum(world.oracle.score_prompt(r["prompt"], r["chosen"]) >= world.oracle.score_prompt(r["prompt"], r["rejected"])
                for r in rows["pairs"])
    assert agree / len(rows["pairs"]) > 0.7


def test_every_ideal_answer_gets_the_top_score_and_ideal_win_rate_counts_ties(world):
    """The ideal answers are the scale of the win rates vs SFT (harness.ideal_win_rate): each scores 1, so
    against another model's answers they win, or tie where that model already scored 1."""
    from alignkit.eval.harness import ModelRun, ideal_win_rate

    assert all(world.oracle.score(t, t.ideal) == 1.0 for t in world.tasks("train") + world.tasks("heldout"))
    tasks = world.tasks("heldout", "fact")[:4]
    responses = [tasks[0].ideal, tasks[1].ideal, "", "The sky is made of cheese pies."]
    run = ModelRun("chat", tasks, responses, [world.oracle.judge(t, r) for t, r in zip(tasks, responses)], None)
    wr = ideal_win_rate(world, run, tie_margin=0.01)
    assert (wr["wins"], wr["ties"], wr["losses"]) == (2, 2, 0) and wr["win_rate"] == 0.75


def test_pair_schedule_compares_every_pair_once_disjoint_pairs_first():
    from alignkit.stages.prefs import pair_schedule

    assert pair_schedule(4) == [(0, 1), (2, 3), (0, 2), (1, 3), (0, 3), (1, 2)]
    assert pair_schedule(2) == [(0, 1)]
    for k in range(2, 8):
        order = pair_schedule(k)
        assert sorted(order) == [(a, b) for a in range(k) for b in range(a + 1, k)]
        assert order[:k // 2] == [(i, i + 1) for i in range(0, k - 1, 2)]
        seen = [0] * k
        for a, b in order:  # no answer is compared much more often than another at any length
            seen[a] += 1
            seen[b] += 1
            assert max(seen) - min(seen) <= 2
