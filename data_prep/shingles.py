"""Word shingles shared by near-duplicate removal (`near_dup`) and the contamination check (`contamination`).

A text is normalised (lowercase, apostrophes dropped, any other punctuation, underscore or whitespace separating
words) and split into words; its n-grams are the overlapping runs of n words, and a non-empty text shorter than
n words is one gram, the whole text. Gram hashes are 64-bit, built from blake2b word hashes (cached), so they
are the same in every process and on every platform (no salted `hash()`), and a gram costs no Python work of
its own (`gram_hashes` works on many rows at once with numpy).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any

import numpy as np

__all__ = ["gram_hashes", "normalize", "text_of", "words"]

_U64 = np.uint64

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
