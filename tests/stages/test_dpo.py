"""DPO on tiny random Qwen2 / Llama models with user JSONL pairs and rankings."""

import json

import pytest
import torch

from alignkit.config import DPOConfig
from alignkit.data.collators import pad_sequences
from alignkit.data.sources import write_jsonl
from alignkit.errors import AlignkitError
from alignkit.models.load import build_config, load_model, new_model, save_model
from alignkit.models.logprobs import completion_logprobs, sequence_logprob
from alignkit.models.tokenizer import train_tokenizer
from alignkit.stages import dpo

PROMPTS = [f"What is {a} + {b}?" for a in range(5) for b in range(4)]
GOOD = [f"{a} + {b} = {a + b}." for a in range(5) for b in range(4)]
BAD = [f"I think it is {a * b + 7}" for a in range(5) for b in range(4)]
PAIRS = [{"prompt": p, "chosen": g, "rejected": b} for p, g, b in zip(PROMPTS, GOOD, BAD)]
RANKINGS = [{"prompt": p, "responses": [b, g, "No."], "ranking": [1, 2, 0]} for p, g, b in zip(PROMPTS, GOOD, BAD)]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(PROMPTS + GOOD + BAD + ["No."] * 5, vocab_size=300)


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory, tokenizer):
    d = tmp_path_factory.mktemp("qwen2")
    save_model(new_model(build_config("qwen2", "smoke", tokenizer), seed=0), tokenizer, d)
    return d


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("prefs")
    write_jsonl(root / "pairs.jsonl", PAIRS)
    write_jsonl(root / "rankings.jsonl", RANKINGS + [{"prompt": "x", "responses": ["a", "b"], "label": "tie"}])
    return root


def _cfg(model, data, out, **kw):
    return DPOConfig(**{**dict(model=str(model), data=str(data), out=str(out), max_length=48, batch_size=4,
                               max_steps=4, warmup_steps=0, lr=1e-3, eval_every=4, save_every=2, progress=False),
                        **kw})


def test_one_pass_over_chosen_and_rejected_equals_separate_passes(policy_dir, tokenizer):
    model, tok = load_model(policy_dir)
    groups = [g for r in PAIRS[:3] + RANKINGS[:1] for g in dpo.to_groups(r, tok, DPOConfig(loss="listwise"))]
    batch = dpo.collate(groups, tok.pad_token_id)
    together, lengths = dpo.policy_logps(model, batch)
    for b, g in enumerate(groups):
        for k, completion in enumerate(g.completions):
            p, pm = pad_sequences([g.prompt_ids], pad_id=tok.pad_token_id, left=True)
            c, cm = pad_sequences([completion], pad_id=tok.pad_token_id)
            alone = sequence_logprob(completion_logprobs(model, p, pm, c, cm), cm)[0]
            torch.testing.assert_close(together[b, k], alone, rtol=1e-5, atol=1e-5)
            assert lengths[b, k] == len(completion)


def test_rankings_become_pairs_or_stay_whole(tokenizer):
    pairs = dpo.to_groups(RANKINGS[0], tokenizer, DPOConfig(loss="sigmoid"))
    assert len(pairs) == 3 and all(g.places == [0, 1] for g in pairs)        # every strict pair, chosen first
    whole = dpo.to_groups(RANKINGS[0], tokenizer, DPOConfig(loss="listwise"))
    assert len(whole) == 1 and whole[0].places == [2, 0, 1]
    assert dpo.to_groups({"prompt": "x", "responses": ["a", "b"], "label": "tie"}, tokenizer, DPOConfig()) == []


def test_records_whose_responses_max_length_leaves_alike_are_dropped(tmp_path, tokenizer, policy_dir, capsys):
    long = " ".join(PROMPTS)  # a prompt longer than max_length leaves no response token
    for loss in ("sigmoid", "listwise"):
        assert dpo.to_groups({**RANKINGS[0], "prompt": long}, tokenizer, DPOConfig(loss=loss, max_length=16)) is None
    assert len(dpo.to_groups(RANKINGS[0], tokenizer, DPOConfig(loss="sigmoid", max_length=48))) == 3
    write_jsonl(tmp_path / "long.jsonl", [{**p, "prompt": long} for p in PAIRS[:6]] + PAIRS[6:])
    dpo.run(_cfg(policy_dir, tmp_path / "long.jsonl", tmp_path / "a", max_steps=1))
    assert "dpo: 6 of 20 records dropped: their responses are the same within max_length=48" in capsys.readouterr().err
    write_jsonl(tmp_path / "all.jsonl", [{**p, "prompt": long} for p in PAIRS])
    with pytest.raises(AlignkitError, match="20 records have responses that are the same within max_length=48"):
        dpo.run(_cfg(policy_dir, tmp_path / "all.jsonl", tmp_path / "b", max_steps=1))


def test_a_reference_on_another_tokenizer_is_refused(tmp_path, policy_dir, data):
    other = train_tokenizer(["Another corpus entirely, with other words."] * 3, vocab_size=300)
    save_model(new_model(build_config("qwen2", "smoke", other), seed=0), other, tmp_path / "other")
    with pytest.raises(AlignkitError, match="ref_model=.* has another tokenizer than model="):
        dpo.run(_cfg(policy_dir, data / "pairs.jsonl", tmp_path / "dpo", ref_model=str(tmp_path / "other")))
    assert not (tmp_path / "dpo").exists()


