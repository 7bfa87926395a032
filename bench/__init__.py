"""Benchmarks, apart from the runtime stages: `python -m bench.train` (training throughput), `bench.eval`
(generation), `bench.data` (data preparation), `bench.near_dup` (the near-duplicate filter); all record into
BENCHMARKS.md through `bench.record`."""
