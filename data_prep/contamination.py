"""Contamination check: held-out rows whose word n-grams are largely found in the training rows.

The overlap of a held-out row h is |ngrams(h) & ngrams(all training rows)| / |ngrams(h)|, over distinct
word n-grams of the normalised text (`shingles.words`: lowercase, punctuation stripped). A row shorter than
n words is one gram, the whole row, so a short held-out row matches only a training row of the same words
(a short phrase found inside a longer training row does not count: at that length it is not evidence).
A row is contaminated when its overlap is at least the threshold (and it shares at least one gram); it is
reported with the training row sharing the most of its grams (the earliest such row on ties).

The training side is indexed once as numpy arrays, not Python sets: every distinct (gram hash, row) pair,
sorted by hash, 12 bytes a gram (a Python set of ints costs ~5x that). Gram hashes are 64-bit, computed from
blake2b word hashes (`shingles.gram_hashes`), so they are the same in every process. Held-out rows are
looked up in vectorised batches (binary search), and the best training row of a contaminated row is found
from the rows listed under its matched grams; a gram present in more than `max_postings` training rows
(boilerplate) contributes only its first `max_postings` rows to that choice, which keeps the cost bounded
and does not change the overlap itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from data_prep.shingles import gram_hashes, words

__all__ = ["Contaminated", "HeldoutIndex", "NgramIndex", "find_contaminated"]


@dataclass(frozen=True)
class Contaminated:
    heldout_key: str
    train_key: str  # the training row sharing the most n-grams with the held-out row
    overlap: float  # share of the held-out row's distinct n-grams found in any training row


def _batches(rows: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    batch: list[tuple[str, str]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


class NgramIndex:
    """The distinct word n-grams of training rows, for overlap look-ups of other rows."""

    def __init__(self, train: Iterable[tuple[str, str]], n: int = 8, max_postings: int = 1024,
                 batch_size: int = 8192) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        self.n, self.max_postings = n, max_postings
        self.keys: list[str] = []
        hash_parts, row_parts = [], []
        for batch in _batches(train, batch_size):
            hashes, counts = gram_hashes([words(text) for _, text in batch], n)
            rows = np.repeat(np.arange(len(self.keys), len(self.keys) + len(batch), dtype=np.int64), counts)
            self.keys.extend(key for key, _ in batch)
            hash_parts.append(hashes)
            row_parts.append(rows)
        hashes = np.concatenate(hash_parts) if hash_parts else np.zeros(0, dtype=np.uint64)
        rows = np.concatenate(row_parts) if row_parts else np.zeros(0, dtype=np.int64)
        order = np.argsort(hashes, kind="stable")  # stable: rows stay ascending under each hash
        hashes, rows = hashes[order], rows[order]
        del order
        if hashes.size:  # drop a gram repeated within one row
            keep = np.ones(hashes.size, dtype=bool)
            keep[1:] = (hashes[1:] != hashes[:-1]) | (rows[1:] != rows[:-1])
            hashes, rows = hashes[keep], rows[keep]
        self._hashes = hashes
        self._rows = rows.astype(np.int32) if len(self.keys) < 2**31 else rows

    def __len__(self) -> int:
        """Number of (distinct gram, training row) entries."""
        return int(self._hashes.size)

    def overlap(self, text: str) -> tuple[float, str | None]:
        """(overlap of `text` with all training rows, key of the training row sharing most of its grams or
        None when it shares none)."""
        return self.overlaps([text])[0]

    def overlaps(self, texts: list[str]) -> list[tuple[float, str | None]]:
        """`overlap` for many texts at once."""
        hashes, counts = gram_hashes([words(t) for t in texts], self.n)
        local = np.repeat(np.arange(len(texts), dtype=np.int64), counts)
        order = np.lexsort((hashes, local))  # by row, then by hash
        hashes, local = hashes[order], local[order]
        if hashes.size:
            distinct = np.ones(hashes.size, dtype=bool)
            distinct[1:] = (hashes[1:] != hashes[:-1]) | (local[1:] != local[:-1])
            hashes, local = hashes[distinct], local[distinct]
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
        """The training row listed under the most of these grams (postings [lo, hi) of the sorted index),
        the earliest row on ties."""
        sizes = np.minimum(hi - lo, self.max_postings)
        starts = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
        rows = self._rows[starts + np.arange(int(sizes.sum()))]
        values, counts = np.unique(rows, return_counts=True)  # sorted: argmax takes the earliest on ties
        return int(values[int(np.argmax(counts))])

    def contaminated(self, heldout: Iterable[tuple[str, str]], threshold: float = 0.5,
                     batch_size: int = 4096) -> list[Contaminated]:
        """The held-out (key, text) rows whose overlap is at least `threshold`, in input order."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        out: list[Contaminated] = []
        for batch in _batches(heldout, batch_size):
            for (key, _), (overlap, train_key) in zip(batch, self.overlaps([text for _, text in batch])):
                if train_key is not None and overlap >= threshold:
                    out.append(Contaminated(key, train_key, overlap))
        return out


