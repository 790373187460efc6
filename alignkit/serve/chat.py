"""Chat with a model in the terminal: multi-turn, streamed, plain text (so it can be piped and tested).

    alignkit chat --model runs/demo/sft/model [max_new_tokens=128 temperature=0.7 top_p=1.0 top_k=0 seed=0
                                               system="You are terse."]

Each turn renders the whole history with the model's chat template (`data.templates.render_prompt`) and
prints the reply word by word as it is sampled. A reply ends at the model's eos ids (for our tokenizer
`<|endoftext|>` and `<|end|>`) or after max_new_tokens; special tokens are not printed. Commands: /reset
forgets the conversation (the system message stays), /quit or Ctrl-D exits, /help lists them.

Sampling goes through the same GenerationConfig as `rollout.sampler` (logit-changing defaults of the
model's generation_config.json pinned to neutral, temperature 0 = greedy), seeded once per session: the
same seed and the same inputs give the same conversation. When the history no longer fits the model's
positions, the oldest exchanges are dropped.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

import torch
from transformers import TextStreamer

from alignkit.data.templates import render_prompt
from alignkit.models.tokenizer import END_TOKEN
from alignkit.rollout.sampler import (
    position_limit,
    sampling_config,
    seeded,
    stop_token_ids,
    validate_sampling,
)

PROMPT = "> "
HELP = "commands: /reset forgets the conversation, /quit (or Ctrl-D) exits, /help shows this"


def chat_loop(
    model,
    tokenizer,
    *,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    top_k: int,
    seed: int,
    system: str | None = None,
    input_fn: Callable[[str], str] = input,
    output: TextIO = sys.stdout,
) -> None:
    """Read a line, reply, repeat, until /quit or end of input. `input_fn(PROMPT)` gives each user line."""
    validate_sampling(["chat"], max_new_tokens, temperature, top_p, top_k, 1, None)
    eos_ids = stop_token_ids(model, tokenizer)
    if END_TOKEN in tokenizer.get_vocab():  # a model saved without <|end|> in its stop ids still stops there
        eos_ids = list(dict.fromkeys([*eos_ids, tokenizer.convert_tokens_to_ids(END_TOKEN)]))
    gen_config = sampling_config(max_new_tokens, temperature, top_p, top_k, eos_ids, tokenizer.pad_token_id)
    device = next(model.parameters()).device
    opening = [{"role": "system", "content": system}] if system else []
    history = list(opening)

    _say(output, f"chatting with {getattr(tokenizer, 'name_or_path', '') or 'the model'}; {HELP}\n")
    model.eval()
    with torch.no_grad(), seeded(seed, device):
        while True:
            try:
                line = input_fn(PROMPT).strip()
            except (EOFError, KeyboardInterrupt):
                _say(output, "\n")
                return
            if line in ("/quit", "/exit"):
                return
            if line == "/reset":
                history = list(opening)
                _say(output, "(conversation cleared)\n")
            elif line == "/help":
                _say(output, HELP + "\n")
            elif line.startswith("/"):
                _say(output, f"unknown command {line.split()[0]}; {HELP}\n")
            elif line:
                history.append({"role": "user", "content": line})
                prompt_ids = _fit(model, tokenizer, history, opening, max_new_tokens, output)
                if prompt_ids is None:
                    history.pop()
                    continue
                reply = _reply(model, tokenizer, prompt_ids.to(device), gen_config, eos_ids, output)
                if reply is None:
                    history.pop()
                else:
                    history.append({"role": "assistant", "content": reply})


def _fit(model, tokenizer, history: list[dict], opening: list[dict], max_new_tokens: int, output: TextIO):
    """Prompt ids (1, T) of the history; drops the oldest exchanges (in place) until prompt + reply fit."""
    limit = position_limit(model)
    while True:
        ids = tokenizer(render_prompt(tokenizer, history), add_special_tokens=False, return_tensors="pt")
        n = ids["input_ids"].shape[1]
        if not limit or n + max_new_tokens <= limit:
            return ids["input_ids"]
        if len(history) - len(opening) <= 1:  # only the new message is left, and it alone is too long
            _say(output, f"(message too long: {n} tokens + {max_new_tokens} new > {limit} positions)\n")
            return None
        del history[len(opening) : len(opening) + 2]
        _say(output, f"(dropped the oldest exchange to fit the model's {limit} positions)\n")


def _reply(model, tokenizer, prompt_ids: torch.Tensor, gen_config, eos_ids: list[int], output: TextIO):
    """Sample one reply, streaming its text to `output`; the reply's text, or None if interrupted (Ctrl-C)."""
    streamer = _Streamer(tokenizer, output)
    try:
        out = model.generate(
            input_ids=prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            generation_config=gen_config,
            streamer=streamer,
        )
    except KeyboardInterrupt:
        _say(output, "\n(interrupted)\n")
        return None
    ids = out[0, prompt_ids.shape[1] :].tolist()
    end = next((i for i, t in enumerate(ids) if t in eos_ids), len(ids))
    return tokenizer.decode(ids[:end], skip_special_tokens=True)


class _Streamer(TextStreamer):
    """transformers' TextStreamer (prints whole words as they form), writing to `output` instead of print."""

    def __init__(self, tokenizer, output: TextIO):
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.output = output

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        _say(self.output, text + ("\n" if stream_end else ""))


def _say(output: TextIO, text: str) -> None:
    output.write(text)
    output.flush()
