"""Held-out loss and perplexity on the assistant tokens only (the same tokens training optimizes)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def assistant_loss(model: "PreTrainedModel", rows: list[dict], pad_id: int, batch_size: int = 8) -> dict[str, float]:
    """Token-weighted mean cross-entropy over assistant tokens, and its perplexity."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for i, row in enumerate(batch):
                n = len(row["input_ids"])
                ids[i, :n] = torch.tensor(row["input_ids"])
                attention[i, :n] = 1
                mask = torch.tensor(row["assistant_masks"], dtype=torch.bool)
                labels[i, :n] = torch.where(mask, ids[i, :n], torch.tensor(-100))
            logits = model(input_ids=ids.to(model.device), attention_mask=attention.to(model.device)).logits.float()
            shift_logits = logits[:, :-1].reshape(-1, logits.size(-1))
            shift_labels = labels[:, 1:].reshape(-1).to(logits.device)
            total += F.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum").item()
            count += int((shift_labels != -100).sum())
    mean = total / max(count, 1)
    return {"loss": mean, "perplexity": math.exp(min(mean, 50.0)), "tokens": count}


def row_losses(model: "PreTrainedModel", rows: list[dict], pad_id: int, batch_size: int = 8) -> list[float | None]:
    """Per row: the mean cross-entropy over its assistant tokens (None for a row without one), for paired
    comparisons of two models on the same rows."""
    import torch
    import torch.nn.functional as F

    out: list[float | None] = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(rows), batch_size):
            batch = rows[start:start + batch_size]
            width = max(len(r["input_ids"]) for r in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            attention = torch.zeros_like(ids)
            labels = torch.full_like(ids, -100)
            for i, row in enumerate(batch):
                n = len(row["input_ids"])
                ids[i, :n] = torch.as_tensor(row["input_ids"])
                attention[i, :n] = 1
                mask = torch.as_tensor(row["assistant_masks"], dtype=torch.bool)
                labels[i, :n] = torch.where(mask, ids[i, :n], torch.tensor(-100))
            logits = model(input_ids=ids.to(model.device), attention_mask=attention.to(model.device)).logits.float()
            shift_labels = labels[:, 1:].to(logits.device)
            losses = F.cross_entropy(logits[:, :-1].transpose(1, 2), shift_labels, ignore_index=-100, reduction="none")
            counts = (shift_labels != -100).sum(dim=1)
            for total, count in zip(losses.sum(dim=1).tolist(), counts.tolist()):
                out.append(total / count if count else None)
    return out
