"""Build tiny random Llama / Qwen2 / GPT-2 models, save, load back with load_model, and sample.

Checks the things that go wrong silently: left padding changing greedy outputs, masks disagreeing with
eos, stop strings, determinism, and a tokenizer without a pad token."""

import os
import random

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, PreTrainedTokenizerFast  # noqa: E402

from alignkit.data.collators import pad_sequences  # noqa: E402
from alignkit.errors import AlignkitError  # noqa: E402
from alignkit.models.load import (  # noqa: E402
    SIZES,
    build_config,
    count_params,
    load_model,
    new_model,
    save_model,
)
from alignkit.models.tokenizer import save_tokenizer, train_tokenizer  # noqa: E402
from alignkit.rollout.sampler import sample  # noqa: E402

TEST_SIZE = {
    "hidden_size": 64,
    "num_layers": 2,
    "num_heads": 4,
    "num_kv_heads": 2,
    "intermediate_size": 128,
    "max_positions": 64,
}


def corpus(n: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "ran", "far", "away", "café", "🙂", "."]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]
    lines += [f"{rng.randint(0, 99)} + {rng.randint(0, 99)} = {rng.randint(0, 198)}" for _ in range(n)]
    return lines


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(corpus(), vocab_size=400)


@pytest.fixture(scope="module")
def prompts(tok):
    msgs = [
        [{"role": "user", "content": c}] for c in ["hi", "the cat sat on a mat and ran far away", "7 + 5 ="]
    ]
    rendered = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    return [*rendered, "the", "café 🙂 the mat"]


@pytest.fixture(scope="module", params=["llama", "qwen2", "gpt2"])
def saved(request, tok, tmp_path_factory):
    model = new_model(build_config(request.param, TEST_SIZE, tok), seed=0)
    out = tmp_path_factory.mktemp(request.param)
    save_model(model, tok, out)
    return out, model


