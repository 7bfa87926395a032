"""One chunk of input, as a worker process handles it: parse, map to messages, redact PII, filter, hash, render
with loss masks, and write the rendered rows to Parquet shards; only small per-row facts go back to the parent.

Preference rows (`formats.Preference`) are filtered on their chosen conversation, hashed as a pair (or as a
completion with its label) and rendered as pairs (`pairs.py`) on the train side; held-out rows are their chosen
conversations, rendered like any other row. Undesirable unpaired rows always go to the train side.

With `data.num_proc > 1` the chunks go to forked processes (`Workers`), at most two per process in flight.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.formats import Preference, row_text, same_turns, to_row
from data_prep.pii import redact_messages
from data_prep.readers import BadRow, Chunk
from data_prep.shingles import text_of
from data_prep.split import content_key, split_score
from tailor.render import Renderer, RowError, is_text_row

NON_SYSTEM = ("user", "assistant", "tool", "text")  # a shared system prompt must not make rows look alike
UNDESIRABLE_IN_EVAL_SET = "undesirable completion (label false): an eval set keeps reference answers only"
Row = list[dict[str, Any]] | Preference


@dataclass
class ChunkSettings:
    """Everything a worker needs; set before the workers fork, so it is inherited, not pickled."""

    renderer: Renderer
    sources: list[Any]
    system_prompt: str | None
    redactor: Any
    filters: list[Callable]
    split_seed: int
    heldout_fraction: float
    max_length: int
    eot_id: int
    shard_dir: Path
    language: Any = None
    method: str = "sft"  # grpo: train rows also carry messages, prompt and reference
    eval_set: bool = False  # every row is held out (a named eval set)


@dataclass(slots=True)
class Outcome:
    """What happened to one input record."""

    where: str
    kind: str  # "bad", "filtered" or "kept"
    reason: str = ""
    raw: str | None = None
    pii: dict[str, int] | None = None
    key: str = ""
    score: float = 0.0
    mix: float = 0.0
    text: str = ""  # normalised text, for near-duplicate detection
    error: str = ""  # why a kept row cannot be rendered ("" when it was)
    length: int = 0  # rendered tokens (max_length + 1 when truncated)
    truncated: bool = False
    side: str = ""  # "train" or "heldout": which shard holds the rendered row
    position: int = -1  # row index in that shard


@dataclass
class ChunkResult:
    source: int
    number: int
    outcomes: list[Outcome]
    shards: dict[str, str] = field(default_factory=dict)  # side ("train" / "heldout") -> shard path


_SETTINGS: list[ChunkSettings] = []


def process_chunk(chunk: Chunk) -> ChunkResult:
    """Handle one chunk with the settings installed by `Workers`."""
    settings = _SETTINGS[0]
    source = settings.sources[chunk.source]
    outcomes: list[Outcome] = []
    kept: list[tuple[Outcome, Row]] = []
    for record in chunk.records():
        if isinstance(record, BadRow):
            outcomes.append(Outcome(record.where, "bad", record.reason, raw=record.raw))
            continue
        try:
            row = to_row(record.value, source, settings.system_prompt)
        except RowError as err:
            outcomes.append(Outcome(record.where, "bad", str(err),
                                    raw=json.dumps(record.value, ensure_ascii=False, default=str)[:2000]))
            continue
        outcome, row = _clean(settings, record.where, row)
        outcomes.append(outcome)
        if outcome.kind == "kept":
            kept.append((outcome, row))
    result = ChunkResult(chunk.source, chunk.number, outcomes)
    _render_and_write(settings, chunk.number, kept, result)
    return result


def _clean(settings: ChunkSettings, where: str, row: Row) -> tuple[Outcome, Row]:
    """Redact, filter and hash one mapped row: its outcome and the redacted row."""
    found = None
    if settings.redactor is not None:
        row, counts = _redact(settings.redactor, row)
        found = dict(counts) if counts else None
    conversation = row.conversation if isinstance(row, Preference) else row
    reason = next((r for r in (f(conversation) for f in settings.filters) if r is not True), None)
    if reason is None and settings.language is not None:
        reason = settings.language.check(conversation)
    if reason is None and isinstance(row, Preference):
        if row.rejected is not None and same_turns(row.chosen, row.rejected):
            reason = "chosen and rejected are identical after PII redaction"
        elif settings.eval_set and not row.label:
            reason = UNDESIRABLE_IN_EVAL_SET
    if reason is not None:
        return Outcome(where, "filtered", str(reason) if reason else "custom filter", pii=found), row
    key = content_key(row.identity() if isinstance(row, Preference) else row)
    return Outcome(where, "kept", pii=found, key=key, score=split_score(key, settings.split_seed),
                   mix=split_score(key, settings.split_seed + 1), text=_dedup_text(row)), row


def _redact(redactor: Any, row: Row) -> tuple[Row, Counter]:
    """Redact PII in a conversation, or in every part of a preference row."""
    if not isinstance(row, Preference):
        return redact_messages(redactor, row)
    total: Counter = Counter()
    parts = {}
    for name in ("prompt", "chosen", "rejected"):
        turns = getattr(row, name)
        if turns is not None:
            parts[name], counts = redact_messages(redactor, turns)
            total.update(counts)
    return replace(row, **parts), total


def _dedup_text(row: Row) -> str:
    """What near-dedup compares: the conversation, or the whole pair; an undesirable completion's words are
    marked so that it is compared with undesirable ones only."""
    if not isinstance(row, Preference):
        return text_of(row, roles=NON_SYSTEM)
    text = text_of(row.prompt + [m for side in row.sides() for m in side], roles=NON_SYSTEM)
    return text if row.label else " ".join(f"{word}0undesirable" for word in text.split())


def _side(settings: ChunkSettings, outcome: Outcome, row: Row) -> str:
    """Held out by split score, except undesirable completions (always trained on)."""
    desirable = not isinstance(row, Preference) or row.label
    return "heldout" if outcome.score < settings.heldout_fraction and desirable else "train"


def _render_and_write(settings: ChunkSettings, number: int, kept: list[tuple[Outcome, Row]],
                      result: ChunkResult) -> None:
    from data_prep.pairs import render_pair

    sides: dict[str, tuple[list[Outcome], dict[str, list], dict[str, list]]] = {}
    for outcome, row in kept:
        side = outcome.side = _side(settings, outcome, row)
        try:
            if not isinstance(row, Preference):
                columns, lists = _sft_row(settings, outcome, row, side)
            else:  # every pair is checked; a held-out one is written as its chosen conversation
                pair = render_pair(settings.renderer, row, settings.max_length, settings.eot_id)
                columns, lists = (_pair_row(outcome, row, pair) if side == "train" else
                                  _sft_row(settings, outcome, row.conversation, side))
        except RowError as err:
            outcome.error = str(err) or "cannot be rendered"
            continue
        rows, table, arrays = sides.setdefault(side, ([], defaultdict(list), defaultdict(list)))
        rows.append(outcome)
        for name, value in columns.items():
            table[name].append(value)
        for name, value in lists.items():
            arrays[name].append(value)
    from data_prep.shards import write_shard

    for side, (rows, table, arrays) in sides.items():
        path = settings.shard_dir / f"{side}-{number:06d}.parquet"
        dtypes = {name: np.int8 if name == "assistant_masks" else np.int32 for name in arrays}
        lists = {name: (values, dtypes[name]) for name, values in arrays.items()}
        for outcome, position in zip(rows, write_shard(path, table, lists).tolist()):
            outcome.position = position
        result.shards[side] = str(path)


def _sft_row(settings: ChunkSettings, outcome: Outcome, messages: list[dict[str, Any]],
             side: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shard row of a conversation: input_ids and loss mask (held-out and grpo rows: messages, prompt and
    reference too)."""
    renderer = settings.renderer
    arrays = renderer.render_arrays(messages, settings.max_length)
    outcome.truncated = arrays.truncated
    outcome.length = len(arrays.input_ids) if not arrays.truncated else settings.max_length + 1
    row = {"id": outcome.key[:16], "source": outcome.where, "truncated": arrays.truncated,
           "trained_turns": arrays.trained_turns, "role_tokens": json.dumps(arrays.role_tokens),
           "role_trained": json.dumps(arrays.role_trained), "_score": outcome.score, "_mix": outcome.mix,
           "_text": row_text(messages),
           "_eot": int(np.count_nonzero(arrays.assistant_masks & (arrays.input_ids == settings.eot_id))),
           "_trained": int(np.count_nonzero(arrays.assistant_masks))}
    if side == "heldout" or settings.method == "grpo":
        row.update(messages=json.dumps(messages, ensure_ascii=False), prompt=renderer.prompt(messages),
                   reference="" if is_text_row(messages) else messages[-1]["content"])
    return row, {"input_ids": arrays.input_ids, "assistant_masks": arrays.assistant_masks}


