import torch
from transformers import LlamaConfig, LlamaForCausalLM

from alignkit.models.logprobs import completion_logprobs, sequence_logprob


def _model():
    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=4, intermediate_size=64, max_position_embeddings=64))
    return m.eval()


def _naive(model, prompt, completion, temperature=1.0):
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0] / temperature
    logps = torch.log_softmax(logits.float(), dim=-1)
    return torch.stack([logps[len(prompt) - 1 + t, tok] for t, tok in enumerate(completion)])


def _batch(rows, P, A, pad=0):
    B = len(rows)
    pi, pm = torch.full((B, P), pad), torch.zeros(B, P, dtype=torch.long)
    ci, cm = torch.full((B, A), pad), torch.zeros(B, A, dtype=torch.long)
    for b, (p, c) in enumerate(rows):
        pi[b, P - len(p):], pm[b, P - len(p):] = torch.tensor(p), 1  # left-padded prompt
        ci[b, :len(c)], cm[b, :len(c)] = torch.tensor(c), 1            # right-padded completion
    return pi, pm, ci, cm


def test_matches_naive_and_padding_does_not_matter():
    model = _model()
    rows = [([5, 6, 7, 8, 9], [10, 11, 12]), ([3, 4], [13, 14, 15, 16, 17])]
    with torch.no_grad():
        out = completion_logprobs(model, *_batch(rows, P=9, A=8))
        for b, (p, c) in enumerate(rows):
            assert torch.allclose(out[b, :len(c)], _naive(model, p, c), atol=1e-5)
            assert torch.all(out[b, len(c):] == 0)
        one_by_one = completion_logprobs(model, *_batch(rows, P=9, A=8), batch_size=1)
    assert torch.allclose(out, one_by_one, atol=1e-5)


def test_temperature_and_sequence_sum():
    model = _model()
    p, c = [1, 2, 3], [4, 5]
    with torch.no_grad():
        out = completion_logprobs(model, *_batch([(p, c)], P=3, A=2), temperature=0.7)
    assert torch.allclose(out[0], _naive(model, p, c, temperature=0.7), atol=1e-5)
    assert torch.allclose(sequence_logprob(out, torch.ones(1, 2)), out.sum(-1))


def test_gradient_flows():
    model = _model()
    out = completion_logprobs(model, *_batch([([1, 2], [3, 4])], P=2, A=2))
    out.sum().backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0
