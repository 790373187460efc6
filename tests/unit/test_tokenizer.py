"""The trained BPE tokenizer: specials, chat template, and an exact round trip through AutoTokenizer —
also next to a llama / qwen2 / gpt2 config.json, where transformers 5 may rebuild the pre-tokenizer."""

import json
import os
import random

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoTokenizer  # noqa: E402

from alignkit.errors import AlignkitError  # noqa: E402
from alignkit.models.tokenizer import (  # noqa: E402
    CHAT_TEMPLATE,
    SPECIAL_TOKENS,
    roundtrip_mismatch,
    save_tokenizer,
    train_tokenizer,
)

PROBES = [
    "7 + 15 = 22",
    "1234567",
    "What is 48 * 3? It is 144.",
    "Hello, world! (Really?) -- yes; 'quoted' \"double\" [brackets] {braces} #tag @me 50% $3.50",
    "café — naïve 東京 🙂",
    "tabs\tand  double  spaces,   triple, trailing   \n\n\nnew lines\r\nwindows ",
    "  leading spaces",
    "don't can't WE'LL I'm",
    "<|user|>\nhi<|end|>\n<|assistant|>\n",
]


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    """A few hundred synthetic sentences: words, numbers, arithmetic, punctuation, unicode, chat markup."""
    rng = random.Random(seed)
    names = ["Ada", "Bo", "Cyra", "Dmitri", "Élodie", "Kenji", "Zoë"]
    things = ["apples", "books", "rivers", "robots", "cafés", "東京 trains", "stars 🙂"]
    verbs = ["counts", "likes", "paints", "sells", "finds"]
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 99)
        lines.append(f"{rng.choice(names)} {rng.choice(verbs)} {a} {rng.choice(things)}, then {b} more.")
        lines.append(f"{a} + {b} = {a + b}; {a} - {b} = {a - b}!")
        lines.append(
            f"<|user|>\nWhy do {rng.choice(things)} matter?<|end|>\n<|assistant|>\nBecause.<|end|>\n"
        )
    return lines


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(corpus(), vocab_size=600)


def test_special_tokens_are_single_ids_and_pad_is_not_eos(tok):
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS)))
    for t in SPECIAL_TOKENS:
        assert tok.encode(t, add_special_tokens=False) == [tok.convert_tokens_to_ids(t)]
    assert tok.eos_token == "<|endoftext|>" and tok.pad_token == "<|pad|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert 256 + len(SPECIAL_TOKENS) < len(tok) <= 600  # the small corpus runs out of merges first
    assert tok.model_max_length == 2048
    assert tok.encode("hello", add_special_tokens=True) == tok.encode("hello", add_special_tokens=False)


@pytest.mark.parametrize("text", PROBES)
def test_decode_encode_is_identity(tok, text):
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_digits_are_single_tokens(tok):
    pieces = tok.convert_ids_to_tokens(tok.encode("1234567", add_special_tokens=False))
    assert pieces == list("1234567")


def test_chat_template_format(tok):
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == "<|system|>\nBe brief.<|end|>\n<|user|>\n2+2?<|end|>\n<|assistant|>\n4.<|end|>\n"
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|user|>\n2+2?<|end|>\n<|assistant|>\n")
    assert tok.chat_template == CHAT_TEMPLATE
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    assert ids == tok.encode(text, add_special_tokens=False)


@pytest.mark.parametrize("model_type", [None, "llama", "qwen2", "gpt2"])
def test_autotokenizer_roundtrip(tok, tmp_path, model_type):
    if model_type:  # transformers 5 picks the tokenizer class from the model_type found here
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    save_tokenizer(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "7 + 15 = ? café 🙂"}, {"role": "assistant", "content": "22."}],
        tokenize=False,
    )
    for text in [*PROBES, chat, " ".join(corpus(20, seed=1))]:
        assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False), (
            text
        )
        assert loaded.decode(loaded.encode(text, add_special_tokens=False)) == text
    assert loaded.eos_token_id == tok.eos_token_id and loaded.pad_token_id == tok.pad_token_id
    assert loaded.pad_token_id != loaded.eos_token_id
    assert loaded.chat_template == tok.chat_template
    assert loaded.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=False
    ) == tok.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_dict=False
    )
    assert roundtrip_mismatch(tok, tmp_path) is None


def test_too_small_vocab_is_a_user_error():
    with pytest.raises(AlignkitError, match="vocab_size"):
        train_tokenizer(["abc"], vocab_size=100)


def test_load_tokenizer_completes_a_bare_tokenizer(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from alignkit.models.tokenizer import load_tokenizer

    bpe = Tokenizer(models.BPE())  # GPT-2 style: only <|endoftext|>, no pad, no chat template
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus(30), trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"]))
    save_tokenizer(PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>"), tmp_path)
    tok = load_tokenizer(tmp_path)
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    assert tok.chat_template == CHAT_TEMPLATE
    for t in SPECIAL_TOKENS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1
    with pytest.raises(AlignkitError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
