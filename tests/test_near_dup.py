"""Near-duplicate filter: MinHash + LSH over word shingles, keep-first, exact threshold."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasketch
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.near_dup import NearDupFilter, _shingle_hashes32, jaccard, lsh_params
from data_prep.shingles import gram_hashes, normalize, text_of, words

REPO = Path(__file__).resolve().parents[1]


def random_text(rng: random.Random, n_words: int, vocab: int = 5000) -> str:
    return " ".join(f"w{rng.randrange(vocab)}" for _ in range(n_words))


POPULATION = [f"tok{i}" for i in range(100_000)]


def distinct_words(seed: int, n: int) -> list[str]:
    return random.Random(seed).sample(POPULATION, n)


def edit(text: str, position: int, new_word: str = "zzzchanged") -> str:
    ws = text.split()
    ws[position] = new_word
    return " ".join(ws)


# ------------------------------------------------------------------------------------------ text


def test_text_of_concatenates_and_normalises_contents():
    messages = [{"role": "system", "content": "You are  HELPFUL."},
                {"role": "user", "content": "What's the\tcheck-in time?"},
                {"role": "assistant", "content": "Check-in is at 3 p.m.,\n\n from the lobby!"}]
    assert text_of(messages) == "you are helpful whats the check in time check in is at 3 p m from the lobby"
    assert text_of(messages, roles=("user", "assistant")).startswith("whats the check in time")
    assert normalize(text_of(messages)) == text_of(messages)  # idempotent
    assert text_of([]) == ""
    assert text_of([{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]) == "hi there"


def test_words_normalisation_rules():
    assert words("Don't STOP—believin'!  state_of_the_art 3.14") == ["dont", "stop", "believin", "state", "of",
                                                                  "the", "art", "3", "14"]
    assert words("Ünïcode ÇA VA, naïve café?") == ["ünïcode", "ça", "va", "naïve", "café"]
    assert words("It\u2019s") == words("It's") == ["its"]
    assert words("") == words("  ...!!  ") == []


@given(st.text(alphabet=st.characters(max_codepoint=127)))
@settings(max_examples=200, deadline=None)
def test_ascii_fast_path_matches_the_regex_rule(text):
    reference = re.findall(r"[^\W_]+", re.sub(r"['`]", "", text.lower()))
    assert words(text) == reference


# ---------------------------------------------------------------------------------------- jaccard


def test_jaccard_on_shingles():
    a = " ".join(distinct_words(1, 40))
    assert jaccard(a, a) == 1.0
    # one word changed in the middle touches 3 of 38 shingles: 35 shared of 41
    assert jaccard(a, edit(a, 20)) == pytest.approx(35 / 41)
    # at the end it touches one: 37 shared of 39
    assert jaccard(a, edit(a, 39)) == pytest.approx(37 / 39)
    assert jaccard(a, " ".join(distinct_words(2, 40))) < 0.05
    assert jaccard("Hello, World!", "hello world") == 1.0


def test_jaccard_short_and_empty_texts():
    assert jaccard("hello world", "hello world") == 1.0  # shorter than the shingle: the whole row
    assert jaccard("hello world", "hello there") == 0.0
    assert jaccard("hello", "hello world") == 0.0
    assert jaccard("", "") == 0.0
    assert jaccard("", "some words here") == 0.0
    assert jaccard("one two three", "one two three", shingle=5) == 1.0


# ----------------------------------------------------------------------------------------- filter


def test_small_edit_is_a_near_duplicate_of_the_first_row():
    base = " ".join(distinct_words(3, 40))
    f = NearDupFilter(threshold=0.85, num_perm=128, shingle=3, seed=1)
    assert f.add("orig", base) is None
    assert f.add("middle-edit", edit(base, 20)) == "orig"  # Jaccard 0.854
    assert f.add("first-word-edit", edit(base, 0)) == "orig"
    assert f.add("case-and-punct", base.upper().replace(" ", ", ")) == "orig"
    assert len(f) == 1


def test_different_texts_on_the_same_topic_are_not_near_duplicates():
    a = ("Guests can check in from three in the afternoon at the front desk, and early check in is possible "
         "when a room is ready; please ask reception about luggage storage if you arrive before noon.")
    b = ("Check in starts at 3 pm. If you arrive early we will store your luggage at reception, and we can "
         "sometimes offer an early check in when a room is ready before the usual time.")
    assert jaccard(a, b) < 0.2
    f = NearDupFilter(threshold=0.85)
    assert f.add("a", a) is None
    assert f.add("b", b) is None
    assert len(f) == 2


def test_threshold_is_respected():
    base = distinct_words(4, 40)
    other = base[:27] + distinct_words(5, 13)  # shares 25 of 51 shingles
    a, b = " ".join(base), " ".join(other)
    j = jaccard(a, b)
    assert 0.45 < j < 0.55
    strict = NearDupFilter(threshold=0.85)
    assert strict.add("a", a) is None and strict.add("b", b) is None
    loose = NearDupFilter(threshold=0.4)
    assert loose.add("a", a) is None and loose.add("b", b) == "a"
    just_above = NearDupFilter(threshold=j - 1e-9)
    assert just_above.add("a", a) is None and just_above.add("b", b) == "a"
    just_below = NearDupFilter(threshold=j + 1e-9)  # the check is exact: no estimate noise at the boundary
    assert just_below.add("a", a) is None and just_below.add("b", b) is None


def test_first_occurrence_is_kept_and_later_ones_point_to_it():
    rng = random.Random(6)
    a, other = random_text(rng, 40), random_text(rng, 40)
    rows = [("r0", a), ("r1", edit(a, 39)), ("r2", other), ("r3", edit(a, 0)), ("r4", edit(other, 39)),
            ("r5", a)]
    expected = [None, "r0", None, "r0", "r2", "r0"]
    assert NearDupFilter().add_many(rows) == expected
    f = NearDupFilter()
    assert [f.add(key, text) for key, text in rows] == expected
    assert len(f) == 2


def test_reports_the_most_similar_kept_row():
    base = distinct_words(7, 60)
    a, b, c = " ".join(base[0:40]), " ".join(base[20:60]), " ".join(base[12:52])
    assert jaccard(a, b) < 0.5 <= jaccard(c, a) < jaccard(c, b)
    f = NearDupFilter(threshold=0.5)
    assert f.add_many([("a", a), ("b", b), ("c", c)]) == [None, None, "b"]
    g = NearDupFilter(threshold=0.5)
    assert [g.add("a", a), g.add("b", b), g.add("c", c)] == [None, None, "b"]


def test_deterministic_across_runs_and_between_add_and_add_many():
    rng = random.Random(9)
    rows = []
    for i in range(600):
        if rows and rng.random() < 0.3:
            src = rng.choice(rows)[1].split()
            for _ in range(rng.randrange(3) if src else 0):
                src[rng.randrange(len(src))] = f"w{rng.randrange(5000)}"
            text = " ".join(src)
        else:
            text = random_text(rng, rng.randrange(0, 50))
        rows.append((f"k{i}", text))
    runs = [NearDupFilter(seed=3).add_many(rows) for _ in range(2)]
    assert runs[0] == runs[1]
    assert NearDupFilter(seed=3).add_many(rows, batch_size=7) == runs[0]  # small batches: row-by-row path
    assert NearDupFilter(seed=3).add_many(rows, batch_size=100) == runs[0]  # vectorised path, many batches
    one_by_one = NearDupFilter(seed=3)
    assert [one_by_one.add(k, t) for k, t in rows] == runs[0]
    assert sum(r is not None for r in runs[0]) > 50
    sigs = [NearDupFilter(seed=3).minhash_many([t for _, t in rows]) for _ in range(2)]
    assert np.array_equal(sigs[0], sigs[1])
    assert not np.array_equal(sigs[0], NearDupFilter(seed=4).minhash_many([t for _, t in rows]))


def test_hashes_are_the_same_in_another_process():
    """No salted hash(): a fresh interpreter with another PYTHONHASHSEED gets the same gram hashes and
    signatures."""
    text = "The quick brown fox jumps over the lazy dog, again and again."
    code = ("import json; from data_prep.near_dup import NearDupFilter; "
            "from data_prep.shingles import gram_hashes, words; "
            f"t = {text!r}; h, _ = gram_hashes([words(t)], 3); "
            "print(json.dumps([h.tolist(), NearDupFilter(seed=5).minhash(t).tolist()]))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          check=True)
    other_hashes, other_sig = json.loads(done.stdout)
    hashes, _ = gram_hashes([words(text)], 3)
    assert other_hashes == hashes.tolist()
    assert other_sig == NearDupFilter(seed=5).minhash(text).tolist()


def test_short_texts():
    f = NearDupFilter()
    assert f.add("a", "hello world") is None
    assert f.add("b", "Hello, world!") == "a"
    assert f.add("c", "hello there") is None
    assert f.add("d", "hello") is None
    assert f.add("e", "HELLO") == "d"
    assert f.add("f", "hello world again") is None  # 3 words: one shingle, not the 2-word one
    assert len(f) == 4


def test_empty_texts_are_never_reported_nor_indexed():
    f = NearDupFilter()
    assert f.add("e1", "") is None
    assert f.add("e2", "") is None
    assert f.add("p", "?!... ---") is None
    assert len(f) == 0
    assert f.add_many([("e3", ""), ("x", "some words here"), ("e4", "  ")]) == [None, None, None]
    assert len(f) == 1
    assert (f.minhash("") == np.uint32(0xFFFFFFFF)).all()


def test_invalid_parameters():
    with pytest.raises(ValueError):
        NearDupFilter(threshold=0)
    with pytest.raises(ValueError):
        NearDupFilter(threshold=1.5)
    with pytest.raises(ValueError):
        NearDupFilter(shingle=0)
    with pytest.raises(ValueError):
        gram_hashes([["a"]], 0)


# ------------------------------------------------------------------------------------- internals


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.95])
def test_lsh_bands_catch_pairs_at_the_threshold(threshold):
    bands, rows = lsh_params(threshold, 128)
    assert bands * rows <= 128
    assert 1 - (1 - threshold**rows) ** bands >= 0.95


def test_signatures_are_datasketch_minhashes():
    """The signatures are datasketch's MinHash (affine32 scheme) fed the 32-bit shingle hashes."""
    texts = ["the quick brown fox jumps over the lazy dog", "hi", "a b", "", "x " * 200]
    f = NearDupFilter(num_perm=64, seed=11)
    sigs = f.minhash_many(texts)
    for text, sig in zip(texts, sigs):
        hashes, _ = _shingle_hashes32([words(text)], 3)
        m = datasketch.MinHash(num_perm=64, seed=11, hashfunc=lambda v: v)
        m.update_batch(hashes.tolist())
        assert np.array_equal(m.hashvalues, sig)


