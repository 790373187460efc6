"""The pretrain stage on a tiny corpus: resume, accumulation invariance, safe output dirs."""

import json
import random

import pytest
import torch

from alignkit.config import PretrainConfig
from alignkit.data.sources import write_jsonl
from alignkit.errors import AlignkitError
from alignkit.models.tokenizer import save_tokenizer, train_tokenizer
from alignkit.stages import pretrain

NAMES = ["Mira", "Tomas", "Ana", "Kel", "Ovid", "Pia"]
PLACES = ["Velora", "Drun", "Ashka", "Miro"]


def _docs(n=120):
    rng = random.Random(0)
    return [" ".join(f"{rng.choice(NAMES)} lives in {rng.choice(PLACES)}. {a} + {b} = {a + b}."
                     for a, b in [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(rng.randint(2, 5))])
            for _ in range(n)]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    docs = _docs()
    write_jsonl(root / "corpus.jsonl", [{"text": d} for d in docs])
    save_tokenizer(train_tokenizer(docs, vocab_size=300), root / "tok")
    return root


def _cfg(corpus, out, **kw):
    base = dict(data=str(corpus / "corpus.jsonl"), tokenizer=str(corpus / "tok"), out=str(out), size="smoke",
                block_size=32, batch_size=2, grad_accum=2, max_steps=6, warmup_steps=2, eval_every=3,
                eval_batches=2, save_every=3, progress=False, lr=1e-2)
    return PretrainConfig(**{**base, **kw})


def _losses(out):
    return [json.loads(line)["pretrain/loss"] for line in open(out / "metrics.jsonl")]


def test_resume_continues_the_same_loss_curve(corpus, tmp_path):
    full = pretrain.run(_cfg(corpus, tmp_path / "full"))
    assert pretrain.run(_cfg(corpus, tmp_path / "cut"), stop_after=4) == {}  # "crash" after step 4
    resumed = pretrain.run(_cfg(corpus, tmp_path / "cut", resume=True))   # picks the step-3 checkpoint
    assert _losses(tmp_path / "full") == pytest.approx(_losses(tmp_path / "cut"), abs=1e-6)
    assert len(_losses(tmp_path / "cut")) == 6
    assert resumed["heldout_loss"] == pytest.approx(full["heldout_loss"], abs=1e-6)
    for key in ("heldout_loss", "heldout_ppl", "vocab_size", "tokens_seen", "train_seconds", "params"):
        assert key in full
    assert (tmp_path / "full" / "model" / "model.safetensors").is_file()


def test_half_written_checkpoint_is_never_picked(corpus, tmp_path):
    out = tmp_path / "run"
    pretrain.run(_cfg(corpus, out), stop_after=3)
    junk = out / "state" / ".step-000006.tmp"  # a crash in the middle of writing the next checkpoint
    junk.mkdir()
    (junk / "trainer.json").write_text("{not json")
    pretrain.run(_cfg(corpus, out, resume=True))
    assert _losses(out) == pytest.approx(_losses_of_fresh(corpus, tmp_path), abs=1e-6)


def _losses_of_fresh(corpus, tmp_path):
    pretrain.run(_cfg(corpus, tmp_path / "fresh"))
    return _losses(tmp_path / "fresh")


def test_accumulation_matches_one_big_batch(corpus, tmp_path):
    a = _cfg(corpus, tmp_path / "a", batch_size=4, grad_accum=1, max_steps=2, warmup_steps=0)
    b = _cfg(corpus, tmp_path / "b", batch_size=1, grad_accum=4, max_steps=2, warmup_steps=0)
    pretrain.run(a)
    pretrain.run(b)
    assert _losses(tmp_path / "a") == pytest.approx(_losses(tmp_path / "b"), abs=1e-5)
    from safetensors.torch import load_file
    wa, wb = (load_file(tmp_path / d / "model" / "model.safetensors") for d in ("a", "b"))
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-5), k


def test_existing_out_dir_is_not_overwritten(corpus, tmp_path):
    out = tmp_path / "run"
    pretrain.run(_cfg(corpus, out, max_steps=1))
    before = (out / "summary.json").read_text()
    with pytest.raises(AlignkitError, match="already holds a run"):
        pretrain.run(_cfg(corpus, out, max_steps=1))
    assert (out / "summary.json").read_text() == before


