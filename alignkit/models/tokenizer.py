"""Train, save and describe the byte-level BPE tokenizer used for models trained from scratch.

The tokenizer is a plain `tokenizers` BPE wrapped in a transformers fast tokenizer, so anything saved here
loads with `transformers.AutoTokenizer.from_pretrained(dir)` without alignkit.

Why the Qwen2 pre-tokenizer: transformers 5 does not always trust `tokenizer.json`. When the directory also
holds a model `config.json` whose `model_type` is in its "incorrect hub tokenizer class" list (qwen2 is),
`AutoTokenizer` ignores the saved `tokenizer_class`, instantiates that family's class (`Qwen2Tokenizer`) and
rebuilds normalizer + pre-tokenizer from code, keeping only vocab and merges. For llama and gpt2 it honours
the saved `tokenizer_class: TokenizersBackend` and loads `tokenizer.json` as is. Training with exactly the
pipeline `Qwen2Tokenizer` rebuilds (NFC, the Qwen2/GPT-4 split regex, ByteLevel without its own regex)
makes both paths produce the same ids. The regex also splits numbers into single digits, which helps the
small models with arithmetic.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from alignkit.errors import AlignkitError

EOS_TOKEN = "<|endoftext|>"  # end of a document; the separator between documents in pretraining
PAD_TOKEN = "<|pad|>"  # distinct from eos, so masks built from pad never hide a real end of text
END_TOKEN = "<|end|>"  # end of a chat turn; generation stops here or at eos
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
SPECIAL_TOKENS = (EOS_TOKEN, PAD_TOKEN, *ROLE_TOKENS, END_TOKEN)

# Each message is `<|role|>\n{content}<|end|>\n`; the generation prompt opens an assistant turn.
# SFT trains on the assistant content + `<|end|>`; this is also the default template for tokenizers
# that come without one (see models/load.py).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|assistant|>\n' }}{%- endif %}"
)

# Identical to transformers' Qwen2Tokenizer PRETOKENIZE_REGEX (see the module docstring for why).
PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

DEFAULT_MODEL_MAX_LENGTH = 2048
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def _empty_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(
    texts: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    *,
    model_max_length: int = DEFAULT_MODEL_MAX_LENGTH,
) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; specials, eos, pad and the chat template are set.

    `vocab_size` counts everything: 256 byte tokens, the special tokens and the merges. Every string can be
    encoded (byte fallback is built in); `decode(encode(x)) == x` for NFC-normalised `x`.
    """
    minimum = 256 + len(SPECIAL_TOKENS) + 1
    if vocab_size < minimum:
        raise AlignkitError(
            f"vocab_size={vocab_size} is too small for a byte-level BPE; use at least {minimum}"
        )
    if min_frequency < 1:
        raise AlignkitError(f"min_frequency={min_frequency} must be at least 1")

    tok = _empty_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),  # ids 0..5, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap_tokenizer(tok, model_max_length=model_max_length)


def wrap_tokenizer(
    tok: Tokenizer, *, model_max_length: int = DEFAULT_MODEL_MAX_LENGTH
) -> PreTrainedTokenizerFast:
    """A `tokenizers.Tokenizer` holding SPECIAL_TOKENS → transformers tokenizer with eos/pad/template set."""
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if missing:
        raise AlignkitError(f"tokenizer lacks the special tokens {missing}")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        extra_special_tokens=[*ROLE_TOKENS, END_TOKEN],
        clean_up_tokenization_spaces=False,  # decode must give back exactly the text
        model_max_length=model_max_length,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerBase, out_dir: str | Path) -> None:
    """Save so that `AutoTokenizer.from_pretrained(out_dir)` gives the same ids, eos, pad and template.

    Writes tokenizer.json, tokenizer_config.json (with `tokenizer_class`) and chat_template.jinja. Safe next to
    a llama, qwen2 or gpt2 `config.json` (see the module docstring); `models.load.save_model` saves a model
    and its tokenizer together and checks the round trip.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A local tokenizer directory → tokenizer, completed with a distinct pad and a chat template if missing.

    For a model directory use `models.load.load_model`, which also keeps the embeddings in step.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.is_dir():
        raise AlignkitError(f"tokenizer directory {path} does not exist")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise AlignkitError(f"{path} has no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (ValueError, OSError) as e:
        raise AlignkitError(f"cannot load the tokenizer in {path}: {' '.join(str(e).split())[:300]}") from e
    complete_tokenizer(tokenizer)
    return tokenizer


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two (completed) tokenizers map every token to the same id: what a model that reads another
    model's token ids (a reference, a value model) needs."""
    return a.get_vocab() == b.get_vocab()


def complete_tokenizer(tokenizer: PreTrainedTokenizerBase) -> int:
    """Add a pad token distinct from eos, and CHAT_TEMPLATE with its role/end tokens, where missing.

    A pad equal to eos would let a padding mask hide the real end of text. The template's tokens are added
    as special tokens (as TRL's `setup_chat_format` does). Returns the number of tokens added; a model
    using this tokenizer needs its embeddings resized to `len(tokenizer)` if they no longer fit.
    """
    before = len(tokenizer)
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    if not getattr(tokenizer, "chat_template", None):
        new = [t for t in (*ROLE_TOKENS, END_TOKEN) if t not in tokenizer.get_vocab()]
        if new:
            tokenizer.add_special_tokens({"extra_special_tokens": new}, replace_extra_special_tokens=False)
        tokenizer.chat_template = CHAT_TEMPLATE
    return len(tokenizer) - before


def roundtrip_mismatch(tokenizer: PreTrainedTokenizerBase, saved_dir: str | Path) -> str | None:
    """Load `saved_dir` with AutoTokenizer and compare ids with `tokenizer` on a probe text.

    Returns None when they agree, else a one-line description of the first difference.
    """
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(str(saved_dir), local_files_only=True)
    probe = "Hello, world! 7 + 15 = 22; 1234567 café — naïve 東京 🙂  \n\n\tend."
    if getattr(tokenizer, "chat_template", None):
        probe += tokenizer.apply_chat_template(
            [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4."}], tokenize=False
        )
    want = tokenizer.encode(probe, add_special_tokens=False)
    got = loaded.encode(probe, add_special_tokens=False)
    if want != got:
        at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
        return (f"ids differ after reload ({type(loaded).__name__}) from token {at}: {want[at:at + 6]} vs "
                f"{got[at:at + 6]} ({tokenizer.decode(want[at:at + 6])!r})")
    for name in ("eos_token", "pad_token", "chat_template"):
        if getattr(tokenizer, name, None) != getattr(loaded, name, None):
            return f"{name} differs after reload: {getattr(tokenizer, name, None)!r} vs {getattr(loaded, name, None)!r}"
    return None
