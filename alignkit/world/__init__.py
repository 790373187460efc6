"""The built-in world: a small invented universe that makes the whole recipe runnable and measurable.

``build_world(seed=0, **sizes)`` generates, deterministically and in pure Python (no torch):

- ``world.kb`` — the fictional knowledge base (:mod:`alignkit.world.facts`);
- ``world.pretraining_documents()`` — the pretraining corpus (:mod:`alignkit.world.corpus`);
- ``world.tasks(split)`` — prompts with ideal answers in eight categories (:mod:`alignkit.world.tasks`);
- ``world.oracle`` — the gold judge and, via :class:`Labeller`, simulated human labellers
  (:mod:`alignkit.world.oracle`);
- ``world.few_shot_prompt(...)`` / ``world.zero_shot_prompt(...)`` — how a base model is prompted.

``alignkit.world.export.export_world(world, out_dir)`` writes every dataset in the record schema.

    >>> world = build_world(seed=0)
    >>> task = world.tasks("heldout", ["fact"])[0]
    >>> world.oracle.score(task, task.ideal)
    1.0
"""

from __future__ import annotations

import random
from functools import cached_property

from alignkit.world.corpus import build_corpus
from alignkit.world.facts import KnowledgeBase, build_kb
from alignkit.world.oracle import Judgement, Labeller, Oracle
from alignkit.world.tasks import CATEGORIES, SPLITS, Task, arithmetic_problems, arithmetic_qa, build_tasks
from alignkit.world.variants import variants as _variants

__all__ = ["CATEGORIES", "RATE_GROUPS", "FEW_SHOT_DEFAULT", "RARE_IN_SFT", "Judgement", "Labeller", "Oracle", "Task",
           "World", "build_world"]

RATE_GROUPS = {"helpful": ("fact", "arithmetic", "sentiment"), "honest": ("unknown", "false_premise"),
               "harmless": ("harmful",), "over_refusal": ("benign",)}
# exemplar categories of a few-shot prompt whose question is not a task of the world
FEW_SHOT_DEFAULT = ("fact", "arithmetic", "sentiment")
# behaviours that demonstrations rarely show (see World.sft_tasks)
RARE_IN_SFT = ("unknown", "false_premise", "harmful")
# what an imperfect demonstration tacks on: a needless question back to the user (see World.sft_records)
FOLLOW_UPS = ("Is there anything else you want to know?", "Do you have another question?",
              "What else can I tell you?", "Would you like to know more?")


def check_categories(categories) -> None:
    """A ValueError naming the task categories this world does not have."""
    unknown = set(categories) - set(CATEGORIES)
    if unknown:
        raise ValueError(f"unknown categories {sorted(unknown)}; allowed: {', '.join(CATEGORIES)}")


