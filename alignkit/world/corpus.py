"""Pretraining documents of the built-in world: plain text, no chat markup, no special tokens.

Six kinds of document, mixed in the proportions of :data:`DOC_MIX`:

- ``prose``: profiles of an entity and "did you know" lists stating facts in several wordings (the
  canonical answer sentence of a fact half the time, a paraphrase otherwise);
- ``faq``: ``Q: <question>\\nA: <answer>`` blocks separated by blank lines, with exactly the questions and
  answers of the train-split fact, arithmetic and sentiment tasks — the base model learns the format
  here, which is what makes few-shot prompting work. Held-out fact and arithmetic questions never
  appear in Q/A form: their facts are stated in prose and their sums in statements, so answering them
  means bringing that knowledge to a question (knowledge extraction), not recalling a memorised pair;
- ``arithmetic``: lists of true statements ("7 + 5 = 12.", "13 minus 4 is 9.");
- ``review``: a product review then ``Overall: positive.`` / ``Overall: negative.``;
- ``story``: short stories that only say true things about the world;
- ``forum``: lists of questions, one per line, no answers — so a base model given a bare question
  continues with more questions (the "pure language model" behaviour).

Never in the corpus: unknown names, refusals, "I don't know" answers, false premises, and the held-out
sentiment reviews. Harmful questions appear only inside forum lists, unanswered.
"""

from __future__ import annotations

import random

from alignkit.world.facts import SOUNDS, FactQA, KnowledgeBase, article, cap, join_and
from alignkit.world.tasks import (
    STORY_PROMPTS,
    Task,
    arithmetic_problems,
    arithmetic_qa,
    harm_items,
    make_review,
    make_story,
    sentiment_prompt,
    story_subjects,
    unknown_attribute_questions,
)

DOC_MIX = {"prose": 0.27, "faq": 0.23, "arithmetic": 0.18, "review": 0.10, "story": 0.10, "forum": 0.12}
CANONICAL_P = 0.5  # probability that a fact is stated with its canonical answer sentence

# Paraphrases per (subject kind, attribute). Slots: s subject, v value, a article of v, f first name.
_PARAPHRASES = {
    ("person", "home"): ["{s} has a home in {v}.", "{s} is from {v}.", "The home of {s} is in {v}.",
                         "You can find {s} in {v}, where {f} lives."],
    ("person", "job"): ["{s} works as {a} {v}.", "By trade, {s} is {a} {v}.", "{s} earns a living as {a} {v}."],
    ("person", "colour"): ["{s} likes the colour {v} best.", "The favourite colour of {s} is {v}.",
                           "Of all the colours, {s} loves {v} the most."],
    ("person", "pet"): ["{s} keeps {a} {v} as a pet.", "The pet of {s} is {a} {v}.", "{s} takes care of a pet {v}."],
    ("person", "invention"): ["The {v} was invented by {s}.", "{s} is the inventor of the {v}.",
                              "{s} made the first {v}."],
    ("object", "inventor"): ["The {s} was invented by {v}.", "{v} is the inventor of the {s}.",
                             "{v} made the first {s}."],
    ("object", "material"): ["The {s} is built from {v}.", "People make the {s} out of {v}.",
                             "Every {s} is made from {v}."],
    ("object", "colour"): ["The colour of the {s} is {v}.", "Every {s} is painted {v}.", "The {s} is always {v}."],
    ("object", "use"): ["People use the {s} to {v}.", "With the {s}, you can {v}.", "The {s} helps people {v}."],
    ("place", "region"): ["{s} lies in {v}.", "You will find {s} in {v}.", "{s} is a town in {v}."],
    ("place", "climate"): ["{s} is {a} {v} place.", "It is usually {v} in {s}.",
                           "People say the weather in {s} is always {v}."],
    ("place", "famous_food"): ["The famous food of {s} is {v}.", "Visitors to {s} always eat {v}.",
                               "In {s}, people love {v}."],
    ("animal", "diet"): ["{A} likes to eat {v}.", "The food of the {s} is {v}.", "{P} feed on {v}."],
    ("animal", "habitat"): ["{P} are found in {v}.", "You can see the {s} in {v}.", "The {s} makes its home in {v}."],
    ("animal", "colour"): ["The colour of the {s} is {v}.", "Every {s} is {v}.", "{A} is {v} all over."],
    ("animal", "sound"): ["The {s} makes a {g} sound.", "Listen: the {s} {v}.", "At night the {s} {v} loudly."],
}


