"""Contamination check: held-out rows whose word n-grams are largely found in the training rows.

A held-out row's overlap is the share of its distinct n-grams (`shingles`) found in any training row; it is
contaminated at or above the threshold (sharing at least one gram) and reported with the training row sharing
the most of its grams, the earliest on ties. Indexes are numpy arrays of distinct (gram hash, row) pairs sorted
by hash (12 bytes a gram), looked up in vectorised batches.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from data_prep.shingles import batches, text_hashes

__all__ = ["Contaminated", "HeldoutIndex", "NgramIndex", "find_contaminated"]


@dataclass(frozen=True)
class Contaminated:
    heldout_key: str
    train_key: str  # the training row sharing the most n-grams with the held-out row
    overlap: float  # share of the held-out row's distinct n-grams found in any training row


def _index(rows: Iterable[tuple[str, str]], n: int, batch_size: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The keys of (key, text) rows and their distinct (gram hash, row number) pairs, sorted by hash then row."""
    keys: list[str] = []
    hash_parts, row_parts = [np.zeros(0, dtype=np.uint64)], [np.zeros(0, dtype=np.int64)]
    for batch in batches(rows, batch_size):
        hashes, counts = text_hashes([text for _, text in batch], n)
        row_parts.append(np.repeat(np.arange(len(keys), len(keys) + len(batch), dtype=np.int64), counts))
        hash_parts.append(hashes)
        keys.extend(key for key, _ in batch)
    hashes = np.concatenate(hash_parts)
    order = np.argsort(hashes, kind="stable")  # stable: rows stay ascending under each hash
    return keys, *_distinct(hashes[order], np.concatenate(row_parts)[order])


