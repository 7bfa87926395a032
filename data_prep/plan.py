"""The parent's side of the streaming data stage: collect what the workers report, deduplicate, plan the split.

Per row the parent keeps a few numbers (split score, shard and position, length) in compact arrays, the content
hash of each distinct row for exact dedup and the near-dup index; rejected rows go to a file as they come. The
plan is the list of (shard, position) of the rows of each split, in output order.
"""

from __future__ import annotations

import itertools
import json
import shutil
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tailor.render import Renderer
from tailor.schema import Recipe

TEMPLATE_MISMATCH = "chat template renders"


class Rejections:
    """rejected.jsonl, written as rows are rejected (never all in memory), with counts by kind and reason."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("w", encoding="utf-8")
        self.by_reason: Counter = Counter()  # every rejection except "changed" (PII redacted, row kept)
        self.bad = self.changed = self.mismatches = 0

    def add(self, where: str, kind: str, reason: str, **extra: Any) -> None:
        row = {"where": where, "line": _line(where), "kind": kind, "reason": reason, **extra}
        self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        if kind == "changed":
            self.changed += 1
            return
        self.by_reason[reason] += 1
        self.bad += kind == "bad"
        self.mismatches += reason.startswith(TEMPLATE_MISMATCH)

    @property
    def count(self) -> int:
        return sum(self.by_reason.values())

    def copy_to(self, path: Path) -> None:
        self._handle.flush()
        shutil.copyfile(self.path, path)

    def text(self) -> str:
        self._handle.flush()
        return self.path.read_text(encoding="utf-8")


def _line(where: str) -> int:
    tail = where.rsplit(":", 1)[-1].replace("row ", "")
    return int(tail) if tail.isdigit() else 0


@dataclass
class Collected:
    """What the parent keeps about the rows that survived cleaning and deduplication (index: row number)."""

    rejected: Rejections
    rows_read: int = 0
    rows_by_source: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    shards: list[Path] = field(default_factory=list)
    shard_ids: dict[str, int] = field(default_factory=dict)
    wheres: list[str] = field(default_factory=list)  # file:line prefixes, shared by many rows
    where_prefix: array = field(default_factory=lambda: array("i"))
    where_line: array = field(default_factory=lambda: array("q"))
    alive: bytearray = field(default_factory=bytearray)  # 0: dropped as a near duplicate
    source: array = field(default_factory=lambda: array("i"))
    score: array = field(default_factory=lambda: array("d"))
    mix: array = field(default_factory=lambda: array("d"))
    held: bytearray = field(default_factory=bytearray)  # 1: on the held-out side (by score; desirable rows only)
    shard: array = field(default_factory=lambda: array("i"))  # -1: could not be rendered (see errors)
    position: array = field(default_factory=lambda: array("q"))
    length: array = field(default_factory=lambda: array("i"))
    truncated: bytearray = field(default_factory=bytearray)
    errors: dict[int, str] = field(default_factory=dict)
    _where_ids: dict[str, int] = field(default_factory=dict)

    def where(self, row: int) -> str:
        """The row's file:line (as the reader gave it)."""
        line = self.where_line[row]
        return self.wheres[self.where_prefix[row]] + (str(line) if line >= 0 else "")

    def add_where(self, where: str) -> None:
        line = _line(where)
        prefix = where[:len(where) - len(str(line))] if where.endswith(str(line)) and line else where
        index = self._where_ids.get(prefix)
        if index is None:
            index = self._where_ids[prefix] = len(self.wheres)
            self.wheres.append(prefix)
        self.where_prefix.append(index)
        self.where_line.append(line if prefix != where else -1)

    def ranked(self) -> np.ndarray:
        """The rows not dropped as near duplicates, by split score (file order on ties)."""
        score = np.asarray(self.score, dtype=np.float64)
        rows = np.nonzero(np.frombuffer(bytes(self.alive), dtype=np.uint8))[0]
        return rows[np.lexsort((rows, score[rows]))]

    def tokens(self, max_length: int) -> np.ndarray:
        """Tokens per row (input_ids length; `max_length` when truncated)."""
        return np.where(_flags(self.truncated), max_length, np.asarray(self.length, dtype=np.int64))

    def read(self, rows: np.ndarray, columns: list[str], block: int = 4096) -> Iterator[Any]:
        """The shard columns of `rows`, in order, as pyarrow tables of up to `block` rows."""
        from data_prep.shards import read_planned

        shard, position = np.asarray(self.shard, dtype=np.int64), np.asarray(self.position, dtype=np.int64)
        return read_planned(self.shards, shard[rows], position[rows], columns, block)

    def shard_index(self, path: str) -> int:
        if path not in self.shard_ids:
            self.shard_ids[path] = len(self.shards)
            self.shards.append(Path(path))
        return self.shard_ids[path]


