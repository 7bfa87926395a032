"""Honest base-vs-tuned comparison on the same rows: paired bootstrap confidence intervals and worst regressions."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

# Elements of the (resamples, n) index matrix drawn at once; bounds memory to ~32 MB of int64 indices.
_CHUNK_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class PairedComparison:
    """Result of ``paired_bootstrap``: ``delta = tuned_mean - base_mean`` over the ``n`` rows with both scores, its
    percentile interval ``[ci_low, ci_high]``, and the rows where tuned scored higher / lower / the same."""

    metric: str
    base_mean: float
    tuned_mean: float
    delta: float
    ci_low: float
    ci_high: float
    excludes_zero: bool
    n: int
    excluded: int
    better: int
    worse: int
    same: int
    confidence: float
    resamples: int
    seed: int

    def summary(self) -> str:
        """One line, e.g. ``token_f1: 0.412 -> 0.468 (+0.056, 95% CI [+0.031, +0.080], n=500, 2 excluded; ...)``."""
        verdict = ("significant" if self.excludes_zero else "not significant") + f" at {self.confidence:.0%}"
        excluded = f", {self.excluded} excluded" if self.excluded else ""
        name = f"{self.metric}: " if self.metric else ""
        return (f"{name}{self.base_mean:.4f} -> {self.tuned_mean:.4f} ({self.delta:+.4f}, "
                f"{self.confidence:.0%} CI [{self.ci_low:+.4f}, {self.ci_high:+.4f}], n={self.n}{excluded}; "
                f"better {self.better}, worse {self.worse}, same {self.same}; {verdict})")


def _missing(value: float | None) -> bool:
    return value is None or (isinstance(value, (float, np.floating)) and math.isnan(value))


def _paired(base: Sequence[float | None], tuned: Sequence[float | None], who: str) -> tuple[list[int], int]:
    """Indices of rows with both scores present, and the number excluded."""
    if len(base) != len(tuned):
        raise ValueError(f"{who}: base has {len(base)} scores but tuned has {len(tuned)}; "
                         f"they must be scored on the same rows")
    keep = [i for i, (b, t) in enumerate(zip(base, tuned)) if not (_missing(b) or _missing(t))]
    return keep, len(base) - len(keep)


def paired_bootstrap(base: Sequence[float | None], tuned: Sequence[float | None], metric: str = "",
                     resamples: int = 10_000, confidence: float = 0.95, seed: int = 0) -> PairedComparison:
    """Paired bootstrap of the mean per-row difference ``tuned - base`` (rows with a None or NaN score on either side
    excluded): the same resampled row indices for both sides, numpy in chunks, seeded with ``default_rng(seed)``."""
    if not 0 < confidence < 1:
        raise ValueError(f"paired_bootstrap: confidence must be in (0, 1), got {confidence}")
    if resamples < 1:
        raise ValueError(f"paired_bootstrap: resamples must be >= 1, got {resamples}")
    keep, excluded = _paired(base, tuned, "paired_bootstrap")
    n = len(keep)
    if n == 0:
        raise ValueError(f"paired_bootstrap{f' ({metric})' if metric else ''}: no rows with both a base and a tuned "
                         f"score ({len(base)} rows given, {excluded} excluded for a missing score)")
    b = np.asarray([base[i] for i in keep], dtype=np.float64)
    t = np.asarray([tuned[i] for i in keep], dtype=np.float64)
    diffs = t - b

    rng = np.random.default_rng(seed)
    means = np.empty(resamples, dtype=np.float64)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, chunk):
        stop = min(start + chunk, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = diffs[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    ci_low, ci_high = (float(q) for q in np.quantile(means, [alpha, 1.0 - alpha]))

    return PairedComparison(metric=metric, base_mean=float(b.mean()), tuned_mean=float(t.mean()),
                            delta=float(diffs.mean()), ci_low=ci_low, ci_high=ci_high,
                            excludes_zero=bool(ci_low > 0 or ci_high < 0), n=n, excluded=excluded,
                            better=int((diffs > 0).sum()), worse=int((diffs < 0).sum()), same=int((diffs == 0).sum()),
                            confidence=confidence, resamples=resamples, seed=seed)


def worst_regressions(ids: Sequence[str], base: Sequence[float | None], tuned: Sequence[float | None],
                      k: int = 5) -> list[tuple[str, float, float]]:
    """Up to ``k`` rows where tuned scored lower than base, ``(id, base_score, tuned_score)``, biggest drop first
    (ties in input order); rows with a missing score are skipped."""
    if not len(ids) == len(base) == len(tuned):
        raise ValueError(f"worst_regressions: {len(ids)} ids, {len(base)} base and {len(tuned)} tuned scores; "
                         f"lengths must match")
    if k < 0:
        raise ValueError(f"worst_regressions: k must be >= 0, got {k}")
    keep, _ = _paired(base, tuned, "worst_regressions")
    drops = [(float(base[i]) - float(tuned[i]), i) for i in keep if tuned[i] < base[i]]
    drops.sort(key=lambda d: -d[0])  # stable: equal drops stay in input order
    return [(ids[i], float(base[i]), float(tuned[i])) for _, i in drops[:k]]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (for a 0/1 metric of one model): sound at 0, 1 and small n."""
    from statistics import NormalDist

    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)
