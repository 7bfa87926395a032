"""One chunk of input, as a worker process handles it: parse, map to messages, redact PII, filter, hash, render
with loss masks, and write the rendered rows to Parquet shards; only small per-row facts go back to the parent.

With `data.num_proc > 1` the chunks go to forked processes (`Workers`), at most two per process in flight.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.formats import row_text, to_messages
from data_prep.readers import BadRow, Chunk
from data_prep.split import content_key, split_score
from tailor.render import Renderer, RowError, is_text_row

NON_SYSTEM = ("user", "assistant", "tool", "text")  # a shared system prompt must not make rows look alike


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
    from data_prep.shingles import text_of
    from data_prep.pii import redact_messages

    settings = _SETTINGS[0]
    source = settings.sources[chunk.source]
    outcomes: list[Outcome] = []
    kept: list[tuple[Outcome, list[dict[str, Any]]]] = []
    for record in chunk.records():
        if isinstance(record, BadRow):
            outcomes.append(Outcome(record.where, "bad", record.reason, raw=record.raw))
            continue
        try:
            messages = to_messages(record.value, source, settings.system_prompt)
        except RowError as err:
            outcomes.append(Outcome(record.where, "bad", str(err),
                                    raw=json.dumps(record.value, ensure_ascii=False, default=str)[:2000]))
            continue
        found = None
        if settings.redactor is not None:
            messages, counts = redact_messages(settings.redactor, messages)
            found = dict(counts) if counts else None
        reason = next((r for r in (f(messages) for f in settings.filters) if r is not True), None)
        if reason is None and settings.language is not None:
            reason = settings.language.check(messages)
        if reason is not None:
            outcomes.append(Outcome(record.where, "filtered", str(reason) if reason else "custom filter", pii=found))
            continue
        key = content_key(messages)
        outcome = Outcome(record.where, "kept", pii=found, key=key, score=split_score(key, settings.split_seed),
                          mix=split_score(key, settings.split_seed + 1), text=text_of(messages, roles=NON_SYSTEM))
        outcomes.append(outcome)
        kept.append((outcome, messages))
    result = ChunkResult(chunk.source, chunk.number, outcomes)
    _render_and_write(settings, chunk.number, kept, result)
    return result


def _render_and_write(settings: ChunkSettings, number: int, kept: list[tuple[Outcome, list[dict[str, Any]]]],
                      result: ChunkResult) -> None:
    renderer = settings.renderer
    sides: dict[str, tuple[list[Outcome], dict[str, list], list, list]] = {}
    for outcome, messages in kept:
        try:
            arrays = renderer.render_arrays(messages, settings.max_length)
        except RowError as err:
            outcome.error = str(err) or "cannot be rendered"
            continue
        outcome.truncated = arrays.truncated
        outcome.length = len(arrays.input_ids) if not arrays.truncated else settings.max_length + 1
        side = outcome.side = "heldout" if outcome.score < settings.heldout_fraction else "train"
        row = {"id": outcome.key[:16], "source": outcome.where, "truncated": arrays.truncated,
               "trained_turns": arrays.trained_turns, "role_tokens": json.dumps(arrays.role_tokens),
               "role_trained": json.dumps(arrays.role_trained), "_score": outcome.score, "_mix": outcome.mix,
               "_text": row_text(messages),
               "_eot": int(np.count_nonzero(arrays.assistant_masks & (arrays.input_ids == settings.eot_id))),
               "_trained": int(np.count_nonzero(arrays.assistant_masks))}
        if side == "heldout":
            row.update(messages=json.dumps(messages, ensure_ascii=False), prompt=renderer.prompt(messages),
                       reference="" if is_text_row(messages) else messages[-1]["content"])
        rows, columns, ids, masks = sides.setdefault(side, ([], defaultdict(list), [], []))
        rows.append(outcome)
        for name, value in row.items():
            columns[name].append(value)
        ids.append(arrays.input_ids)
        masks.append(arrays.assistant_masks)
    from data_prep.shards import write_shard

    for side, (rows, columns, ids, masks) in sides.items():
        path = settings.shard_dir / f"{side}-{number:06d}.parquet"
        for outcome, position in zip(rows, write_shard(path, columns, ids, masks).tolist()):
            outcome.position = position
        result.shards[side] = str(path)


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
