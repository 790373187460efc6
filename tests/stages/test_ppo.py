"""PPO on tiny random models: user prompts with a Python reward function, a reward model, resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import PPOConfig
from alignkit.data.sources import write_jsonl
from alignkit.errors import AlignkitError
from alignkit.models.heads import new_scalar_model
from alignkit.models.load import build_config, new_model, save_model
from alignkit.models.tokenizer import train_tokenizer
from alignkit.rollout.rewards import parse_reward
from alignkit.stages import ppo

PROMPTS = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(5) for b in range(4)]

REWARD_MODULE = '''
def reward(prompts, completions, answer):
    return [1.0 if a in c else -0.1 * len(c.split()) for c, a in zip(completions, answer)]
'''


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([p["prompt"] for p in PROMPTS] + [f"It is {i}." for i in range(12)], vocab_size=300)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory, tokenizer):
    root = tmp_path_factory.mktemp("ppo")
    save_model(new_model(build_config("qwen2", "smoke", tokenizer), seed=0), tokenizer, root / "policy")
    rm, rm_tok = new_scalar_model(root / "policy", seed=1)
    rm.save_pretrained(root / "rm")
    rm_tok.save_pretrained(root / "rm")
    write_jsonl(root / "prompts.jsonl", PROMPTS)
    (root / "ppo_test_reward.py").write_text(REWARD_MODULE)
    return root


def _cfg(dirs, out, **kw):
    return PPOConfig(**{**dict(model=str(dirs / "policy"), prompts=str(dirs / "prompts.jsonl"), out=str(out),
                               reward="ppo_test_reward:reward", value_model="policy", rollout_batch=8, minibatch=4,
                               ppo_epochs=2, steps=3, max_new_tokens=6, lr=1e-3, value_lr=1e-3, save_every=1,
                               progress=False), **kw})


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_ppo_with_a_python_reward_on_user_prompts(dirs, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(dirs))
    out = tmp_path / "ppo"
    summary = ppo.run(_cfg(dirs, out, snapshots=[1, 2]))
    assert summary["steps"] == 3 and summary["episodes"] == 24
    snaps = sorted(p.name for p in (out / "snapshots").iterdir())
    assert snaps == ["step-1", "step-2"] and (out / "snapshots" / "step-1" / "model" / "config.json").is_file()
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3]
    first = rows[0]
    assert first["ppo/kl"] == pytest.approx(0.0, abs=1e-6)  # the first rollout: policy = reference
    assert first["ppo/policy/approx_kl"] >= 0
    for key in ("ppo/reward", "ppo/reward/ppo_test_reward:reward", "ppo/beta", "ppo/policy/loss", "ppo/value/loss",
                "ppo/policy/clipfrac", "ppo/value/clipfrac", "ppo/value/explained_variance", "ppo/entropy",
                "ppo/length"):
        assert key in first
    assert rows[-1]["ppo/kl"] != 0  # the policy has moved
    assert (out / "model" / "config.json").is_file() and (out / "value" / "config.json").is_file()


def test_ppo_with_a_reward_model_and_the_value_model_from_it(dirs, tmp_path):
    out = tmp_path / "ppo"
    summary = ppo.run(_cfg(dirs, out, reward="rm", rm=str(dirs / "rm"), value_model="rm", steps=2, kl_target=1.0,
                           ptx_coef=0.0))
    rows = _metrics(out)
    assert "ppo/reward/rm" in rows[0]
    assert rows[1]["ppo/beta"] != rows[0]["ppo/beta"] or rows[0]["ppo/beta"] != 0.05  # the adaptive β moves
    assert summary["final_beta"] == rows[-1]["ppo/beta"]


def test_a_value_model_on_another_tokenizer_is_refused(dirs, tmp_path):
    other = train_tokenizer(["Another corpus entirely, with other words."] * 3, vocab_size=300)
    save_model(new_model(build_config("qwen2", "smoke", other), seed=0), other, tmp_path / "other")
    rm, rm_tok = new_scalar_model(tmp_path / "other", seed=1)
    rm.save_pretrained(tmp_path / "rm")
    rm_tok.save_pretrained(tmp_path / "rm")
    with pytest.raises(AlignkitError, match="value_model=rm: the reward model .* has another tokenizer"):
        ppo.run(_cfg(dirs, tmp_path / "ppo", reward="rm", rm=str(tmp_path / "rm"), value_model="rm"))
    assert not (tmp_path / "ppo").exists()


def test_resume_gives_the_uninterrupted_weights(dirs, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(dirs))
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    ppo.run(_cfg(dirs, straight))
    assert ppo.run(_cfg(dirs, resumed), stop_after=2) == {}
    ppo.run(_cfg(dirs, resumed, resume=True))
    a, b = load_file(straight / "model" / "model.safetensors"), load_file(resumed / "model" / "model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    def untimed(rows):
        return [{k: v for k, v in r.items() if not k.startswith("ppo/seconds")} for r in rows]
    assert untimed(_metrics(straight)) == untimed(_metrics(resumed))


def test_bad_reward_specs_are_one_line_errors(dirs, tmp_path):
    assert parse_reward("rm + 0.5*oracle") == [(1.0, "rm"), (0.5, "oracle")]
    assert parse_reward("2*alignkit.world.checkers:arithmetic") == [(2.0, "alignkit.world.checkers:arithmetic")]
    with pytest.raises(AlignkitError, match=r"cannot import pkg.mod:fn \(No module named 'pkg'\)"):
        parse_reward("rm + 2*pkg.mod:fn")  # checked when read, before any model is loaded
    for spec in ("rm +", "gold", "x*rm"):
        with pytest.raises(AlignkitError):
            parse_reward(spec)
    with pytest.raises(AlignkitError, match="cannot import"):
        ppo.run(_cfg(dirs, tmp_path / "x", reward="no_such_module_xyz:reward"))
    with pytest.raises(AlignkitError, match="rm=DIR"):
        ppo.run(_cfg(dirs, tmp_path / "y", reward="rm"))
    with pytest.raises(AlignkitError, match="snapshots"):
        ppo.run(_cfg(dirs, tmp_path / "z", snapshots=[0, 4]))
    assert not (tmp_path / "z").exists()
    with pytest.raises(AlignkitError, match="ppo trains in float32 only"):  # not silently fp32
        ppo.run(_cfg(dirs, tmp_path / "w", dtype="bfloat16"))
    assert not (tmp_path / "w").exists()


def test_a_reward_module_in_the_current_directory_is_found(tmp_path, monkeypatch):
    import sys
    (tmp_path / "here_pkg").mkdir()
    (tmp_path / "here_pkg" / "checks.py").write_text(REWARD_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert parse_reward("0.5*here_pkg.checks:reward") == [(0.5, "here_pkg.checks:reward")]


def test_ppo_with_lora_keeps_two_backbones_and_leaves_the_reward_model_alone(dirs, tmp_path):
    out = tmp_path / "ppo"
    rm_before = load_file(dirs / "rm" / "model.safetensors")
    ppo.run(_cfg(dirs, out, reward="rm", rm=str(dirs / "rm"), value_model="rm", lora=True, lora_r=4, steps=2))
    rows = _metrics(out)
    assert rows[0]["ppo/kl"] == pytest.approx(0.0, abs=1e-6)  # adapters start at B = 0: policy = reference
    assert rows[-1]["ppo/kl"] != 0
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "value" / "adapter_config.json").is_file()
    assert (out / "model" / "model.safetensors").is_file()  # merged
    assert (out / "value" / "alignkit_config.json").is_file()  # the critic's adapter merges like the policy's
    from alignkit.models.heads import load_scalar_model
    from alignkit.models.lora import merge_adapter
    load_scalar_model(merge_adapter(out / "value", tmp_path / "value_merged"))
    for k, v in load_file(dirs / "rm" / "model.safetensors").items():
        assert torch.equal(v, rm_before[k])


def test_ppo_with_lora_is_the_same_run_twice(dirs, tmp_path):
    """The adapters are drawn after the seed is set: the same seed gives the same run."""
    for name in ("a", "b"):
        ppo.run(_cfg(dirs, tmp_path / name, reward="rm", rm=str(dirs / "rm"), value_model="rm", lora=True, lora_r=4,
                     steps=2))
    for part in ("adapter", "value"):
        a = load_file(tmp_path / "a" / part / "adapter_model.safetensors")
        b = load_file(tmp_path / "b" / part / "adapter_model.safetensors")
        for k in a:
            assert torch.equal(a[k], b[k]), (part, k)


def test_ppo_ptx_mixes_a_pretraining_loss_from_user_text(dirs, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(dirs))
    write_jsonl(tmp_path / "text.jsonl", [{"text": f"{a} plus {b} is {a + b}. It is {a}."} for a in range(9)
                                          for b in range(9)])
    out = tmp_path / "ppo"
    ppo.run(_cfg(dirs, out, steps=2, ptx_coef=0.5, ptx_batch=2, ptx_data=str(tmp_path / "text.jsonl")))
    rows = _metrics(out)
    assert all(r["ppo/ptx/loss"] > 0 for r in rows)
    with pytest.raises(AlignkitError, match="ptx_data"):
        write_jsonl(tmp_path / "tiny.jsonl", [{"text": "too short"}])
        ppo.run(_cfg(dirs, tmp_path / "short", ptx_coef=0.5, ptx_data=str(tmp_path / "tiny.jsonl")))


def test_shared_trunk_value_head_reads_the_policy_in_the_same_pass(dirs, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(dirs))
    out = tmp_path / "ppo"
    ppo.run(_cfg(dirs, out, value_model="shared", steps=2))
    rows = _metrics(out)
    assert rows[0]["ppo/kl"] == pytest.approx(0.0, abs=1e-6)
    assert rows[0]["ppo/value/loss"] > 0
    head = load_file(out / "value_head.safetensors")
    assert list(head) == ["score.weight"] and head["score.weight"].abs().sum() > 0  # zero at start, then trained
    assert not (out / "value").exists()
