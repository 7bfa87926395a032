"""Near-duplicate removal: MinHash signatures over word shingles, LSH banding for candidates, exact check.

A row's text is the concatenation of its message contents, normalised (lowercase, punctuation stripped,
whitespace collapsed) and split into words. Its shingles are the overlapping runs of `shingle` words; a row
with fewer words than that has one shingle, the whole row. The similarity of two rows is the Jaccard index
of their shingle sets.

`NearDupFilter.add` keeps the first occurrence: a row whose Jaccard with an already kept row is at least the
threshold is reported with the key of that kept row (the most similar one, earliest on ties) and is not
indexed; any other row is indexed and `None` is returned.

How it is computed (everything is deterministic and independent of the process, no salted `hash()`):

- words hash to 64 bits with blake2b (cached); a shingle's hash mixes its word hashes (`gram_hashes`), so a
  shingle costs no Python work of its own;
- signatures are datasketch's "affine32" MinHash scheme (the default of datasketch 2.x), computed for many
  rows at once with numpy (`minhash_many`): the same bits as `datasketch.MinHash(num_perm, seed)` fed the
  same 32-bit shingle hashes (a test checks this when datasketch is installed; it is not needed at run
  time), at a fraction of the cost of one datasketch MinHash object per row;
- LSH bands are chosen for recall (at least 95 % of pairs exactly at the threshold become candidates, more
  above it), and every candidate is then checked: first the MinHash estimate (vectorised, drops the clear
  misses), then the exact Jaccard of the two shingle sets, so the threshold is applied exactly and a pair
  below it is never reported.

Rows with no words after normalisation (empty, punctuation only) have no shingles: they are never reported
and never indexed, and `jaccard` with such a text is 0.0.

Why not datasketch's MinHash + MinHashLSH objects: measured on the same 50k / 200k synthetic rows of 30 words
(2 cores), one `MinHash.update_batch` + `MinHashLSH.query/insert` per row ran at ~12k rows/s (780 MB at
200k rows) without any exact check, and reported pairs below the threshold; `add_many` here runs at
~35-40k rows/s (~510 MB at 200k rows) with the exact check. `python -m data_prep.near_dup --rows 200000`
measures it.
"""

from __future__ import annotations

import hashlib
import math
import operator
import os
import re
import tempfile
from array import array
from collections.abc import Iterable, Sequence
from itertools import chain, compress, repeat
from typing import Any

import numpy as np

__all__ = ["NearDupFilter", "gram_hashes", "jaccard", "lsh_params", "normalize", "text_of", "words"]

_U64 = np.uint64
_MAX32 = np.uint32(0xFFFFFFFF)
# Rows are processed in groups of about this many shingles, so the (shingles x num_perm) work array stays
# around 32 MB at num_perm=128.
_CHUNK_SHINGLES = 1 << 16
# Batches up to this many rows go row by row (`NearDupFilter._add_rows`), larger ones vectorised.
_SMALL_BATCH = 32

# ---------------------------------------------------------------------------------------------- text


_APOSTROPHES = re.compile(r"['\u2019\u02bc`]")
_WORD = re.compile(r"[^\W_]+")
# The same rule for ASCII text, ~1.6x faster than the regex: apostrophes dropped, any other non-alphanumeric
# character a separator.
_ASCII_SEPARATORS = str.maketrans({chr(c): (None if chr(c) in "'`" else " ")
                                   for c in range(128) if not chr(c).isalnum()})


def words(text: str) -> list[str]:
    """The words of a text after normalisation: lowercase, apostrophes dropped ("don't" -> "dont"), any other
    punctuation, underscore or whitespace separating words."""
    text = text.lower()
    if text.isascii():
        return text.translate(_ASCII_SEPARATORS).split()
    if "'" in text or "\u2019" in text or "\u02bc" in text or "`" in text:
        text = _APOSTROPHES.sub("", text)
    return _WORD.findall(text)


def normalize(text: str) -> str:
    """`text` lowercased, punctuation stripped and whitespace collapsed to single spaces (idempotent)."""
    return " ".join(words(text))


