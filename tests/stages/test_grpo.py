"""GRPO on tiny random models with user prompts and Python rewards; the world's checkers; resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import GRPOConfig
from alignkit.data.sources import write_jsonl
from alignkit.errors import AlignkitError
from alignkit.models.load import build_config, new_model, save_model
from alignkit.models.tokenizer import train_tokenizer
from alignkit.stages import grpo
from alignkit.world import checkers

PROMPTS = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b), "kind": "sum" if a else "skip"}
           for a in range(5) for b in range(4)]

REWARDS = '''
def length(prompts, completions, answer, kind):
    return [None if k == "skip" else float(len(c.split()) % 3) for c, k in zip(completions, kind)]

def constant(prompts, completions, **fields):
    return [1.0 for _ in completions]

def broken(prompts, completions, **fields):
    raise KeyError("answer")

def short(prompts, completions, **fields):
    return [1.0]

def unscorable(prompts, completions, **fields):
    return [None for _ in completions]
'''


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grpo")
    tokenizer = train_tokenizer([p["prompt"] for p in PROMPTS] + [f"It is {i}." for i in range(12)], vocab_size=300)
    save_model(new_model(build_config("qwen2", "smoke", tokenizer), seed=0), tokenizer, root / "policy")
    write_jsonl(root / "prompts.jsonl", PROMPTS)
    (root / "grpo_test_rewards.py").write_text(REWARDS)
    return root


@pytest.fixture(autouse=True)
def importable(dirs, monkeypatch):
    monkeypatch.syspath_prepend(str(dirs))


def _cfg(dirs, out, **kw):
    return GRPOConfig(**{**dict(model=str(dirs / "policy"), prompts=str(dirs / "prompts.jsonl"), out=str(out),
                                reward="grpo_test_rewards:length", group_size=4, prompts_per_step=4, steps=3,
                                max_new_tokens=6, lr=1e-3, save_every=1, progress=False), **kw})


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_grpo_with_a_python_reward_on_user_prompts(dirs, tmp_path):
    out = tmp_path / "grpo"
    summary = grpo.run(_cfg(dirs, out))
    assert summary["steps"] == 3 and summary["responses"] == 48 and 0 < summary["sampling_share"] < 1
    rows = _metrics(out)
    first = rows[0]
    assert first["grpo/kl"] == pytest.approx(0.0, abs=1e-6)  # the first step: policy = reference
    assert first["grpo/policy/ratio"] == pytest.approx(1.0) and first["grpo/policy/clipfrac"] == 0  # μ = 1
    for key in ("grpo/reward", "grpo/reward/grpo_test_rewards:length", "grpo/reward/grpo_test_rewards:length/std",
                "grpo/zero_advantage_groups", "grpo/entropy", "grpo/length", "grpo/truncated", "grpo/unscorable",
                "grpo/seconds/sampling"):
        assert key in first, key
    assert (out / "model" / "model.safetensors").is_file()


def test_mu_clip_higher_dr_grpo_and_the_dapo_options_run(dirs, tmp_path):
    out = tmp_path / "grpo"
    grpo.run(_cfg(dirs, out, mu=2, minibatch=8, clip_high=0.28, advantage="dr_grpo", loss_agg="seq_mean_token_sum_norm",
                  beta=0.0, mask_truncated=True, overlong_cache=2, steps=2))
    rows = _metrics(out)
    assert "grpo/kl" not in rows[0]  # β = 0: no reference model
    assert rows[0]["grpo/policy/ratio"] != 1.0 or rows[1]["grpo/policy/ratio"] != 1.0  # μ = 2: the second pass moves


def test_dynamic_sampling_drops_groups_without_signal(dirs, tmp_path):
    rows = _metrics_after(dirs, tmp_path, dynamic_sampling=True, steps=2)
    assert all(r["grpo/zero_advantage_groups"] == 0 for r in rows)
    with pytest.raises(AlignkitError, match="equal rewards"):
        grpo.run(_cfg(dirs, tmp_path / "c", reward="grpo_test_rewards:constant", dynamic_sampling=True))


def _metrics_after(dirs, tmp_path, **kw):
    grpo.run(_cfg(dirs, tmp_path / "d", **kw))
    return _metrics(tmp_path / "d")


def test_reward_functions_that_raise_or_miscount_are_one_line_errors(dirs, tmp_path):
    with pytest.raises(AlignkitError, match="grpo_test_rewards:broken raised KeyError"):
        grpo.run(_cfg(dirs, tmp_path / "a", reward="grpo_test_rewards:broken"))
    with pytest.raises(AlignkitError, match="returned 1 values for 16 completions"):
        grpo.run(_cfg(dirs, tmp_path / "b", reward="grpo_test_rewards:short"))


def test_a_last_step_with_nothing_scored_finishes(dirs, tmp_path):
    summary = grpo.run(_cfg(dirs, tmp_path / "n", reward="grpo_test_rewards:unscorable", steps=1))
    assert summary["steps"] == 1 and summary["final_reward"] == "nan"
    assert _metrics(tmp_path / "n")[0]["grpo/unscorable"] == 1


def test_a_prompt_too_long_for_the_model_is_named_before_training(dirs, tmp_path):
    write_jsonl(tmp_path / "p.jsonl", [PROMPTS[0], {"prompt": "What is 1 + 2? " * 400}])
    with pytest.raises(AlignkitError, match=r"p.jsonl: record 2: the prompt has \d+ tokens; with max_new_tokens=6"):
        grpo.run(_cfg(dirs, tmp_path / "g", prompts=str(tmp_path / "p.jsonl")))
    assert not (tmp_path / "g").exists()


def test_resume_gives_the_uninterrupted_weights(dirs, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    grpo.run(_cfg(dirs, straight))
    assert grpo.run(_cfg(dirs, resumed), stop_after=2) == {}
    grpo.run(_cfg(dirs, resumed, resume=True))
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_grpo_with_lora_uses_the_disabled_adapters_as_reference(dirs, tmp_path):
    out = tmp_path / "grpo"
    grpo.run(_cfg(dirs, out, lora=True, lora_r=4, steps=2))
    assert _metrics(out)[0]["grpo/kl"] == pytest.approx(0.0, abs=1e-6)
    assert (out / "adapter" / "adapter_config.json").is_file()


def test_unknown_world_category_is_a_one_line_error(dirs, tmp_path):
    with pytest.raises(AlignkitError, match="categories: unknown categories"):
        grpo.run(_cfg(dirs, tmp_path / "x", prompts="world", categories=["nope"]))
    assert not (tmp_path / "x").exists()
    with pytest.raises(AlignkitError, match="grpo trains in float32 only"):  # not silently fp32
        grpo.run(_cfg(dirs, tmp_path / "w", dtype="bfloat16"))
    assert not (tmp_path / "w").exists()


def test_world_checkers():
    answer, category = ["12", "positive", None], ["arithmetic", "sentiment", "story"]
    texts = ["7 + 5 = 12.", "The review is positive.", "Once upon a time."]
    assert checkers.arithmetic([], texts, answer=answer, category=category) == [1.0, None, None]
    assert checkers.arithmetic([], ["7 + 5 = 13."], answer=["12"], category=["arithmetic"]) == [0.0]
    assert checkers.sentiment([], texts, answer=answer, category=category) == [None, 1.0, None]
    assert checkers.sentiment([], ["It is positive and negative."], answer=["positive"]) == [0.0]
    assert checkers.ending([], ["Done.", "and then the"]) == [1.0, 0.0]
