"""Assistant-only masks from any chat template: ours, ChatML/Qwen2 (default system message) and Llama-3 (BOS in
the text). Checked by decoding the trained tokens: exactly each assistant content + its end-of-turn token."""

import copy
import random

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from alignkit.data.templates import each_record, render_chat, render_prompt, trained_text
from alignkit.errors import AlignkitError
from alignkit.losses.lm import IGNORE_INDEX
from alignkit.models.tokenizer import CHAT_TEMPLATE, complete_tokenizer, train_tokenizer

# Qwen2-Instruct's template, verbatim: a default system message when the conversation has none.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Meta-Llama-3-Instruct's template, verbatim: the BOS is written by the template.
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}"
    "{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# (template, end-of-turn token, BOS written by the template or None, extra special tokens)
TEMPLATES = {
    "ours": (CHAT_TEMPLATE, "<|end|>", None, []),
    "chatml": (QWEN2_TEMPLATE, "<|im_end|>", None, ["<|im_start|>", "<|im_end|>"]),
    "llama3": (
        LLAMA3_TEMPLATE,
        "<|eot_id|>",
        "<|begin_of_text|>",
        ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
    ),
}

SINGLE = [{"role": "user", "content": "What is 7 + 5?"}, {"role": "assistant", "content": "It is 12."}]
WITH_SYSTEM = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "Hello, Ada."},
    {"role": "user", "content": "Name a river."},
    {"role": "assistant", "content": "The Nile, then 3 more."},
]
THREE = [
    m
    for i, answer in enumerate(["Because.", "Robots sell books.", "40 + 2 = 42"])
    for m in ({"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": answer})
]
CONVERSATIONS = {"single": SINGLE, "with_system": WITH_SYSTEM, "three_turns": THREE}


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names, things = ["Ada", "Bo", "Kenji", "Zoë"], ["apples", "books", "rivers", "robots"]
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        lines.append(f"{rng.choice(names)} sells {a} {rng.choice(things)}, then {b} more. What is {a} + {b}?")
        lines.append("<|user|>\nWhy?<|end|>\n<|assistant|>\nBecause.<|end|>\n")
    return lines


@pytest.fixture(scope="module")
def base_tok():
    return train_tokenizer(corpus(), vocab_size=500)


def with_template(base_tok, name: str):
    template, _, bos, specials = TEMPLATES[name]
    tok = copy.deepcopy(base_tok)
    extra = {"extra_special_tokens": [t for t in (*specials, bos) if t]} if specials or bos else {}
    if extra:
        tok.add_special_tokens(extra, replace_extra_special_tokens=False)
    if bos:
        tok.bos_token = bos
    tok.chat_template = template
    return tok


def expected(messages: list[dict], end: str) -> str:
    return "".join(m["content"] + end for m in messages if m["role"] == "assistant")


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("name", TEMPLATES)
def test_only_assistant_content_and_end_token_are_trained(base_tok, name, conversation):
    tok = with_template(base_tok, name)
    _, end, bos, _ = TEMPLATES[name]
    messages = CONVERSATIONS[conversation]
    ex = render_chat(tok, messages)
    ids, labels = ex["input_ids"], ex["labels"]

    assert len(ids) == len(labels)
    assert all(label in (token, IGNORE_INDEX) for token, label in zip(ids, labels, strict=True))
    assert trained_text(tok, ex) == expected(messages, end)
    # the whole text is the template's rendering, tokenized once without extra specials
    assert tok.decode(ids, skip_special_tokens=False) == tok.apply_chat_template(messages, tokenize=False)
    if bos:  # written by the template, not added a second time by the tokenizer
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    if name == "chatml" and conversation != "with_system":
        assert "You are a helpful assistant." in tok.decode(ids)  # the default system message, untrained

    # the sampling prompt tokenizes to a prefix of the training ids: training and generation agree
    prompt = tok(render_prompt(tok, messages[:-1]), add_special_tokens=False)["input_ids"]
    assert ids[: len(prompt)] == prompt
    assert labels[len(prompt) - 1] == IGNORE_INDEX and labels[len(prompt)] != IGNORE_INDEX


