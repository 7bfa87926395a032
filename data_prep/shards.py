"""Parquet shards: what the workers write, and how the final train / held-out files are assembled from them.

Each chunk of input becomes up to two shards (train, held-out), rows sorted by split score, so assembling is a
merge holding one row group per shard. Columns named `_...` are working data, never in the prepared files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Bytes (in memory) of one row group of a shard: the merge holds one per shard, so this times the number of
# shards (at most ~2 x readers.MAX_CHUNKS) bounds its memory, whatever the length of the rows.
ROW_GROUP_BYTES = 256 << 10

# The prepared files' columns, in order, with the types `datasets` gave them (tests/test_train.py pins losses on them).
PUBLIC = [("id", pa.string()), ("source", pa.string()), ("input_ids", pa.list_(pa.int32())),
          ("assistant_masks", pa.list_(pa.int64())), ("truncated", pa.bool_()), ("trained_turns", pa.int64()),
          ("role_tokens", pa.string()), ("role_trained", pa.string())]
HELDOUT_EXTRA = [("messages", pa.string()), ("prompt", pa.string()), ("reference", pa.string())]
IDS = pa.list_(pa.int32())
# train.parquet of dpo / orpo (pairs) and kto (one completion and its label per row; a pair becomes two rows).
PAIRS = [("id", pa.string()), ("source", pa.string()), ("prompt_ids", IDS), ("chosen_ids", IDS),
         ("rejected_ids", IDS), ("truncated", pa.bool_())]
KTO = [("id", pa.string()), ("source", pa.string()), ("prompt_ids", IDS), ("completion_ids", IDS),
       ("label", pa.bool_()), ("truncated", pa.bool_())]
# Layouts of the prepared files: sft (train), heldout (held-out, eval sets, grpo's train), pairs, kto.
LAYOUTS = {"sft": PUBLIC, "heldout": PUBLIC + HELDOUT_EXTRA, "pairs": PAIRS, "kto": KTO}
TRAIN_LAYOUT = {"sft": "sft", "grpo": "heldout", "dpo": "pairs", "orpo": "pairs", "kto": "kto"}
# The shard columns of preference rows (rejected_ids null for an unpaired row), besides the audit's.
PAIR_SHARD = ["id", "source", "prompt_ids", "chosen_ids", "rejected_ids", "label", "truncated"]
# The working columns the assembly reads besides the public ones (contamination text, audit counts).
WORK_COLUMNS = ["_text", "_eot", "_trained"]
AUDIT_COLUMNS = ["trained_turns", "role_tokens", "role_trained"]


def output_schema(layout: str) -> pa.Schema:
    """The schema of a prepared file of a layout (`LAYOUTS`), with the `datasets` features metadata."""
    from datasets import Features

    schema = pa.schema(LAYOUTS[layout])
    features = Features.from_arrow_schema(schema)
    return schema.with_metadata({"huggingface": json.dumps({"info": {"features": features.to_dict()}})})


def write_shard(path: Path, columns: dict[str, Any],
                lists: dict[str, tuple[list[np.ndarray | None], type]]) -> np.ndarray:
    """Write one shard, rows sorted by `_score` (stable: file order on ties); return each row's position in it.
    `lists`: list columns as (one array per row, None for null; element dtype)."""
    arrays = dict(columns)
    for name, (values, dtype) in lists.items():
        arrays[name] = list_array(values, dtype)
    table = pa.table(arrays)
    order = np.argsort(np.asarray(columns["_score"], dtype=np.float64), kind="stable")
    group = int(np.clip(ROW_GROUP_BYTES * max(table.num_rows, 1) // max(table.nbytes, 1), 4, 1024))
    pq.write_table(table.take(order), path, row_group_size=group, compression="lz4")
    positions = np.empty(len(order), dtype=np.int64)
    positions[order] = np.arange(len(order))
    return positions


def list_array(values: list[np.ndarray | None], dtype: type) -> pa.ListArray:
    """A list column from one numpy array per row (None: null)."""
    lengths = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int64, count=len(values))
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))
    present = [v for v in values if v is not None]
    flat = pa.array(np.concatenate(present).astype(dtype) if present else np.zeros(0, dtype))
    nulls = pa.array([v is None for v in values]) if len(present) < len(values) else None
    return pa.ListArray.from_arrays(offsets, flat, mask=nulls)


class ShardReader:
    """Reads rows of one shard at increasing positions, holding one row group at a time."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        self._file = pq.ParquetFile(path)
        self._columns = columns
        self._group = -1
        self._table: pa.Table | None = None
        self._start = self._end = 0  # positions covered by the current row group

    def take(self, positions: np.ndarray) -> pa.Table:
        """Rows at `positions` (increasing, none before a position taken earlier)."""
        pieces, i = [], 0
        while i < len(positions):
            while positions[i] >= self._end:
                self._group += 1
                self._table = self._file.read_row_group(self._group, columns=self._columns)
                self._start, self._end = self._end, self._end + self._table.num_rows
            j = i + int(np.searchsorted(positions[i:], self._end))
            pieces.append(self._table.take(pa.array(positions[i:j] - self._start)))
            i = j
        return pa.concat_tables(pieces)


