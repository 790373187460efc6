"""SFT on tiny random Llama / Qwen2 / GPT-2 models with user JSONL data, a few steps each."""

import json

import pytest
import torch
from safetensors.torch import load_file

from alignkit.config import SFTConfig
from alignkit.data.sources import write_jsonl
from alignkit.errors import AlignkitError
from alignkit.models.load import build_config, new_model, save_model
from alignkit.models.tokenizer import train_tokenizer
from alignkit.stages import sft

CHATS = [
    {"messages": [{"role": "user", "content": f"What is {a} + {b}?"},
                  {"role": "assistant", "content": f"{a} + {b} = {a + b}."}]}
    for a in range(6) for b in range(4)
]
MULTI = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                      {"role": "assistant", "content": "Goodbye."}]}


@pytest.fixture(scope="module")
def tokenizer():
    texts = [m["content"] for c in CHATS + [MULTI] for m in c["messages"]] * 5
    return train_tokenizer(texts, vocab_size=300)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_jsonl(root / "messages.jsonl", CHATS + [MULTI])
    write_jsonl(root / "pc.jsonl", [{"prompt": c["messages"][0]["content"], "completion": c["messages"][1]["content"]}
                                    for c in CHATS])
    return root


def _model_dir(tmp_path, arch, tokenizer):
    d = tmp_path / f"{arch}-base"
    save_model(new_model(build_config(arch, "smoke", tokenizer), seed=0), tokenizer, d)
    return d


def _cfg(model, data, out, **kw):
    return SFTConfig(**{**dict(model=str(model), data=str(data), out=str(out), max_length=48, batch_size=4,
                               max_steps=3, warmup_steps=0, lr=1e-2, eval_every=3, save_every=3, progress=False),
                        **kw})


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("form", ["messages", "pc"])
def test_sft_trains_each_architecture_on_user_jsonl(tmp_path, tokenizer, data, arch, form):
    base = _model_dir(tmp_path, arch, tokenizer)
    summary = sft.run(_cfg(base, data / f"{form}.jsonl", tmp_path / "sft"))
    assert summary["steps"] == 3 and summary["val_loss"] == summary["val_loss"]  # finite, not NaN
    before, after = load_file(base / "model.safetensors"), load_file(tmp_path / "sft" / "model" / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    rows = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2, 3] and all("sft/loss" in r for r in rows)


def test_packing_gives_the_same_first_loss(tmp_path, tokenizer, data):
    base = _model_dir(tmp_path, "llama", tokenizer)
    sft.run(_cfg(base, data / "messages.jsonl", tmp_path / "padded", max_steps=1))
    sft.run(_cfg(base, data / "messages.jsonl", tmp_path / "packed", max_steps=1, pack=True))
    first = [json.loads(open(tmp_path / d / "metrics.jsonl").readline())["sft/loss"] for d in ("padded", "packed")]
    assert first[0] == pytest.approx(first[1], abs=1e-4)


def test_examples_without_an_assistant_token_within_max_length_are_counted(tmp_path, tokenizer, capsys):
    long = " ".join(m["content"] for c in CHATS for m in c["messages"])
    write_jsonl(tmp_path / "d.jsonl", CHATS + [{"prompt": long, "completion": "Fine."}])
    sft.run(_cfg(_model_dir(tmp_path, "llama", tokenizer), tmp_path / "d.jsonl", tmp_path / "sft", max_steps=1))
    assert f"sft: 1 of {len(CHATS) + 1} examples dropped: no assistant token within max_length=48" in capsys.readouterr().err


def test_sft_learns_the_toy_task(tmp_path, tokenizer, data):
    base = _model_dir(tmp_path, "llama", tokenizer)
    s = sft.run(_cfg(base, data / "messages.jsonl", tmp_path / "sft", max_steps=40, lr=3e-2, eval_every=40))
    rows = [json.loads(line) for line in open(tmp_path / "sft" / "metrics.jsonl")]
    assert rows[-1]["sft/loss"] < 0.5 * rows[0]["sft/loss"]
    assert s["val_loss"] < rows[0]["sft/loss"]


def test_bad_rows_are_clear_errors(tmp_path, tokenizer):
    base = _model_dir(tmp_path, "llama", tokenizer)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(CHATS[0]) + "\n" + json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(AlignkitError, match=r"bad.jsonl:2: .*assistant"):
        sft.run(_cfg(base, bad, tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    with pytest.raises(AlignkitError, match="sft needs model=DIR"):
        sft.run(SFTConfig(out=str(tmp_path / "o2")))



def test_max_length_beyond_the_models_positions_is_refused(tmp_path, tokenizer, data):
    base = _model_dir(tmp_path, "gpt2", tokenizer)  # learned positions: a longer sequence would crash mid-run
    with pytest.raises(AlignkitError, match="max_length=1024 exceeds the model's 512 positions"):
        sft.run(_cfg(base, data / "messages.jsonl", tmp_path / "out", max_length=1024))
    assert not (tmp_path / "out").exists()


def test_input_errors_leave_the_run_that_overwrite_would_replace(tmp_path, tokenizer, data):
    base, out = _model_dir(tmp_path, "llama", tokenizer), tmp_path / "out"
    sft.run(_cfg(base, data / "messages.jsonl", out))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(AlignkitError, match="fewer than 2 examples with assistant tokens"):
        sft.run(_cfg(base, data / "messages.jsonl", out, overwrite=True, max_length=4))
    with pytest.raises(AlignkitError, match="lora"):
        sft.run(_cfg(base, data / "messages.jsonl", out, overwrite=True, lora=True, lora_targets="no_such_proj"))
    assert sorted(p.name for p in out.iterdir()) == before and (out / "model").is_dir()


def test_sft_with_lora_writes_an_adapter_and_the_merged_model_and_resumes(tmp_path, data, tokenizer):
    base = _model_dir(tmp_path, "llama", tokenizer)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    sft.run(_cfg(base, data / "messages.jsonl", straight, lora=True, lora_r=4, save_every=1))
    assert (straight / "adapter" / "adapter_config.json").is_file()
    merged, before = load_file(straight / "model" / "model.safetensors"), load_file(base / "model.safetensors")
    assert not all(torch.equal(merged[k], before[k]) for k in before)  # the merged weights moved
    assert sft.run(_cfg(base, data / "messages.jsonl", resumed, lora=True, lora_r=4, save_every=1), stop_after=2) == {}
    sft.run(_cfg(base, data / "messages.jsonl", resumed, lora=True, lora_r=4, save_every=1, resume=True))
    again = load_file(resumed / "model" / "model.safetensors")
    for k in merged:
        torch.testing.assert_close(again[k], merged[k])
