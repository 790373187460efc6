"""LoRA adapters (Hu et al. 2021, arXiv 2106.09685) with peft: h = W₀x + (α/r)·B·A·x, W₀ frozen, B = 0 at start.

Every training stage takes ``lora=true`` (+ ``lora_r``, ``lora_alpha``, ``lora_dropout``,
``lora_targets``). With adapters the **reference model is the base with the adapters disabled**
(:func:`adapters_disabled`), so DPO, PPO and GRPO keep one copy of the weights instead of two. A stage
trained with LoRA writes the adapter as a standard PEFT directory (``out/adapter``:
adapter_config.json + adapter_model.safetensors) and the merged full model (``out/model``, W₀ + (α/r)BA),
so every later stage and any Hugging Face tool can load the result. ``alignkit merge`` merges an adapter
directory into a full checkpoint by hand.

Defaults follow "LoRA Without Regret" (Schulman et al., Thinking Machines 2025): adapters on every
linear layer of the transformer (not the output embedding), and a learning rate about 10× that of full
fine-tuning.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from alignkit.errors import AlignkitError


def add_lora(model, cfg, *, task: str = "CAUSAL_LM"):
    """Wrap ``model`` in a peft model with fresh adapters as ``cfg`` says (lora_r, lora_alpha, lora_dropout,
    lora_targets). ``task="SEQ_CLS"`` (reward and value models) also trains the scalar head in full."""
    from peft import LoraConfig, get_peft_model

    targets = cfg.lora_targets
    targets = "all-linear" if targets in ("all-linear", "", None) else [t.strip() for t in str(targets).split(",")]
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                        target_modules=targets, task_type=task, bias="none")
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # e.g. a target module name that is not in the model
        raise AlignkitError(f"lora: {str(e).splitlines()[0]}") from None


def is_lora(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


@contextlib.contextmanager
def adapters_disabled(model):
    """The base model: inside this block the adapters are off, so the model is the reference exactly."""
    if is_lora(model):
        with model.disable_adapter():
            yield model
    else:
        yield model


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


# What a stage sets on its model's config beyond the base model's own (special-token ids, the reward
# model's normalisation and prior): kept beside the adapter, so that merging it gives ``out/model`` again.
CONFIG_EXTRAS = ("pad_token_id", "eos_token_id", "bos_token_id", "reward_normalization", "reward_prior")
EXTRAS_FILE = "alignkit_config.json"


def save_lora(model, tokenizer, out: Path) -> None:
    """``out/adapter`` (see :func:`save_adapter`) and ``out/model`` (the merged full checkpoint) for a LoRA model."""
    from alignkit.training.checkpoint import save_pretrained_atomic

    out = Path(out)
    merged = save_adapter(model, tokenizer, out / "adapter", config_dir=out / "model")
    save_pretrained_atomic(merged, tokenizer, out / "model")


def save_adapter(model, tokenizer, adapter: Path, *, config_dir: Path):
    """The PEFT adapter of ``model`` in ``adapter``, with the tokenizer, the generation config and
    :data:`CONFIG_EXTRAS` (``alignkit_config.json``), so that merging it gives the stage's model again; returns the
    merged copy. The base model's path is stored absolute in ``adapter_config.json`` (plain PEFT loads it from any
    directory) and relative to the adapter in the extras (a moved run still merges); a reward model's prior,
    relative to ``config_dir`` in the model's config, is stored relative to the adapter."""
    import json
    import os

    adapter = Path(adapter)
    model.save_pretrained(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    merged = merged_copy(model)
    extras = {k: getattr(merged.config, k) for k in CONFIG_EXTRAS if getattr(merged.config, k, None) is not None}
    if "reward_prior" in extras:
        prior = (Path(config_dir) / extras["reward_prior"]["model"]).resolve()
        extras["reward_prior"] = {**extras["reward_prior"], "model": os.path.relpath(prior, adapter.resolve())}
    peft_config = json.loads((adapter / "adapter_config.json").read_text())
    base = peft_config.get("base_model_name_or_path")
    if base and Path(base).is_dir():  # a local base, found wherever the command runs
        extras["base_model"] = os.path.relpath(Path(base).resolve(), adapter.resolve())
        peft_config["base_model_name_or_path"] = str(Path(base).resolve())
        (adapter / "adapter_config.json").write_text(json.dumps(peft_config, indent=2, sort_keys=True) + "\n")
    (adapter / EXTRAS_FILE).write_text(json.dumps(extras, indent=2) + "\n")
    if merged.can_generate():
        merged.generation_config.save_pretrained(str(adapter))
    return merged


def save_trained(model, tokenizer, out: Path) -> None:
    """A training stage's result: ``out/model`` (full weights; merged for LoRA) and, for LoRA, ``out/adapter``."""
    from alignkit.training.checkpoint import save_pretrained_atomic

    if is_lora(model):
        save_lora(model, tokenizer, out)
    else:
        save_pretrained_atomic(model, tokenizer, Path(out) / "model")


def maybe_lora(model, cfg, *, task: str = "CAUSAL_LM"):
    """``model`` with fresh adapters when ``cfg.lora`` is set, else ``model`` itself."""
    if not cfg.lora:
        return model
    model = add_lora(model, cfg, task=task)
    trainable, total = trainable_parameters(model)
    from alignkit.training.logging import info
    info(f"lora: r={cfg.lora_r}, α={cfg.lora_alpha:g} on {cfg.lora_targets}: {trainable:,} trainable of {total:,} "
         "parameters")
    return model


def merged_copy(model):
    """A plain transformers model with W₀ + (α/r)BA, leaving ``model`` (and its adapters) untouched."""
    import copy

    return copy.deepcopy(model).merge_and_unload()


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, *, base: str | Path | None = None) -> Path:
    """Load a PEFT adapter directory onto its base model (or ``base``) and write the merged checkpoint."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from alignkit.models.load import save_model

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise AlignkitError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json)")
    config = PeftConfig.from_pretrained(str(adapter_dir))
    extras = _extras(adapter_dir)
    if base is None:  # as recorded (relative to this directory), else relative to the adapter
        candidates = [Path(config.base_model_name_or_path or "")]
        candidates += [adapter_dir / extras["base_model"]] if "base_model" in extras else []
        base = next((c for c in candidates if (c / "config.json").is_file()), candidates[0])
    base = Path(base)
    if not (base / "config.json").is_file():
        raise AlignkitError(f"the adapter's base model {base} is not a model directory; pass --base DIR")
    auto = AutoModelForSequenceClassification if config.task_type == "SEQ_CLS" else AutoModelForCausalLM
    kwargs = {"num_labels": 1} if config.task_type == "SEQ_CLS" else {}
    model = auto.from_pretrained(str(base), local_files_only=True, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir if (adapter_dir / "tokenizer.json").is_file() else base),
                                              local_files_only=True)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    try:
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except (RuntimeError, ValueError, KeyError) as e:  # a base of another shape or architecture than the adapter's
        first = " ".join(str(e).split())[:160]
        raise AlignkitError(f"the adapter {adapter_dir} does not fit the base model {base} ({first}); pass the "
                            "base it was trained on with --base DIR") from None
    _restore_extras(merged, extras, adapter_dir, Path(out_dir))
    with torch.no_grad():
        save_model(merged, tokenizer, out_dir)
    return Path(out_dir)


def _restore_extras(merged, extras: dict, adapter_dir: Path, out_dir: Path) -> None:
    """What :func:`save_lora` kept beside the adapter (``extras``, its file read), back on the merged model; the
    reward model's prior (a path relative to the model dir, a sibling of the adapter dir) re-pointed from
    ``out_dir``."""
    import os

    from transformers import GenerationConfig

    for key, value in extras.items():
        if key not in CONFIG_EXTRAS:
            continue
        if key == "reward_prior":
            prior = (adapter_dir / value["model"]).resolve()
            value = {**value, "model": os.path.relpath(prior, out_dir.resolve())}
        setattr(merged.config, key, value)
    if (adapter_dir / "generation_config.json").is_file() and merged.can_generate():
        merged.generation_config = GenerationConfig.from_pretrained(str(adapter_dir))


def _extras(adapter_dir: Path) -> dict:
    import json

    path = adapter_dir / EXTRAS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}