def read_planned(paths: list[Path], shard: np.ndarray, position: np.ndarray, columns: list[str],
                 block: int = 4096) -> Iterator[pa.Table]:
    """The planned rows (row k: `position[k]` of shard `shard[k]`, positions never decreasing within a shard),
    in plan order, in tables of up to `block` rows."""
    readers: dict[int, ShardReader] = {}
    for start in range(0, len(shard), block):
        sid, pos = shard[start:start + block], position[start:start + block]
        pieces, gather = [], np.empty(len(sid), dtype=np.int64)
        base = 0
        for s in np.unique(sid).tolist():
            rows = np.nonzero(sid == s)[0]
            unique, inverse = np.unique(pos[rows], return_inverse=True)
            if s not in readers:
                readers[s] = ShardReader(paths[s], columns)
            pieces.append(readers[s].take(unique))
            gather[rows] = base + inverse
            base += len(unique)
        yield pa.concat_tables(pieces).take(pa.array(gather)) if pieces else pa.table({})


def output_columns(layout: str) -> list[str]:
    """The shard columns a prepared file is written from: its own (pairs, kto: the preference shard's) and the
    working ones."""
    if layout in ("pairs", "kto"):
        return PAIR_SHARD + AUDIT_COLUMNS + WORK_COLUMNS
    return [name for name, _ in LAYOUTS[layout]] + WORK_COLUMNS


def write_output(path: Path, tables: Iterable[pa.Table], layout: str, count: Callable[[pa.Table], int]) -> int:
    """Write blocks of shard rows as a prepared file, passing each block to `count`; return the sum of its results."""
    schema = output_schema(layout)
    total = 0
    with pq.ParquetWriter(path, schema) as writer:
        for table in tables:
            total += count(table)
            if layout == "kto":
                table = unpair(table)
            writer.write_table(pa.table([table.column(f.name).cast(f.type) for f in schema], schema=schema))
    return total


def unpair(table: pa.Table) -> pa.Table:
    """KTO rows from preference shard rows: a pair becomes its chosen (label true) then its rejected (false) row,
    an unpaired row keeps its completion and label."""
    n = table.num_rows
    paired = table.column("rejected_ids").is_valid().to_numpy(zero_copy_only=False)
    rows = np.repeat(np.arange(n), 1 + paired.astype(np.int64))
    second = np.zeros(len(rows), dtype=bool)
    second[1:] = rows[1:] == rows[:-1]
    both = pa.concat_arrays([table.column(name).combine_chunks() for name in ("chosen_ids", "rejected_ids")])
    out = table.take(pa.array(rows))
    label = np.where(second, False, out.column("label").to_numpy(zero_copy_only=False))
    return out.append_column("completion_ids", both.take(pa.array(rows + n * second))).set_column(
        out.schema.get_field_index("label"), "label", pa.array(label))


def block_rows(tokens_per_row: float, budget: int = 1 << 18) -> int:
    """Rows per block of assembly so that a block holds about `budget` tokens."""
    return int(np.clip(budget / max(tokens_per_row, 1.0), 16, 4096))