def _pair_row(outcome: Outcome, row: Preference, pair: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The shard row of a rendered preference row (`pairs.RenderedPair`)."""
    outcome.truncated, outcome.length = pair.truncated, pair.length
    columns = {"id": outcome.key[:16], "source": outcome.where, "truncated": pair.truncated,
               "label": row.label, "trained_turns": pair.trained_turns,
               "role_tokens": json.dumps(dict(pair.role_tokens)), "role_trained": json.dumps(dict(pair.role_trained)),
               "_score": outcome.score, "_mix": outcome.mix, "_text": row_text(row.conversation),
               "_eot": pair.eot, "_trained": pair.trained}
    return columns, {"prompt_ids": pair.prompt_ids, "chosen_ids": pair.chosen_ids, "rejected_ids": pair.rejected_ids}


class Workers:
    """Runs `process_chunk` over chunks, in order, in this process or in `num_proc` forked ones."""

    def __init__(self, settings: ChunkSettings, num_proc: int) -> None:
        self.settings, self.num_proc, self._pool = settings, num_proc, None

    def __enter__(self) -> "Workers":
        _SETTINGS[:] = [self.settings]
        if self.num_proc > 1:
            self._pool = multiprocessing.get_context("fork").Pool(self.num_proc)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
        _SETTINGS.clear()

    def map(self, chunks: Iterable[Chunk]) -> Iterator[ChunkResult]:
        """Results in chunk order; reads ahead only as far as the workers can use."""
        if self._pool is None:
            yield from map(process_chunk, chunks)
            return
        pending: deque = deque()
        for chunk in chunks:
            pending.append(self._pool.apply_async(process_chunk, (chunk,)))
            if len(pending) >= 2 * self.num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