def text_of(messages: Sequence[dict[str, Any]], roles: Iterable[str] | None = None) -> str:
    """The normalised text of a conversation: its message contents in order (only those of `roles`, when
    given), joined and normalised. Non-string contents (None, parts lists) are read for their text."""
    wanted = None if roles is None else set(roles)
    parts = []
    for message in messages:
        if wanted is not None and message.get("role") not in wanted:
            continue
        parts.append(_content_text(message.get("content")))
    return normalize(" ".join(parts))


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts: [{"type": "text", "text": ...}, ...]
        return " ".join(_content_text(p.get("text") if isinstance(p, dict) else p) for p in content)
    return str(content)


# ------------------------------------------------------------------------------------------- hashing


class _WordHashes(dict):
    """word -> 63-bit blake2b hash (63 bits: numpy reads those into int64 several times faster), filled on
    first use."""

    def __missing__(self, word: str) -> int:
        value = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little") >> 1
        self[word] = value
        return value


_WORD_HASHES = _WordHashes()
_WORD_CACHE_LIMIT = 2_000_000


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return state, z ^ (z >> 31)


def _position_multipliers(count: int) -> np.ndarray:
    """Fixed odd 64-bit multipliers, one per word position in a gram."""
    state, out = 0x7A696C6F72, []  # fixed seed: gram hashes must never change between runs
    for _ in range(count):
        state, value = _splitmix64(state)
        out.append(value | 1)
    return np.array(out, dtype=_U64)


_LENGTH_SALT = _U64(0xD6E8FEB86659FD93)


def _fmix64(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> _U64(33))
    x = x * _U64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> _U64(33))
    x = x * _U64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> _U64(33))


