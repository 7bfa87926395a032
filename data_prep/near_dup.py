"""Near-duplicate removal: datasketch MinHash signatures over word shingles, MinHashLSH candidates, exact check.

Two rows' similarity is the Jaccard index of their shingle sets (`shingles`: runs of `shingle` normalised words).
`NearDupFilter.add` keeps the first occurrence and reports a later row at or above the threshold with the key of
the most similar kept row. LSH bands are chosen for recall (`lsh_params`) and every candidate is checked with the
exact Jaccard, so the threshold is exact. Rows with no words are never reported nor indexed.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from datasketch import MinHash, MinHashLSH

from data_prep.shingles import batches, gram_hashes, words

__all__ = ["NearDupFilter", "jaccard", "lsh_params"]

_U64 = np.uint64


def _shingle_hashes32(word_lists: Sequence[Sequence[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle values of many rows (row 0's, then row 1's, ...) and each row's count."""
    hashes, counts = gram_hashes(word_lists, k)
    return (hashes >> _U64(32)).astype(np.uint32), counts


def jaccard(a: str, b: str, shingle: int = 3) -> float:
    """Exact Jaccard index of the shingle sets of two texts (0.0 when either has no words)."""
    hashes, counts = _shingle_hashes32([words(a), words(b)], shingle)
    sa, sb = _row_sets(hashes, counts)
    return _jaccard_sorted(sa, sb)


def _jaccard_sorted(sa: np.ndarray, sb: np.ndarray) -> float:
    if sa.size == 0 or sb.size == 0:
        return 0.0
    inter = np.intersect1d(sa, sb, assume_unique=True).size
    return inter / (sa.size + sb.size - inter)


def lsh_params(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
    """(bands, rows per band): the most rows per band that still make a pair at `threshold` a candidate with
    probability >= `recall`."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if 1.0 - (1.0 - threshold**rows) ** bands >= recall:
            best = (bands, rows)
    return best


class NearDupFilter:
    """Streaming near-duplicate filter: feed rows in order with `add`, or `add_many` (the same results, faster)."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, shingle: int = 3, seed: int = 1,
                 spill_dir: str | os.PathLike | None = None) -> None:
        """`spill_dir`: keep the kept rows' shingle sets in a temporary file there, for data sets larger than memory."""
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm}")
        if shingle < 1:
            raise ValueError(f"shingle must be at least 1, got {shingle}")
        self.threshold, self.num_perm, self.shingle, self.seed = threshold, num_perm, shingle, seed
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(self.bands, self.rows))
        self._minhash = MinHash(num_perm=num_perm, seed=seed, hashfunc=int)  # values are hashes already
        self._keys: list[str] = []
        self._sets: list[np.ndarray] | _SpilledSets = [] if spill_dir is None else _SpilledSets(spill_dir)

    def __len__(self) -> int:
        """Number of rows kept (indexed) so far."""
        return len(self._keys)

    def minhash(self, text: str) -> np.ndarray:
        """The MinHash signature (num_perm uint32) of one text."""
        return self.minhash_many([text])[0]

    def minhash_many(self, texts: Sequence[str]) -> np.ndarray:
        """MinHash signatures (len(texts), num_perm) uint32; a text with no words gets all 0xFFFFFFFF."""
        hashes, counts = _shingle_hashes32([words(t) for t in texts], self.shingle)
        signatures = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for i, minhash in enumerate(self._minhashes(hashes, counts)):
            signatures[i] = minhash.hashvalues
        return signatures

    def _minhashes(self, hashes: np.ndarray, counts: np.ndarray) -> Iterator[MinHash]:
        """The MinHash of each row of a batch, in turn (one object, reused: valid until the next row)."""
        values, start = hashes.tolist(), 0
        for count in counts.tolist():
            self._minhash.clear()
            self._minhash.update_batch(values[start:start + count])
            start += count
            yield self._minhash

    def add(self, key: str, text: str) -> str | None:
        """The key of the kept row this row near-duplicates, or None (the row is then kept)."""
        return self.add_many([(key, text)])[0]

    def add_many(self, rows: Iterable[tuple[str, str]], batch_size: int = 8192) -> list[str | None]:
        """`add` for many (key, text) rows, in order: one result per row."""
        return [found for batch in batches(rows, batch_size) for found in self._add_batch(batch)]

    def _add_batch(self, batch: list[tuple[str, str]]) -> list[str | None]:
        hashes, counts = _shingle_hashes32([words(text) for _, text in batch], self.shingle)
        out: list[str | None] = []
        for (key, _), minhash, shingles in zip(batch, self._minhashes(hashes, counts), _row_sets(hashes, counts)):
            if shingles.size == 0:  # no words: neither reported nor indexed
                out.append(None)
                continue
            match = self._best_match(minhash, shingles)
            if match is None:
                self._lsh.insert(len(self._keys), minhash, check_duplication=False)
                self._keys.append(key)
                self._sets.append(shingles)
            out.append(match)
        return out

    def _best_match(self, minhash: MinHash, shingles: np.ndarray) -> str | None:
        """The key of the most similar kept LSH candidate at or above the threshold (earliest on ties), or None."""
        best, best_j = None, -1.0
        for idx in sorted(self._lsh.query(minhash)):  # ascending: ties keep the earliest row
            j = _jaccard_sorted(shingles, self._sets[idx])
            if j >= self.threshold and j > best_j:
                best, best_j = idx, j
        return None if best is None else self._keys[best]


class _SpilledSets:
    """An append-only list of uint32 arrays kept in a temporary file; only the offsets stay in memory."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self._file = tempfile.TemporaryFile(dir=folder)
        self._offsets = array("q", [0])
        self._dirty = False

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def append(self, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=np.uint32).tobytes()
        self._file.write(data)
        self._offsets.append(self._offsets[-1] + len(data))
        self._dirty = True

    def __getitem__(self, index: int) -> np.ndarray:
        if self._dirty:
            self._file.flush()
            self._dirty = False
        start, end = self._offsets[index], self._offsets[index + 1]
        return np.frombuffer(os.pread(self._file.fileno(), end - start, start), dtype=np.uint32)


def _row_sets(hashes: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Each row's shingle hashes, sorted and unique, with one sort for the whole batch."""
    row_of = np.repeat(np.arange(len(counts), dtype=_U64), counts)
    merged = np.unique((row_of << _U64(32)) | hashes.astype(_U64))
    values = (merged & _U64(0xFFFFFFFF)).astype(np.uint32)
    bounds = np.searchsorted(merged >> _U64(32), np.arange(len(counts) + 1, dtype=_U64)).tolist()
    return [values[bounds[i]:bounds[i + 1]] for i in range(len(counts))]