def test_max_length_keeps_the_start(base_tok):
    full = render_chat(base_tok, WITH_SYSTEM)
    cut = render_chat(base_tok, WITH_SYSTEM, max_length=len(full["input_ids"]) - 5)
    n = len(full["input_ids"]) - 5
    assert cut == {"input_ids": full["input_ids"][:n], "labels": full["labels"][:n]}
    assert render_chat(base_tok, WITH_SYSTEM, max_length=10_000) == full


def test_gpt2_like_tokenizer_without_template_gets_ours():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(
            vocab_size=400,
            special_tokens=["<|endoftext|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodes, as in GPT-2
            show_progress=False,
        ),
    )
    gpt2 = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    assert not gpt2.chat_template and gpt2.pad_token is None
    assert complete_tokenizer(gpt2) > 0
    assert gpt2.chat_template == CHAT_TEMPLATE
    ex = render_chat(gpt2, WITH_SYSTEM)
    assert trained_text(gpt2, ex) == expected(WITH_SYSTEM, "<|end|>")
    assert render_prompt(gpt2, SINGLE[:1]).endswith("<|assistant|>\n")


def test_template_that_rewrites_earlier_turns_is_refused(base_tok):
    tok = copy.deepcopy(base_tok)
    tok.chat_template = "{{ messages | length }} turns\n" + CHAT_TEMPLATE  # the header changes every turn
    with pytest.raises(AlignkitError, match="not prefix-stable"):
        render_chat(tok, SINGLE)


def test_template_errors_are_one_line_alignkit_errors(base_tok):
    tok = copy.deepcopy(base_tok)
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(AlignkitError, match="roles must alternate"):
        render_chat(tok, SINGLE)


def test_a_template_error_names_the_record(base_tok):
    tok = copy.deepcopy(base_tok)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not "
                         "supported') }}{% endif %}{{ m['content'] }}{% endfor %}")
    with pytest.raises(AlignkitError, match=r"^chats.jsonl: record 2: chat template .* System role not supported"):
        each_record([SINGLE, WITH_SYSTEM], "chats.jsonl", lambda messages: render_chat(tok, messages))


@pytest.mark.parametrize("name", TEMPLATES)
def test_generation_stops_at_the_templates_end_of_turn_whatever_the_eos(base_tok, name):
    """A base model's tokenizer (eos <|endoftext|>) with an instruct template that closes turns with another
    token: sampling, chat and PPO stop at the end of turn SFT trained, not only at eos."""
    from alignkit.models.load import build_config, new_model, prepare_tokenizer
    from alignkit.rollout.sampler import stop_token_ids

    tok = with_template(base_tok, name)
    end = TEMPLATES[name][1]
    assert tok.eos_token != end or name == "ours"
    model = new_model(build_config("qwen2", "smoke", tok), seed=0)
    prepare_tokenizer(model, tok)
    assert tok.convert_tokens_to_ids(end) in stop_token_ids(model, tok)
    assert tok.eos_token_id in stop_token_ids(model, tok)


def test_a_response_that_merges_with_the_prompts_last_token_is_tokenised_after_it():
    """A reply starting with a newline after the template's own: prompt + reply would tokenise the two
    newlines as one token that straddles the prompt; the completion is the reply's text on its own."""
    from alignkit.data.templates import render_completion, render_response

    tok = train_tokenizer(corpus() + ["Why?\n\n\nBecause.\n\n"] * 50, vocab_size=500)
    head, completion = render_completion(tok, "Why?", "\n\nBecause.")
    assert render_response(tok, "Why?", "\n\nBecause.")[:len(head)] != head  # the merge happens
    assert head == tok(render_prompt(tok, [{"role": "user", "content": "Why?"}]), add_special_tokens=False)["input_ids"]
    assert tok.decode(completion) == "\n\nBecause.<|end|>"
    # without a merge, the completion is the rest of the one tokenisation, as before
    head, completion = render_completion(tok, "Why?", "Because.")
    assert head + completion == render_response(tok, "Why?", "Because.")
