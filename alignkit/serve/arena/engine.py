"""The arena's models: each one a worker thread that answers prompts in batches and streams the text.

A battle asks two models for an answer. Each model has a queue; its worker takes every job waiting (up to
``batch_size``), renders the prompts with the model's chat template (or the built-in world's few-shot
prompt for a base model), and decodes the batch with the KV cache through ``rollout.sampler.decode_steps``
— the sampler's own loop, which drops finished rows — handing each new piece of text to the job as soon as
its tokens decode to whole characters. Static batching: a job that arrives mid-batch waits for the next
batch (behind more than ``batch_size`` waiting jobs, for more than one). Fifty concurrent voters on the tiny
models thus cost a few batched decodes instead of a hundred interleaved ones.

Each worker seeds its own ``torch.Generator`` (the global RNG is not shared between threads). A model the
direct loop cannot decode (a model whose forward takes no cache, a generation config with logits
processors) is sampled with ``rollout.sampler.sample`` and its answer arrives in one piece.
"""

from __future__ import annotations

import contextlib
import hashlib
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignkit.data.collators import pad_sequences
from alignkit.data.templates import render_prompt
from alignkit.errors import AlignkitError
from alignkit.eval.harness import BASE_STOP
from alignkit.models.load import WEIGHT_GLOBS
from alignkit.rollout.sampler import can_decode, decode_steps, position_limit, sample, stop_token_ids
from alignkit.serve.arena.store import BattleError, Side

(FEW_SHOT_STOP,) = BASE_STOP  # a base model's answer ends where it starts the next "Q:", as in eval's few-shot mode


@dataclass(frozen=True)
class ModelSpec:
    """A model of the arena: its display name, its directory, and how it is prompted (chat / few_shot)."""
    name: str
    path: str
    mode: str = "chat"


