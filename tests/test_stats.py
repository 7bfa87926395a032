"""Paired bootstrap and worst regressions: clear differences detected, no difference not invented, reproducible,
missing scores excluded and counted. Timing is deliberately not asserted."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import eval.stats as stats
from eval.stats import PairedComparison, paired_bootstrap, worst_regressions


def test_clear_improvement_is_detected() -> None:
    rng = np.random.default_rng(0)
    base = rng.random(200)
    tuned = base + 1 + rng.normal(0, 0.3, 200)
    result = paired_bootstrap(base.tolist(), tuned.tolist(), metric="score")
    assert result.delta == pytest.approx(float(np.mean(tuned - base)))
    assert result.delta == pytest.approx(1.0, abs=0.1)
    assert result.excludes_zero
    assert 0.8 < result.ci_low < result.delta < result.ci_high < 1.2
    assert result.n == 200 and result.excluded == 0
    assert result.better + result.worse + result.same == 200
    assert result.better > 190
    assert (result.metric, result.resamples, result.confidence, result.seed) == ("score", 10_000, 0.95, 0)


def test_clear_regression_is_detected() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(200)
    result = paired_bootstrap(base, base - 0.5 + rng.normal(0, 0.2, 200))
    assert result.excludes_zero and result.ci_high < 0


def test_identical_scores_give_zero_delta_and_interval() -> None:
    base = np.random.default_rng(2).random(150).tolist()
    result = paired_bootstrap(base, list(base))
    assert result.delta == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.ci_low <= 0 <= result.ci_high
    assert not result.excludes_zero
    assert (result.better, result.worse, result.same) == (0, 0, 150)
    assert result.base_mean == result.tuned_mean


def test_pure_noise_interval_contains_zero() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(400)
    tuned = base + rng.normal(0, 0.2, 400)
    result = paired_bootstrap(base, tuned)
    assert result.ci_low < 0 < result.ci_high
    assert not result.excludes_zero


def test_swapped_scores_have_zero_mean_difference() -> None:
    # Half the rows go up by as much as the other half go down: delta is exactly 0, interval straddles it.
    rng = np.random.default_rng(4)
    x, y = rng.random(100), rng.random(100)
    result = paired_bootstrap(np.concatenate([x, y]), np.concatenate([y, x]))
    assert result.delta == pytest.approx(0.0, abs=1e-12)
    assert result.ci_low < 0 < result.ci_high
    assert result.better == result.worse


def test_binary_scores_hand_checked() -> None:
    base = [0, 1, 0.5, 0.5, 1]
    tuned = [1, 0, 0.5, 0.7, 1]
    result = paired_bootstrap(base, tuned, resamples=2_000)
    assert result.base_mean == pytest.approx(0.6)
    assert result.tuned_mean == pytest.approx(0.64)
    assert result.delta == pytest.approx(0.04)
    assert (result.better, result.worse, result.same) == (2, 1, 2)
    assert result.ci_low <= result.delta <= result.ci_high
    # each resampled mean difference is an average of 5 values in [-1, 1]
    assert -1 <= result.ci_low and result.ci_high <= 1


def test_same_seed_reproducible_different_seed_slightly_different() -> None:
    rng = np.random.default_rng(5)
    base = rng.random(300)
    tuned = base + 0.05 + rng.normal(0, 0.3, 300)
    first = paired_bootstrap(base, tuned, seed=11)
    again = paired_bootstrap(base.tolist(), tuned.tolist(), seed=11)
    other = paired_bootstrap(base, tuned, seed=12)
    assert first == again
    assert other.seed == 12 and (other.ci_low, other.ci_high) != (first.ci_low, first.ci_high)
    assert other.delta == first.delta
    assert abs(other.ci_low - first.ci_low) < 0.01 and abs(other.ci_high - first.ci_high) < 0.01


def test_matches_straightforward_implementation_and_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(6)
    base, tuned = rng.random(37), rng.random(37)
    result = paired_bootstrap(base, tuned, resamples=500, confidence=0.9, seed=3)

    draws = np.random.default_rng(3).integers(0, 37, size=(500, 37))
    means = [(tuned[row] - base[row]).mean() for row in draws]
    low, high = np.quantile(means, [0.05, 0.95])
    assert (result.ci_low, result.ci_high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))

    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 37 * 7)  # 7 resamples per chunk, last chunk partial
    assert paired_bootstrap(base, tuned, resamples=500, confidence=0.9, seed=3) == result


def test_wider_interval_at_higher_confidence() -> None:
    rng = np.random.default_rng(7)
    base, tuned = rng.random(100), rng.random(100)
    narrow = paired_bootstrap(base, tuned, confidence=0.8)
    wide = paired_bootstrap(base, tuned, confidence=0.99)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high


def test_missing_scores_excluded_before_resampling() -> None:
    base = [1.0, None, 0.5, 1.0, float("nan"), 0.0]
    tuned = [1.0, 0.2, None, 0.0, 1.0, 1.0]
    result = paired_bootstrap(base, tuned)
    assert result.n == 3 and result.excluded == 3
    assert result.base_mean == pytest.approx(2 / 3)
    assert result.tuned_mean == pytest.approx(2 / 3)
    assert (result.better, result.worse, result.same) == (1, 1, 1)


def test_single_row_gives_degenerate_interval() -> None:
    result = paired_bootstrap([0.2], [0.7])
    assert result.n == 1
    assert result.ci_low == pytest.approx(0.5) and result.ci_high == pytest.approx(0.5)


def test_errors() -> None:
    with pytest.raises(ValueError, match="base has 2 scores but tuned has 3"):
        paired_bootstrap([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match=r"no rows with both a base and a tuned score \(2 rows given, 2 excluded"):
        paired_bootstrap([None, 1.0], [0.5, None], metric="f1")
    with pytest.raises(ValueError, match="no rows"):
        paired_bootstrap([], [])
    with pytest.raises(ValueError, match="confidence"):
        paired_bootstrap([1], [1], confidence=1.0)
    with pytest.raises(ValueError, match="resamples"):
        paired_bootstrap([1], [1], resamples=0)


def test_result_is_frozen_and_summarised() -> None:
    result = paired_bootstrap([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], metric="exact_match", resamples=1_000)
    assert isinstance(result, PairedComparison)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.delta = 0.0  # type: ignore[misc]
    text = result.summary()
    assert text.startswith("exact_match: 0.6667 -> 1.0000 (+0.3333, 95% CI")
    assert "n=3" in text and "better 1, worse 0, same 2" in text
    assert all(math.isfinite(v) for v in (result.ci_low, result.ci_high))


def test_large_input_runs() -> None:
    # 10k resamples on 1,000 rows (the documented target); correctness only, no timing assertion.
    rng = np.random.default_rng(8)
    base = rng.random(1_000)
    result = paired_bootstrap(base, base + 0.01)
    assert result.delta == pytest.approx(0.01)
    assert result.ci_low == pytest.approx(0.01) and result.ci_high == pytest.approx(0.01)


# ----------------------------------------------------------------------------------------------- regressions


def test_worst_regressions_ordered_by_drop() -> None:
    ids = ["a", "b", "c", "d", "e", "f"]
    base = [1.0, 0.5, 0.9, 0.2, 1.0, 0.8]
    tuned = [0.0, 0.6, 0.4, 0.2, 0.5, 0.7]
    # drops: a 1.0, c 0.5, e 0.5 (tie: input order), f 0.1; b improved, d unchanged
    assert worst_regressions(ids, base, tuned, k=3) == [("a", 1.0, 0.0), ("c", 0.9, 0.4), ("e", 1.0, 0.5)]
    assert [r[0] for r in worst_regressions(ids, base, tuned)] == ["a", "c", "e", "f"]  # fewer than k=5
    assert worst_regressions(ids, base, tuned, k=0) == []


def test_worst_regressions_none_when_no_drop_and_skips_missing() -> None:
    assert worst_regressions(["x", "y"], [0.1, 0.2], [0.1, 0.9]) == []
    assert worst_regressions(["x", "y", "z"], [1.0, None, 1.0], [0.0, 0.0, None]) == [("x", 1.0, 0.0)]


def test_worst_regressions_errors() -> None:
    with pytest.raises(ValueError, match="lengths must match"):
        worst_regressions(["x"], [1.0, 0.0], [0.0, 1.0])
    with pytest.raises(ValueError, match="k must be >= 0"):
        worst_regressions(["x"], [1.0], [0.0], k=-1)