def _distinct(hashes: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted (hash, row) pairs without repeats."""
    if not hashes.size:
        return hashes, rows
    keep = np.ones(hashes.size, dtype=bool)
    keep[1:] = (hashes[1:] != hashes[:-1]) | (rows[1:] != rows[:-1])
    return hashes[keep], rows[keep]


def _postings(values: np.ndarray, lo: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """`values[lo[i]:lo[i] + sizes[i]]` for every i, concatenated."""
    starts = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
    return values[starts + np.arange(int(sizes.sum()))]


class NgramIndex:
    """The distinct word n-grams of training rows, for overlap look-ups of other rows."""

    def __init__(self, train: Iterable[tuple[str, str]], n: int = 8, max_postings: int = 1024,
                 batch_size: int = 8192) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n, self.max_postings = n, max_postings
        self.keys, self._hashes, rows = _index(train, n, batch_size)
        self._rows = rows.astype(np.int32) if len(self.keys) < 2**31 else rows

    def __len__(self) -> int:
        """Number of (distinct gram, training row) entries."""
        return int(self._hashes.size)

    def overlap(self, text: str) -> tuple[float, str | None]:
        """(overlap of `text`, key of the training row sharing most of its grams or None when it shares none)."""
        return self.overlaps([text])[0]

    def overlaps(self, texts: list[str]) -> list[tuple[float, str | None]]:
        """`overlap` for many texts at once."""
        hashes, counts = text_hashes(texts, self.n)
        local = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        order = np.lexsort((hashes, local))  # by row, then by hash
        hashes, local = _distinct(hashes[order], local[order])
        lo = np.searchsorted(self._hashes, hashes, side="left")
        hi = np.searchsorted(self._hashes, hashes, side="right")
        found = hi > lo
        totals = np.bincount(local, minlength=len(texts))
        matched = np.bincount(local[found], minlength=len(texts))
        bounds = np.searchsorted(local, np.arange(len(texts) + 1)).tolist()
        out: list[tuple[float, str | None]] = []
        for i, (total, hits) in enumerate(zip(totals.tolist(), matched.tolist())):
            if hits == 0:
                out.append((0.0, None))
                continue
            span = slice(bounds[i], bounds[i + 1])
            out.append((hits / total, self.keys[self._best_row(lo[span][found[span]], hi[span][found[span]])]))
        return out

    def _best_row(self, lo: np.ndarray, hi: np.ndarray) -> int:
        """The training row listed under the most of these grams (postings [lo, hi)), the earliest on ties."""
        rows = _postings(self._rows, lo, np.minimum(hi - lo, self.max_postings))
        values, counts = np.unique(rows, return_counts=True)  # sorted: argmax takes the earliest on ties
        return int(values[int(np.argmax(counts))])

    def contaminated(self, heldout: Iterable[tuple[str, str]], threshold: float = 0.5,
                     batch_size: int = 4096) -> list[Contaminated]:
        """The held-out (key, text) rows whose overlap is at least `threshold`, in input order."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        out: list[Contaminated] = []
        for batch in batches(heldout, batch_size):
            for (key, _), (overlap, train_key) in zip(batch, self.overlaps([text for _, text in batch])):
                if train_key is not None and overlap >= threshold:
                    out.append(Contaminated(key, train_key, overlap))
        return out


def find_contaminated(train: Iterable[tuple[str, str]], heldout: Iterable[tuple[str, str]], n: int = 8,
                      threshold: float = 0.5) -> list[Contaminated]:
    """Held-out (key, text) rows whose n-gram overlap with the training rows is at least `threshold`."""
    return NgramIndex(train, n=n).contaminated(heldout, threshold=threshold)


class HeldoutIndex:
    """The streaming form of `find_contaminated`: the held-out rows are indexed and the training rows stream past
    twice at most (`scan`, then `start_best` / `scan_best` for the contaminated rows only)."""

    def __init__(self, heldout: Iterable[tuple[str, str]], n: int = 8, batch_size: int = 8192) -> None:
        self.n = n
        self.keys, hashes, self._rows = _index(heldout, n, batch_size)
        self._unique, self._entry_gram = np.unique(hashes, return_inverse=True)
        self._found = np.zeros(self._unique.size, dtype=bool)
        self._totals = np.bincount(self._rows, minlength=len(self.keys))
        self._best: dict[int, tuple[int, str]] | None = None

    def _lookup(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row within `texts`, held-out unique gram) of each distinct gram of the texts the held-out rows have."""
        hashes, counts = text_hashes(texts, self.n)
        local = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        if not hashes.size or not self._unique.size:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        at = np.searchsorted(self._unique, hashes).clip(max=self._unique.size - 1)
        hit = self._unique[at] == hashes
        pairs = np.unique(np.stack([local[hit], at[hit]]), axis=1)
        return pairs[0], pairs[1]

    def scan(self, texts: list[str]) -> None:
        """Note the held-out grams found in these training texts."""
        _, grams = self._lookup(texts)
        self._found[grams] = True

    def overlaps(self) -> np.ndarray:
        """Per held-out row: the share of its distinct grams found in the training rows scanned."""
        hits = np.bincount(self._rows, weights=self._found[self._entry_gram], minlength=len(self.keys))
        return np.divide(hits, self._totals, out=np.zeros(len(self.keys)), where=self._totals > 0)

    def contaminated(self, threshold: float) -> list[int]:
        """Indexes (in held-out order) of the rows whose overlap is at least `threshold`."""
        overlaps = self.overlaps()
        return [i for i, o in enumerate(overlaps.tolist()) if o > 0 and o >= threshold]

    def start_best(self, rows: list[int]) -> None:
        """Prepare a second scan (`scan_best`) to find the best training row of these held-out rows."""
        wanted = np.isin(self._rows, np.asarray(rows, dtype=np.int64))
        self._best_grams = self._entry_gram[wanted]  # sorted: entries are in hash order
        self._best_rows = self._rows[wanted]
        self._best = {}

    def scan_best(self, labels: list[str], texts: list[str]) -> None:
        """Count the grams each training row shares with each contaminated row; keep the best label per row."""
        local, grams = self._lookup(texts)
        lo = np.searchsorted(self._best_grams, grams, side="left")
        hi = np.searchsorted(self._best_grams, grams, side="right")
        sizes = hi - lo
        if not sizes.sum():
            return
        heldout = _postings(self._best_rows, lo, sizes)
        train = np.repeat(local, sizes)
        pairs, counts = np.unique(np.stack([heldout, train]), axis=1, return_counts=True)
        for h, t, c in zip(pairs[0].tolist(), pairs[1].tolist(), counts.tolist()):  # train ascending per h
            if c > self._best.get(h, (0, ""))[0]:
                self._best[h] = (c, labels[t])

    def results(self, rows: list[int]) -> list[Contaminated]:
        """The contaminated rows with their overlap and best training row (after `scan_best`)."""
        overlaps = self.overlaps()
        return [Contaminated(self.keys[h], (self._best or {}).get(h, (0, ""))[1], float(overlaps[h])) for h in rows]
