"""Render conversations with the model's own chat template and mark which tokens carry the loss.

Each trained message's span is the text between the render before it (with the generation prompt for assistant
turns) and the render through it, so a trained turn is exactly what the model produces at inference. Earlier turns a
template rewrites (dropped think blocks) stay untrained; a final turn that renders differently is refused. Shared by
the data stage and eval (`renderer_for`): one chat template, one loss mask. See docs/data.md.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from tailor.schema import Recipe

TEXT_ROLE = "text"  # the single message of a plain-text row (continued pretraining)
CONTEXT_ROLE = "context"  # every token outside a trained turn
EMPTY_THINK = re.compile(r"<think>\s*</think>\s*")
THINK_OPEN = re.compile(r"<think>\n?$")  # a generation prompt ending in an open think block


class RowError(ValueError):
    """A row that cannot become a training example; the message is the reason recorded in rejected.jsonl."""


def is_text_row(messages: list[dict[str, Any]]) -> bool:
    return len(messages) == 1 and messages[0]["role"] == TEXT_ROLE


def split_reasoning(message: dict[str, Any]) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message: `reasoning_content`, or the text before `</think>` in the
    content (an opening `<think>` is optional: R1 outputs begin inside the block); both stripped."""
    content = message.get("content") or ""
    if "</think>" in content:
        thought, _, answer = content.rpartition("</think>")
        thought = thought.strip()
        thought = thought[len("<think>"):].strip() if thought.startswith("<think>") else thought
        return thought, answer.strip()
    return (message.get("reasoning_content") or "").strip(), content.strip()


class TemplateMismatch(RowError):
    """The training render of the final turn differs from the inference render: a template problem, not a row one."""


@dataclass(frozen=True)
class Rendered:
    """A tokenized training example with its loss mask and audit counts."""

    input_ids: list[int]
    assistant_masks: list[int]
    truncated: bool
    trained_turns: int
    untrainable_history: int = 0
    role_tokens: dict[str, int] = field(default_factory=dict)
    role_trained: dict[str, int] = field(default_factory=dict)

    @property
    def num_trained(self) -> int:
        return sum(self.assistant_masks)


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    role: str
    trained: bool