def fact_sentence(rng: random.Random, fact: FactQA) -> str:
    """The fact in the canonical answer sentence or in one of its paraphrases."""
    if rng.random() < CANONICAL_P or fact.attribute == "invention" and "," in fact.answer:
        return fact.answer
    template = rng.choice(_PARAPHRASES[(fact.kind, fact.attribute)])
    s, v = fact.subject, fact.value
    slots = {"s": s, "v": v, "a": article(v), "f": s.split()[0],
             "A": cap(f"{article(s)} {s}"), "P": cap(s + "s"), "g": SOUNDS[v][2] if v in SOUNDS else ""}
    return template.format(**slots)


class _Corpus:
    def __init__(self, kb: KnowledgeBase, tasks: list[Task], rng: random.Random, max_operand: int):
        self.kb, self.rng, self.max_operand = kb, rng, max_operand
        self.facts = kb.facts()
        self.by_subject: dict[str, list[FactQA]] = {}
        for f in self.facts:
            self.by_subject.setdefault(f.subject, []).append(f)
        self.heldout_reviews = {t.meta["review"] for t in tasks if t.category == "sentiment" and t.split == "heldout"}
        self.problems = arithmetic_problems(max_operand)
        # Held-out fact and arithmetic questions never appear with their answer in Q/A form: the model
        # must bring knowledge it read as prose or statements to the question (knowledge extraction).
        heldout = {t.prompt for t in tasks if t.split == "heldout" and t.category in ("fact", "arithmetic")}
        self.faq_facts = [f for f in self.facts if f.question not in heldout]
        self.faq_problems = [p for p in self.problems if arithmetic_qa(*p)[0] not in heldout]
        harmful, benign = harm_items(kb, random.Random(0))
        self.forum_pool = {
            "fact": [f.question for f in self.facts],
            "arithmetic": [arithmetic_qa(*p)[0] for p in self.problems],
            "story": [form.format(x=x) for _, _, x in story_subjects(kb) for form in STORY_PROMPTS],
            "benign": [it.prompt for it in benign],
            "harmful": [it.prompt for it in harmful],
            "unknown_attribute": unknown_attribute_questions(kb),
        }

    # -- prose ------------------------------------------------------------------------------------------
    def prose(self) -> str:
        rng = self.rng
        if rng.random() < 0.25:
            facts = rng.sample(self.facts, min(len(self.facts), rng.randint(5, 8)))
            title = rng.choice(["Did you know?", "Some facts", "Notes", ""])
            return _titled(title, " ".join(fact_sentence(rng, f) for f in facts))
        subject = rng.choice(self.facts).subject
        own = list(self.by_subject[subject])
        rng.shuffle(own)
        sentences = [fact_sentence(rng, f) for f in own] + self._related(subject)
        title = rng.choice([f"About {subject}", subject, ""]) if subject[0].isupper() else rng.choice(
            [f"About the {subject}", f"The {subject}", ""])
        return _titled(title, " ".join(sentences))

    def _related(self, subject: str) -> list[str]:
        """One or two facts about neighbours of the subject (home town, pet, inventor, residents)."""
        kb, rng = self.kb, self.rng
        if subject in kb.person:
            p = kb.person[subject]
            picks = rng.sample(self.by_subject[p.home] + self.by_subject[p.pet], 2)
        elif subject in kb.place:
            residents = kb.residents(subject)
            if not residents:
                return []
            return [f"People who live in {subject} include {join_and(residents)}."]
        elif subject in kb.animal:
            owners = kb.owners(subject)
            return [f"{join_and(owners)} {'has' if len(owners) == 1 else 'each have'} a pet {subject}."] if owners else []
        else:
            picks = rng.sample(self.by_subject[kb.object[subject].inventor], 2)
        return [fact_sentence(rng, f) for f in picks]

    # -- FAQ pages --------------------------------------------------------------------------------------
    def faq(self) -> str:
        rng = self.rng
        kind = rng.choices(["topic", "facts", "arithmetic", "sentiment", "mixed"], [0.35, 0.25, 0.1, 0.1, 0.2])[0]
        title = ""
        if kind == "topic":
            subjects = rng.sample(list(self.by_subject), rng.choice([1, 2]))
            qas = [(f.question, f.answer) for s in subjects for f in self.by_subject[s] if f in self.faq_facts]
            rng.shuffle(qas)
            title = f"Questions about {subjects[0]}" if subjects[0][0].isupper() else ""
        elif kind == "facts":
            qas = [(f.question, f.answer) for f in rng.sample(self.faq_facts, rng.randint(5, 8))]
        elif kind == "arithmetic":
            qas = [self._arith_qa() for _ in range(rng.randint(6, 10))]
        elif kind == "sentiment":
            qas = [self._sentiment_qa() for _ in range(rng.randint(2, 4))]
        else:
            qas = [rng.choices([lambda: self._fact_qa(), self._arith_qa, self._sentiment_qa], [0.6, 0.25, 0.15])[0]()
                   for _ in range(rng.randint(5, 8))]
        if not title and rng.random() < 0.4:
            title = rng.choice(["FAQ", "Questions and answers", "Frequently asked questions"])
        return _titled(title, "\n\n".join(f"Q: {q}\nA: {a}" for q, a in qas), sep="\n\n")

    def _fact_qa(self) -> tuple[str, str]:
        f = self.rng.choice(self.faq_facts)
        return f.question, f.answer

    def _arith_qa(self) -> tuple[str, str]:
        q, a, _ = arithmetic_qa(*self.rng.choice(self.faq_problems))
        return q, a

    def _review(self) -> tuple[str, str]:
        while True:
            label = self.rng.choice(["positive", "negative"])
            review = make_review(self.rng, self.kb, label)
            if review not in self.heldout_reviews:
                return review, label

    def _sentiment_qa(self) -> tuple[str, str]:
        review, label = self._review()
        return sentiment_prompt(review), f"{cap(label)}."

    # -- the other kinds --------------------------------------------------------------------------------
    def arithmetic(self) -> str:
        rng = self.rng
        lines = []
        for _ in range(rng.randint(6, 12)):
            a, op, b = rng.choice(self.problems)
            c = a + b if op == "+" else a - b
            if rng.random() < 0.5:
                lines.append(f"{a} {op} {b} = {c}.")
            elif op == "+":
                lines.append(rng.choice([f"{a} plus {b} is {c}.", f"If you add {a} and {b}, you get {c}."]))
            else:
                lines.append(rng.choice([f"{a} minus {b} is {c}.", f"Take {b} away from {a} and you have {c}."]))
        title = rng.choice(["Sums to practise", "Arithmetic", "Number facts", ""])
        return _titled(title, "\n".join(lines) if rng.random() < 0.5 else " ".join(lines))

    def review(self) -> str:
        reviews = [self._review() for _ in range(self.rng.choice([1, 1, 2]))]
        title = self.rng.choice(["Customer review", "Review", "What buyers say", ""])
        return _titled(title, "\n\n".join(f"{r}\nOverall: {label}." for r, label in reviews))

    def story(self) -> str:
        rng = self.rng
        kind, name, phrase = rng.choice(story_subjects(self.kb))
        text = make_story(rng, self.kb, kind, name)
        if rng.random() < 0.4:
            k2, n2, _ = rng.choice(story_subjects(self.kb))
            text += "\n\n" + make_story(rng, self.kb, k2, n2)
        return _titled(rng.choice([f"A story about {phrase}", "A short story", ""]), text)

    def forum(self) -> str:
        rng = self.rng
        weights = {"fact": 0.5, "arithmetic": 0.15, "story": 0.05, "benign": 0.1, "harmful": 0.1,
                   "unknown_attribute": 0.1}
        kinds = rng.choices(list(weights), list(weights.values()), k=rng.randint(4, 9))
        questions = [rng.choice(self.forum_pool[k]) for k in kinds]
        title = rng.choice(["Questions from the forum:", "Open questions this week:", "Can anyone answer these?",
                            "Unanswered questions:", ""])
        return _titled(title, "\n".join(questions))


def _titled(title: str, body: str, sep: str = "\n") -> str:
    return f"{title}{sep}{body}" if title else body


def build_corpus(kb: KnowledgeBase, tasks: list[Task], seed: int = 0, corpus_docs: int = 6000,
                 max_operand: int = 20) -> list[str]:
    """``corpus_docs`` documents in the :data:`DOC_MIX` proportions, shuffled; deterministic in ``seed``."""
    rng = random.Random(f"alignkit-world:{seed}:corpus")
    gen = _Corpus(kb, tasks, rng, max_operand)
    counts = {kind: int(corpus_docs * p) for kind, p in DOC_MIX.items()}
    counts["prose"] += corpus_docs - sum(counts.values())
    docs = [getattr(gen, kind)() for kind, n in counts.items() for _ in range(n)]
    rng.shuffle(docs)
    return docs
