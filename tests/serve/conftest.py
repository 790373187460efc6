"""Fixtures of the arena's tests: the built-in world and tiny random models (helpers: arena_support.py)."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def world():
    from alignkit.world import build_world

    return build_world()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, world) -> list[Path]:
    """Three tiny random Llama models sharing a tokenizer trained on world text (their answers are noise)."""
    from alignkit.models.load import build_config, new_model, save_model
    from alignkit.models.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("arena-models")
    tokenizer = train_tokenizer([t.prompt + " " + t.ideal for t in world.tasks("train")][:300], vocab_size=300)
    dirs = []
    for i in range(3):
        save_model(new_model(build_config("llama", "smoke", tokenizer), seed=i), tokenizer, root / f"m{i}")
        dirs.append(root / f"m{i}")
    return dirs
