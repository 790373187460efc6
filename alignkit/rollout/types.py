"""Rollout records. Every tensor field has a shape comment: B batch, P prompt tokens, A response tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Samples:
    """Completions of a batch of prompts, as produced by `rollout.sampler.sample`.

    `prompt_ids` + `completion_ids` concatenated along dim 1 is exactly the sequence the model generated
    (left padding on the prompt side, right padding on the completion side); `completion_mask` marks the
    tokens the policy chose, so it is what log-prob gathering and losses mask with.
    """

    prompts: list[str]  # B rendered prompt texts, as given
    texts: list[str]  # B decoded completions: no special tokens, cut before the first stop string
    prompt_ids: Tensor  # (B, P) long, left-padded with the pad id
    prompt_mask: Tensor  # (B, P) long, 1 on prompt tokens, 0 on left padding
    completion_ids: Tensor  # (B, A) long, right-padded with the pad id
    completion_mask: Tensor  # (B, A) long, 1 up to and including the first eos / stop string; 0 after
    finished: list[bool]  # B, True when ended by eos or a stop string, False when cut by max_new_tokens

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def completion_lengths(self) -> Tensor:  # (B,) number of completion tokens, eos included
        return self.completion_mask.sum(dim=1)

    def select(self, rows: list[int]) -> Samples:
        """The samples at ``rows``, in that order (e.g. the best of each group of n)."""
        index = torch.tensor(rows, dtype=torch.long)
        return Samples(
            prompts=[self.prompts[i] for i in rows],
            texts=[self.texts[i] for i in rows],
            prompt_ids=self.prompt_ids[index],
            prompt_mask=self.prompt_mask[index],
            completion_ids=self.completion_ids[index],
            completion_mask=self.completion_mask[index],
            finished=[self.finished[i] for i in rows],
        )
