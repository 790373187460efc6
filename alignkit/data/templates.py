"""Conversations → token ids with an assistant-only loss mask, for any Jinja chat template.

SFT trains on what the assistant says, each assistant turn's content plus the token that ends the turn
(`<|end|>`, ChatML's `<|im_end|>`, Llama-3's `<|eot_id|>`), so the model learns to stop. System and user
text, role headers and the whitespace a template writes after the end token are context only.

Rather than parse each template family, the template itself says where the assistant turns are:

    full   = render(messages)
    start  = len(render(messages[:i], add_generation_prompt=True))   # where turn i's own text begins
    end    = len(render(messages[:i + 1]).rstrip())                  # where it ends, end token included

That holds only if rendering a prefix of the conversation gives a prefix of `full`; templates that rewrite
earlier turns (e.g. Qwen3 dropping past reasoning) break it, and are refused rather than mis-masked. The
full text is tokenized once, and a token is trained when its characters overlap a span.

The text is tokenized with `add_special_tokens=False`: templates that want a BOS (Llama-3's
`<|begin_of_text|>`) write it themselves, and the tokenizer must not add a second one.
"""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from alignkit.errors import AlignkitError
from alignkit.losses.lm import IGNORE_INDEX


def render_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], *, max_length: int | None = None
) -> dict[str, list[int]]:
    """A conversation → {"input_ids", "labels"}: labels are the ids on assistant tokens, IGNORE_INDEX elsewhere.

    Every assistant turn is trained (content + end-of-turn token). `max_length` keeps the first
    `max_length` tokens (the end is cut), so a long conversation loses its later turns and its last kept
    assistant turn may be cut mid-way (without its end token). Callers drop examples left with no labels.
    """
    full = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        head = _render(tokenizer, messages[:i], generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1])
        checks = ((head, f"the first {i} messages + generation prompt"), (upto, f"the first {i + 1} messages"))
        for prefix, what in checks:
            if not full.startswith(prefix):
                raise AlignkitError(
                    f"chat template of {_name(tokenizer)} is not prefix-stable: rendering {what} is not a "
                    "prefix of rendering the whole conversation (it rewrites earlier turns), so assistant "
                    "tokens cannot be located; use a template that renders each turn the same way every time"
                )
        spans.append((len(head), len(upto.rstrip())))

    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    input_ids, offsets = enc["input_ids"], enc["offset_mapping"]
    # Overlap, not containment: a token straddling the span's start (" Hello" after a header "ASSISTANT: ")
    # is one the model must produce. Zero-width offsets count as one character.
    labels = [
        token if any(s < b and max(e, s + 1) > a for a, b in spans) else IGNORE_INDEX
        for token, (s, e) in zip(input_ids, offsets, strict=True)
    ]
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": list(input_ids), "labels": labels}


def render_prompt(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> str:
    """The conversation so far + the template's generation prompt: the text to sample the next reply from."""
    return _render(tokenizer, messages, generation_prompt=True)


def trained_text(tokenizer: PreTrainedTokenizerBase, example: dict[str, list[int]]) -> str:
    """Decode of the tokens `render_chat` trains on, special tokens kept (for tests and debugging)."""
    trained = [label for label in example["labels"] if label != IGNORE_INDEX]
    return tokenizer.decode(trained, skip_special_tokens=False)


def each_record(records: list, source: str, fn) -> list:
    """``[fn(record) for record in records]``, where a chat-template error names the record: its number in
    ``source``, counted from 1 (the line of a JSON Lines file without blank lines)."""
    out = []
    for n, record in enumerate(records, start=1):
        try:
            out.append(fn(record))
        except AlignkitError as e:
            raise AlignkitError(f"{source}: record {n}: {e}") from None
    return out


def alike_within(responses: list, ids: list) -> bool:
    """True when two different responses have the same tokens (``ids``, each cut to ``max_length``): a
    prompt that fills ``max_length`` leaves every response empty, a long shared beginning leaves them equal.
    Such a comparison says nothing the model could learn, and the stages drop it."""
    import json

    seen: dict[tuple, str] = {}
    for response, tokens in zip(responses, ids, strict=True):
        text = json.dumps(response, sort_keys=True)
        if seen.setdefault(tuple(tokens), text) != text:
            return True
    return False


def dropped_within(stage: str, cut: int, total: int, max_length: int) -> str:
    """The line a preference stage prints for the records ``alike_within`` made it drop."""
    return f"{stage}: {cut} of {total} records dropped: their responses are the same within max_length={max_length}"


def _render(tokenizer: PreTrainedTokenizerBase, messages: list[dict], *, generation_prompt: bool = False) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise AlignkitError(
            f"tokenizer {_name(tokenizer)} has no chat template; load it with alignkit.models.load.load_model"
        )
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # jinja raises its own errors (and templates raise_exception on bad role orders)
        raise AlignkitError(
            f"chat template of {_name(tokenizer)} failed on {len(messages)} messages: {' '.join(str(e).split())[:200]}"
        ) from e


def _name(tokenizer: PreTrainedTokenizerBase) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def render_response(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], response: str | list[dict], *,
                    max_length: int | None = None) -> list[int]:
    """Token ids of prompt (user) + response (assistant) as one finished conversation, ending at the
    template's end-of-turn token: what a reward model scores (its read-out is the last of these tokens).

    Trailing template whitespace is dropped, so a sampled reply that stopped at its end token and the same
    reply rendered from text give the same ids. `max_length` keeps the first `max_length` tokens.
    """
    from alignkit.data.formats import as_messages

    messages = as_messages(prompt, "user") + as_messages(response, "assistant")
    ids = tokenizer(_render(tokenizer, messages).rstrip(), add_special_tokens=False)["input_ids"]
    return list(ids[:max_length] if max_length is not None else ids)


def render_completion(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], response: str | list[dict], *,
                      max_length: int | None = None) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) of prompt (user) + response (assistant): the prompt as the policy sees it
    before answering (with the generation prompt), the completion as the tokens it produces, end-of-turn
    token included. Their concatenation is :func:`render_response`'s ids — except where the response's first
    characters merge with the prompt's last token (a reply starting with a newline after the template's
    own): then the completion is the text after the prompt tokenised on its own, as the policy would have
    sampled it after the prompt. `max_length` cuts the completion so that both fit."""
    from alignkit.data.formats import as_messages

    prompt_text = render_prompt(tokenizer, as_messages(prompt, "user"))
    head = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    full = render_response(tokenizer, prompt, response)
    if full[:len(head)] != list(head):
        text = _render(tokenizer, as_messages(prompt, "user") + as_messages(response, "assistant")).rstrip()
        if not text.startswith(prompt_text):
            raise AlignkitError(f"the chat template of {_name(tokenizer)} writes the prompt differently when a "
                                "response follows it; completion log-probs need prompt + response to start with the "
                                "prompt as the model sees it before answering")
        full = list(head) + tokenizer(text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    keep = len(full) if max_length is None else max(len(head), max_length)
    return list(head), full[len(head):keep]