def find_contaminated(train: Iterable[tuple[str, str]], heldout: Iterable[tuple[str, str]], n: int = 8,
                      threshold: float = 0.5) -> list[Contaminated]:
    """Held-out (key, text) rows whose share of word n-grams found in the training rows is at least
    `threshold`, each with the training row it shares most with; in held-out order."""
    return NgramIndex(train, n=n).contaminated(heldout, threshold=threshold)


class HeldoutIndex:
    """The streaming form of `find_contaminated`, for training sets that do not fit in memory: the held-out rows
    (the small side) are indexed, the training rows stream past it twice at most.

    `scan` marks which held-out grams occur in training rows; `contaminated` then gives the held-out rows whose
    overlap passes the threshold; `best_train_rows` (a second scan, only when some row is contaminated) finds the
    training row sharing most of each one's grams, the earliest on ties. Same results as `find_contaminated`
    (which caps the postings of boilerplate grams when choosing that row; this counts them all).
    """

    def __init__(self, heldout: Iterable[tuple[str, str]], n: int = 8, batch_size: int = 8192) -> None:
        self.n = n
        self.keys: list[str] = []
        hash_parts, row_parts = [], []
        for batch in _batches(heldout, batch_size):
            hashes, counts = gram_hashes([words(text) for _, text in batch], n)
            row_parts.append(np.repeat(np.arange(len(self.keys), len(self.keys) + len(batch)), counts))
            hash_parts.append(hashes)
            self.keys.extend(key for key, _ in batch)
        hashes = np.concatenate(hash_parts) if hash_parts else np.zeros(0, dtype=np.uint64)
        rows = np.concatenate(row_parts) if row_parts else np.zeros(0, dtype=np.int64)
        order = np.lexsort((rows, hashes))
        hashes, rows = hashes[order], rows[order]
        if hashes.size:  # distinct (gram, row) pairs
            keep = np.ones(hashes.size, dtype=bool)
            keep[1:] = (hashes[1:] != hashes[:-1]) | (rows[1:] != rows[:-1])
            hashes, rows = hashes[keep], rows[keep]
        self._hashes, self._rows = hashes, rows
        self._unique, self._entry_gram = np.unique(hashes, return_inverse=True)
        self._found = np.zeros(self._unique.size, dtype=bool)
        self._totals = np.bincount(rows, minlength=len(self.keys))
        self._best: dict[int, tuple[int, str]] | None = None

    def _lookup(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(row within `texts`, index into the held-out unique grams) of every distinct gram of each text that
        some held-out row has."""
        hashes, counts = gram_hashes([words(t) for t in texts], self.n)
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
        """Count, per (training row, contaminated held-out row), the distinct grams they share; keep the label
        (key or source) of the largest per held-out row, the earliest on ties (scan in training order)."""
        local, grams = self._lookup(texts)
        lo = np.searchsorted(self._best_grams, grams, side="left")
        hi = np.searchsorted(self._best_grams, grams, side="right")
        sizes = hi - lo
        if not sizes.sum():
            return
        starts = np.repeat(lo - (np.cumsum(sizes) - sizes), sizes)
        heldout = self._best_rows[starts + np.arange(int(sizes.sum()))]
        train = np.repeat(local, sizes)
        pairs, counts = np.unique(np.stack([heldout, train]), axis=1, return_counts=True)
        for h, t, c in zip(pairs[0].tolist(), pairs[1].tolist(), counts.tolist()):  # train ascending per h
            if c > self._best.get(h, (0, ""))[0]:
                self._best[h] = (c, labels[t])

    def results(self, rows: list[int]) -> list[Contaminated]:
        """The contaminated rows with their overlap and best training row (after `scan_best`)."""
        overlaps = self.overlaps()
        return [Contaminated(self.keys[h], (self._best or {}).get(h, (0, ""))[1], float(overlaps[h])) for h in rows]
