import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignkit.models.logprobs import completion_logprobs, sequence_logprob


def _model():
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=4, intermediate_size=64, max_position_embeddings=64))
    return m.eval()


def _naive(model, prompt, completion, temperature=1.0):
    """Full log_softmax over one unpadded sequence, read off at the completion tokens."""
    ids = torch.tensor([prompt + completion])
    logps = torch.log_softmax(model(input_ids=ids).logits[0].float() / temperature, dim=-1)
    return torch.stack([logps[len(prompt) - 1 + t, tok] for t, tok in enumerate(completion)])


def _batch(rows, P, A, pad=0):
    """Left-padded prompts (B, P) and right-padded completions (B, A), as `rollout.types.Samples` holds them."""
    B = len(rows)
    pi, pm = torch.full((B, P), pad), torch.zeros(B, P, dtype=torch.long)
    ci, cm = torch.full((B, A), pad), torch.zeros(B, A, dtype=torch.long)
    for b, (p, c) in enumerate(rows):
        pi[b, P - len(p):], pm[b, P - len(p):] = torch.tensor(p), 1
        ci[b, :len(c)], cm[b, :len(c)] = torch.tensor(c), 1
    return pi, pm, ci, cm


ROWS = [([5, 6, 7, 8, 9], [10, 11, 12]), ([3, 4], [13, 14, 15, 16, 17]), ([20], [21])]
# rows of very different lengths, as a random minibatch of rollouts has: short ones packed several to a row
VARIED = [([1 + i % 7] * (2 + i % 3), [10 + i % 11] * (1 + i % 4)) for i in range(11)] + [([7] * 6, [20] * 14)]


@torch.no_grad()
def test_single_unpadded_sequence_matches_full_log_softmax():
    model = _model()
    p, c = [1, 2, 3, 4], [5, 6, 7]
    out = completion_logprobs(model, *_batch([(p, c)], P=4, A=3))
    assert out.shape == (1, 3) and out.dtype == torch.float32
    assert torch.allclose(out[0], _naive(model, p, c), atol=1e-5)


@torch.no_grad()
def test_padding_amount_does_not_change_values():
    model = _model()
    tight = completion_logprobs(model, *_batch(ROWS, P=5, A=5))
    # much more padding, and unequal: row 2 gets 24 pad tokens on the left and 19 on the right
    loose = completion_logprobs(model, *_batch(ROWS, P=25, A=20, pad=63))
    for b, (p, c) in enumerate(ROWS):
        expected = _naive(model, p, c)
        assert torch.allclose(tight[b, :len(c)], expected, atol=1e-5)
        assert torch.allclose(loose[b, :len(c)], expected, atol=1e-5)
    assert torch.equal(loose[:, 5:], torch.zeros(3, 15))


@torch.no_grad()
def test_masked_positions_are_zero_and_tokens_after_the_mask_do_not_matter():
    model = _model()
    pi, pm, ci, cm = _batch(ROWS, P=6, A=7)
    out = completion_logprobs(model, pi, pm, ci, cm)
    assert torch.equal(out[cm == 0], torch.zeros(int((cm == 0).sum())))
    assert torch.all(out[cm == 1] < 0)
    garbage = torch.where(cm.bool(), ci, torch.randint(0, 64, ci.shape))  # e.g. tokens sampled after eos
    assert torch.allclose(completion_logprobs(model, pi, pm, garbage, cm), out, atol=1e-6)


