"""Read rows from JSONL, CSV and Parquet files, streaming, with the line (or row) number of each.

A row that cannot be read is yielded as a `BadRow` (never raised, never dropped), so the caller can quarantine it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
    readers = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
    yield from readers[kind](path)


def _read_jsonl(path: Path) -> Iterator[RawRow | BadRow]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            where = f"{path}:{number}"
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield BadRow(where, number, f"not UTF-8 ({err.reason} at byte {err.start})", raw[:200].hex())
                continue
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as err:
                yield BadRow(where, number, f"malformed JSON: {err.msg} (column {err.colno})", text[:200])
                continue
            if not isinstance(value, dict):
                yield BadRow(where, number, f"expected a JSON object, got {type(value).__name__}", text[:200])
                continue
            yield RawRow(where, number, value)


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
    number = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for value in batch.to_pylist():
            number += 1
            yield RawRow(f"{path}:row {number}", number, value)


def read_source(source: Any) -> Iterator[RawRow | BadRow]:
    """Rows of a recipe data source: a file, a `save_to_disk` folder, or a hub dataset."""
    if source.hub is not None:
        yield from _read_datasets(_load_hub(source.hub, source.split), f"hub:{source.hub}")
        return
    path = Path(source.path)
    if source.file_type == "hf_disk" or (source.file_type == "auto" and path.is_dir()):
        yield from _read_datasets(_load_disk(path, source.split), str(path))
        return
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


def _read_datasets(dataset: Any, name: str) -> Iterator[RawRow]:
    for number, value in enumerate(dataset, start=1):
        yield RawRow(f"{name}:row {number}", number, dict(value))
