import math
from dataclasses import dataclass

import pytest
import torch

from alignkit.eval.metrics import category_rates, kl_k1, kl_k2, kl_k3, mean_ci, win_rate


def test_win_rate_hand_computed():
    # outcomes: win, win, loss, tie → [1, 1, 0, 0.5]; mean 0.625
    r = win_rate([1.0, 0.5, -1.0, 0.2], [0.0, 0.4, 0.0, 0.2])
    assert (r["wins"], r["ties"], r["losses"], r["n"]) == (2, 1, 1, 4)
    assert r["win_rate"] == 0.625
    s = math.sqrt(((1 - .625) ** 2 * 2 + .625 ** 2 + .125 ** 2) / 3)  # 0.478714
    half = 1.959964 * s / 2
    assert r["ci"] == pytest.approx([0.625 - half, min(1.0, 0.625 + half)], abs=1e-6)
    assert r["ci"][1] == 1.0  # clipped


def test_win_rate_ties_and_edges():
    r = win_rate([0.3] * 5, [0.3] * 5)
    assert r["win_rate"] == 0.5 and r["ci"] == [0.5, 0.5]
    assert win_rate([1.0], [0.0])["ci"] == [0.0, 1.0]  # one prompt: no spread known
    assert win_rate([0.50], [0.505], tie_margin=0.01)["ties"] == 1
    with pytest.raises(ValueError):
        win_rate([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        mean_ci([])


@pytest.mark.parametrize("log_r, k1, k2, k3", [
    (-0.1, 0.100000, 0.005000, 0.004837),
    (0.1, -0.100000, 0.005000, 0.005171),
    (math.log(2), -0.693147, 0.240227, 0.306853),
])
def test_kl_estimators_reference_table(log_r, k1, k2, k3):
    logp = torch.tensor([[-1.0, -2.0]])
    ref = logp + torch.tensor([[log_r, 0.0]])  # second token: equal, contributes 0
    mask = torch.ones(1, 2)
    assert kl_k1(logp, ref, mask).item() == pytest.approx(k1, abs=1e-6)
    assert kl_k2(logp, ref, mask).item() == pytest.approx(k2, abs=1e-6)
    assert kl_k3(logp, ref, mask).item() == pytest.approx(k3, abs=1e-6)


def test_kl_masking_and_zero():
    logp = torch.tensor([[-1.0, -3.0, -0.5]])
    ref = torch.tensor([[-1.0, -1.0, -9.0]])
    mask = torch.tensor([[1.0, 0.0, 0.0]])
    for kl in (kl_k1, kl_k2, kl_k3):
        assert kl(logp, ref, mask).item() == 0.0
        assert kl(logp, logp, torch.ones(1, 3)).item() == 0.0


@dataclass
class J:
    correct: bool
    refused: bool = False
    proper_ending: bool = True


def test_category_rates():
    cats = ["fact", "arithmetic", "unknown", "harmful", "benign", "benign", "story"]
    js = [J(True), J(False), J(True), J(False, refused=False), J(True, refused=True, proper_ending=False), J(True),
          J(True)]
    r = category_rates(cats, js)
    assert r == {"helpful": 0.5, "honest": 1.0, "harmless": 0.0, "over_refusal": 0.5,
                 "proper_ending": pytest.approx(6 / 7)}
    assert category_rates(["story"], [J(True)])["helpful"] is None
