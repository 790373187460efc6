"""Preference losses on the policy itself: DPO and its family.

Inputs are sequence log-probs — sums over the completion tokens — as (B,) tensors (chosen / rejected,
policy / reference), or (B, K) for rankings with ``ranks`` as in ``alignkit/losses/reward.py``
(0 = best tie group, −1 = padding). With h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)]:

    dpo      −log σ(βh)                                  Rafailov et al. 2023, arXiv 2305.18290, eq. 7
    cdpo     −(1−ε) log σ(βh) − ε log σ(−βh)             Mitchell, "A note on DPO with noisy preferences"
    robust   [(1−ε) ℓ(h) − ε ℓ(−h)] / (1 − 2ε)           Chowdhury et al. 2024, arXiv 2403.00409
    ipo      (h − 1/(2β))²                               Azar et al. 2023, arXiv 2310.12036, eq. 17
    hinge    max(0, 1 − βh)                              SLiC, Zhao et al. 2023
    simpo    −log σ(β·mean log π(y_w) − β·mean log π(y_l) − γ)   Meng et al. 2024, arXiv 2405.14734
    listwise Plackett-Luce over the implicit rewards β(log π − log π_ref)  (DPO paper, appendix A.3)

DPO-Positive (``dpop_lambda`` λ > 0, for ``dpo`` and ``listwise_dpo``; Pal et al. 2024, "Smaug", arXiv
2402.13228, eq. 3) lowers the chosen response's implicit reward by βλ·max(0, log π_ref(y_w) − log π(y_w)):
the loss then rises as soon as the chosen answer becomes *less* likely than under the reference. Plain
DPO allows that, and Pal et al. show it happens when chosen and rejected differ in a token or two
("7 + 5 = 12." vs "… = 13."): pushing the rejected answer down can drag the shared tokens — and the
chosen answer — down with it. With rankings the penalty applies to the best-ranked tie group, so K = 2
is DPOP.

Every function returns ``(loss, metrics)``; the metrics are the implicit rewards β·log-ratio of chosen
and rejected, their margin, the preference accuracy and the policy log-probs (to see the known failure
where chosen and rejected log-probs both fall).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from alignkit.losses.reward import all_pairs, plackett_luce


def _metrics(beta: float, pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> dict:
    chosen, rejected = beta * (pc - rc).detach(), beta * (pr - rr).detach()
    return {"rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean(),
            "rewards/margin": (chosen - rejected).mean(), "rewards/accuracy": (chosen > rejected).float().mean(),
            "logps/chosen": pc.detach().mean(), "logps/rejected": pr.detach().mean()}


def _h(pc: Tensor, pr: Tensor, rc: Tensor, rr: Tensor) -> Tensor:
    return (pc.float() - rc.float()) - (pr.float() - rr.float())


def dpo(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
        beta: float = 0.1, label_smoothing: float = 0.0, dpop_lambda: float = 0.0) -> tuple[Tensor, dict]:
    """Sigmoid DPO; ``label_smoothing`` ε > 0 makes it conservative DPO (cDPO), whose gradient vanishes at
    σ(βh) = 1 − ε instead of pushing the margin on forever; ``dpop_lambda`` λ > 0 makes it DPO-Positive."""
    if not 0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    z = beta * (_h(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
                - dpop_lambda * _fall(policy_chosen, ref_chosen))
    loss = -(1 - label_smoothing) * F.logsigmoid(z) - label_smoothing * F.logsigmoid(-z)
    return loss.mean(), _metrics(beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected)


def robust_dpo(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
               beta: float = 0.1, label_smoothing: float = 0.1) -> tuple[Tensor, dict]:
    """rDPO: an unbiased estimate of the clean-label DPO loss when labels flip with probability ε < 0.5."""
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(f"robust DPO needs 0 <= label_smoothing < 0.5, got {label_smoothing}")
    z = beta * _h(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    eps = label_smoothing
    loss = (-(1 - eps) * F.logsigmoid(z) + eps * F.logsigmoid(-z)) / (1 - 2 * eps)
    return loss.mean(), _metrics(beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected)


def ipo(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
        beta: float = 0.1) -> tuple[Tensor, dict]:
    """IPO: regress h to 1/(2β) (β plays τ), so certain preferences cannot push π(y_l) to 0. TRL passes
    per-token mean log-probs here; pass means to reproduce it."""
    h = _h(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return ((h - 1 / (2 * beta)) ** 2).mean(), _metrics(beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected)


def hinge(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
          beta: float = 0.1) -> tuple[Tensor, dict]:
    """SLiC's hinge: no gradient once the scaled margin βh exceeds 1."""
    h = _h(policy_chosen, policy_rejected, ref_chosen, ref_rejected)
    return F.relu(1 - beta * h).mean(), _metrics(beta, policy_chosen, policy_rejected, ref_chosen, ref_rejected)


