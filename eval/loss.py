"""Held-out loss and perplexity on the assistant tokens only (the same tokens training optimizes)."""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from transformers import PreTrainedModel

LOGITS_BYTES = 512 * 2**20  # a batch's full logits would be at most this (fp32; 151k vocabulary x 512 tokens: 311 MB)


def _batches(model: "PreTrainedModel", rows: list[dict], pad_id: int,
             batch_size: int) -> Iterator[tuple[list[int], list[int], Any, Any]]:
    """(row indices, scored positions per row, logits, targets) per batch: the logits of only the positions that
    predict an assistant token, [n, vocab], and those tokens, [n], row after row. Rows are batched by length (less
    padding), fewer per batch where full logits would pass LOGITS_BYTES."""
    import torch

    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]), reverse=True)
    vocab = model.get_output_embeddings().weight.shape[0]
    model.eval()
    with torch.inference_mode():
        start = 0
        while start < len(order):
            width = len(rows[order[start]]["input_ids"])  # the longest row left
            rows_that_fit = max(1, LOGITS_BYTES // (width * vocab * 4))
            index = order[start:start + min(batch_size, rows_that_fit)]
            start += len(index)
            ids = torch.full((len(index), width), pad_id, dtype=torch.long)
            attention = torch.zeros_like(ids)
            scored = torch.zeros_like(ids, dtype=torch.bool)  # position t scores token t + 1
            for j, i in enumerate(index):
                n = len(rows[i]["input_ids"])
                ids[j, :n] = torch.as_tensor(rows[i]["input_ids"])
                attention[j, :n] = 1
                scored[j, :n - 1] = torch.as_tensor(rows[i]["assistant_masks"][1:], dtype=torch.bool)
            targets = ids[:, 1:][scored[:, :-1]]
            with _head_on(model, scored.to(model.device)):
                logits = model(input_ids=ids.to(model.device), attention_mask=attention.to(model.device)).logits
            yield index, scored.sum(dim=1).tolist(), logits.reshape(-1, logits.size(-1)).float(), \
                targets.to(logits.device)


@contextlib.contextmanager
def _head_on(model: "PreTrainedModel", positions: Any) -> Iterator[None]:
    """Project only `positions` ([batch, length] bool) through the LM head: most of a row is prompt, and on a
    CPU the head over a 49k-152k vocabulary is a large share of the forward (same values as the full logits)."""
    head = model.get_output_embeddings()

    def select(module: Any, args: tuple) -> tuple:
        return (args[0][positions].unsqueeze(0), *args[1:])

    handle = head.register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def assistant_loss(model: "PreTrainedModel", rows: list[dict], pad_id: int, batch_size: int = 8) -> dict[str, float]:
    """Token-weighted mean cross-entropy over assistant tokens, and its perplexity."""
    import torch.nn.functional as F

    total, count = 0.0, 0
    for _, _, logits, targets in _batches(model, rows, pad_id, batch_size):
        total += F.cross_entropy(logits, targets, reduction="sum").item()
        count += len(targets)
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": count}


def row_losses(model: "PreTrainedModel", rows: list[dict], pad_id: int, batch_size: int = 8) -> list[float | None]:
    """Per row, in the order given: the mean cross-entropy over its assistant tokens (None for a row without
    one), for paired comparisons of two models on the same rows."""
    import torch.nn.functional as F

    out: list[float | None] = [None] * len(rows)
    for index, counts, logits, targets in _batches(model, rows, pad_id, batch_size):
        losses = F.cross_entropy(logits, targets, reduction="none").split(counts)
        for i, row, count in zip(index, losses, counts):
            out[i] = row.sum().item() / count if count else None
    return out