def test_bad_corpus_line_is_reported(corpus, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "typo"}\n')
    with pytest.raises(AlignkitError, match=r"bad.jsonl:2: field 'text' is missing"):
        pretrain.run(_cfg(corpus, tmp_path / "out", data=str(bad)))


def test_a_split_shorter_than_a_block_is_named(corpus, tmp_path):
    with pytest.raises(AlignkitError, match=r"the held-out split \(2 of 120 documents, heldout_fraction=0.02\): "
                                            r"corpus has \d+ tokens, fewer than one block of 256"):
        pretrain.run(_cfg(corpus, tmp_path / "out", block_size=256, heldout_fraction=0.02))
    assert not (tmp_path / "out" / "model").exists()


def test_a_block_beyond_the_models_positions_and_a_tokenizer_without_eos_are_refused(corpus, tmp_path):
    with pytest.raises(AlignkitError, match="block_size=1024 exceeds the model's 512 positions"):
        pretrain.run(_cfg(corpus, tmp_path / "out", block_size=1024))
    tok = json.loads((corpus / "tok" / "tokenizer_config.json").read_text())
    (tmp_path / "noeos").mkdir()
    for f in (corpus / "tok").iterdir():
        (tmp_path / "noeos" / f.name).write_bytes(f.read_bytes())
    (tmp_path / "noeos" / "tokenizer_config.json").write_text(json.dumps({**tok, "eos_token": None}))
    with pytest.raises(AlignkitError, match="the tokenizer has no eos token"):
        pretrain.run(_cfg(corpus, tmp_path / "out", tokenizer=str(tmp_path / "noeos")))
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_that_the_architecture_would_rebuild_is_refused_before_training(corpus, tmp_path):
    """transformers 5 rebuilds a qwen2 tokenizer's pre-tokenization: a GPT-2 style BPE (multi-digit merges)
    beside a qwen2 config.json loads back as other ids — refused up front, not after training at the save."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator([f"sells {a * 37} then {b * 91}, {a}{b}{a}." for a in range(40) for b in range(10)],
                            trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>").save_pretrained(tmp_path / "gpt2tok")
    with pytest.raises(AlignkitError, match="does not load back the same beside a qwen2 config.json"):
        pretrain.run(_cfg(corpus, tmp_path / "out", tokenizer=str(tmp_path / "gpt2tok"), arch="qwen2"))
    assert not (tmp_path / "out").exists()


def test_resuming_with_other_inputs_is_refused(corpus, tmp_path):
    out = tmp_path / "run"
    pretrain.run(_cfg(corpus, out, max_steps=2))
    before = (out / "config.yaml").read_text()
    other = tmp_path / "other.jsonl"
    write_jsonl(other, [{"text": d} for d in _docs(60)])
    with pytest.raises(AlignkitError, match=r"resume=true with data='.*other.jsonl', but the run there was started "
                                            r"with data='.*corpus.jsonl'"):
        pretrain.run(_cfg(corpus, out, max_steps=4, data=str(other), resume=True))
    assert (out / "config.yaml").read_text() == before
    summary = pretrain.run(_cfg(corpus, out, max_steps=4, resume=True, progress=False))  # more steps: fine
    assert summary["steps"] == 4


def test_out_dirs_that_cannot_be_resumed_are_refused(corpus, tmp_path):
    out = tmp_path / "run"
    pretrain.run(_cfg(corpus, out, max_steps=1))
    with pytest.raises(AlignkitError, match="pass one of them"):
        pretrain.run(_cfg(corpus, out, resume=True, overwrite=True))
    import yaml
    stored = yaml.safe_load((out / "config.yaml").read_text())
    (out / "config.yaml").write_text(yaml.safe_dump({**stored, "beta": 0.1}))  # as another stage writes it
    with pytest.raises(AlignkitError, match="holds the run of another stage"):
        pretrain.run(_cfg(corpus, out, resume=True))
    (tmp_path / "afile").write_text("x")
    with pytest.raises(AlignkitError, match="is a file, not a directory"):
        pretrain.run(_cfg(corpus, tmp_path / "afile", max_steps=1))