def test_matches_brute_force_on_a_mixed_set():
    """Every report is a true near-duplicate of an earlier kept row; no kept row has a clear (J >= 0.95)
    near-duplicate among the kept rows before it."""
    rng = random.Random(14)
    rows: list[tuple[str, str]] = []
    for i in range(1500):
        if rows and rng.random() < 0.35:
            src = rng.choice(rows)[1].split()
            for _ in range(rng.randrange(4)):
                src[rng.randrange(len(src))] = f"w{rng.randrange(3000)}"
            text = " ".join(src)
        else:
            text = random_text(rng, rng.randrange(20, 60), vocab=3000)
        rows.append((f"k{i}", text))
    threshold = 0.8
    results = NearDupFilter(threshold=threshold).add_many(rows, batch_size=512)
    texts = dict(rows)
    position = {key: i for i, (key, _) in enumerate(rows)}
    kept = [key for (key, _), r in zip(rows, results) if r is None]
    kept_set = set(kept)
    assert 150 < len(rows) - len(kept)
    for (key, text), dup_of in zip(rows, results):
        if dup_of is not None:
            assert dup_of in kept_set and position[dup_of] < position[key]
            assert jaccard(text, texts[dup_of]) >= threshold
    shingles = {key: {tuple(ws[i:i + 3]) for i in range(len(ws) - 2)} for key in kept
                for ws in [texts[key].split()]}
    by_shingle: dict[tuple, list[str]] = {}
    for key in kept:
        shared = Counter(other for s in shingles[key] for other in by_shingle.get(s, ()))
        for other, inter in shared.items():
            assert inter / len(shingles[key] | shingles[other]) < 0.95, (key, other)
        for s in shingles[key]:
            by_shingle.setdefault(s, []).append(key)


# -------------------------------------------------------------------------------------- property


@given(st.text(max_size=300))
@settings(max_examples=150, deadline=None)
def test_any_text_is_a_near_duplicate_of_itself(text):
    f = NearDupFilter()
    first = f.add("first", text)
    again = f.add("again", text)
    assert first is None
    if words(text):
        assert again == "first"
        assert jaccard(text, text) == 1.0
    else:
        assert again is None
        assert jaccard(text, text) == 0.0