def test_saved_dir_loads_identically(saved, tok):
    path, original = saved
    model, loaded_tok = load_model(path)
    assert not model.training
    text = "7 + 15 = 22 café 🙂 <|user|>\nhi<|end|>\n"
    assert loaded_tok.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
    assert loaded_tok.pad_token_id == tok.pad_token_id != tok.eos_token_id
    assert model.config.vocab_size == len(tok)  # nothing was added or resized
    assert set(model.generation_config.eos_token_id) == {
        tok.eos_token_id,
        tok.convert_tokens_to_ids("<|end|>"),
    }
    assert model.generation_config.pad_token_id == tok.pad_token_id
    for a, b in zip(original.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def check_masks(out, tok, eos_ids, max_new_tokens):
    """completion_mask is 1 up to and including the first eos, pad after; texts match the kept tokens."""
    for i in range(len(out.prompts)):
        n = int(out.completion_mask[i].sum())
        row = out.completion_ids[i].tolist()
        assert out.completion_mask[i, :n].all() and not out.completion_mask[i, n:].any()
        assert all(t == tok.pad_token_id for t in row[n:])
        hit = [j for j, t in enumerate(row[:n]) if t in eos_ids]
        assert hit == ([n - 1] if out.finished[i] else [])
        if not out.finished[i]:
            assert n == max_new_tokens
        assert out.texts[i] == tok.decode(row[:n], skip_special_tokens=True)


def test_sample_masks_padding_and_batch_invariance(saved, prompts):
    model, tok = load_model(saved[0])
    eos_ids = set(model.generation_config.eos_token_id)
    out = sample(model, tok, prompts, max_new_tokens=12, temperature=0.0, batch_size=len(prompts))
    B = len(prompts)
    assert out.prompt_ids.shape[0] == out.completion_ids.shape[0] == B and len(out.texts) == B
    assert (
        out.prompt_mask.shape == out.prompt_ids.shape
        and out.completion_mask.shape == out.completion_ids.shape
    )
    for i, p in enumerate(prompts):  # left padding
        ids = tok.encode(p, add_special_tokens=False)
        assert out.prompt_ids[i, -len(ids) :].tolist() == ids and out.prompt_mask[i].sum() == len(ids)
        assert (out.prompt_ids[i, : -len(ids)] == tok.pad_token_id).all()
    check_masks(out, tok, eos_ids, 12)
    check_masks(sample(model, tok, prompts, max_new_tokens=12, seed=0), tok, eos_ids, 12)

    # greedy decoding of a padded batch == each prompt alone (padding must not change the outputs)
    for i, p in enumerate(prompts):
        one = sample(model, tok, [p], max_new_tokens=12, temperature=0.0)
        n = int(one.completion_mask[0].sum())
        assert one.completion_ids[0, :n].tolist() == out.completion_ids[i, :n].tolist()
        assert one.texts[0] == out.texts[i] and one.finished[0] == out.finished[i]

    # a random model rarely emits eos: declare a token it does emit an extra eos, so rows finish early
    # at different steps; each row must stop at its first occurrence, with identical tokens before it
    stop_id = out.completion_ids[B - 1, 3].item()
    model.generation_config.eos_token_id = [*eos_ids, stop_id]
    early = sample(model, tok, prompts, max_new_tokens=12, temperature=0.0, batch_size=2)
    check_masks(early, tok, {*eos_ids, stop_id}, 12)
    assert early.finished[B - 1]
    for i in range(B):
        row = out.completion_ids[i].tolist()
        n = next((j + 1 for j, t in enumerate(row) if t in {*eos_ids, stop_id}), 12)
        assert early.completion_ids[i, :n].tolist() == row[:n] and int(early.completion_mask[i].sum()) == n


def _extra_eos(model, tok, prompts, temperature: float) -> None:
    """A random model rarely emits eos: tokens it does emit, at different steps, become extra eos ids
    (greedy, it repeats one token per prompt: the last prompt's ends its row at once, others run on)."""
    import alignkit.rollout.sampler as sampler

    first = sample(model, tok, prompts * 4, max_new_tokens=16, temperature=temperature, batch_size=8, seed=1)
    extra = {first.completion_ids[-1, 3].item()}
    if temperature > 0:
        extra |= {first.completion_ids[i, 2 + i % 9].item() for i in range(0, 20, 3)}
    model.generation_config.eos_token_id = [*sampler.stop_token_ids(model, tok), *extra]


def test_greedy_decoding_skips_finished_rows_with_generates_tokens(saved, prompts, monkeypatch):
    """Greedy runs the sampler's own KV-cached loop, which drops rows once they end: its tokens must be
    generate's, with rows ending at different steps."""
    import alignkit.rollout.sampler as sampler

    model, tok = load_model(saved[0])
    kwargs = dict(max_new_tokens=16, temperature=0.0, batch_size=8, seed=1)
    if saved[0].name.startswith(("llama", "qwen2")):  # transformers 5 decoders with a cache argument
        assert sampler.can_decode(model, 0.0, 1.0, 0, [])
    with monkeypatch.context() as m:
        m.setattr(sampler, "can_decode", lambda *args: False)
        _extra_eos(model, tok, prompts, 0.0)
        via_generate = sample(model, tok, prompts * 4, **kwargs)
    direct = sample(model, tok, prompts * 4, **kwargs)
    assert torch.equal(direct.completion_ids, via_generate.completion_ids)
    assert torch.equal(direct.completion_mask, via_generate.completion_mask)
    assert direct.texts == via_generate.texts and direct.finished == via_generate.finished
    lengths = direct.completion_mask.sum(dim=1).tolist()
    assert len(set(lengths)) > 1 and any(direct.finished) and max(lengths) == 16


def test_plain_sampling_skips_finished_rows_without_changing_tokens(saved, prompts):
    """Temperature sampling in the KV-cached loop that drops finished rows gives, row for row, the tokens
    of a plain loop that runs every row to the end without a cache and draws with the same uniforms."""
    import alignkit.rollout.sampler as sampler

    if not saved[0].name.startswith(("llama", "qwen2")):
        pytest.skip("the cached loop needs a transformers 5 decoder")
    model, tok = load_model(saved[0])
    _extra_eos(model, tok, prompts, 0.8)
    eos = sampler.stop_token_ids(model, tok)
    rows = tok(prompts * 4, add_special_tokens=False)["input_ids"]
    ids, mask = pad_sequences(rows, pad_id=tok.pad_token_id, left=True)
    B, T = ids.shape[0], 16
    with torch.no_grad():
        torch.manual_seed(7)
        cached = torch.tensor(sampler._decode(model.eval(), ids, mask, max_new_tokens=T, temperature=0.8,
                                              eos_ids=eos, pad_id=tok.pad_token_id))
        torch.manual_seed(7)
        u = torch.rand(B, T)
        seq, m, plain = ids, mask.long(), []
        for t in range(T):
            logits = model(input_ids=seq, attention_mask=m, position_ids=(m.cumsum(1) - 1).clamp(min=0)).logits[:, -1]
            nxt = sampler.draw(torch.softmax(logits.float() / 0.8, dim=-1), u[:, t])
            plain.append(nxt)
            seq, m = torch.cat([seq, nxt[:, None]], 1), torch.cat([m, m.new_ones(B, 1)], 1)
    plain = torch.stack(plain, 1)
    ends = []
    for i in range(B):
        n = next((j + 1 for j, x in enumerate(plain[i].tolist()) if x in eos), T)
        ends.append(n)
        assert cached[i, :n].tolist() == plain[i, :n].tolist()
        assert (cached[i, n:] == tok.pad_token_id).all()
    assert len(set(ends)) > 2 and max(ends) == T and min(ends) < T  # rows ended at different steps


def test_draw_follows_the_distribution_and_never_picks_a_zero():
    """Inverse-CDF draws: exact bins for given uniforms, frequencies within 5 σ of p, zeros never drawn
    (also at u = 0 and at a total rounded up), unnormalised rows."""
    from alignkit.rollout.sampler import draw

    p = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3, 0.0]])
    got = draw(p.expand(6, -1), torch.tensor([0.0, 0.1999, 0.2001, 0.6999, 0.7001, 0.9999999]))
    assert got.tolist() == [1, 1, 3, 3, 4, 4]
    assert draw(p * 7, torch.tensor([0.5])).tolist() == [3]  # rows need not sum to one
    assert draw(p, torch.tensor([1.0])).tolist() == [4]  # u · Σp at Σp: the last token that can be drawn
    gen = torch.Generator().manual_seed(0)
    n = 40_000
    q = torch.softmax(torch.randn(1, 50, generator=gen) * 2, dim=-1)
    counts = torch.bincount(draw(q.expand(n, -1), torch.rand(n, generator=gen)), minlength=50).float()
    sd = (n * q[0] * (1 - q[0])).sqrt()
    assert ((counts - n * q[0]).abs() <= 5 * sd + 1).all()
    for bad in (torch.tensor([[0.5, float("nan")]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[float("inf"), 1.0]])):
        with pytest.raises(AlignkitError, match="not finite or all zero"):
            draw(bad, torch.tensor([0.5]))


