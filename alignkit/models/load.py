"""Models in and out: load any local Hugging Face causal-LM directory, build small ones from a size preset.

Everything here is plain transformers: a directory written by `save_model` loads with
`AutoModelForCausalLM.from_pretrained(dir)` + `AutoTokenizer.from_pretrained(dir)` without alignkit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Qwen2Config,
)

from alignkit.errors import AlignkitError
from alignkit.models.tokenizer import (
    END_TOKEN,
    TOKENIZER_FILES,
    complete_tokenizer,
    roundtrip_mismatch,
    save_tokenizer,
)

# Size presets. `smoke` runs in seconds on a CPU, `tiny` is the laptop default (≈0.85 M non-embedding
# parameters as llama/qwen2), `small` wants a GPU. A dict passed to build_config overrides `tiny` key by key.
SIZES: dict[str, dict[str, int]] = {
    "smoke": dict(
        hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=2, intermediate_size=64, max_positions=512
    ),
    "tiny": dict(
        hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=4, intermediate_size=384, max_positions=512
    ),
    "small": dict(
        hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4, intermediate_size=1536, max_positions=1024
    ),
}
ARCHS = ("llama", "qwen2", "gpt2")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")


# ---------------------------------------------------------------------------------------------- loading


def load_model(
    path: str | Path,
    *,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a local causal-LM directory (config.json, weights, tokenizer files) → (model, tokenizer).

    Never touches the hub. The tokenizer always comes back with a pad token distinct from eos and a chat
    template; if one had to be added the embeddings are resized. `model.generation_config` stops at eos and,
    when the tokenizer has it, `<|end|>`. The model is in eval mode.
    """
    path = Path(path)
    check_model_dir(path)
    torch_dtype = _parse_dtype(dtype, path)
    _check_device(device)

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True, trust_remote_code=trust_remote_code)
    except (ValueError, OSError, KeyError) as e:
        raise AlignkitError(
            f"{path}/config.json cannot be read as a transformers config: {_one_line(e)}"
        ) from e
    if not _is_causal_lm(config):
        raise AlignkitError(
            f"{path} holds a '{config.model_type}' model, which is not a causal language model "
            "(alignkit needs one that AutoModelForCausalLM can load)"
        )
    saved_as = getattr(config, "architectures", None) or []
    if saved_as and not any(a.endswith(_LM_ARCHITECTURES) for a in saved_as):
        raise AlignkitError(f"{path} holds a {', '.join(saved_as)}, not a causal language model (its language-model "
                            "head would start from random weights)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            path, local_files_only=True, trust_remote_code=trust_remote_code
        )
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype, local_files_only=True, trust_remote_code=trust_remote_code
        )
    except Exception as e:  # noqa: BLE001 (a truncated safetensors file raises its own error type)
        raise AlignkitError(f"cannot load the model in {path}: {_one_line(e)}") from e

    prepare_tokenizer(model, tokenizer)
    model.to(device)
    model.eval()
    return model, tokenizer


def check_model_dir(path: Path) -> None:
    if not path.exists():
        raise AlignkitError(f"model directory {path} does not exist")
    if not path.is_dir():
        raise AlignkitError(f"model path {path} is a file; expected a Hugging Face model directory")
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise AlignkitError(
                f"{path} holds a LoRA adapter, not a full model (no config.json); merge it first"
            )
        raise AlignkitError(f"{path} has no config.json; expected a Hugging Face model directory")
    if not any(next(path.glob(g), None) for g in WEIGHT_GLOBS):
        raise AlignkitError(f"{path} has no weights (*.safetensors or pytorch_model.bin)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise AlignkitError(f"{path} has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")


def _parse_dtype(dtype: str, path: Path) -> torch.dtype | str:
    if dtype == "auto":
        return "auto"  # whatever config.json says
    if dtype not in _DTYPES:
        raise AlignkitError(f"dtype={dtype!r} for {path} is not one of {['auto', *_DTYPES]}")
    return _DTYPES[dtype]


def _check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise AlignkitError(f"device={device!r} is not a torch device (use cpu, cuda, cuda:1, mps)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AlignkitError(f"device={device!r} but CUDA is not available on this machine")


# The class names a causal LM is saved under (config.json's "architectures"): LlamaForCausalLM, GPT2LMHeadModel, ...
_LM_ARCHITECTURES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _is_causal_lm(config: PretrainedConfig) -> bool:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    auto_map = getattr(config, "auto_map", None) or {}
    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING or "AutoModelForCausalLM" in auto_map


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:300]


def prepare_tokenizer(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Complete `tokenizer` (distinct pad, chat template: see `complete_tokenizer`); keep `model` in step.

    The embeddings grow only when the new ids do not fit the existing matrix (Qwen's, for one, has spare
    rows).
    """
    complete_tokenizer(tokenizer)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))  # new rows start at the mean embedding
    set_special_ids(model, tokenizer)


def set_special_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """pad/eos ids in model.config and model.generation_config; eos keeps the model's own stop ids and adds
    the chat template's end of turn (a base model's template may close turns with another token than eos)."""
    eos = _as_list(model.generation_config.eos_token_id) + _as_list(tokenizer.eos_token_id)
    end_id = tokenizer.convert_tokens_to_ids(END_TOKEN) if END_TOKEN in tokenizer.get_vocab() else None
    eos = list(dict.fromkeys(eos + _as_list(end_id) + _as_list(template_end_id(tokenizer))))  # ordered, unique
    eos_value: int | list[int] = eos[0] if len(eos) == 1 else eos
    for cfg in (model.config, model.generation_config):
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = eos_value


def template_end_id(tokenizer: PreTrainedTokenizerBase) -> int | None:
    """The special token the chat template closes an assistant turn with (ChatML's ``<|im_end|>``, Llama-3's
    ``<|eot_id|>``, ours ``<|end|>``), or None when the template writes none (or there is no template)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    probe = "alignkit end-of-turn probe"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": probe}],
                                             tokenize=False)
    except Exception:  # a template that refuses this conversation: nothing to learn from it
        return None
    ids = tokenizer(text.partition(probe)[2].lstrip(), add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    special = set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values())
    return int(ids[0]) if ids[0] in special else None


