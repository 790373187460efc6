"""The terminal chat on a tiny random Llama, driven by a scripted input: replies stream to the output, the
history grows turn by turn and /reset clears it, /quit and end of input exit cleanly, the seed fixes it all."""

import io
import random

import pytest

import alignkit.serve.chat as chat
from alignkit.models.load import build_config, new_model
from alignkit.models.tokenizer import train_tokenizer


def corpus(n: int = 200, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["hello", "the", "cat", "sat", "on", "a", "mat", "and", "ran", "far", "away", "."]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(n)]


@pytest.fixture(scope="module")
def model_and_tok():
    tok = train_tokenizer(corpus(), vocab_size=320)
    return new_model(build_config("llama", "smoke", tok), seed=0), tok


def scripted(lines: list[str]):
    it = iter(lines)

    def input_fn(prompt: str) -> str:
        assert prompt == chat.PROMPT
        return next(it)  # StopIteration would escape; the scripts end in /quit or raise EOFError themselves

    return input_fn


def run(model, tok, lines, monkeypatch, **kw):
    seen: list[list[dict]] = []

    def spy(tokenizer, messages):
        seen.append([dict(m) for m in messages])
        return render(tokenizer, messages)

    render = chat.render_prompt
    monkeypatch.setattr(chat, "render_prompt", spy)
    out = io.StringIO()
    settings = dict(max_new_tokens=8, temperature=1.0, top_p=1.0, top_k=0, seed=0) | kw
    chat.chat_loop(model, tok, **settings, input_fn=scripted(lines), output=out)
    monkeypatch.setattr(chat, "render_prompt", render)
    return out.getvalue(), seen


def test_multi_turn_reset_and_quit(model_and_tok, monkeypatch):
    model, tok = model_and_tok
    text, seen = run(
        model, tok, ["hello", "", "the cat sat", "/help", "/reset", "and again", "/quit", "never read"],
        monkeypatch, system="Be brief.",
    )
    assert [[m["role"] for m in prompt] for prompt in seen] == [
        ["system", "user"],
        ["system", "user", "assistant", "user"],  # the history grows
        ["system", "user"],  # /reset kept only the system message
    ]
    assert seen[1][1]["content"] == "hello" and seen[2][1]["content"] == "and again"
    first_reply = seen[1][2]["content"]
    assert first_reply.strip() and first_reply in text  # streamed to the output, as it is kept in the history
    assert "commands:" in text and "(conversation cleared)" in text


def test_end_of_input_exits_cleanly_and_sampling_is_seeded(model_and_tok, monkeypatch):
    model, tok = model_and_tok

    def until_eof(lines):
        it = iter(lines)

        def input_fn(prompt: str) -> str:
            try:
                return next(it)
            except StopIteration:
                raise EOFError from None

        return input_fn

    outs = []
    for _ in range(2):
        out = io.StringIO()
        chat.chat_loop(model, tok, max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=50, seed=3,
                       input_fn=until_eof(["hello", "cat"]), output=out)
        outs.append(out.getvalue())
    assert outs[0] == outs[1] and outs[0].endswith("\n")


def test_long_history_drops_the_oldest_exchange(model_and_tok, monkeypatch):
    model, tok = model_and_tok
    monkeypatch.setattr(model.config, "max_position_embeddings", 256)  # as if the model were that short
    long = " ".join(["the cat sat on a mat"] * 12)  # ~70 tokens
    text, seen = run(model, tok, [long, long, long, long, "/quit"], monkeypatch, temperature=0.0)
    assert "dropped the oldest exchange" in text
    assert max(len(prompt) for prompt in seen) < 7  # never all four exchanges at once