def test_sampling_is_deterministic_given_seed(saved, prompts):
    model, tok = load_model(saved[0])
    kwargs = dict(max_new_tokens=10, temperature=1.0, top_p=0.9, top_k=20, batch_size=2)
    a = sample(model, tok, prompts, seed=3, **kwargs)
    b = sample(model, tok, prompts, seed=3, **kwargs)
    c = sample(model, tok, prompts, seed=4, **kwargs)
    assert torch.equal(a.completion_ids, b.completion_ids) and a.texts == b.texts
    assert not torch.equal(a.completion_ids, c.completion_ids) or a.texts != c.texts
    assert a.completion_ids.shape[1] <= 10
    state = torch.random.get_rng_state()
    sample(model, tok, prompts[:1], seed=5, **kwargs)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_stop_strings_cut_text_and_mask(saved, prompts, temperature, monkeypatch):
    import alignkit.rollout.sampler as sampler

    model, tok = load_model(saved[0])
    with monkeypatch.context() as m:  # stop strings go through generate: the free answers too, for its tokens
        m.setattr(sampler, "can_decode", lambda *args: False)
        free = sample(model, tok, prompts, max_new_tokens=16, temperature=temperature, seed=1)
    # a stop string that occurs inside some completion, usually spanning a token boundary
    text = max(free.texts, key=lambda t: len(set(t)))
    stop = text[2:5]
    cut = sample(
        model, tok, prompts, max_new_tokens=16, temperature=temperature, seed=1, stop_strings=[stop, "§"]
    )
    assert any(stop in t for t in free.texts)
    for i in range(len(prompts)):
        if stop in free.texts[i]:
            assert cut.texts[i] == free.texts[i][: free.texts[i].index(stop)]
            assert cut.finished[i]
            n = int(cut.completion_mask[i].sum())
            kept = cut.completion_ids[i, :n].tolist()
            assert kept == free.completion_ids[i, :n].tolist()
            assert stop in tok.decode(kept, skip_special_tokens=True)  # the stop string's tokens stay in
            assert stop not in tok.decode(kept[:-1], skip_special_tokens=True)  # ... and nothing after them
            assert (cut.completion_ids[i, n:] == tok.pad_token_id).all()
        else:
            assert cut.texts[i] == free.texts[i] and cut.finished[i] == free.finished[i]