def collect(recipe: Recipe, renderer: Renderer, work: Path, sources: list[Any] | None = None,
            rejected: Rejections | None = None, eval_set: bool = False) -> Collected:
    """Stream the sources (by default the recipe's training sources; an eval set passes its own, all held out)
    through the workers; count, reject and deduplicate what they report, in file order."""
    from data_prep.audit import end_of_turn_token
    from data_prep.filters import load_filters
    from data_prep.language import language_filter
    from data_prep.near_dup import NearDupFilter
    from data_prep.pii import Redactor
    from data_prep.readers import read_chunks
    from data_prep.worker import ChunkSettings, Workers

    data, clean = recipe.data, recipe.data.clean
    sources = list(data.sources if sources is None else sources)
    fraction = 1.0 if eval_set else (data.heldout_fraction or 0.0)
    settings = ChunkSettings(renderer=renderer, sources=sources, system_prompt=data.system_prompt,
        redactor=Redactor(clean.pii.types, clean.pii.patterns) if clean.pii.enabled else None,
        filters=load_filters(clean.filters), split_seed=data.split_seed, heldout_fraction=fraction,
        max_length=recipe.training.max_length, eot_id=end_of_turn_token(renderer.tokenizer)[0],
        shard_dir=work, language=language_filter(clean.language), method=recipe.training.method, eval_set=eval_set)
    out = Collected(rejected if rejected is not None else Rejections(work / "rejected.jsonl"))
    seen: dict[int, int] = {}  # 128 bits of the content hash -> row number of the first occurrence
    near = NearDupFilter(threshold=clean.dedup.threshold, spill_dir=work) if clean.dedup.near else None
    numbers = itertools.count()  # chunk numbers name shards: never reused, even for chunks left in flight
    with Workers(settings, data.num_proc) as workers:
        for index, source in enumerate(sources):
            kept = 0
            for result in workers.map(_numbered(read_chunks(source, index), numbers)):
                shards = {side: out.shard_index(path) for side, path in result.shards.items()}
                unique = []
                for outcome in result.outcomes:
                    if source.max_rows is not None and kept >= source.max_rows:
                        break
                    out.rows_read += 1
                    out.rows_by_source[index] += 1
                    if outcome.kind == "bad":
                        out.rejected.add(outcome.where, "bad", outcome.reason, raw=outcome.raw)
                        continue
                    if outcome.pii:
                        out.pii.update(outcome.pii)
                        out.rejected.add(outcome.where, "changed", "pii redacted", types=outcome.pii)
                    if outcome.kind == "filtered":
                        out.rejected.add(outcome.where, "filtered", outcome.reason)
                        continue
                    kept += 1
                    digest = int(outcome.key[:32], 16)
                    if clean.dedup.exact and digest in seen:
                        out.rejected.add(outcome.where, "duplicate", "exact duplicate",
                                         duplicate_of=out.where(seen[digest]))
                        continue
                    row = seen[digest] = len(out.alive)
                    out.add_where(outcome.where)
                    out.alive.append(1)
                    out.source.append(index)
                    out.score.append(outcome.score)
                    out.mix.append(outcome.mix)
                    out.length.append(outcome.length)
                    out.truncated.append(outcome.truncated)
                    out.held.append(outcome.side == "heldout")
                    out.shard.append(-1 if outcome.error else shards[outcome.side])
                    out.position.append(-1 if outcome.error else outcome.position)
                    if outcome.error:
                        out.errors[row] = outcome.error
                    unique.append((row, outcome))
                if near is not None and unique:
                    found = near.add_many((row, outcome.text) for row, outcome in unique)
                    for (row, outcome), original in zip(unique, found):
                        if original is not None:
                            out.alive[row] = 0
                            out.rejected.add(outcome.where, "duplicate", "near duplicate",
                                             duplicate_of=out.where(original))
                if source.max_rows is not None and kept >= source.max_rows:
                    break
    return out


def _numbered(chunks: Any, numbers: Iterator[int]) -> Any:
    for chunk in chunks:
        chunk.number = next(numbers)
        yield chunk


@dataclass
class Plan:
    """Rows of each split in output order (row numbers of `Collected`; train repeats rows by source weight)."""

    train: np.ndarray
    heldout: np.ndarray
    tokens: np.ndarray  # tokens per row number (input_ids length)

    def train_lengths(self) -> list[int]:
        return self.tokens[self.train].tolist()


def plan_split(recipe: Recipe, collected: Collected) -> Plan:
    """Split by content hash, cap the sizes (lowest scores first), drop unusable rows, apply the source weights."""
    data = recipe.data
    rows = collected.ranked()
    held = _flags(collected.held)[rows]
    heldout, train = rows[held][:data.max_heldout_rows], rows[~held][:data.max_train_rows]
    train, heldout = _usable(collected, train, data.clean), _usable(collected, heldout, data.clean)
    weights = np.array([s.weight for s in data.sources])
    if len(train) and (weights != 1.0).any():
        weight = weights[np.asarray(collected.source, dtype=np.int64)[train]]
        mix = np.asarray(collected.mix, dtype=np.float64)[train]
        train = np.repeat(train, weight.astype(np.int64) + (mix < weight - weight.astype(np.int64)))
    return Plan(train, heldout, collected.tokens(recipe.training.max_length))


def _flags(values: bytearray) -> np.ndarray:
    return np.frombuffer(bytes(values), dtype=np.uint8).astype(bool)


def _usable(collected: Collected, rows: np.ndarray, clean: Any) -> np.ndarray:
    """`rows` less those that could not be rendered or fail the length filters, each rejected with its reason."""
    length, truncated = np.asarray(collected.length, dtype=np.int64), _flags(collected.truncated)
    reasons = np.zeros(len(rows), dtype=np.int8)  # 0 keep, 1 error, 2 too long, 3 too short
    reasons[np.asarray(collected.shard, dtype=np.int64)[rows] < 0] = 1
    if clean.max_tokens is not None:
        reasons[(reasons == 0) & (truncated[rows] | (length[rows] > clean.max_tokens))] = 2
    if clean.min_tokens is not None:
        reasons[(reasons == 0) & (length[rows] < clean.min_tokens)] = 3
    for row, reason in zip(rows[reasons > 0].tolist(), reasons[reasons > 0].tolist()):
        if reason == 1:
            collected.rejected.add(collected.where(row), "bad", collected.errors[row])
        else:
            collected.rejected.add(collected.where(row), "filtered", "too long" if reason == 2 else "too short")
    return rows[reasons == 0]
