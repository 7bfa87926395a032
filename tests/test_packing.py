"""Packing (the default) keeps documents apart: a packed pass scores every trained token exactly as one row at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.prepare import prepare
from tailor.recipe import load_recipe


def _summed_token_loss(recipe, grads: bool = False) -> tuple[float, int, int, dict]:
    """(sum of -log p over the trained tokens, their count, batches, adapter gradients of that sum when `grads`)
    over one pass of the train dataloader, before any training step, through the trainer tailor builds (data,
    collator, masks, fused LM head); eval mode, so dropout is off."""
    import torch

    from train.run import build_trainer

    trainer, _, _ = build_trainer(recipe)
    model = trainer.model.eval()
    total, tokens, batches = 0.0, 0, 0
    for batch in trainer.get_train_dataloader():
        labels = batch.pop("labels")
        batch.pop("attention_mask", None) if "position_ids" in batch else None
        with torch.set_grad_enabled(grads):
            out = model(**batch, labels=labels, fused_lm_head=True, use_cache=False)
            nll = -out.log_probs.double().sum()
            if grads:
                nll.backward()
        total += float(nll)
        tokens += int(out.label_mask.sum())
        batches += 1
    gradients = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return total, tokens, batches, gradients


@pytest.mark.parametrize("model_fixture", ["tiny_qwen25", "tiny_qwen3"])
def test_packed_batches_score_like_unpacked_rows(tiny_recipe, model_fixture: str, request) -> None:
    model: Path = request.getfixturevalue(model_fixture)
    path = tiny_recipe(rows=48, model=model)
    packed = load_recipe(path, ["training.max_length=128", "training.batch_size=2"])
    assert packed.training.packing is True  # the default
    prepare(packed)
    unpacked = load_recipe(path, ["training.max_length=128", "training.batch_size=2", "training.packing=false"])

    packed_loss, packed_tokens, packed_batches, _ = _summed_token_loss(packed)
    plain_loss, plain_tokens, plain_batches, _ = _summed_token_loss(unpacked)

    assert packed_tokens == plain_tokens > 0  # no trained token lost or added by packing
    assert packed_batches < plain_batches  # rows really were packed together
    # on random weights cross-document attention moves the sum by ~4e-5 relative (position_ids dropped: checked)
    assert packed_loss == pytest.approx(plain_loss, rel=2e-6)  # observed ~4e-9; without position_ids 4e-5


def test_compact_lm_head_scores_only_trained_positions_with_the_same_loss_and_gradients(tiny_recipe,
                                                                                          monkeypatch) -> None:
    import trl.trainer.utils as trl_utils

    from train import lm_head

    projected: list[int] = []
    chunked = trl_utils._ChunkedLogProbFunction

    class Spy:  # records the hidden-state rows of each call of trl's fused head through the vocabulary
        @staticmethod
        def apply(hidden, *args):
            projected.append(hidden.shape[0])
            return chunked.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    monkeypatch.setattr(lm_head, "CPU_ROWS", 16)  # so that the CPU row chunks are exercised on tiny batches
    path = tiny_recipe(rows=32)
    compact = load_recipe(path, ["training.max_length=128"])
    assert compact.training.compact_lm_head is True  # the default
    prepare(compact)

    compact_loss, trained, batches, compact_grads = _summed_token_loss(compact, grads=True)
    compact_calls, projected[:] = list(projected), []
    full_loss, full_trained, _, full_grads = _summed_token_loss(
        load_recipe(path, ["training.max_length=128", "training.compact_lm_head=false"]), grads=True)

    assert sum(compact_calls) == trained == full_trained  # only the trained (assistant) positions were projected
    assert max(compact_calls) <= 16 < trained and len(compact_calls) > batches  # in row chunks
    assert sum(projected) > 2 * trained  # without it, every position (prompts too) is projected on CPU
    assert compact_loss == pytest.approx(full_loss, rel=1e-6)
    assert compact_grads.keys() == full_grads.keys() and any("lora_B" in n for n in compact_grads)
    for name, grad in compact_grads.items():  # fp32 summation order differs: one element in 512 moved by 4e-6
        error, scale = (grad - full_grads[name]).norm().item(), full_grads[name].norm().item()
        assert error <= 1e-4 * scale + 1e-9, f"{name}: gradient differs by {error:.2e} (norm {scale:.2e})"
