"""Records → tensors: packing documents into fixed-length blocks for causal-LM training."""

from __future__ import annotations

import torch

from alignkit.losses.lm import IGNORE_INDEX


def pack_documents(docs: list[list[int]], *, block_size: int, eos_id: int) -> dict[str, torch.Tensor]:
    """Concatenate documents (each followed by ``eos_id``) and cut the stream into ``block_size`` rows.

    Documents do not see each other: ``position_ids`` restart at 0 at every document start, which
    transformers turns into a block-diagonal causal mask (``find_packed_sequence_indices``), and the
    first token of each document is not a target (its label is ``IGNORE_INDEX``: it would be predicted
    from the previous document's EOS). The EOS closing each document *is* a target, so the model
    learns to end. A document cut by a block boundary continues in the next row from position 0.
    The incomplete last row is dropped.

    Returns ``input_ids``, ``position_ids``, ``labels``: each (N, block_size).
    """
    stream, starts = [], []
    for ids in docs:
        starts.append(len(stream))
        stream.extend(ids)
        stream.append(eos_id)
    n_rows = len(stream) // block_size
    if n_rows == 0:
        raise ValueError(f"corpus has {len(stream)} tokens, fewer than one block of {block_size}")
    ids = torch.tensor(stream[: n_rows * block_size], dtype=torch.long).view(n_rows, block_size)
    doc_start = torch.zeros(len(stream), dtype=torch.bool)
    doc_start[torch.tensor(starts)] = True
    doc_start = doc_start[: n_rows * block_size].view(n_rows, block_size)

    row_start = doc_start.clone()
    row_start[:, 0] = True
    arange = torch.arange(block_size).expand(n_rows, block_size)
    last_start = torch.where(row_start, arange, torch.zeros_like(arange)).cummax(dim=1).values
    labels = ids.clone()
    labels[doc_start] = IGNORE_INDEX
    return {"input_ids": ids, "position_ids": arange - last_start, "labels": labels}


def pad_sequences(rows: list[list[int]], *, pad_id: int, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged token rows → (ids, attention_mask), both (B, max_len) long; right padding unless ``left``."""
    width = max((len(r) for r in rows), default=0)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        span = slice(width - len(row), width) if left else slice(0, len(row))
        ids[i, span] = torch.tensor(row, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


def pad_examples(examples: list[dict], *, pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad tokenised examples (``input_ids``, ``labels`` lists) to the longest one.

    Returns ``input_ids`` (B, T), ``attention_mask`` (B, T) and ``labels`` (B, T) with ``IGNORE_INDEX``
    on padding.
    """
    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def pack_examples(examples: list[dict], *, max_length: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Pack tokenised examples into as few rows of ``max_length`` as they fit (first fit, never split).

    No attention mask is returned: ``position_ids`` restart at 0 for every example (and for the padding
    at the end of a row), which transformers turns into a block-diagonal causal mask, so an example
    never attends to another. Labels stay as each example had them (assistant-only).
    Returns ``input_ids``, ``position_ids``, ``labels``: each (R, max_length).
    """
    rows: list[list[dict]] = []
    room: list[int] = []
    for e in examples:
        n = len(e["input_ids"])
        slot = next((i for i, r in enumerate(room) if r >= n), None)
        if slot is None:
            rows.append([])
            room.append(max_length)
            slot = len(rows) - 1
        rows[slot].append(e)
        room[slot] -= n
    ids = torch.full((len(rows), max_length), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), max_length), IGNORE_INDEX, dtype=torch.long)
    positions = torch.zeros((len(rows), max_length), dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e["input_ids"])
            ids[r, at:at + n] = torch.tensor(e["input_ids"])
            labels[r, at:at + n] = torch.tensor(e["labels"])
            positions[r, at:at + n] = torch.arange(n)
            at += n
        positions[r, at:] = torch.arange(max_length - at)
    return {"input_ids": ids, "position_ids": positions, "labels": labels}
