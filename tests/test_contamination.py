"""Contamination check: held-out rows whose word n-grams are largely found in the training rows."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.contamination import Contaminated, NgramIndex, find_contaminated
from data_prep.shingles import text_of, words

REPO = Path(__file__).resolve().parents[1]


POPULATION = [f"tok{i}" for i in range(100_000)]


def distinct_words(seed: int, n: int) -> list[str]:
    return random.Random(seed).sample(POPULATION, n)


def sentence(seed: int, n: int) -> str:
    return " ".join(distinct_words(seed, n))


@pytest.fixture()
def train() -> list[tuple[str, str]]:
    return [(f"t{i}", sentence(100 + i, 40)) for i in range(20)]


def test_exact_copy_is_flagged_with_overlap_one_and_its_train_key(train):
    heldout = [("h-copy", train[7][1]), ("h-other", sentence(1, 40))]
    assert find_contaminated(train, heldout) == [Contaminated("h-copy", "t7", 1.0)]


def test_copy_is_found_through_normalisation(train):
    messages = [{"role": "user", "content": train[3][1].upper().replace(" ", ", ")}]
    assert find_contaminated(train, [("h", text_of(messages))]) == [Contaminated("h", "t3", 1.0)]


def test_one_long_shared_passage_is_flagged(train):
    passage = train[12][1].split()[5:35]  # 30 words of t12
    held = " ".join(distinct_words(2, 6) + passage + distinct_words(3, 6))  # 42 words, 35 8-grams
    result = find_contaminated(train, [("h", held)], n=8, threshold=0.5)
    assert result == [Contaminated("h", "t12", 23 / 35)]  # the 23 8-grams inside the passage


def test_unrelated_rows_are_not_flagged(train):
    vocabulary = [w for _, text in train for w in text.split()]
    rng = random.Random(4)
    shuffled = [" ".join(rng.sample(vocabulary, 40)) for _ in range(20)]  # same words, other order
    heldout = [(f"h{i}", text) for i, text in enumerate(shuffled)] + [("new", sentence(5, 40))]
    assert find_contaminated(train, heldout) == []
    assert all(overlap < 0.05 for overlap, _ in NgramIndex(train).overlaps([t for _, t in heldout]))


def test_threshold_boundary():
    shared = distinct_words(6, 12)
    train = [("t", " ".join(shared + distinct_words(7, 10)))]
    held = [("h", " ".join(shared + distinct_words(8, 5)))]  # 17 words: 10 8-grams, the first 5 in training
    assert find_contaminated(train, held, n=8, threshold=0.5) == [Contaminated("h", "t", 0.5)]
    assert find_contaminated(train, held, n=8, threshold=0.51) == []
    assert find_contaminated(train, held, n=8, threshold=0.3) == [Contaminated("h", "t", 0.5)]
    assert find_contaminated(train, [("h", " ".join(distinct_words(9, 17)))], n=8, threshold=0.0) == []


def test_attribution_goes_to_the_training_row_sharing_most():
    a, b = distinct_words(10, 40), distinct_words(11, 40)
    train = [("small", " ".join(a)), ("big", " ".join(b)), ("big-again", " ".join(b))]
    held = " ".join(a[:15] + b[:30])  # 8 grams inside a, 23 inside b
    [result] = find_contaminated(train, [("h", held)], n=8, threshold=0.5)
    assert result == Contaminated("h", "big", 31 / 38)  # tie between the copies: the earliest


def test_attribution_with_boilerplate_shared_by_many_rows():
    """A passage present in every training row lists only its first `max_postings` rows; the row's own grams
    still decide."""
    boiler = distinct_words(12, 20)
    train = [(f"t{i}", " ".join(boiler + distinct_words(200 + i, 20))) for i in range(50)]
    held = " ".join(boiler + train[37][1].split()[20:])
    index = NgramIndex(train, n=8, max_postings=2)
    assert index.overlap(held) == (1.0, "t37")
    assert NgramIndex(train, n=8).overlap(held) == (1.0, "t37")


def test_n_larger_than_the_rows():
    train = [("t0", "what time is breakfast served"), ("t1", "breakfast is served from seven until ten today")]
    heldout = [("copy", "What time is breakfast served?"), ("other", "what time is dinner served"),
               ("inside", "breakfast is served from seven")]
    # rows shorter than n are one gram each: the copy matches, a phrase inside a longer row does not
    assert find_contaminated(train, heldout, n=50) == [Contaminated("copy", "t0", 1.0)]
    assert find_contaminated(train, heldout, n=3, threshold=0.5) == [Contaminated("copy", "t0", 1.0),
                                                                   Contaminated("inside", "t1", 1.0)]


def test_empty_rows_and_empty_sets(train):
    assert find_contaminated(train, [("empty", ""), ("punct", "?!")]) == []
    assert find_contaminated([], [("h", "some held out row")]) == []
    assert find_contaminated([("e", "")], [("h", "")]) == []
    assert find_contaminated(train, []) == []


def test_deterministic_and_in_heldout_order(train):
    heldout = [(f"h{i}", train[(i * 7) % 20][1]) for i in range(10)] + [("x", sentence(13, 30))]
    first = find_contaminated(train, heldout)
    second = find_contaminated(list(train), list(heldout))
    assert first == second
    assert [c.heldout_key for c in first] == [f"h{i}" for i in range(10)]
    # generators work too: each side is read once
    assert find_contaminated(iter(train), (row for row in heldout)) == first
    # batches do not change the answer
    assert NgramIndex(train, batch_size=3).contaminated(heldout, batch_size=4) == first


def test_gram_hashes_are_the_same_in_another_process(train):
    code = ("import json, sys; from data_prep.contamination import NgramIndex; "
            "train = json.loads(sys.stdin.read()); idx = NgramIndex([tuple(r) for r in train]); "
            "print(json.dumps(idx._hashes.tolist()))")
    env = {**os.environ, "PYTHONHASHSEED": "777"}
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, input=json.dumps(train),
                          capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == NgramIndex(train)._hashes.tolist()


def test_invalid_arguments(train):
    with pytest.raises(ValueError):
        find_contaminated(train, [], threshold=1.5)
    with pytest.raises(ValueError):
        find_contaminated(train, [], n=0)


@given(st.text(max_size=200), st.integers(min_value=1, max_value=12))
@settings(max_examples=100, deadline=None)
def test_any_text_is_fully_contaminated_by_itself(text, n):
    index = NgramIndex([("noise", "unrelated words only"), ("self", text)], n=n)
    overlap, key = index.overlap(text)
    if words(text):
        assert overlap == 1.0 and key in ("self", "noise")
        if not set(words(text)) & {"unrelated", "words", "only"}:
            assert key == "self"
    else:
        assert (overlap, key) == (0.0, None)