def test_input_errors_leave_the_run_that_overwrite_would_replace(tmp_path, policy_dir, data):
    """overwrite=true removes an earlier run only once the new inputs have passed every check."""
    out = tmp_path / "dpo"
    dpo.run(_cfg(policy_dir, data / "pairs.jsonl", out, max_steps=1))
    before = sorted(p.name for p in out.iterdir())
    write_jsonl(tmp_path / "one_prompt.jsonl", [{**p, "prompt": "q"} for p in PAIRS[:6]])
    with pytest.raises(AlignkitError, match="all 6 comparisons have the same prompt"):  # was a ZeroDivisionError
        dpo.run(_cfg(policy_dir, tmp_path / "one_prompt.jsonl", out, overwrite=True))
    with pytest.raises(AlignkitError, match="lora"):
        dpo.run(_cfg(policy_dir, data / "pairs.jsonl", out, overwrite=True, lora=True, lora_targets="no_such_proj"))
    assert sorted(p.name for p in out.iterdir()) == before and (out / "model").is_dir()


def test_dpo_starts_at_log_2_and_learns_the_preference(tmp_path, policy_dir, data):
    summary = dpo.run(_cfg(policy_dir, data / "pairs.jsonl", tmp_path / "dpo", max_steps=15, eval_every=15))
    rows = [json.loads(line) for line in (tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["dpo/loss"] == pytest.approx(0.693147, abs=1e-4)       # policy = reference at step 0
    assert summary["val_margin"] > 0 and summary["val_accuracy"] == 1.0
    assert rows[-1]["dpo/rewards/margin"] > rows[0]["dpo/rewards/margin"]
    assert (tmp_path / "dpo" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("loss", ["sigmoid", "robust", "ipo", "hinge", "simpo", "listwise", "all_pairs"])
def test_every_loss_trains_on_rankings(tmp_path, policy_dir, data, loss):
    extra = {"beta": 2.5} if loss == "simpo" else {"label_smoothing": 0.1} if loss in ("sigmoid", "robust") else {}
    summary = dpo.run(_cfg(policy_dir, data / "rankings.jsonl", tmp_path / loss, loss=loss, max_steps=2, **extra))
    assert summary["steps"] == 2 and summary["val_loss"] == summary["val_loss"]


def test_reference_log_probs_are_cached_and_reused_on_resume(tmp_path, policy_dir, data, capsys):
    out = tmp_path / "dpo"
    assert dpo.run(_cfg(policy_dir, data / "pairs.jsonl", out), stop_after=2) == {}
    first = torch.load(out / "ref_logps.pt", weights_only=True)
    summary = dpo.run(_cfg(policy_dir, data / "pairs.jsonl", out, resume=True))
    assert summary["steps"] == 4 and "reference log-probs from" in capsys.readouterr().err
    assert torch.load(out / "ref_logps.pt", weights_only=True)["ref_logps"] == first["ref_logps"]


def test_a_cut_reference_cache_is_computed_again(tmp_path, policy_dir, data, capsys):
    out = tmp_path / "dpo"
    assert dpo.run(_cfg(policy_dir, data / "pairs.jsonl", out), stop_after=2) == {}
    cache = out / "ref_logps.pt"
    first = torch.load(cache, weights_only=True)
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])  # what a kill mid-write would leave
    summary = dpo.run(_cfg(policy_dir, data / "pairs.jsonl", out, resume=True))
    assert summary["steps"] == 4 and "reference log-probs from" not in capsys.readouterr().err
    assert torch.load(cache, weights_only=True)["ref_logps"] == first["ref_logps"]
    assert not list(out.glob(".*.tmp"))


def test_dpo_on_llama_with_message_list_records(tmp_path, tokenizer, data):
    d = tmp_path / "llama"
    save_model(new_model(build_config("llama", "smoke", tokenizer), seed=1), tokenizer, d)
    records = [{"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": p}],
                "chosen": [{"role": "assistant", "content": g}], "rejected": [{"role": "assistant", "content": b}]}
               for p, g, b in zip(PROMPTS, GOOD, BAD)]
    write_jsonl(tmp_path / "messages.jsonl", records)
    summary = dpo.run(_cfg(d, tmp_path / "messages.jsonl", tmp_path / "dpo", max_steps=3))
    assert summary["steps"] == 3 and summary["val_loss"] == summary["val_loss"]


def test_sft_term_on_the_chosen_response_is_added_and_logged(tmp_path, policy_dir, data):
    out = tmp_path / "rpo"
    dpo.run(_cfg(policy_dir, data / "pairs.jsonl", out, max_steps=2, sft_coef=1.0))
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    # step 0: DPO term log 2, plus the chosen answers' mean token NLL
    assert first["dpo/nll/chosen"] > 0
    assert first["dpo/loss"] == pytest.approx(0.693147 + first["dpo/nll/chosen"], abs=1e-4)


def test_dpo_with_lora_starts_at_log_2_against_the_disabled_adapters(tmp_path, policy_dir, data):
    out = tmp_path / "dpo"
    summary = dpo.run(_cfg(policy_dir, data / "pairs.jsonl", out, max_steps=15, eval_every=15, lora=True,
                           lora_r=8, lr=1e-2))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["dpo/loss"] == pytest.approx(0.693147, abs=1e-4)  # adapters start at B = 0
    assert summary["val_margin"] > 0
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("loss", ["sigmoid", "listwise"])
def test_dpop_trains_and_other_losses_refuse_it(tmp_path, policy_dir, data, loss):
    summary = dpo.run(_cfg(policy_dir, data / "rankings.jsonl", tmp_path / loss, loss=loss, max_steps=2,
                           dpop_lambda=5.0))
    assert summary["steps"] == 2 and summary["val_loss"] == summary["val_loss"]
    with pytest.raises(AlignkitError, match="dpop_lambda=5 works with loss=sigmoid or loss=listwise, not loss=ipo"):
        dpo.run(_cfg(policy_dir, data / "rankings.jsonl", tmp_path / "ipo", loss="ipo", dpop_lambda=5.0))
    assert not (tmp_path / "ipo").exists()