def _as_list(ids: Any) -> list[int]:
    if ids is None:
        return []
    return [int(i) for i in ids] if isinstance(ids, (list, tuple)) else [int(ids)]


# --------------------------------------------------------------------------------------------- building


def resolve_size(size: str | dict[str, int]) -> dict[str, int]:
    """A preset name or a dict of overrides on `tiny` → a full, validated size dict."""
    if isinstance(size, str):
        if size not in SIZES:
            raise AlignkitError(f"size={size!r} is not one of {sorted(SIZES)} (or a dict of sizes)")
        spec = dict(SIZES[size])
    else:
        unknown = set(size) - set(SIZES["tiny"])
        if unknown:
            raise AlignkitError(f"unknown size keys {sorted(unknown)}; allowed: {sorted(SIZES['tiny'])}")
        spec = {**SIZES["tiny"], **size}
        if "num_heads" in size and "num_kv_heads" not in size:
            spec["num_kv_heads"] = spec["num_heads"]
    if any(not isinstance(v, int) or v < 1 for v in spec.values()):
        raise AlignkitError(f"model sizes must be positive integers, got {spec}")
    if spec["hidden_size"] % spec["num_heads"] or spec["num_heads"] % spec["num_kv_heads"]:
        raise AlignkitError(
            f"hidden_size ({spec['hidden_size']}) must be divisible by num_heads ({spec['num_heads']}), "
            f"and num_heads by num_kv_heads ({spec['num_kv_heads']})"
        )
    return spec


def build_config(
    arch: str, size: str | dict[str, int], tokenizer: PreTrainedTokenizerBase
) -> PretrainedConfig:
    """A config for a randomly initialised model: tied embeddings, no dropout, ids from `tokenizer`.

    `eos_token_id` is `[<|endoftext|>, <|end|>]` when the tokenizer has both, so generation stops at either.
    """
    s = resolve_size(size)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise AlignkitError(
            "the tokenizer needs a pad token distinct from eos (train it with train_tokenizer)"
        )
    eos = _as_list(tokenizer.eos_token_id)
    if END_TOKEN in tokenizer.get_vocab():
        eos.append(tokenizer.convert_tokens_to_ids(END_TOKEN))
    ids = dict(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.eos_token_id,  # never prepended; set so no default id (1, 2) points elsewhere
        eos_token_id=eos if len(eos) > 1 else eos[0],
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    # Llama and Qwen2 take the same keys; Qwen2 also needs its sliding window off.
    decoder = dict(
        hidden_size=s["hidden_size"],
        num_hidden_layers=s["num_layers"],
        num_attention_heads=s["num_heads"],
        num_key_value_heads=s["num_kv_heads"],
        intermediate_size=s["intermediate_size"],
        max_position_embeddings=s["max_positions"],
        attention_dropout=0.0,
        **ids,
    )
    if arch == "llama":
        return LlamaConfig(**decoder)
    if arch == "qwen2":
        return Qwen2Config(**decoder, use_sliding_window=False)
    if arch == "gpt2":  # no grouped-query attention: num_kv_heads is ignored
        return GPT2Config(
            n_embd=s["hidden_size"],
            n_layer=s["num_layers"],
            n_head=s["num_heads"],
            n_inner=s["intermediate_size"],
            n_positions=s["max_positions"],
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **ids,
        )
    raise AlignkitError(f"arch={arch!r} is not one of {list(ARCHS)}")


def new_model(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    """Randomly initialised causal LM; the same seed gives the same weights. Leaves the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        setattr(model.generation_config, name, getattr(config, name, None))
    return model


def count_params(model: torch.nn.Module, *, exclude_embeddings: bool = False) -> int:
    """Number of distinct parameters (tied weights once); optionally without token/position embeddings."""
    params = {id(p): p for p in model.parameters()}
    if exclude_embeddings:
        for module in model.modules():
            if isinstance(module, torch.nn.Embedding):
                params.pop(id(module.weight), None)
    return sum(p.numel() for p in params.values())


def check_tokenizer_fits(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Before training a new model: its tokenizer loads back the same beside its ``config.json`` (what
    :func:`save_model` checks at the end). transformers 5 rebuilds some tokenizers' pre-tokenization from
    ``model_type`` (Qwen2's), so a tokenizer made for another one can fail here."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.config.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)
        problem = roundtrip_mismatch(tokenizer, tmp)
    if problem:
        raise AlignkitError(f"this tokenizer does not load back the same beside a {model.config.model_type} "
                            f"config.json ({problem}); pick another arch (llama and gpt2 keep the tokenizer's own "
                            "pre-tokenization)")


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> None:
    """model.save_pretrained + save_tokenizer into one directory, then check the tokenizer round trip.

    The check loads the directory with AutoTokenizer (which looks at config.json's model_type) and fails
    loudly if the ids differ, instead of training later on silently different tokens.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    save_tokenizer(tokenizer, out)
    problem = roundtrip_mismatch(tokenizer, out)
    if problem:
        raise RuntimeError(f"tokenizer saved in {out} does not load back identically: {problem}")
