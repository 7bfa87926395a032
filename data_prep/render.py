"""Render conversations with the model's own chat template and mark which tokens carry the loss.

The mask is computed from the rendered text, not from token guesses: for each assistant turn, the span between
the rendering of the conversation before it (with the generation prompt) and the rendering that includes it is
the text the model must learn to produce, end-of-turn marker included. Tokens whose characters start inside such
a span are trained. If the template renders an earlier part of the conversation differently once later turns are
added (so training would not match inference), the row is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from data_prep.formats import RowError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class Rendered:
    """A tokenized training example."""

    input_ids: list[int]
    assistant_masks: list[int]
    truncated: bool

    @property
    def num_trained(self) -> int:
        return sum(self.assistant_masks)


def render_text(tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, str]],
                add_generation_prompt: bool = False) -> str:
    """The chat template's text for a conversation, exactly as at inference."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_text(tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, str]]) -> str:
    """What the model sees at inference for the final answer: all but the last message, plus the generation prompt."""
    return render_text(tokenizer, messages[:-1], add_generation_prompt=True)


def assistant_spans(tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The full rendered text and the character spans of every assistant turn in it."""
    full = render_text(tokenizer, messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_text(tokenizer, messages[:index], add_generation_prompt=True)
        through = render_text(tokenizer, messages[: index + 1])
        if not (through.startswith(before) and full.startswith(through)):
            raise RowError(f"chat template renders turn {index} differently once later turns are added, so the "
                           "training text would not match inference")
        spans.append((len(before), len(through)))
    return full, spans


def render_example(tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, str]],
                   max_length: int) -> Rendered:
    """Tokenize a conversation and build its assistant-only loss mask, truncated to `max_length` tokens."""
    full, spans = assistant_spans(tokenizer, messages)
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    mask = []
    for start, end in encoded["offset_mapping"]:
        mask.append(int(any(lo <= start < hi for lo, hi in spans) and end > start))
    truncated = len(ids) > max_length
    ids, mask = ids[:max_length], mask[:max_length]
    if not any(mask):
        reason = "no assistant token within training.max_length" if truncated else "no trainable assistant token"
        raise RowError(reason)
    return Rendered(ids, mask, truncated)
