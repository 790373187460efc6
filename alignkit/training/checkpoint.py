"""Checkpoints: the Hugging Face model dir (``model/``) and resumable training state (``state/``).

Everything is written into a temporary directory and renamed into place, and ``state/latest`` (a
one-line file naming the newest checkpoint) is replaced atomically last — so a crash at any moment
leaves either the previous checkpoint or the new one, never a half-written one that resume would pick.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

KEEP_LAST = 2


def save_pretrained_atomic(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """:func:`alignkit.models.load.save_model` (safetensors + tokenizer, round trip checked) into
    ``out_dir``, replacing it atomically."""
    from alignkit.models.load import save_model

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_model(model, tokenizer, tmp)
    _replace_dir(tmp, out_dir)
    return out_dir


def save_state(state_dir: str | Path, step: int, *, model: Any,
               optimizer: torch.optim.Optimizer, scheduler: Any, extra: dict) -> Path:
    """Write a resumable checkpoint ``state_dir/step-NNNNNN`` and point ``state_dir/latest`` at it."""
    state_dir = Path(state_dir)
    name = f"step-{step:06d}"
    tmp = state_dir / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp / "model")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": _rng_state()}, tmp / "trainer.pt")
    (tmp / "trainer.json").write_text(json.dumps({"step": step, **extra}, indent=1))
    _replace_dir(tmp, state_dir / name)
    write_text_atomic(state_dir / "latest", name + "\n")
    for old in sorted(state_dir.glob("step-*"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return state_dir / name


def latest_state(state_dir: str | Path) -> Path | None:
    """The checkpoint ``state_dir/latest`` names, or None when there is none."""
    pointer = Path(state_dir) / "latest"
    if not pointer.is_file():
        return None
    path = Path(state_dir) / pointer.read_text().strip()
    return path if (path / "trainer.json").is_file() else None


def load_state(path: Path, *, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Restore weights, optimizer, scheduler and RNG from ``path``; returns ``trainer.json``."""
    from safetensors.torch import load_file

    weights = {}
    for f in sorted((path / "model").glob("*.safetensors")):
        weights.update(load_file(f))
    if hasattr(model, "peft_config"):  # a LoRA model saves (and restores) its adapters only
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, weights)
        missing, unexpected = [], list(result.unexpected_keys)
    else:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    # Tied weights (lm_head = embeddings) are saved once; anything else missing is a real mismatch.
    tied = set(getattr(model, "_tied_weights_keys", None) or ())
    if unexpected or [k for k in missing if k not in tied and not k.endswith("lm_head.weight")]:
        from alignkit.errors import AlignkitError

        raise AlignkitError(f"checkpoint {path} does not match the model ({len(missing)} weights missing, e.g. "
                            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}): resume with the "
                            "model the run was started from, or pass overwrite=true")
    trainer = torch.load(path / "trainer.pt", weights_only=False)
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    _set_rng_state(trainer["rng"])
    return json.loads((path / "trainer.json").read_text())


def write_json_atomic(path: str | Path, data: dict) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(Path(path)) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: Path):
    """A hidden sibling of ``path`` to write, moved over ``path`` when the block ends without error: a crash
    leaves the old file (or none), never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    yield tmp
    os.replace(tmp, path)


def _replace_dir(tmp: Path, target: Path) -> None:
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
