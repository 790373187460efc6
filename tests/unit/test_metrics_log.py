"""The metrics file and checkpoints after a crash: what resuming reads back."""

import json

import pytest
import torch

from alignkit.errors import AlignkitError
from alignkit.training.checkpoint import load_state, save_state
from alignkit.training.logging import MetricsLog


def test_resume_drops_later_steps_and_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in (1, 2, 3):
        log.log(step, {"loss": 1.0 / step})
    with open(path, "a") as f:
        f.write('{"step": 4, "sft/lo')  # the last line, cut
    MetricsLog(path, resume_step=2).log(3, {"loss": 0.5})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_checkpoint_of_another_model_is_a_one_line_error(tmp_path):
    from alignkit.models.load import build_config, new_model
    from alignkit.models.tokenizer import train_tokenizer

    tok = train_tokenizer(["the cat sat on the mat."] * 20, vocab_size=280)
    saved, other = (new_model(build_config(arch, "smoke", tok), seed=0) for arch in ("llama", "gpt2"))

    def state(model):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    opt, sched = state(saved)
    ckpt = save_state(tmp_path / "state", 1, model=saved, optimizer=opt, scheduler=sched, extra={})
    opt, sched = state(other)
    with pytest.raises(AlignkitError, match="does not match the model") as e:
        load_state(ckpt, model=other, optimizer=opt, scheduler=sched)
    assert "\n" not in str(e.value) and len(str(e.value)) < 600
