import math

import torch

from alignkit.losses.lm import IGNORE_INDEX, causal_lm_loss, count_targets
from alignkit.losses.reduce import masked_mean


def test_uniform_logits_give_log_vocab():
    V = 50
    logits = torch.zeros(2, 6, V)
    labels = torch.randint(0, V, (2, 6))
    loss, m = causal_lm_loss(logits, labels)
    assert math.isclose(loss.item(), math.log(V), rel_tol=1e-6)
    assert m["n_tokens"].item() == 2 * 5  # the first position of each row is never a target


def test_hand_computed_and_ignored_labels():
    # one row, vocab 2: logits at t=0 are [0, log 3] → p(token 1) = 3/4; t=1 is ignored.
    logits = torch.tensor([[[0.0, math.log(3.0)], [5.0, -5.0], [0.0, 0.0]]])
    labels = torch.tensor([[0, 1, IGNORE_INDEX]])
    loss, m = causal_lm_loss(logits, labels)
    assert math.isclose(loss.item(), -math.log(0.75), rel_tol=1e-6)
    assert m["n_tokens"].item() == 1 and count_targets(labels) == 1


def test_ignored_token_gets_no_gradient():
    logits = torch.randn(1, 4, 7, requires_grad=True)
    labels = torch.tensor([[1, 2, IGNORE_INDEX, 3]])
    causal_lm_loss(logits, labels)[0].backward()
    assert torch.all(logits.grad[0, 1] == 0)  # position 1 predicts the ignored label at position 2
    assert torch.any(logits.grad[0, 0] != 0)


def test_global_normaliser_makes_accumulation_exact():
    torch.manual_seed(0)
    logits = torch.randn(4, 8, 11)
    labels = torch.randint(0, 11, (4, 8))
    labels[0, 3:] = IGNORE_INDEX  # micro-batches with different target counts
    full, _ = causal_lm_loss(logits, labels)
    n = count_targets(labels)
    parts = sum(causal_lm_loss(logits[i:i + 1], labels[i:i + 1], normalizer=n)[0] for i in range(4))
    assert torch.allclose(full, parts, atol=1e-6)


def test_masked_mean_empty_is_zero():
    assert masked_mean(torch.ones(3), torch.zeros(3)).item() == 0.0
    assert masked_mean(torch.tensor([1.0, 3.0, 5.0]), torch.tensor([1, 0, 1])).item() == 3.0
