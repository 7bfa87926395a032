"""Read rows from JSONL, CSV and Parquet files, streaming, with the line (or row) number of each.

A row that cannot be read is yielded as a `BadRow` (never raised, never dropped), so the caller can quarantine it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Iterable, Iterator

from tailor.errors import TailorError
from tailor.hashing import update_with_file


@dataclass(frozen=True)
class RawRow:
    """One record read from a file: `where` is e.g. `data.jsonl:12` (1-based)."""

    where: str
    line: int
    value: dict[str, Any]


@dataclass(frozen=True)
class BadRow:
    """A record that could not be used, with the reason."""

    where: str
    line: int
    reason: str
    raw: str = ""


def file_type(path: Path, declared: str) -> str:
    """The file type: the declared one, or guessed from the suffix."""
    if declared != "auto":
        return declared
    suffixes = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}
    kind = suffixes.get(path.suffix.lower())
    if kind is None:
        raise TailorError(f"{path}: cannot tell the file type from the suffix {path.suffix!r}; "
                          "set file_type: jsonl | csv | parquet in the data source.")
    return kind


def read_rows(path: Path, declared_type: str = "auto") -> Iterator[RawRow | BadRow]:
    """Yield every record of a data file, good or bad, in file order."""
    kind = file_type(path, declared_type)
    if not path.is_file():
        raise TailorError(f"{path}: data file does not exist.")
    yield from {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}[kind](path)


def _read_jsonl(path: Path) -> Iterator[RawRow | BadRow]:
    with path.open("rb") as handle:
        yield from jsonl_records(str(path), enumerate(handle, start=1))


def jsonl_records(name: str, lines: Iterable[tuple[int, bytes]]) -> Iterator[RawRow | BadRow]:
    """Numbered JSONL lines as rows or bad rows, blank lines skipped."""
    for number, raw in lines:
        record = jsonl_record(name, number, raw)
        if record is not None:
            yield record


def jsonl_record(name: str, number: int, raw: bytes) -> RawRow | BadRow | None:
    """One JSONL line as a row, a bad row with the reason, or None for a blank line."""
    where = f"{name}:{number}"
    if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return BadRow(where, number, f"not UTF-8 ({err.reason} at byte {err.start})", raw[:200].hex())
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return BadRow(where, number, f"malformed JSON: {err.msg} (column {err.colno})", text[:200])
    except RecursionError:
        return BadRow(where, number, "JSON nested too deeply", text[:200])
    if not isinstance(value, dict):
        return BadRow(where, number, f"expected a JSON object, got {type(value).__name__}", text[:200])
    if "\\u" in text:  # JSON may escape half a UTF-16 pair; such a string cannot be written as UTF-8 anywhere later
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return BadRow(where, number, "text holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), not valid "
                          "Unicode", text[:200])
    return RawRow(where, number, value)


def _read_csv(path: Path) -> Iterator[RawRow | BadRow]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise TailorError(f"{path}: not UTF-8 ({err.reason} at byte {err.start}); re-save the CSV as UTF-8.") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        number = reader.line_num
        if None in row or any(value is None for value in row.values()):
            yield BadRow(f"{path}:{number}", number, "wrong number of columns", json.dumps(row, default=str)[:200])
            continue
        yield RawRow(f"{path}:{number}", number, dict(row))


def _read_parquet(path: Path) -> Iterator[RawRow | BadRow]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises several types for a corrupt file
        raise TailorError(f"{path}: not a readable Parquet file ({err}).") from None
    yield from _numbered_rows((value for batch in parquet.iter_batches(batch_size=1024)
                               for value in batch.to_pylist()), str(path))


def read_source(source: Any) -> Iterator[RawRow | BadRow]:
    """Rows of a recipe data source: a file, a `save_to_disk` folder, or a hub dataset."""
    if source.hub is not None:
        yield from _numbered_rows(_load_hub(source.hub, source.split), f"hub:{source.hub}")
        return
    path = Path(source.path)
    if source.file_type == "hf_disk" or (source.file_type == "auto" and path.is_dir()):
        yield from _numbered_rows(_load_disk(path, source.split), str(path))
    else:
        yield from read_rows(path, source.file_type)


def source_fingerprint(source: Any) -> str:
    """sha256 of a source's content (a folder: of all its files); a hub source: its id and split."""
    if source.hub is not None:
        return hashlib.sha256(f"hub:{source.hub}:{source.split}".encode()).hexdigest()
    path = Path(source.path)
    if not path.exists():
        raise TailorError(f"{path}: data source does not exist.")
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    hasher = hashlib.sha256()
    for file in files:
        hasher.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        update_with_file(hasher, file)
    return hasher.hexdigest()


def _load_disk(path: Path, split: str) -> Any:
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise TailorError(f"{path}: not a dataset folder saved with save_to_disk ({err}).") from None
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise TailorError(f"{path}: no split {split!r} (has {', '.join(loaded)}); set split: in the source.")
        return loaded[split]
    return loaded


def _load_hub(name: str, split: str) -> Any:
    from datasets import load_dataset

    try:
        return load_dataset(name, split=split, streaming=True)
    except Exception as err:  # network, auth and missing-dataset errors come in many types
        raise TailorError(f"hub dataset {name!r} (split {split!r}) cannot be loaded: {err}. Offline? Save it "
                          "with save_to_disk on a connected machine and point path: at the folder.") from None


def _numbered_rows(dataset: Iterable[Any], name: str) -> Iterator[RawRow]:
    for number, value in enumerate(dataset, start=1):
        yield RawRow(f"{name}:row {number}", number, dict(value))


# Chunks: the unit of work of the data stage's worker processes. Sized from the input so that a huge file
# gives at most about MAX_CHUNKS chunks (each one becomes a Parquet shard), and a small one still several.
MAX_CHUNKS = 256
CHUNK_BYTES = (256 << 10, 32 << 20)  # (min, max) raw bytes per chunk
CHUNK_ROWS = 2048  # rows per chunk of non-JSONL sources (already parsed by the reader)


@dataclass
class Chunk:
    """A run of consecutive records of one source: raw JSONL lines (parsed by the worker) or read rows."""

    source: int
    number: int = 0  # position in the stream of all chunks; names the chunk's shards
    name: str = ""  # the file name used in `where` of JSONL lines
    lines: list[tuple[int, bytes]] = field(default_factory=list)
    rows: list[RawRow | BadRow] = field(default_factory=list)

    def records(self) -> Iterator[RawRow | BadRow]:
        """The chunk's records in file order (JSONL lines are parsed here, blank lines skipped)."""
        yield from jsonl_records(self.name, self.lines) if self.lines else self.rows


def read_chunks(source: Any, index: int) -> Iterator[Chunk]:
    """A source as a stream of chunks (one in memory): JSONL as raw lines parsed by the workers, others as rows."""
    path = None if source.hub is not None else Path(source.path)
    if path is not None and path.is_file() and file_type(path, source.file_type) == "jsonl":
        limit = min(max(path.stat().st_size // MAX_CHUNKS, CHUNK_BYTES[0]), CHUNK_BYTES[1])
        chunk, size = Chunk(index, name=str(path)), 0
        with path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                chunk.lines.append((number, raw))
                size += len(raw)
                if size >= limit:
                    yield chunk
                    chunk, size = Chunk(index, name=str(path)), 0
        if chunk.lines:
            yield chunk
        return
    rows = read_source(source)
    while batch := list(islice(rows, CHUNK_ROWS)):
        yield Chunk(index, rows=batch)
