"""Near-duplicate filter throughput on synthetic rows: `python -m bench.near_dup [--rows 50000] [--one-by-one]`."""

from __future__ import annotations

import argparse
import random
import time

from data_prep.near_dup import NearDupFilter


def synthetic_rows(n: int, words_per_row: int = 30, dup_fraction: float = 0.1,
                   seed: int = 0) -> list[tuple[str, str]]:
    """n (key, text) rows of random words from a 20k vocabulary; about `dup_fraction` of them are an earlier
    row with one word changed."""
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.near_dup", description=__doc__.split(":")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--words", type=int, default=30)
    parser.add_argument("--threshold", type=float, default=0.85)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--one-by-one", action="store_true", help="call add() per row instead of add_many()")
    args = parser.parse_args(argv)
    rows = synthetic_rows(args.rows, args.words)
    filt = NearDupFilter(threshold=args.threshold, num_perm=args.num_perm)
    start = time.perf_counter()
    results = [filt.add(key, text) for key, text in rows] if args.one_by_one else filt.add_many(rows)
    seconds = time.perf_counter() - start
    dups = sum(r is not None for r in results)
    print(f"{args.rows} rows x {args.words} words: {seconds:.2f} s, {args.rows / seconds:,.0f} rows/s, "
          f"{dups} near-duplicates, bands x rows = {filt.bands} x {filt.rows}")


if __name__ == "__main__":
    main()
