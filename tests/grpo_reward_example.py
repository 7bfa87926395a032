"""A trivially learnable GRPO reward for the tiny random Qwen2.5 checkpoint (tests/test_methods.py).

A random model spreads its probability almost evenly over 151k tokens, so no natural reward (exact match, valid
JSON) ever fires. This one scores the share of an answer's tokens whose output embedding points to the same side as
the embedding of "yes": half of the vocabulary, and a half a LoRA can reach by moving the last hidden state, so its
mean rises within a few GRPO steps at a low sampling temperature. A project function with a custom metric's
signature, as a team would write one.
"""

from __future__ import annotations

import functools
from typing import Any

TINY_MODEL_ENV = "TAILOR_TEST_TINY_QWEN25"


@functools.cache
def _positive() -> tuple[Any, Any]:
    import os

    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    folder = os.environ[TINY_MODEL_ENV]
    tokenizer = AutoTokenizer.from_pretrained(folder)
    weights = load_file(f"{folder}/model.safetensors")
    table = weights.get("lm_head.weight", weights["model.embed_tokens.weight"]).float()
    direction = table[tokenizer.convert_tokens_to_ids("yes")]
    return tokenizer, (table @ direction > 0)


def yes_side(prediction: str, reference: str, **_: Any) -> float | None:
    """Share of the answer's tokens on the "yes" side of the output embeddings (None for an empty answer)."""
    tokenizer, positive = _positive()
    ids = tokenizer(prediction, add_special_tokens=False)["input_ids"]
    if not ids:
        return None
    return float(positive[ids].float().mean())
