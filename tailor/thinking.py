"""Thinking models (Qwen3, DeepSeek-R1): score the answer after the reasoning block (eval's metrics and GRPO's
rewards alike, with the recipe's eval.think_tags), report the block's length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class Split:
    """One output split into its reasoning block and its answer. `unfinished`: the block never closed (the token
    budget ran out while thinking), so there is no answer."""

    thinking: str | None
    answer: str
    unfinished: bool = False


def split_thinking(text: str, tags: tuple[str, str] | None) -> Split:
    """Split `<think>...</think>answer`. The opening tag may be missing (templates that put it in the prompt, as
    DeepSeek-R1's does); an opening tag without its closing one leaves an empty answer, flagged unfinished."""
    if not tags:
        return Split(None, text)
    start, end = tags
    if end in text:
        head, _, answer = text.partition(end)
        thinking = head.split(start, 1)[1] if start in head else head
        return Split(thinking.strip(), answer.strip())
    stripped = text.lstrip()
    if stripped.startswith(start):
        return Split(stripped[len(start):].strip(), "", unfinished=True)
    return Split(None, text)


def thinking_summary(splits: list[Split], count_tokens: Callable[[str], int]) -> dict[str, Any]:
    """Rows with a reasoning block, unfinished blocks, and mean block length in characters and tokens."""
    blocks = [s.thinking for s in splits if s.thinking is not None]
    if not blocks:
        return {}
    return {"think_rows": len(blocks), "think_unfinished": sum(s.unfinished for s in splits),
            "think_chars_mean": sum(len(b) for b in blocks) / len(blocks),
            "think_tokens_mean": sum(count_tokens(b) for b in blocks) / len(blocks)}