def simpo(policy_chosen_mean: Tensor, policy_rejected_mean: Tensor, *, beta: float = 2.5,
          gamma: float = 1.375) -> tuple[Tensor, dict]:
    """SimPO: reference-free, on **mean** per-token log-probs, with a target margin γ (paper: β 2-2.5)."""
    z = beta * (policy_chosen_mean.float() - policy_rejected_mean.float()) - gamma
    zero = torch.zeros_like(policy_chosen_mean)
    return -F.logsigmoid(z).mean(), _metrics(beta, policy_chosen_mean, policy_rejected_mean, zero, zero)


def listwise_dpo(policy_logps: Tensor, ref_logps: Tensor, ranks: Tensor, *,
                 beta: float = 0.1, dpop_lambda: float = 0.0) -> tuple[Tensor, dict]:
    """Plackett-Luce likelihood of a K-wise ranking with rewards β·(log π − log π_ref); (B, K) inputs.
    For K = 2 it is DPO (with ``dpop_lambda``, DPOP: the best-ranked responses' rewards lose
    βλ·max(0, log π_ref − log π)). Metrics compare the best-ranked response with the worst-ranked one."""
    rewards = beta * (policy_logps.float() - ref_logps.float())
    scored = rewards  # the implicit rewards are logged without DPOP's penalty, as in `dpo`
    if dpop_lambda:
        scored = rewards - beta * dpop_lambda * torch.where(_best(ranks), _fall(policy_logps, ref_logps), 0.0)
    loss, m = plackett_luce(scored, ranks)
    return loss, {**_ranked_metrics(rewards, policy_logps, ranks), "rewards/accuracy": m["accuracy"]}


def all_pairs_dpo(policy_logps: Tensor, ref_logps: Tensor, ranks: Tensor, *,
                  beta: float = 0.1) -> tuple[Tensor, dict]:
    """DPO on every strictly ordered pair of a ranking, averaged per prompt; (B, K) inputs."""
    rewards = beta * (policy_logps.float() - ref_logps.float())
    loss, m = all_pairs(rewards, ranks)
    return loss, {**_ranked_metrics(rewards, policy_logps, ranks), "rewards/accuracy": m["accuracy"]}


def _fall(policy: Tensor, ref: Tensor) -> Tensor:
    """DPOP's penalty: how far the log-prob fell below the reference's, max(0, log π_ref − log π)."""
    return (ref.float() - policy.float()).clamp(min=0)


def _best(ranks: Tensor) -> Tensor:
    """(B, K) bool: the responses of each prompt's best tie group (ranks as in ``losses/reward.py``)."""
    present = ranks >= 0
    return present & (ranks == ranks.masked_fill(~present, 10**9).min(dim=1, keepdim=True).values)


def _ranked_metrics(rewards: Tensor, logps: Tensor, ranks: Tensor) -> dict:
    """Implicit rewards and log-probs of each prompt's best tie group ("chosen") and of the rest
    ("rejected"), averaged per prompt, then over prompts that rank something below their best."""
    present = ranks >= 0
    best = _best(ranks)
    rest = present & ~best
    rows = rest.any(dim=1)

    def mean(x: Tensor, m: Tensor) -> Tensor:  # where, not multiply: padding may hold NaN
        per_row = torch.where(m, x.detach().float(), 0.0).sum(1) / m.sum(1).clamp(min=1)
        return per_row[rows].mean() if rows.any() else per_row.new_zeros(())

    chosen, rejected = mean(rewards, best), mean(rewards, rest)
    return {"rewards/chosen": chosen, "rewards/rejected": rejected, "rewards/margin": chosen - rejected,
            "logps/chosen": mean(logps, best), "logps/rejected": mean(logps, rest)}


# Pairwise losses with the common signature (chosen, rejected, ref_chosen, ref_rejected, *, beta, ...).
DPO_LOSSES = {"sigmoid": dpo, "robust": robust_dpo, "ipo": ipo, "hinge": hinge}
