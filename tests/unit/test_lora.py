"""LoRA invariants (docs/algorithms.md §9): output at init = base, disabled adapters = base exactly, gradients
only in the adapters, merged = unmerged; and the merge of a saved adapter directory."""

from dataclasses import dataclass

import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit.models.heads import new_scalar_model, scalar_outputs
from alignkit.models.load import build_config, load_model, new_model, save_model
from alignkit.models.lora import adapters_disabled, add_lora, merge_adapter, save_lora, trainable_parameters
from alignkit.models.tokenizer import train_tokenizer


@dataclass
class Keys:
    lora_r: int = 4
    lora_alpha: float = 8.0
    lora_dropout: float = 0.0
    lora_targets: str = "all-linear"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    tok = train_tokenizer([f"the {w} is {c}." for w in ("cat", "dog", "owl") for c in ("red", "blue")], vocab_size=280)
    d = tmp_path_factory.mktemp("base")
    save_model(new_model(build_config("llama", "smoke", tok), seed=0), tok, d)
    return d


def _ids(n: int = 3, t: int = 7) -> torch.Tensor:
    return torch.randint(5, 200, (n, t), generator=torch.Generator().manual_seed(0))


def _train_step(model, ids):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model(input_ids=ids).logits.square().mean().backward()
    opt.step()


def test_output_at_init_equals_base_and_only_adapters_train(base_dir):
    base, _ = load_model(base_dir)
    ids = _ids()
    expected = base(input_ids=ids).logits.detach()
    model = add_lora(base, Keys())
    torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=0, atol=0)
    trainable, total = trainable_parameters(model)
    assert 0 < trainable < total / 5
    model(input_ids=ids).logits.square().mean().backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == ("lora_" in name), name


def test_disabled_adapters_are_the_base_exactly_and_merged_equals_unmerged(base_dir):
    base, _ = load_model(base_dir)
    reference, _ = load_model(base_dir)
    ids = _ids()
    model = add_lora(base, Keys())
    _train_step(model, ids)
    trained = model(input_ids=ids).logits.detach()
    assert not torch.allclose(trained, reference(input_ids=ids).logits)
    with adapters_disabled(model):
        torch.testing.assert_close(model(input_ids=ids).logits, reference(input_ids=ids).logits, rtol=0, atol=0)
    import copy
    merged = copy.deepcopy(model).merge_and_unload()
    torch.testing.assert_close(merged(input_ids=ids).logits, trained, rtol=1e-5, atol=1e-5)


def test_saved_adapter_merges_into_the_same_model(base_dir, tmp_path):
    base, tok = load_model(base_dir)
    ids = _ids()
    model = add_lora(base, Keys(lora_targets="q_proj,v_proj"))
    _train_step(model, ids)
    save_lora(model, tok, tmp_path / "run")
    assert (tmp_path / "run" / "adapter" / "adapter_config.json").is_file()
    saved, _ = load_model(tmp_path / "run" / "model")
    merged_dir = merge_adapter(tmp_path / "run" / "adapter", tmp_path / "merged", base=base_dir)
    again, _ = load_model(merged_dir)
    expected = model(input_ids=ids).logits
    torch.testing.assert_close(saved(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_a_merged_adapter_is_the_stage_model_from_any_directory(base_dir, tmp_path, monkeypatch):
    import json
    import shutil

    shutil.copytree(base_dir, tmp_path / "base")
    for name in ("config.json", "generation_config.json"):  # a base without pad, stopping at its eos only
        path = tmp_path / "base" / name
        settings = json.loads(path.read_text())
        eos = settings["eos_token_id"]
        path.write_text(json.dumps({**settings, "pad_token_id": None, "eos_token_id": eos[0] if isinstance(eos, list)
                                    else eos}))
    monkeypatch.chdir(tmp_path)
    base, tok = load_model("base")  # recorded as a relative path
    model = add_lora(base, Keys())
    _train_step(model, _ids())
    save_lora(model, tok, tmp_path / "run")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    merged = merge_adapter(tmp_path / "run" / "adapter", tmp_path / "merged")
    for name in ("config.json", "generation_config.json"):
        saved = json.loads((tmp_path / "run" / "model" / name).read_text())
        again = json.loads((merged / name).read_text())
        assert saved["pad_token_id"] is not None and saved["pad_token_id"] == again["pad_token_id"], name
        assert saved["eos_token_id"] == again["eos_token_id"], name
    from peft import AutoPeftModelForCausalLM  # plain PEFT finds the base too (its path is stored absolute)
    AutoPeftModelForCausalLM.from_pretrained(str(tmp_path / "run" / "adapter"), local_files_only=True)
    from alignkit.cli import main
    assert main(["merge", "--adapter", str(tmp_path / "run" / "adapter"), "--out", str(merged)]) == 2  # not empty
    assert main(["merge", "--adapter", str(tmp_path / "run" / "adapter"), "--out", str(merged), "--overwrite"]) == 0
    with pytest.raises(AlignkitError, match="pass --base DIR"):
        shutil.rmtree(tmp_path / "base")
        merge_adapter(tmp_path / "run" / "adapter", tmp_path / "merged2")


def test_merging_onto_a_base_of_another_shape_is_a_one_line_error(base_dir, tmp_path, capsys):
    base, tok = load_model(base_dir)
    save_lora(add_lora(base, Keys()), tok, tmp_path / "run")
    wider = build_config("llama", "smoke", tok)
    wider.hidden_size *= 2
    save_model(new_model(wider, seed=0), tok, tmp_path / "wider")
    from alignkit.cli import main
    code = main(["merge", "--adapter", str(tmp_path / "run" / "adapter"), "--out", str(tmp_path / "m"),
                 "--base", str(tmp_path / "wider")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "does not fit the base model" in err
    assert not (tmp_path / "m").exists()


def test_scalar_model_with_lora_reads_through_the_adapters(base_dir):
    value, _ = new_scalar_model(base_dir, head_init="reward")
    ids, mask = _ids(), torch.ones(3, 7, dtype=torch.long)
    before = scalar_outputs(value, ids, mask).detach()
    value = add_lora(value, Keys(), task="SEQ_CLS")
    torch.testing.assert_close(scalar_outputs(value, ids, mask), before)
    scalar_outputs(value, ids, mask).square().mean().backward()
    opt = torch.optim.SGD([p for p in value.parameters() if p.requires_grad], lr=0.5)
    opt.step()
    assert not torch.allclose(scalar_outputs(value, ids, mask), before)
    with adapters_disabled(value):
        torch.testing.assert_close(scalar_outputs(value, ids, mask), before, rtol=0, atol=0)


def test_unknown_target_module_is_a_one_line_error(base_dir):
    base, _ = load_model(base_dir)
    with pytest.raises(AlignkitError, match="lora"):
        add_lora(base, Keys(lora_targets="no_such_proj"))
