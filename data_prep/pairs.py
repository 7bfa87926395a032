"""Preference rows rendered for DPO, ORPO and KTO: the prompt's tokens, then each side's completion tokens.

Each side is rendered as a conversation (prompt + that side) with the recipe's Renderer, its prompt turns untrained:
`prompt_ids` are the tokens before the first trained token and must be the same for both sides; a side's ids run
from its first trained token through its last. Completions are cut so prompt + completion fits training.max_length.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from data_prep.formats import Preference
from tailor.render import RenderedArrays, Renderer, RowError

PROMPT_MISMATCH = "the prompt renders differently for chosen and rejected"
PROMPT_TOO_LONG = "prompt fills training.max_length"
IDENTICAL = "chosen and rejected are identical"  # formats.py's reason, and after PII redaction worker.py's


@dataclass
class RenderedPair:
    """A rendered preference row (`rejected_ids` None for an unpaired one), with the mask audit's counts."""

    prompt_ids: np.ndarray
    chosen_ids: np.ndarray
    rejected_ids: np.ndarray | None
    truncated: bool  # a completion was cut to fit training.max_length
    length: int  # prompt + the longest completion, before cutting
    eot: int = 0  # trained end-of-turn tokens kept, both sides
    trained: int = 0  # trained tokens kept, both sides
    trained_turns: int = 0
    role_tokens: Counter = field(default_factory=Counter)
    role_trained: Counter = field(default_factory=Counter)


def render_pair(renderer: Renderer, row: Preference, max_length: int, eot_id: int) -> RenderedPair:
    """Render both sides (one for an unpaired row); RowError when the prompts differ or fill max_length."""
    sides = [_render_side(renderer, row.prompt, turns) for turns in row.sides()]
    prompt = sides[0].prompt
    for side in sides[1:]:
        if not np.array_equal(prompt, side.prompt):
            raise RowError(f"{PROMPT_MISMATCH} ({_difference(renderer.tokenizer, prompt, side.prompt)})")
    if len(prompt) >= max_length:
        raise RowError(PROMPT_TOO_LONG)
    budget = max_length - len(prompt)
    completions = [side.completion for side in sides]
    out = RenderedPair(prompt, completions[0][:budget], completions[1][:budget] if len(sides) > 1 else None,
                       truncated=any(len(c) > budget for c in completions),
                       length=len(prompt) + max(len(c) for c in completions))
    for side in sides:
        end, arrays = len(prompt) + min(len(side.completion), budget), side.arrays
        if end < len(arrays.input_ids):  # cut (or untrained tokens after the last trained one): count what is kept
            arrays = renderer.render_arrays(side.messages, end)
        mask = arrays.assistant_masks
        out.eot += int(np.count_nonzero(mask & (arrays.input_ids == eot_id)))
        out.trained += int(np.count_nonzero(mask))
        out.trained_turns += arrays.trained_turns
        out.role_tokens.update(arrays.role_tokens)
        out.role_trained.update(arrays.role_trained)
    return out


@dataclass
class _Side:
    messages: list[dict[str, Any]]
    arrays: RenderedArrays
    prompt: np.ndarray
    completion: np.ndarray


def _render_side(renderer: Renderer, prompt: list[dict[str, Any]], turns: list[dict[str, Any]]) -> _Side:
    """One side rendered whole: prompt turns untrained, every final turn trained (as data.roles_to_train allows)."""
    messages = [{**m, "train": False} for m in prompt] + [{k: v for k, v in m.items() if k != "train"}
                                                          for m in turns]
    arrays = renderer.render_arrays(messages, sys.maxsize)
    trained = np.flatnonzero(arrays.assistant_masks)
    return _Side(messages, arrays, arrays.input_ids[:trained[0]], arrays.input_ids[trained[0]:trained[-1] + 1])


def _difference(tokenizer: Any, a: np.ndarray, b: np.ndarray) -> str:
    """Where two prompt renders part, as the first differing token of each (no position: reasons stay countable)."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    at = int(differ[0]) if len(differ) else n

    def token(ids: np.ndarray) -> str:
        return repr(tokenizer.decode([int(ids[at])])) if at < len(ids) else "the end of the prompt"

    return f"chosen has {token(a)} where rejected has {token(b)}"


class PairStats:
    """Token counts of the training pairs and completions, for the manifest and the data card."""

    def __init__(self) -> None:
        self.chosen: list[np.ndarray] = []
        self.rejected: list[np.ndarray] = []
        self.desirable = self.undesirable = 0  # unpaired rows

    def add(self, table: Any) -> None:
        """Count a block of preference shard rows (prompt_ids, chosen_ids, rejected_ids, label)."""
        import pyarrow.compute as pc

        paired = table.column("rejected_ids").is_valid().to_numpy(zero_copy_only=False)
        chosen = pc.list_value_length(table.column("chosen_ids")).to_numpy(zero_copy_only=False)
        rejected = pc.list_value_length(table.column("rejected_ids")).to_numpy(zero_copy_only=False)
        labels = table.column("label").to_numpy(zero_copy_only=False)
        self.chosen.append(chosen[paired])
        self.rejected.append(rejected[paired].astype(np.int64))
        self.desirable += int((labels & ~paired).sum())
        self.undesirable += int((~labels & ~paired).sum())

    def summary(self, method: str, rejected_by_reason: dict[str, int]) -> dict[str, Any]:
        chosen = np.concatenate(self.chosen) if self.chosen else np.zeros(0, np.int64)
        rejected = np.concatenate(self.rejected) if self.rejected else np.zeros(0, np.int64)
        out: dict[str, Any] = {
            "pairs": len(chosen), "chosen_tokens": _spread(chosen), "rejected_tokens": _spread(rejected),
            "chosen_longer_share": round(float((chosen > rejected).mean()), 4) if len(chosen) else None,
            "identical_pairs_refused": _refused(rejected_by_reason, IDENTICAL),
            "prompt_mismatch_refused": _refused(rejected_by_reason, PROMPT_MISMATCH)}
        if method == "kto":
            out.update(unpaired=self.desirable + self.undesirable, desirable=len(chosen) + self.desirable,
                       undesirable=len(chosen) + self.undesirable)
        return out


def _spread(lengths: np.ndarray) -> dict[str, float] | None:
    """Mean and median of token counts (None when there are none)."""
    if not len(lengths):
        return None
    return {"mean": round(float(lengths.mean()), 2), "median": float(np.median(lengths))}


def _refused(by_reason: dict[str, int], prefix: str) -> int:
    return sum(count for reason, count in by_reason.items() if reason.startswith(prefix))