@torch.no_grad()
@pytest.mark.parametrize("rows, P, A", [(ROWS, 6, 6), (VARIED, 8, 14)])
def test_micro_batching_does_not_change_values(rows, P, A):
    """Micro-batches are rows grouped by length; the values come back in row order."""
    model = _model()
    batch = _batch(rows, P=P, A=A)
    full = completion_logprobs(model, *batch)
    for bs in (1, 2, 3, 5, 20):
        torch.testing.assert_close(completion_logprobs(model, *batch, batch_size=bs), full, rtol=1e-5, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("T", [0.7, 2.0])
def test_temperature_matches_log_softmax_of_scaled_logits(T):
    model = _model()
    out = completion_logprobs(model, *_batch(ROWS, P=6, A=6), temperature=T)
    for b, (p, c) in enumerate(ROWS):
        assert torch.allclose(out[b, :len(c)], _naive(model, p, c, temperature=T), atol=1e-5)
    assert not torch.allclose(out, completion_logprobs(model, *_batch(ROWS, P=6, A=6)))


def test_bad_arguments():
    model = _model()
    with pytest.raises(ValueError):
        completion_logprobs(model, *_batch(ROWS, P=6, A=6), temperature=0.0)
    with pytest.raises(ValueError):
        completion_logprobs(model, *_batch(ROWS, P=6, A=6), batch_size=0)


def test_sequence_logprob_sums_unmasked_tokens():
    token_logps = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, float("nan"), float("nan")]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert torch.equal(sequence_logprob(token_logps, mask), torch.tensor([-3.0, -0.5]))


def test_gradient_flows_when_enabled_and_not_under_no_grad():
    model = _model()
    batch = _batch(ROWS, P=12, A=8)  # heavy left padding must not produce NaN gradients
    out = completion_logprobs(model, *batch)
    assert out.requires_grad
    sequence_logprob(out, batch[3]).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert not completion_logprobs(model, *batch).requires_grad



def test_packed_rows_give_each_sequence_its_own_values_and_gradients():
    from alignkit.models.logprobs import completion_logprobs_and_hidden, layout

    model = _model()
    batch = _batch(VARIED, P=8, A=14, pad=63)
    ids, positions, row, col = layout(*batch, pack=lambda: True)
    assert ids.size(0) < len(VARIED) and positions is not None  # packed: fewer rows than sequences
    assert int((positions == 0).sum()) >= len(VARIED)  # every sequence restarts at position 0
    logps, hidden = completion_logprobs_and_hidden(model, *batch)
    (logps.sum() + (hidden * batch[3][..., None]).sum()).backward()  # hidden past a completion's end: unused
    packed_grad = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for b, (p, c) in enumerate(VARIED):
        alone, alone_hidden = completion_logprobs_and_hidden(model, *_batch([(p, c)], P=len(p), A=len(c)))
        torch.testing.assert_close(logps[b, :len(c)], alone[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(logps[b, :len(c)], _naive(model, p, c).detach(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(hidden[b, :len(c)], alone_hidden[0], rtol=1e-5, atol=1e-5)
        assert torch.equal(logps[b, len(c):], torch.zeros(14 - len(c)))
        (alone.sum() + alone_hidden.sum()).backward()
    for packed, summed in zip(packed_grad, (p.grad for p in model.parameters())):
        torch.testing.assert_close(packed, summed, rtol=1e-4, atol=1e-5)


class _NoPositions(torch.nn.Module):
    """A causal LM that ignores position ids: it cannot keep packed sequences apart."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, input_ids, position_ids=None, **kwargs):
        return self.model(input_ids=input_ids, **kwargs)


@torch.no_grad()
def test_a_model_that_mixes_packed_sequences_is_not_packed():
    from alignkit.models.logprobs import _packs

    model = _model()
    assert _packs(model)
    plain = _NoPositions(model)
    assert not _packs(plain)
    out = completion_logprobs(plain, *_batch(VARIED, P=8, A=14))
    for b, (p, c) in enumerate(VARIED):
        torch.testing.assert_close(out[b, :len(c)], _naive(model, p, c), rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_a_half_precision_model_is_packed_too():
    from alignkit.models.logprobs import _packs

    model = _model().to(torch.bfloat16)
    assert _packs(model)
    out = completion_logprobs(model, *_batch(VARIED, P=8, A=14))
    for b, (p, c) in enumerate(VARIED):
        alone = completion_logprobs(model, *_batch([(p, c)], P=len(p), A=len(c)))[0]
        torch.testing.assert_close(out[b, :len(c)], alone, rtol=2e-2, atol=2e-2)