def test_sample_restores_mode_and_rejects_bad_arguments(saved, prompts):
    model, tok = load_model(saved[0])
    model.train()
    tok.padding_side = "right"
    sample(model, tok, prompts[:2], max_new_tokens=2)
    assert model.training and tok.padding_side == "right"
    with pytest.raises(AlignkitError, match="top_p"):
        sample(model, tok, prompts, max_new_tokens=2, top_p=0.0)
    with pytest.raises(AlignkitError, match="positions"):
        sample(model, tok, prompts, max_new_tokens=64)


def test_tokenizer_without_pad_gets_a_distinct_one(tmp_path):
    # a GPT-2-style tokenizer: byte-level BPE, only <|endoftext|>, no pad, no chat template
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<|endoftext|>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(corpus(50), trainer)
    gpt2_tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>")
    eos = gpt2_tok.eos_token_id
    config = GPT2Config(
        vocab_size=len(gpt2_tok),
        n_embd=32,
        n_layer=1,
        n_head=2,
        n_positions=64,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(str(tmp_path))
    save_tokenizer(gpt2_tok, tmp_path)
    assert AutoTokenizer.from_pretrained(str(tmp_path)).pad_token is None

    model, tok = load_model(tmp_path)
    assert tok.pad_token == "<|pad|>" and tok.pad_token_id != tok.eos_token_id
    assert model.get_input_embeddings().weight.shape[0] == len(tok) == model.config.vocab_size
    assert tok.chat_template and len(tok.encode("<|end|>", add_special_tokens=False)) == 1
    end = tok.convert_tokens_to_ids("<|end|>")
    assert set(model.generation_config.eos_token_id) == {eos, end}
    out = sample(model, tok, ["the cat", "a"], max_new_tokens=4, temperature=0.0)
    assert out.completion_ids.shape[0] == 2


def test_load_errors_name_the_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(AlignkitError, match="does not exist") as e:
        load_model(missing)
    assert str(missing) in str(e.value)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(AlignkitError, match="no weights") as e:
        load_model(tmp_path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AlignkitError, match="config.json"):
        load_model(empty)


def test_load_rejects_no_tokenizer_and_non_causal(tmp_path, tok):
    model = new_model(build_config("llama", "smoke", tok), seed=0)
    model.save_pretrained(str(tmp_path))
    with pytest.raises(AlignkitError, match="tokenizer"):
        load_model(tmp_path)
    save_tokenizer(tok, tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(AlignkitError, match="causal"):
        load_model(tmp_path)


def test_load_rejects_a_reward_model_and_a_cut_weights_file(tmp_path, tok):
    import json
    import shutil

    model = new_model(build_config("llama", "smoke", tok), seed=0)
    save_model(model, tok, tmp_path / "lm")
    shutil.copytree(tmp_path / "lm", tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    (tmp_path / "rm" / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForSequenceClassification"]}))
    with pytest.raises(AlignkitError, match="holds a LlamaForSequenceClassification, not a causal language model"):
        load_model(tmp_path / "rm")
    weights = tmp_path / "lm" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(AlignkitError, match="cannot load the model in .*lm: "):
        load_model(tmp_path / "lm")


def test_presets_and_configs(tok):
    assert set(SIZES) == {"smoke", "tiny", "small"}
    a = new_model(build_config("llama", "smoke", tok), seed=7)
    b = new_model(build_config("llama", "smoke", tok), seed=7)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    tiny = new_model(build_config("qwen2", "tiny", tok), seed=0)
    assert 0.5e6 < count_params(tiny, exclude_embeddings=True) < 1.5e6
    assert count_params(tiny) == count_params(tiny, exclude_embeddings=True) + len(tok) * 128  # tied
    cfg = build_config("gpt2", {"hidden_size": 64, "num_layers": 2, "num_heads": 4}, tok)
    assert cfg.n_layer == 2 and cfg.attn_pdrop == 0.0 and cfg.tie_word_embeddings
    with pytest.raises(AlignkitError, match="arch"):
        build_config("mamba", "smoke", tok)
    with pytest.raises(AlignkitError, match="size"):
        build_config("llama", "huge", tok)
    with pytest.raises(AlignkitError, match="divisible"):
        build_config("llama", {"hidden_size": 30, "num_heads": 4}, tok)
