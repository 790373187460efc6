"""Reward models on tiny random Qwen2 / Llama / GPT-2 backbones with user JSONL pairs, rankings and ties."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from alignkit.cli import main
from alignkit.config import RMConfig
from alignkit.data.collators import pad_sequences
from alignkit.data.sources import write_jsonl
from alignkit.errors import AlignkitError
from alignkit.models.heads import (
    last_token_index,
    load_scalar_model,
    new_scalar_model,
    reward_scores,
    score_responses,
)
from alignkit.models.load import build_config, new_model, save_model
from alignkit.models.tokenizer import train_tokenizer
from alignkit.stages import rm

PROMPTS = [f"What is {a} + {b}?" for a in range(5) for b in range(4)]
GOOD = [f"{a} + {b} = {a + b}." for a in range(5) for b in range(4)]
BAD = [f"I think it is {a * b + 7}" for a in range(5) for b in range(4)]
PAIRS = [{"prompt": p, "chosen": g, "rejected": b} for p, g, b in zip(PROMPTS, GOOD, BAD)]
RANKINGS = [{"prompt": p, "responses": [b, g, "No."], "ranking": [1, [0, 2]]} for p, g, b in zip(PROMPTS, GOOD, BAD)]
LABELS = [{"prompt": PROMPTS[0], "responses": [GOOD[0], GOOD[1]], "label": "tie"},
          {"prompt": PROMPTS[1], "responses": [BAD[0], BAD[1]], "label": "both_bad"}]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(PROMPTS + GOOD + BAD + ["No."] * 5, vocab_size=300)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, tokenizer):
    dirs = {}
    for arch in ("qwen2", "llama", "gpt2"):
        d = tmp_path_factory.mktemp(arch)
        save_model(new_model(build_config(arch, "smoke", tokenizer), seed=0), tokenizer, d)
        dirs[arch] = d
    return dirs


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefs")
    write_jsonl(root / "pairs.jsonl", PAIRS)
    write_jsonl(root / "rankings.jsonl", RANKINGS)
    write_jsonl(root / "labels.jsonl", LABELS)
    write_jsonl(root / "gold.jsonl", [{"prompt": p, "responses": [g, b], "gold": [1.0, -1.0], "category": "arith"}
                                      for p, g, b in zip(PROMPTS, GOOD, BAD)])
    return root


def _cfg(model, data, out, **kw):
    return RMConfig(**{**dict(model=str(model), data=str(data), out=str(out), max_length=48, batch_size=4,
                              max_steps=4, warmup_steps=0, lr=5e-3, eval_every=4, save_every=4, progress=False),
                       **kw})


@pytest.mark.parametrize("arch", ["qwen2", "llama", "gpt2"])
def test_head_reads_the_last_real_token_with_left_or_right_padding(backbone, arch):
    model, tok = new_scalar_model(backbone[arch], seed=1)
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in ("1 + 2 = 3.", "What is 4 + 3? It is 7.")]
    right, right_mask = pad_sequences(rows, pad_id=tok.pad_token_id)
    left, left_mask = pad_sequences(rows, pad_id=tok.pad_token_id, left=True)
    alone = torch.stack([reward_scores(model, torch.tensor([r]), torch.ones(1, len(r), dtype=torch.long))[0]
                         for r in rows])
    torch.testing.assert_close(reward_scores(model, right, right_mask), alone, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reward_scores(model, left, left_mask), alone, rtol=1e-5, atol=1e-5)
    assert last_token_index(right_mask).tolist() == [len(rows[0]) - 1, len(rows[1]) - 1]
    # not at a pad: changing what sits in the padding changes nothing
    right[0, len(rows[0]):] = 5
    torch.testing.assert_close(reward_scores(model, right, right_mask), alone, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", ["pairs", "rankings"])
def test_rm_trains_on_a_tiny_qwen2_from_user_jsonl(tmp_path, backbone, data, form):
    out = tmp_path / "rm"
    summary = rm.run(_cfg(backbone["qwen2"], data / f"{form}.jsonl", out, max_steps=12,
                          eval_data=str(data / "gold.jsonl")))
    assert summary["steps"] == 12 and summary["val_loss"] == summary["val_loss"]
    assert {"heldout_accuracy", "accuracy_ceiling", "spearman_gold", "per_category"} <= summary.keys()
    assert summary["heldout_accuracy"] >= 0.9  # an easy task: right sums vs nonsense
    # a standard HF checkpoint: loads without alignkit, backbone + head in model.safetensors
    hf = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert hf.config.num_labels == 1 and "gain" in hf.config.reward_normalization
    model, tok = load_scalar_model(out / "model")
    scores = score_responses(model, tok, PROMPTS, GOOD + [], normalized=True)
    raw = score_responses(model, tok, PROMPTS, GOOD, normalized=False)
    gain, bias = hf.config.reward_normalization["gain"], hf.config.reward_normalization["bias"]
    torch.testing.assert_close(scores, gain * raw + bias)
    # normalised on the eval responses: mean 0, std 1 there
    both = score_responses(model, tok, PROMPTS * 2, GOOD + BAD)
    assert abs(float(both.mean())) < 1e-4 and abs(float(both.std()) - 1) < 1e-3


def test_rm_mixes_pairs_rankings_and_tie_labels(tmp_path, backbone, data):
    files = ",".join(str(data / f) for f in ("pairs.jsonl", "rankings.jsonl", "labels.jsonl"))
    for objective, tie_model in (("all_pairs", "davidson"), ("all_pairs", "none"), ("plackett_luce", "rao_kupper")):
        summary = rm.run(_cfg(backbone["llama"], files, tmp_path / f"{objective}-{tie_model}", objective=objective,
                              tie_model=tie_model, both_bad="tie"))
        assert summary["steps"] == 4 and summary["val_loss"] == summary["val_loss"]


def test_rm_groups_and_drops_as_configured(tokenizer):
    cfg = RMConfig(tie_model="none", both_bad="drop")
    assert rm.to_group(LABELS[0], tokenizer, cfg) is None             # a tie without a tie model
    assert rm.to_group(LABELS[1], tokenizer, RMConfig()) is None       # both_bad dropped by default
    assert rm.to_group(LABELS[1], tokenizer, RMConfig(both_bad="tie")).places == [0, 0]
    assert rm.to_group(RANKINGS[0], tokenizer, cfg).places == [1, 0, 1]
    g = rm.to_group({**PAIRS[0], "margin": 0.5}, tokenizer, cfg)
    assert g.places == [0, 1] and g.margin == 0.5
    assert rm.to_group({**PAIRS[0], "margin": 0.5}, tokenizer, RMConfig(use_margin=False)).margin == 0.0


def test_records_whose_responses_max_length_leaves_alike_are_dropped(tmp_path, tokenizer, backbone, capsys):
    long = " ".join(PROMPTS)  # a prompt longer than max_length leaves no response token
    assert rm.to_group({**PAIRS[0], "prompt": long}, tokenizer, RMConfig(max_length=16)) == rm.CUT
    shared = {**PAIRS[0], "chosen": long + " yes", "rejected": long + " no"}  # alike in their first 48 tokens
    assert rm.to_group(shared, tokenizer, RMConfig(max_length=48)) == rm.CUT
    assert rm.to_group(shared, tokenizer, RMConfig(max_length=512)).places == [0, 1]
    write_jsonl(tmp_path / "long.jsonl", [{**p, "prompt": long} for p in PAIRS[:6]] + PAIRS[6:])
    rm.run(_cfg(backbone["llama"], tmp_path / "long.jsonl", tmp_path / "a", max_steps=1))
    assert "rm: 6 of 20 records dropped: their responses are the same within max_length=48" in capsys.readouterr().err
    write_jsonl(tmp_path / "all.jsonl", [{**p, "prompt": long} for p in PAIRS])
    with pytest.raises(AlignkitError, match="20 records have responses that are the same within max_length=48"):
        rm.run(_cfg(backbone["llama"], tmp_path / "all.jsonl", tmp_path / "b", max_steps=1))


def test_rm_one_forward_pass_per_response_and_grid(tokenizer, backbone):
    groups = [rm.to_group(r, tokenizer, RMConfig()) for r in (PAIRS[0], RANKINGS[1])]
    batch = rm.collate(groups, tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 5                      # 2 + 3 responses, not C(K,2) pairs
    assert batch["places"].tolist() == [[0, 1, -1], [1, 0, 1]]
    model, _ = new_scalar_model(backbone["qwen2"])
    grid = rm.group_rewards(model, batch)
    flat = reward_scores(model, batch["input_ids"], batch["attention_mask"])
    assert grid[0, :2].tolist() == flat[:2].tolist() and grid[1].tolist() == flat[2:].tolist()


def test_rm_bad_data_is_one_line_and_writes_nothing(tmp_path, backbone, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps({"prompt": "x", "responses": ["a", "b"],
                                                              "ranking": [0, 0]}) + "\n")
    out = tmp_path / "out"
    code = main(["rm", f"model={backbone['qwen2']}", f"data={bad}", f"out={out}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "bad.jsonl:2" in err and "ranking" in err
    assert not out.exists()
    with pytest.raises(AlignkitError, match="needs data"):
        rm.run(RMConfig(model=str(backbone["qwen2"])))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(PAIRS[0]) + "\n" + json.dumps(PAIRS[1]) + "\n")
    code = main(["rm", f"model={backbone['qwen2']}", f"data={good}", f"out={out}", f"prior={tmp_path / 'no-lm'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.count("prior=") == 1 and "no-lm" in err
    assert not out.exists()
    one = tmp_path / "one_prompt.jsonl"  # validation takes whole prompts: one prompt leaves nothing to train on
    one.write_text("".join(json.dumps({**p, "prompt": "q"}) + "\n" for p in PAIRS[:6]))
    code = main(["rm", f"model={backbone['qwen2']}", f"data={one}", f"out={out}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "all 6 comparisons have the same prompt" in err
    assert not out.exists()


def test_rm_with_lora_saves_an_adapter_and_a_normalised_merged_model(tmp_path, backbone, data):
    out = tmp_path / "rm"
    summary = rm.run(_cfg(backbone["llama"], data / "pairs.jsonl", out, max_steps=12, lora=True, lora_r=8,
                          eval_data=str(data / "gold.jsonl")))
    assert summary["heldout_accuracy"] >= 0.9
    assert (out / "adapter" / "adapter_config.json").is_file()
    hf = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert "gain" in hf.config.reward_normalization
    model, tok = load_scalar_model(out / "model")
    both = score_responses(model, tok, PROMPTS * 2, GOOD + BAD)
    assert abs(float(both.mean())) < 1e-3 and abs(float(both.std()) - 1) < 1e-2
    from alignkit.models.lora import merge_adapter
    merged, tok = load_scalar_model(merge_adapter(out / "adapter", tmp_path / "merged"))
    assert merged.config.reward_normalization == hf.config.reward_normalization
    torch.testing.assert_close(score_responses(merged, tok, PROMPTS * 2, GOOD + BAD), both, rtol=1e-4, atol=1e-4)


def test_prior_surprise_is_the_least_likely_response_token(backbone, monkeypatch):
    from alignkit.data.templates import render_completion
    from alignkit.models.heads import prior_surprise
    from alignkit.models.load import load_model

    lm, tok = load_model(backbone["llama"])
    prompts, responses = PROMPTS[:5], [GOOD[0], BAD[1], "No.", GOOD[3] + " " + BAD[3], ""]
    expected = []
    for p, r in zip(prompts, responses):
        head, completion = render_completion(tok, p, r)
        with torch.no_grad():
            logps = lm(torch.tensor([head + completion])).logits[0, len(head) - 1:-1].log_softmax(-1)
        expected.append(float(logps.gather(-1, torch.tensor(completion).unsqueeze(-1)).min()))
    for batch_size in (1, 2, 64):  # left-padded prompts, right-padded responses of other lengths
        torch.testing.assert_close(prior_surprise(lm, tok, prompts, responses, batch_size=batch_size),
                                   torch.tensor(expected), rtol=1e-5, atol=1e-5)
    # identical answers are computed once, and not again with a memo of an earlier call
    import alignkit.models.logprobs as logprobs

    rows, scored = [], logprobs.completion_logprobs
    monkeypatch.setattr(logprobs, "completion_logprobs", lambda m, p, *a, **k: rows.append(p.size(0)) or scored(m, p, *a, **k))
    memo = {}
    twice = prior_surprise(lm, tok, prompts * 2, responses * 2, memo=memo)
    torch.testing.assert_close(twice, torch.tensor(expected * 2), rtol=1e-5, atol=1e-5)
    assert sum(rows) == 5 and len(memo) == 5
    torch.testing.assert_close(prior_surprise(lm, tok, prompts[:2], responses[:2], memo=memo), twice[:2])
    assert sum(rows) == 5
    # responses cut away entirely by max_length have no token to be surprised by
    assert prior_surprise(lm, tok, prompts, responses, max_length=2).tolist() == [0.0] * 5


def test_rm_grid_adds_the_prior_term(tokenizer, backbone):
    groups = [rm.to_group(r, tokenizer, RMConfig()) for r in (PAIRS[0], RANKINGS[1])]
    groups[1].surprise = [-0.5, -1.0, -2.0]
    batch = rm.collate(groups, tokenizer.pad_token_id)
    model, _ = new_scalar_model(backbone["qwen2"])
    grid = rm.group_rewards(model, batch)
    flat = reward_scores(model, batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(grid[0, :2], flat[:2])  # no surprise given: the head alone
    torch.testing.assert_close(grid[1], flat[2:] + torch.tensor([-0.5, -1.0, -2.0]))


@pytest.mark.parametrize("lora", [False, True])
def test_rm_with_a_prior_scores_head_plus_surprise_and_moves_with_its_run(tmp_path, backbone, data, lora):
    import shutil

    from alignkit.models.heads import prior_detached, prior_surprise

    run = tmp_path / "run"
    shutil.copytree(backbone["llama"], run / "sft" / "model")
    summary = rm.run(_cfg(run / "sft" / "model", data / "rankings.jsonl", run / "rm", max_steps=6, lora=lora,
                          prior=str(run / "sft" / "model"), prior_coef=0.3, eval_data=str(data / "gold.jsonl")))
    assert summary["prior"]["coef"] == 0.3
    assert {"heldout_accuracy_head", "heldout_accuracy_prior"} <= summary.keys()
    stored = json.loads((run / "rm" / "model" / "config.json").read_text())["reward_prior"]
    assert stored == {"model": "../../sft/model", "coef": 0.3, "feature": "min_token_logprob"}
    from safetensors import safe_open
    with safe_open(str(run / "rm" / "model" / "model.safetensors"), "pt") as f:
        assert not any("lm_head" in k or "alignkit_prior" in k for k in f.keys())  # the prior is not saved in it
    moved = tmp_path / "moved"
    shutil.move(run, moved)  # the prior is found relative to the reward model
    model, tok = load_scalar_model(moved / "rm" / "model")
    total = score_responses(model, tok, PROMPTS, GOOD, normalized=False)
    with prior_detached(model) as prior:
        head = score_responses(model, tok, PROMPTS, GOOD, normalized=False)
    surprise = prior_surprise(prior.model, prior.tokenizer, PROMPTS, GOOD)
    assert float(surprise.max()) < 0
    torch.testing.assert_close(total, head + 0.3 * surprise)
    # normalised with the prior term in place: mean 0, std 1 on the eval responses
    both = score_responses(model, tok, PROMPTS * 2, GOOD + BAD)
    assert abs(float(both.mean())) < 1e-3 and abs(float(both.std()) - 1) < 1e-2
    if lora:  # the adapter merged elsewhere finds the same prior
        from alignkit.models.lora import merge_adapter
        merged, _ = load_scalar_model(merge_adapter(moved / "rm" / "adapter", tmp_path / "merged"))
        torch.testing.assert_close(score_responses(merged, tok, PROMPTS, GOOD, normalized=False), total,
                                   rtol=1e-4, atol=1e-4)
    shutil.rmtree(moved / "sft")
    with pytest.raises(AlignkitError, match="reward_prior"):
        load_scalar_model(moved / "rm" / "model")