def _fmix32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def gram_hashes(word_lists: Sequence[Sequence[str]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the word n-grams of many rows at once.

    Returns (hashes, counts): `hashes` holds row 0's n-grams in order, then row 1's, ...; `counts[i]` is the
    number of row i's n-grams: len - n + 1, or 1 (the whole row as one gram) for a non-empty row shorter
    than n, or 0 for an empty row. Deterministic across processes and platforms.
    """
    if n < 1:
        raise ValueError(f"n-gram size must be at least 1, got {n}")
    if len(_WORD_HASHES) > _WORD_CACHE_LIMIT:
        _WORD_HASHES.clear()
    lengths = np.fromiter(map(len, word_lists), dtype=np.int64, count=len(word_lists))
    counts = np.where(lengths >= n, lengths - n + 1, (lengths > 0).astype(np.int64))
    total_words, total_grams = int(lengths.sum()), int(counts.sum())
    if total_grams == 0:
        return np.zeros(0, dtype=_U64), counts
    lookup = _WORD_HASHES.__getitem__
    flat = np.zeros(total_words + n, dtype=_U64)  # n zeros of padding past the last word
    flat[:total_words] = np.fromiter(map(lookup, chain.from_iterable(word_lists)), dtype=np.int64,
                                     count=total_words).view(_U64)
    word_starts = np.cumsum(lengths) - lengths
    gram_starts = np.cumsum(counts) - counts
    starts = np.repeat(word_starts, counts) + (np.arange(total_grams) - np.repeat(gram_starts, counts))
    gram_len = np.repeat(np.minimum(lengths, n), counts)
    multipliers = _position_multipliers(n)
    acc = gram_len.astype(_U64) * _LENGTH_SALT
    short = bool((gram_len < n).any())
    for j in range(n):
        term = flat[starts + j] * multipliers[j]
        if short:
            term[gram_len <= j] = 0  # a short row's gram stops at its last word
        acc += term
    return _fmix64(acc), counts


def _shingle_hashes32(word_lists: Sequence[Sequence[str]], k: int) -> tuple[np.ndarray, np.ndarray]:
    hashes, counts = gram_hashes(word_lists, k)
    return (hashes >> _U64(32)).astype(np.uint32), counts


def _shingle_set(text: str, k: int) -> np.ndarray:
    hashes, _ = _shingle_hashes32([words(text)], k)
    return _sorted_unique(hashes)


def jaccard(a: str, b: str, shingle: int = 3) -> float:
    """Exact Jaccard index of the shingle sets of two texts (the similarity `NearDupFilter` thresholds);
    0.0 when either has no words."""
    sa, sb = _shingle_set(a, shingle), _shingle_set(b, shingle)
    return _jaccard_sorted(sa, sb)


def _jaccard_sorted(sa: np.ndarray, sb: np.ndarray) -> float:
    if sa.size == 0 or sb.size == 0:
        return 0.0
    inter = np.intersect1d(sa, sb, assume_unique=True).size
    return inter / (sa.size + sb.size - inter)


# ----------------------------------------------------------------------------------------------- LSH


def _binomial_floor(trials: int, p: float, tail: float) -> int:
    """The largest m with P(Binomial(trials, p) < m) <= tail."""
    if p >= 1.0:
        return trials
    log_p, log_q = math.log(p), math.log1p(-p)
    cumulative = 0.0
    for k in range(trials + 1):
        log_pmf = math.lgamma(trials + 1) - math.lgamma(k + 1) - math.lgamma(trials - k + 1) + k * log_p + (
            trials - k) * log_q
        cumulative += math.exp(log_pmf)
        if cumulative > tail:
            return k
    return trials


def _candidate_probability(s: float, bands: int, rows: int) -> float:
    return 1.0 - (1.0 - s**rows) ** bands


def lsh_params(threshold: float, num_perm: int, recall: float = 0.95) -> tuple[int, int]:
    """(bands, rows per band) for LSH: the most rows per band (fewest false candidates) such that a pair
    whose Jaccard equals `threshold` becomes a candidate with probability >= `recall`."""
    best = (num_perm, 1)
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if _candidate_probability(threshold, bands, rows) >= recall:
            best = (bands, rows)
    return best


class NearDupFilter:
    """Streaming near-duplicate filter. Feed rows in order with `add`, or `add_many` (same results, vectorised:
    use it for datasets). Memory: per kept row, its signature (4 * num_perm bytes), its shingle hashes
    (4 bytes each) and one entry in each band table (~50 bytes): about 2.5 kB for a 30-word row."""

    def __init__(self, threshold: float = 0.85, num_perm: int = 128, shingle: int = 3, seed: int = 1,
                 spill_dir: str | os.PathLike | None = None) -> None:
        """`spill_dir`: keep the kept rows' shingle sets in a temporary file there (only their offsets in memory;
        a set is read back for the exact check of a candidate), for data sets larger than memory."""
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {threshold}")
        if num_perm < 2:
            raise ValueError(f"num_perm must be at least 2, got {num_perm}")
        if shingle < 1:
            raise ValueError(f"shingle must be at least 1, got {shingle}")
        self.threshold, self.num_perm, self.shingle, self.seed = threshold, num_perm, shingle, seed
        # datasketch's affine32 permutations: MinHash(num_perm=..., seed=...).permutations
        gen = np.random.RandomState(seed)
        self._a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        self._b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
        self.bands, self.rows = lsh_params(threshold, num_perm)
        self._band_mult = _position_multipliers(self.rows)
        # MinHash pre-check: a candidate needs this many equal signature values, which a pair exactly at the
        # threshold has with probability >= 1 - 1e-6; the candidates that pass get the exact check.
        self._estimate_floor = _binomial_floor(num_perm, threshold, 1e-6) / num_perm
        self._tables: list[dict[int, Any]] = [{} for _ in range(self.bands)]
        self._keys: list[str] = []
        self._sets: list[np.ndarray] | _SpilledSets = [] if spill_dir is None else _SpilledSets(spill_dir)
        self._sigs = np.empty((1024, num_perm), dtype=np.uint32)

    def __len__(self) -> int:
        """Number of rows kept (indexed) so far."""
        return len(self._keys)

    # -- signatures

    def minhash(self, text: str) -> np.ndarray:
        """The MinHash signature (num_perm uint32) of one text."""
        return self.minhash_many([text])[0]

    def minhash_many(self, texts: Sequence[str]) -> np.ndarray:
        """MinHash signatures of many texts, shape (len(texts), num_perm), dtype uint32; a text with no words
        gets the empty signature (all 0xFFFFFFFF, like an empty datasketch MinHash)."""
        return self._prepare([words(t) for t in texts])[0]

    def _prepare(self, word_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Signatures, shingle hashes (row by row) and shingle counts for a batch of rows."""
        hashes, counts = _shingle_hashes32(word_lists, self.shingle)
        sigs = np.full((len(word_lists), self.num_perm), _MAX32, dtype=np.uint32)
        ends = np.cumsum(counts)
        starts = ends - counts
        first = 0
        while first < len(word_lists):
            last = int(np.searchsorted(ends, ends[first] - counts[first] + _CHUNK_SHINGLES, side="right"))
            last = max(last, first + 1)
            lo, hi = int(starts[first]), int(ends[last - 1])
            if hi - lo > _CHUNK_SHINGLES:  # one very long row: accumulate its minimum in slices
                for offset in range(lo, hi, _CHUNK_SHINGLES):
                    part = self._permuted(hashes[offset:min(hi, offset + _CHUNK_SHINGLES)])
                    np.minimum(sigs[first], part.min(axis=1), out=sigs[first])
            elif hi > lo:
                permuted = self._permuted(hashes[lo:hi])
                nonempty = np.nonzero(counts[first:last])[0]
                sigs[first + nonempty] = np.minimum.reduceat(permuted, starts[first + nonempty] - lo, axis=1).T
            first = last
        return sigs, hashes, counts

    def _permuted(self, hashes: np.ndarray) -> np.ndarray:
        """(num_perm, len(hashes)): permutation k of shingle j (this layout makes the row minima ~6x faster)."""
        out = np.multiply(self._a[:, None], _fmix32(hashes)[None, :])
        out += self._b[:, None]
        return out

    def _band_keys(self, sigs: np.ndarray) -> np.ndarray:
        """(rows, bands) uint64: one hash per LSH band of each signature."""
        r = self.rows
        banded = sigs[:, : self.bands * r].reshape(len(sigs), self.bands, r).astype(_U64)
        # 60 bits: Python stores such ints in 32 bytes rather than 36, and collisions stay negligible
        return _fmix64((banded * self._band_mult).sum(axis=2, dtype=_U64)) >> _U64(4)

    # -- filtering

    def add(self, key: str, text: str) -> str | None:
        """Check one row against the rows kept so far: return the key of the kept row it near-duplicates,
        or None, in which case the row is kept (indexed)."""
        return self.add_many([(key, text)])[0]

    def add_many(self, rows: Iterable[tuple[str, str]], batch_size: int = 8192) -> list[str | None]:
        """`add` for many (key, text) rows, in order: the same results as calling `add` on each, faster.
        Returns one result per row."""
        out: list[str | None] = []
        batch: list[tuple[str, str]] = []
        for row in rows:
            batch.append(row)
            if len(batch) >= batch_size:
                out.extend(self._add_batch(batch))
                batch = []
        if batch:
            out.extend(self._add_batch(batch))
        return out

    def _add_batch(self, batch: list[tuple[str, str]]) -> list[str | None]:
        n = len(batch)
        sigs, hashes, counts = self._prepare([words(text) for _, text in batch])
        sets = _row_sets(hashes, counts)
        if n <= _SMALL_BATCH:
            return self._add_rows(batch, sigs, sets, counts)
        rows = np.nonzero(counts)[0]  # rows with shingles; the others are neither reported nor indexed
        if rows.size == 0:
            return [None] * n
        keys = self._band_keys(sigs[rows])

        # 1. Look every row up in the index as it was before this batch (C-level dict lookups).
        hits: list[list[Any]] = []
        hit_masks: list[np.ndarray] = []
        for table, column in zip(self._tables, keys.T):
            found = list(map(table.get, column.tolist()))
            hits.append(found)
            hit_masks.append(np.fromiter(map(operator.is_not, found, repeat(None)), dtype=bool, count=rows.size))
        # 2. Band collisions inside the batch: rows sharing a band key with an earlier row of the batch.
        potential = np.logical_or.reduce(hit_masks)
        local: list[dict[int, list[int]]] = []
        for column in keys.T:
            order, repeated = _repeats(column)
            potential[order[1:][repeated]] = True  # later members of a bucket (stable sort: in row order)
            in_group = np.zeros(rows.size, dtype=bool)
            in_group[1:] |= repeated
            in_group[:-1] |= repeated
            groups: dict[int, list[int]] = {}
            for pos in order[in_group].tolist():
                groups.setdefault(int(column[pos]), []).append(pos)
            local.append(groups)

        # 3. Decide, in order, the rows that may have a match; every other row with shingles is kept.
        kept = np.ones(rows.size, dtype=bool)
        out: list[str | None] = [None] * n
        for pos in np.nonzero(potential)[0].tolist():
            row_keys = keys[pos].tolist()
            earlier: set[int] = set()
            for band in range(self.bands):
                hit = hits[band][pos]
                if hit is not None:
                    if type(hit) is int:
                        earlier.add(hit)
                    else:
                        earlier.update(hit)
            same_batch: set[int] = set()
            for band, groups in enumerate(local):
                for other in groups.get(row_keys[band], ()):
                    if other >= pos:
                        break
                    if kept[other]:
                        same_batch.add(other)
            match = self._best_match(sigs[rows[pos]], sets[rows[pos]], earlier, same_batch, sigs, sets, rows)
            if match is not None:
                kept[pos] = False
                out[rows[pos]] = match if isinstance(match, str) else batch[rows[match[0]]][0]

        # 4. Index the kept rows.
        self._index([batch[i][0] for i in rows[kept].tolist()], sigs[rows[kept]], [sets[i] for i in rows[kept]],
                     keys[kept], [m[kept] for m in hit_masks])
        return out

    def _add_rows(self, batch: list[tuple[str, str]], sigs: np.ndarray, sets: list[np.ndarray],
                  counts: np.ndarray) -> list[str | None]:
        """Row by row: less fixed cost than the vectorised path of `_add_batch`, for a few rows."""
        band_keys = self._band_keys(sigs).tolist()
        out: list[str | None] = []
        for i, (key, _) in enumerate(batch):
            if counts[i] == 0:
                out.append(None)
                continue
            row_keys = band_keys[i]
            earlier: set[int] = set()
            for table, band_key in zip(self._tables, row_keys):
                hit = table.get(band_key)
                if hit is not None:
                    if type(hit) is int:
                        earlier.add(hit)
                    else:
                        earlier.update(hit)
            match = self._best_match(sigs[i], sets[i], earlier, set(), sigs, sets, np.zeros(0, np.int64))
            out.append(match if isinstance(match, str) else None)
            if match is None:
                self._index([key], sigs[i:i + 1], [sets[i]], np.array([row_keys], dtype=_U64), None)
        return out

    def _best_match(self, sig: np.ndarray, shingles: np.ndarray, earlier: set[int], same_batch: set[int],
                    sigs: np.ndarray, sets: list[np.ndarray], rows: np.ndarray) -> str | tuple[int] | None:
        """The most similar row at or above the threshold among the candidates (earliest on ties): a kept key
        from earlier batches, or (position,) of a row of this batch; None when no candidate passes."""
        best, best_j = None, -1.0
        if earlier:
            ids = np.fromiter(earlier, dtype=np.int64, count=len(earlier))
            ids.sort()
            estimates = (self._sigs[ids] == sig).mean(axis=1)
            for idx in ids[estimates >= self._estimate_floor].tolist():
                j = _jaccard_sorted(shingles, self._sets[idx])
                if j >= self.threshold and j > best_j:  # ascending ids: ties keep the earliest row
                    best, best_j = self._keys[idx], j
        if same_batch:
            positions = np.array(sorted(same_batch), dtype=np.int64)
            estimates = (sigs[rows[positions]] == sig).mean(axis=1)
            for pos in positions[estimates >= self._estimate_floor].tolist():
                j = _jaccard_sorted(shingles, sets[rows[pos]])
                if j >= self.threshold and j > best_j:
                    best, best_j = (pos,), j
        return best

    def _index(self, keys: list[str], sigs: np.ndarray, sets: list[np.ndarray], band_keys: np.ndarray,
               hit_masks: list[np.ndarray] | None) -> None:
        """Append kept rows to the index. `hit_masks[band][i]`: whether row i's key of that band was already
        in the table (None: look it up)."""
        first, count = len(self._keys), len(keys)
        if count == 0:
            return
        if first + count > len(self._sigs):
            grown = np.empty((max(2 * len(self._sigs), first + count), self.num_perm), dtype=np.uint32)
            grown[:first] = self._sigs[:first]
            self._sigs = grown
        self._sigs[first:first + count] = sigs
        self._keys.extend(keys)
        self._sets.extend(sets)
        if count == 1 or hit_masks is None:
            for i, row_keys in enumerate(band_keys.tolist()):
                for table, band_key in zip(self._tables, row_keys):
                    _insert(table, band_key, first + i)
            return
        ids = np.arange(first, first + count)
        id_objects = ids.tolist()  # one int object per row, shared by all band tables (saves memory)
        for table, column, hit in zip(self._tables, band_keys.T, hit_masks):
            order, repeated = _repeats(column)
            shared = np.zeros(count, dtype=bool)
            shared[order[1:][repeated]] = True
            shared[order[:-1][repeated]] = True
            simple = ~hit & ~shared  # a new bucket holding one row: the common case, done in bulk
            table.update(zip(column[simple].tolist(), compress(id_objects, simple.tolist())))
            for band_key, idx in zip(column[~simple].tolist(), ids[~simple].tolist()):
                _insert(table, band_key, idx)


class _SpilledSets:
    """An append-only list of uint32 arrays kept in a temporary file; only the offsets stay in memory."""

    def __init__(self, folder: str | os.PathLike) -> None:
        self._file = tempfile.TemporaryFile(dir=folder)
        self._offsets = array("q", [0])
        self._dirty = False

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def extend(self, sets: Iterable[np.ndarray]) -> None:
        for values in sets:
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


def _insert(table: dict[int, Any], band_key: int, idx: int) -> None:
    bucket = table.get(band_key)
    if bucket is None:
        table[band_key] = idx  # one row per bucket (the common case) needs no list
    elif type(bucket) is int:
        table[band_key] = [bucket, idx]
    else:
        bucket.append(idx)


def _repeats(column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(order, repeated): a stable argsort of `column`, and for each i >= 1 of the sorted values whether it
    equals the one before."""
    order = np.argsort(column, kind="stable")
    ordered = column[order]
    return order, ordered[1:] == ordered[:-1]


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    ordered = np.sort(values)
    if ordered.size < 2:
        return ordered
    keep = np.empty(ordered.size, dtype=bool)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _row_sets(hashes: np.ndarray, counts: np.ndarray) -> list[np.ndarray]:
    """Each row's shingle hashes, sorted and unique, with one sort for the whole batch."""
    row_of = np.repeat(np.arange(len(counts), dtype=_U64), counts)
    merged = _sorted_unique((row_of << _U64(32)) | hashes.astype(_U64))
    values = (merged & _U64(0xFFFFFFFF)).astype(np.uint32)
    bounds = np.searchsorted(merged >> _U64(32), np.arange(len(counts) + 1, dtype=_U64)).tolist()
    return [values[bounds[i]:bounds[i + 1]] for i in range(len(counts))]


# ------------------------------------------------------------------------------------------ benchmark


def _synthetic_rows(n: int, words_per_row: int = 30, dup_fraction: float = 0.1, seed: int = 0) -> list[tuple[str, str]]:
    """n (key, text) rows of random words from a 20k vocabulary; about `dup_fraction` of them are an earlier
    row with one word changed."""
    import random

    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20_000)]
    rows: list[tuple[str, str]] = []
    for i in range(n):
        if rows and rng.random() < dup_fraction:
            ws = rng.choice(rows)[1].split()
            ws[rng.randrange(len(ws))] = rng.choice(vocab)
        else:
            ws = [rng.choice(vocab) for _ in range(words_per_row)]
        rows.append((f"row{i}", " ".join(ws)))
    return rows


def _bench(argv: list[str] | None = None) -> None:
    import argparse
    import time

    parser = argparse.ArgumentParser(description="near-duplicate filter throughput on synthetic rows")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--one-by-one", action="store_true", help="call add() per row instead of add_many()")
    args = parser.parse_args(argv)
    rows = _synthetic_rows(args.rows, args.words)
    filt = NearDupFilter(threshold=args.threshold, num_perm=args.num_perm)
    start = time.perf_counter()
    if args.one_by_one:
        results = [filt.add(key, text) for key, text in rows]
    else:
        results = filt.add_many(rows)
    seconds = time.perf_counter() - start
    dups = sum(r is not None for r in results)
    print(f"{args.rows} rows x {args.words} words: {seconds:.2f} s, {args.rows / seconds:,.0f} rows/s, "
          f"{dups} near-duplicates, bands x rows = {filt.bands} x {filt.rows}")


if __name__ == "__main__":
    _bench()