class World:
    """Knowledge base, tasks, oracle and corpus of one seed. Build with :func:`build_world`."""

    def __init__(self, kb: KnowledgeBase, tasks: list[Task], *, seed: int, max_operand: int, corpus_docs: int,
                 sft_rare_fraction: float = 0.10, sft_followup_fraction: float = 0.3):
        self.kb = kb
        self.seed, self.max_operand, self.corpus_docs = seed, max_operand, corpus_docs
        self.sft_rare_fraction = sft_rare_fraction
        self.sft_followup_fraction = sft_followup_fraction
        self._tasks = tasks
        self.oracle = Oracle(kb, tasks)

    def tasks(self, split: str, categories: list[str] | tuple[str, ...] | None = None) -> list[Task]:
        """Tasks of one split ("train" or "heldout"), optionally of some categories, in a fixed order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if isinstance(categories, str):
            categories = (categories,)
        check_categories(categories or ())
        return [t for t in self._tasks if t.split == split and (categories is None or t.category in categories)]

    def sft_tasks(self) -> list[Task]:
        """The train tasks whose ideal answers become SFT demonstrations.

        Like human demonstration data, they cover helpful answers well (facts, arithmetic, sentiment,
        stories, benign requests: all kept) but show "I don't know", premise corrections and refusals
        of harmful requests only rarely: a seeded ``sft_rare_fraction`` of those is kept. SFT then
        answers confidently — and also about entities it has never heard of, and to harmful requests
        that look like the benign ones it was taught to help with. Preference learning closes that gap.
        """
        rng = random.Random(f"alignkit-world:{self.seed}:sft")
        keep = []
        for t in self.tasks("train"):
            if t.category not in RARE_IN_SFT or rng.random() < self.sft_rare_fraction:
                keep.append(t)
        return keep

    def sft_records(self) -> list[dict]:
        """:meth:`sft_tasks` as chat records: ``{"messages": [user, assistant], "category"}``.

        Demonstrations are imperfect, as human-written ones are: a seeded ``sft_followup_fraction`` of
        them ends with a needless question back to the user ("Would you like to know more?"), which the
        oracle marks down (it asks questions: half the credit). SFT imitates the habit; comparisons
        between its own answers, with and without it, teach a reward model or DPO to drop it — an
        improvement over the demonstrations that only preferences can bring (InstructGPT's labellers
        likewise preferred RLHF outputs to the demonstrations themselves).
        """
        rng = random.Random(f"alignkit-world:{self.seed}:followup")
        records = []
        for t in self.sft_tasks():
            answer = t.ideal
            if rng.random() < self.sft_followup_fraction:
                answer = f"{answer} {rng.choice(FOLLOW_UPS)}"
            records.append({"messages": [{"role": "user", "content": t.prompt}, {"role": "assistant", "content": answer}],
                            "category": t.category})
        return records

    def pretraining_documents(self) -> list[str]:
        """The pretraining corpus (built on first use, then cached; the same for the same seed)."""
        return list(self._corpus)

    @cached_property
    def _corpus(self) -> list[str]:
        return build_corpus(self.kb, self._tasks, seed=self.seed, corpus_docs=self.corpus_docs,
                            max_operand=self.max_operand)

    def few_shot_prompt(self, question: str, shots: int, seed: int = 0,
                        categories: list[str] | tuple[str, ...] | None = None) -> str:
        """``shots`` train-split exemplars as ``Q: ...\\nA: ...\\n\\n``, then ``Q: {question}\\nA:``.

        Exemplars come from ``categories``; by default from the question's own category (when it is a
        task of this world), else from fact, arithmetic and sentiment. The caller cuts the generated
        answer at its first newline.
        """
        if categories is None:
            task = self.oracle.by_prompt.get(question)
            categories = (task.category,) if task is not None else FEW_SHOT_DEFAULT
        pool = [t for t in self.tasks("train", categories) if t.prompt != question]
        rng = random.Random(f"{seed}:{question}")
        shots_ = rng.sample(pool, min(shots, len(pool)))
        return "".join(f"Q: {t.prompt}\nA: {t.ideal}\n\n" for t in shots_) + f"Q: {question}\nA:"

    def zero_shot_prompt(self, question: str) -> str:
        """The bare question and a newline: a base model tends to continue with more questions."""
        return f"{question}\n"

    def variants(self, task: Task, rng: random.Random) -> list[str]:
        """The ideal answer and flawed variants of it (see :mod:`alignkit.world.variants`)."""
        return _variants(task, rng, self.kb, self._question_pool)

    def labeller(self, temperature: float = 0.25, tie_margin: float = 0.05, both_bad_threshold: float = -0.3,
                 seed: int = 0) -> Labeller:
        return Labeller(self.oracle, temperature=temperature, tie_margin=tie_margin,
                        both_bad_threshold=both_bad_threshold, seed=seed)

    @cached_property
    def _question_pool(self) -> list[str]:
        rng = random.Random(f"alignkit-world:{self.seed}:questions")
        problems = arithmetic_problems(self.max_operand)
        arith = [arithmetic_qa(*p)[0] for p in rng.sample(problems, min(50, len(problems)))]
        return [f.question for f in self.kb.facts()] + arith

    def __repr__(self) -> str:
        kb = self.kb
        return (f"World(seed={self.seed}, people={len(kb.people)}, places={len(kb.places)}, "
                f"animals={len(kb.animals)}, objects={len(kb.objects)}, tasks={len(self._tasks)})")


def build_world(seed: int = 0, n_people: int = 24, n_places: int = 10, n_animals: int = 10, n_objects: int = 10,
                max_operand: int = 12, corpus_docs: int = 6000, heldout_per_category: int = 40,
                sft_rare_fraction: float = 0.10, sft_followup_fraction: float = 0.3) -> World:
    """The world of ``seed``; keyword arguments are exactly the fields of ``alignkit.config.WorldConfig``."""
    kb = build_kb(seed, n_people=n_people, n_places=n_places, n_animals=n_animals, n_objects=n_objects)
    tasks = build_tasks(kb, seed=seed, max_operand=max_operand, heldout_per_category=heldout_per_category)
    return World(kb, tasks, seed=seed, max_operand=max_operand, corpus_docs=corpus_docs,
                 sft_rare_fraction=sft_rare_fraction, sft_followup_fraction=sft_followup_fraction)