def parse_models(entries: list[str], few_shot: list[str]) -> list[ModelSpec]:
    """``models=`` entries (``DIR`` or ``name=DIR``) → specs; ``few_shot`` names the base models among them."""
    specs = []
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = entry.rstrip("/"), entry
        if not name or not path:
            raise AlignkitError(f"models: {entry!r} is neither DIR nor name=DIR")
        specs.append(ModelSpec(name, path, "few_shot" if name in few_shot else "chat"))
    names = [s.name for s in specs]
    if len(specs) < 2:
        raise AlignkitError(f"models= needs at least two models (a battle shows two), got {names}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise AlignkitError(f"models: the name {dupes[0]!r} is given twice; name them apart with name=DIR")
    unknown = sorted(set(few_shot) - set(names))
    if unknown:
        raise AlignkitError(f"few_shot names {unknown[0]!r}, which is not among models= ({', '.join(names)})")
    return specs


def weights_fingerprint(path: str | Path) -> str:
    """sha256 of the model directory's weight files (names and bytes): which weights gave an answer."""
    digest = hashlib.sha256()
    files = sorted({f for g in WEIGHT_GLOBS for f in Path(path).glob(g)})
    for f in files:
        digest.update(f.name.encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Job:
    """One answer to produce: the prompt's token ids and where its text goes."""
    ids: list[int]
    on_text: Callable[[str], None]                  # each new piece of the answer, in order
    on_done: Callable[[str, str | None], None]      # (the whole answer, None) or ("", error message)
    text: str = ""
    tokens: list[int] = field(default_factory=list)
    done: bool = False


class ModelWorker:
    """One model behind a queue; ``submit`` jobs from any thread, they are answered on the worker's thread."""

    def __init__(self, spec: ModelSpec, model, tokenizer, *, max_new_tokens: int, temperature: float,
                 batch_size: int, seed: int, few_shot: Callable[[str], str] | None = None):
        if spec.mode == "few_shot" and few_shot is None:
            raise AlignkitError(f"model {spec.name!r} is prompted few-shot, which needs prompts=world")
        self.spec, self.model, self.tokenizer = spec, model, tokenizer
        self.side = Side(spec.name, spec.path, weights_fingerprint(spec.path))
        self.max_new_tokens, self.temperature, self.batch_size = max_new_tokens, temperature, batch_size
        self.few_shot = few_shot
        self.eos_ids = stop_token_ids(model, tokenizer)
        self.pad_id = int(tokenizer.pad_token_id)
        self.device = next(model.parameters()).device
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.direct = can_decode(model, temperature, 1.0, 0, [])
        self.limit = position_limit(model)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name=f"arena-{spec.name}", daemon=True)
        self._thread.start()

    @property
    def sampling(self) -> dict:
        """How this model's answers are made, as stored with each battle."""
        return {"mode": self.spec.mode, "temperature": self.temperature, "max_new_tokens": self.max_new_tokens}

    # -- from any thread ----------------------------------------------------------------------------------
    def encode(self, prompt: str) -> list[int]:
        """The prompt as this model sees it, in token ids; BattleError 400 when it does not fit the model."""
        if self.spec.mode == "few_shot":
            text = self.few_shot(prompt)
        else:
            text = render_prompt(self.tokenizer, [{"role": "user", "content": prompt}])
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.limit and len(ids) + self.max_new_tokens > self.limit:
            raise BattleError(400, f"the prompt is too long for the models: {len(ids)} tokens + {self.max_new_tokens} "
                                   f"to answer > the {self.limit} positions one of them takes")
        return ids

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        """Answer what is queued, then end the worker's thread (``join`` waits for it)."""
        self._queue.put(None)

    def join(self, timeout: float = 30.0) -> None:
        self._thread.join(timeout=timeout)

    def close(self) -> None:
        self.stop()
        self.join()

    # -- the worker's thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < self.batch_size:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # answer what was taken, then stop
                    break
                jobs.append(nxt)
            try:
                with torch.no_grad():
                    self._answer(jobs)
                for j in jobs:
                    if not j.done:
                        self._finish(j)  # answers that ran to max_new_tokens
            except Exception as e:  # noqa: BLE001 — a failed batch fails its battles, never the worker
                message = " ".join(str(e).split())[:200] or type(e).__name__
                for j in jobs:
                    if not j.done:
                        j.done = True
                        with contextlib.suppress(Exception):
                            j.on_done("", f"{self.spec.name} could not answer: {message}")

    def _answer(self, jobs: list[Job]) -> None:
        if not self.direct:
            texts = sample(self.model, self.tokenizer, [self.tokenizer.decode(j.ids) for j in jobs],
                           max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                           seed=int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator, device=self.device)),
                           stop_strings=[FEW_SHOT_STOP] if self.spec.mode == "few_shot" else None).texts
            for j, text in zip(jobs, texts):
                j.on_text(text)
                j.text = text
            return
        input_ids, mask = pad_sequences([j.ids for j in jobs], pad_id=self.pad_id, left=True)
        steps = decode_steps(self.model, input_ids.to(self.device), mask.to(self.device),
                             max_new_tokens=self.max_new_tokens, temperature=self.temperature, eos_ids=self.eos_ids,
                             generator=self.generator)
        eos = set(self.eos_ids)
        for rows, tokens in steps:
            for row, token in zip(rows.tolist(), tokens.tolist()):
                job = jobs[row]
                if job.done:
                    continue
                if token in eos:
                    self._finish(job)
                    continue
                job.tokens.append(token)
                self._stream(job)
            if all(j.done for j in jobs):
                break  # few-shot answers cut at their stop: nothing left to decode

    def _stream(self, job: Job) -> None:
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return  # a character split across tokens: wait for its last byte
        if self.spec.mode == "few_shot" and FEW_SHOT_STOP in text:
            self._finish(job)  # a base model's answer ends at its blank line
            return
        self._emit(job, text)

    @staticmethod
    def _emit(job: Job, text: str) -> None:
        if text.startswith(job.text) and len(text) > len(job.text):
            job.on_text(text[len(job.text):])
        job.text = text

    def _finish(self, job: Job) -> None:
        """The answer is complete: stream what was held back (a split character at the end), then hand it over."""
        job.done = True
        text = self.tokenizer.decode(job.tokens, skip_special_tokens=True) if job.tokens else job.text
        if self.spec.mode == "few_shot" and FEW_SHOT_STOP in text:
            text = text[: text.index(FEW_SHOT_STOP)]
        self._emit(job, text)
        job.on_done(text.strip(), None)
