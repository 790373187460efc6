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