@dataclass
class Renderer:
    """Renders with one tokenizer, template and set of trained roles."""

    tokenizer: "PreTrainedTokenizerBase"
    roles_to_train: tuple[str, ...] = ("assistant",)
    template: str | None = None
    template_kwargs: dict[str, Any] = field(default_factory=dict)

    def text(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> str:
        """The chat template's text for a conversation, exactly as at inference."""
        if not messages:
            return ""
        return self.tokenizer.apply_chat_template(messages, tokenize=False, chat_template=self.template,
                                                  add_generation_prompt=add_generation_prompt, **self.template_kwargs)

    def prompt(self, messages: list[dict[str, Any]]) -> str:
        """What the model sees at inference before the final answer ("" for plain-text rows)."""
        return "" if is_text_row(messages) else self.text(messages[:-1], add_generation_prompt=True)

    def spans(self, messages: list[dict[str, Any]]) -> tuple[str, list[Span], int]:
        """Full training text, the span of each trained message that renders consistently, and how many trained turns
        could not be (history rewritten by the template)."""

        @functools.cache  # each prefix rendered once: always call with both arguments, positionally
        def prefix(count: int, generation: bool) -> str:
            return self.text(messages[:count], add_generation_prompt=generation)

        full = prefix(len(messages), False)
        spans, untrainable = [], 0
        last = len(messages) - 1
        for index, message in enumerate(messages):
            trained = message["role"] in self.roles_to_train and message.get("train", True)
            if not trained:
                continue  # context: its tokens are untrained whatever the template does with it
            before = prefix(index, message["role"] == "assistant")
            through = prefix(index + 1, False)
            consistent = through.startswith(before) and full.startswith(through)
            if not consistent and index == last and message["role"] == "assistant":
                completion = self._think_completion(messages, prefix)
                if completion is not None:  # DeepSeek-R1: the generation prompt opens the think block
                    full = through = before + completion
                    consistent = True
            if not consistent:
                if index == last:
                    raise TemplateMismatch("chat template renders the final answer differently for training than "
                                           "at inference (prompt + answer is not a prefix of the training text)")
                untrainable += 1
                continue
            start = len(before)
            empty_think = EMPTY_THINK.match(full, start)
            if empty_think and empty_think.start() == start:
                start = empty_think.end()
            spans.append(Span(start, len(through), message["role"], trained))
        return full, spans, untrainable

    def _think_completion(self, messages: list[dict[str, Any]], prefix: Any) -> str | None:
        """The final answer as written after a generation prompt that opens a think block (DeepSeek-R1:
        reasoning, `</think>\n\n`, answer and end-of-turn marker), or None when the template is not of that kind."""
        last = len(messages) - 1
        history, generation = prefix(last, False), prefix(last, True)
        opened = THINK_OPEN.search(generation, len(history)) if generation.startswith(history) else None
        if opened is None:
            return None
        reasoning, answer = split_reasoning(messages[-1])
        plain = {k: v for k, v in messages[-1].items() if k != "reasoning_content"}
        turn = self.text(messages[:-1] + [{**plain, "content": answer}])
        header = generation[len(history):opened.start()]
        body = turn[len(history) + len(header):]
        if not answer or not turn.startswith(history + header) or not body.startswith(answer):
            return None
        return (reasoning + "\n" if reasoning else "") + "</think>\n\n" + body

    def render(self, messages: list[dict[str, Any]], max_length: int) -> Rendered:
        """Tokenize a conversation and build its loss mask, truncated to `max_length` tokens."""
        arrays = self.render_arrays(messages, max_length)
        return Rendered(arrays.input_ids.tolist(), arrays.assistant_masks.astype(int).tolist(), arrays.truncated,
                        arrays.trained_turns, arrays.untrainable_history, arrays.role_tokens, arrays.role_trained)

    def render_arrays(self, messages: list[dict[str, Any]], max_length: int) -> "RenderedArrays":
        """`render` as numpy arrays (int32 ids, bool mask): what the data stage's workers write to Parquet."""
        if is_text_row(messages):
            return self._render_text(messages[0]["content"], max_length)
        full, spans, untrainable = self.spans(messages)
        encoding = self._encode(full)
        pairs = encoding.offsets
        offsets = np.fromiter(chain.from_iterable(pairs), dtype=np.int64, count=2 * len(pairs)).reshape(-1, 2)
        truncated = len(offsets) > max_length
        ids = np.asarray(encoding.ids[:max_length], dtype=np.int32)
        mask, span_index, inside = _assign(offsets[:max_length], spans)
        if not mask.any():
            raise RowError("no trainable token within training.max_length" if truncated else "no trainable token")
        first_tokens = np.searchsorted(offsets[:, 0], [s.start for s in spans if s.trained])
        trained_turns = int((first_tokens < len(ids)).sum())
        role_tokens: Counter = Counter({CONTEXT_ROLE: int((~inside).sum())})
        role_trained: Counter = Counter()
        for index, count in zip(*np.unique(span_index[inside], return_counts=True)):
            role_tokens[spans[index].role] += int(count)
        for index, count in zip(*np.unique(span_index[mask], return_counts=True)):
            role_trained[spans[index].role] += int(count)
        return RenderedArrays(ids, mask, truncated, trained_turns, untrainable,
                              {r: c for r, c in role_tokens.items() if c}, dict(role_trained))

    def _encode(self, text: str) -> Any:
        """Token ids and character offsets of `text` without special tokens (the fast backend's own, less overhead)."""
        backend = getattr(self.tokenizer, "_tokenizer", None)
        if hasattr(backend, "encode") and backend.truncation is None and backend.padding is None:
            return backend.encode(text, add_special_tokens=False)
        encoded = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return SimpleNamespace(ids=encoded["input_ids"], offsets=encoded["offset_mapping"])

    def _render_text(self, text: str, max_length: int) -> "RenderedArrays":
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.tokenizer.eos_token_id is not None:
            ids = ids + [self.tokenizer.eos_token_id]
        truncated = len(ids) > max_length
        ids = ids[:max_length]
        return RenderedArrays(np.asarray(ids, dtype=np.int32), np.ones(len(ids), dtype=bool), truncated, 0, 0,
                              {TEXT_ROLE: len(ids)}, {TEXT_ROLE: len(ids)})


@dataclass(frozen=True)
class RenderedArrays:
    """`Rendered` with numpy arrays."""

    input_ids: np.ndarray
    assistant_masks: np.ndarray
    truncated: bool
    trained_turns: int
    untrainable_history: int
    role_tokens: dict[str, int]
    role_trained: dict[str, int]


def _assign(offsets: np.ndarray, spans: list[Span]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per token: whether it is trained, the index of the span holding its first character, and whether any does."""
    if not spans:
        none = np.zeros(len(offsets), dtype=bool)
        return none, np.zeros(len(offsets), dtype=np.int64), none
    starts = np.array([s.start for s in spans])
    ends = np.array([s.end for s in spans])
    trained = np.array([s.trained for s in spans])
    index = (np.searchsorted(starts, offsets[:, 0], side="right") - 1).clip(0)
    inside = (offsets[:, 0] >= starts[index]) & (offsets[:, 0] < ends[index])
    return inside & trained[index] & (offsets[:, 1] > offsets[:, 0]), index, inside


def render_example(tokenizer: "PreTrainedTokenizerBase", messages: list[dict[str, Any]], max_length: int) -> Rendered:
    """Render with the tokenizer's own template, training assistant turns only."""
    return Renderer(tokenizer).render(messages, max_length)


def renderer_for(recipe: "Recipe", tokenizer: Any) -> Renderer:
    """The recipe's renderer: its template file (else the tokenizer's own), trained roles and template kwargs."""
    template = Path(recipe.data.template).read_text(encoding="utf-8") if recipe.data.template else None
    return Renderer(tokenizer, tuple(recipe.data.roles_to_train), template, dict(recipe.data.template_kwargs))
