"""Start-of-stage plumbing shared by every stage: the device and the output directory."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from alignkit.errors import AlignkitError


def resolve_device(name: str) -> torch.device:
    """``auto`` → cuda when available, else cpu; asking for cuda without one is a user error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise AlignkitError("device=cuda but no CUDA device is available (use device=cpu or auto)")
    return torch.device(name)


def check_out_dir(out: Path, *, resume: bool | None, overwrite: bool) -> bool:
    """Never overwrite a run by accident: an existing run needs ``resume`` or ``overwrite`` (``resume=None``:
    a stage that cannot resume). Writes nothing; True when ``out`` holds a run that ``overwrite`` replaces."""
    if out.exists() and not out.is_dir():
        raise AlignkitError(f"out={out} is a file, not a directory")
    existing = [p for p in ("summary.json", "state", "model") if (out / p).exists()]
    if existing and not resume and not overwrite:
        how = "pass resume=true to continue it, overwrite=true" if resume is not None else "pass overwrite=true"
        raise AlignkitError(f"{out} already holds a run ({', '.join(existing)}); {how} to replace it, or another out=")
    return bool(existing) and not resume


def prepare_out_dir(out: Path, *, resume: bool | None, overwrite: bool) -> None:
    """:func:`check_out_dir`, then replace the run it found (``overwrite``) and create ``out``."""
    if check_out_dir(out, resume=resume, overwrite=overwrite):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


# The keys that say what a run trains, from what: resuming a run with other values would load its
# checkpoint into another model or continue it on other data.
RESUME_INPUTS = ("model", "tokenizer", "arch", "size", "data", "ref_model", "rm", "reward", "value_model", "prompts",
                 "ptx_data", "prior", "lora", "lora_r", "lora_targets")


def begin_training(out: Path, cfg) -> None:
    """A training stage's start, before anything random (a LoRA's initialisation) and without writing: the
    checks of the output dir (never overwritten by accident; resumed only with the inputs it was started
    with), torch's thread count (``cfg.threads``, 0 = leave) and the seed. The stage calls
    :func:`open_out_dir` when its inputs have passed every check, right before its first write."""
    if cfg.resume and cfg.overwrite:
        raise AlignkitError("resume=true continues the run in out, overwrite=true replaces it: pass one of them")
    if cfg.resume:
        check_resume_inputs(out, cfg)
    check_out_dir(out, resume=cfg.resume, overwrite=cfg.overwrite)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)


def open_out_dir(out: Path, cfg) -> None:
    """The output dir, right before a training stage's first write: a run that ``overwrite=true`` replaces is
    removed only now, once bad data, a bad LoRA target or a failing chat template has had its chance to stop
    the stage."""
    prepare_out_dir(out, resume=cfg.resume, overwrite=cfg.overwrite)


def check_resume_inputs(out: Path, cfg) -> None:
    """Refuse, in one line, to resume the run in ``out`` with other :data:`RESUME_INPUTS` than its
    ``config.yaml`` records (nothing is written)."""
    import yaml

    saved = out / "config.yaml"
    if not saved.is_file():
        return
    stored = yaml.safe_load(saved.read_text()) or {}
    if set(stored) - {f.name for f in dataclasses.fields(cfg)}:
        raise AlignkitError(f"{out} holds the run of another stage ({saved} has keys this one lacks); resume it with "
                            "that stage, or pass overwrite=true or another out=")
    for key in RESUME_INPUTS:
        if key in stored and hasattr(cfg, key) and not _same_input(stored[key], getattr(cfg, key)):
            raise AlignkitError(f"{out}: resume=true with {key}={getattr(cfg, key)!r}, but the run there was started "
                                f"with {key}={stored[key]!r} ({saved}); resume with its inputs, or pass "
                                "overwrite=true or another out=")


def _same_input(a, b) -> bool:
    if a == b:
        return True
    paths = isinstance(a, str) and isinstance(b, str) and a and b
    return bool(paths) and Path(a).resolve() == Path(b).resolve()


def check_length_fits(model, key: str, value: int) -> None:
    """``max_length`` / ``block_size`` within the model's positions: longer sequences index past a learned
    position table (GPT-2: a crash mid-run, at the first long record) or past what the model was built for."""
    from alignkit.rollout.sampler import position_limit

    limit = position_limit(model)
    if limit and value > limit:
        raise AlignkitError(f"{key}={value} exceeds the model's {limit} positions; pass {key}={limit} or less")


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout probability to 0: with dropout, policy and reference disagree on identical weights
    (the KL at step 0 is not 0, the DPO loss not log 2)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):  # Llama / Qwen2 attention keep a float
            module.attention_dropout = 0.0
    for name in ("attention_dropout", "hidden_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop", "dropout"):
        if isinstance(getattr(model.config, name, None), float):
            setattr(model.config, name, 0.0)
