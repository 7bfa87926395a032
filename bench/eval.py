"""`make bench-eval`: generation throughput of tailor's eval vs transformers' own batched generate and a per-row loop.

    python -m bench.eval [--rows N] [--batch-size 25] [--max-new-tokens 64] [--model DIR] [--no-record]

Same model (the demo's real SmolLM2-135M-Instruct unless --model, in the dtype eval generates in), same held-out
prompts of the demo task (prepared by the data stage into .cache/bench-eval/), same greedy settings and stop ids:

- tailor: `eval.generate`, what `make eval` runs: prompts sorted by length, left-padded batches of --batch-size.
- transformers batched: `model.generate` on batches of the same size, prompts in their original order, left padding
  (what a plain script does: each batch pads to its longest prompt and runs until its longest answer ends).
- per-row loop: one unpadded `model.generate` per prompt.

Answers are compared with the per-row loop's, row by row (mismatches reported: batched, left-padded math can flip a
near-tie token). Appends one table row to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.record import add_table_rows
from eval.generate import Generations

SECTION = "Eval generation: batched vs per-row generate (`make bench-eval`)"
INTRO = """Same model, held-out prompts of the demo task, greedy, same stop ids; tailor = `eval.generate` (sorted by
length, left-padded batches), transformers batched = `model.generate` on batches of the same size in the prompts'
original order (left padding), loop = one `model.generate` per row. Ratios = tailor tokens/s over each baseline's
(goal >= 4 against the loop on CPU); mismatches = answers that differ from the loop's."""
TABLE = ["| date | model | dtype | rows | batch | max new | tailor (sorted batches) | transformers batched (unsorted) "
         "| per-row loop | tailor / batched | tailor / loop | mismatches vs loop: tailor, batched |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]


def load_prompts(recipe_file: str, rows: int, model: str | None, sets: list[str]) -> tuple[Any, list[str]]:
    """The recipe (demo by default) and the first `rows` prompts of its first eval set, prepared (cached) by the
    data stage."""
    from data_prep.prepare import prepare
    from tailor.recipe import load_recipe

    overrides = ["output_dir=.cache/bench-eval/runs", "tracking.mode=disabled", *sets]
    if model:
        overrides += [f"model.name_or_path={Path(model).resolve()}", "model.gguf_file=null",
                      f"name=bench-{Path(model).name}"]
    recipe = load_recipe(recipe_file, overrides)
    prepare(recipe)
    from datasets import load_dataset

    from tailor.runs import run_paths

    first = run_paths(recipe).eval_set_data(recipe.data.set_names()[0])  # the demo's fixed test file
    heldout = load_dataset("parquet", data_files=str(first), split="train")
    prompts = [p for p in heldout["prompt"] if p][:rows]
    return recipe, prompts


def per_row_loop(model: Any, tokenizer: Any, prompts: list[str], settings: Any) -> tuple[list[str], int, float]:
    """The baseline: one unpadded `generate` call per row, as a plain script does it."""
    import torch

    from eval.generate import cut_at_stop, generated_length, generation_kwargs

    kwargs = generation_kwargs(model, tokenizer, settings)
    ends = set(kwargs["eos_token_id"])
    texts, tokens = [], 0
    started = time.perf_counter()
    with torch.inference_mode():
        for prompt in prompts:
            encoded = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
            new = model.generate(**encoded, **kwargs)[0, encoded["input_ids"].shape[1]:]
            texts.append(cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), settings.stop))
            tokens += generated_length(new.tolist(), ends)
    return texts, tokens, time.perf_counter() - started


def batched_unsorted(model: Any, tokenizer: Any, prompts: list[str], settings: Any) -> Generations:
    """transformers' batched generate as a plain script runs it: batches of `settings.batch_size` in the prompts'
    original order, left padding, the same decoding settings, stop ids and stop strings as `eval.generate`."""
    import torch

    from eval.generate import cut_at_stop, generated_length, generation_kwargs, stop_criteria

    tokenizer.padding_side = "left"
    kwargs = generation_kwargs(model, tokenizer, settings)
    ends = set(kwargs["eos_token_id"]) | {tokenizer.pad_token_id}
    texts: list[str] = []
    counts: list[int] = []
    model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, len(prompts), settings.batch_size):
            encoded = tokenizer(prompts[start:start + settings.batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(model.device)
            width = encoded["input_ids"].shape[1]
            extra = {"stopping_criteria": stop_criteria(tokenizer, settings.stop, width)} if settings.stop else {}
            new = model.generate(**encoded, **kwargs, **extra)[:, width:]
            texts += [cut_at_stop(t, settings.stop) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
            counts += [generated_length(ids, ends) for ids in new.tolist()]
    return Generations(texts, counts, time.perf_counter() - started)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from eval.generate import generate
    from tailor.models import load_model, load_tokenizer

    recipe, prompts = load_prompts(args.recipe, args.rows, args.model, args.set or [])
    settings = recipe.eval.model_copy(update={"batch_size": args.batch_size or recipe.eval.batch_size,
                                              "max_new_tokens": args.max_new_tokens or recipe.eval.max_new_tokens,
                                              "temperature": 0.0})
    tokenizer = load_tokenizer(recipe.model)
    model = load_model(recipe.model, for_generation=True)  # the dtype `make eval` generates in on this device
    per_row_loop(model, tokenizer, prompts[:1], settings.model_copy(update={"max_new_tokens": 2}))  # warm-up
    loop_texts, loop_tokens, loop_seconds = per_row_loop(model, tokenizer, prompts, settings)
    plain = batched_unsorted(model, tokenizer, prompts, settings)
    tailor = generate(model, tokenizer, prompts, settings, desc="tailor")
    mismatches = [i for i, (a, b) in enumerate(zip(tailor.texts, loop_texts)) if a != b]
    loop_speed = loop_tokens / loop_seconds if loop_seconds else 0.0

    def over(speed: float) -> float:
        return tailor.tokens_per_second / speed if speed else float("nan")

    return {"model": Path(recipe.model.name_or_path).name, "dtype": str(model.dtype).removeprefix("torch."),
            "rows": len(prompts), "batch": settings.batch_size, "max_new": settings.max_new_tokens,
            "tailor_tps": tailor.tokens_per_second, "tailor_seconds": tailor.seconds,
            "tailor_tokens": sum(tailor.new_tokens), "batched_tps": plain.tokens_per_second,
            "batched_seconds": plain.seconds, "batched_tokens": sum(plain.new_tokens), "loop_tps": loop_speed,
            "loop_seconds": loop_seconds, "loop_tokens": loop_tokens, "ratio_batched": over(plain.tokens_per_second),
            "ratio_loop": over(loop_speed), "mismatches": mismatches,
            "batched_mismatches": [i for i, (a, b) in enumerate(zip(plain.texts, loop_texts)) if a != b],
            "examples": [(i, tailor.texts[i], loop_texts[i]) for i in mismatches[:3]]}


def record(result: dict[str, Any], path: Path) -> None:
    """One table row in the eval-generation section of BENCHMARKS.md; a new table (under the older ones) when the
    section's tables have other columns."""
    r = result
    row = (f"| {date.today().isoformat()} | {r['model']} | {r['dtype']} | {r['rows']} | {r['batch']} | "
           f"{r['max_new']} | {r['tailor_tps']:.1f} tok/s | {r['batched_tps']:.1f} tok/s | {r['loop_tps']:.1f} tok/s | "
           f"{r['ratio_batched']:.2f} | {r['ratio_loop']:.2f} | {len(r['mismatches'])}, "
           f"{len(r['batched_mismatches'])} of {r['rows']} |")
    add_table_rows(path, SECTION, INTRO, TABLE, [row])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.eval", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/hotel-demo.yaml")
    parser.add_argument("--rows", type=int, default=98, help="held-out rows (the demo has 98)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's eval.batch_size")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: the recipe's eval.max_new_tokens")
    parser.add_argument("--model", help="a model folder instead of the recipe's model (tests: a tiny checkpoint)")
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="extra recipe override")
    parser.add_argument("--benchmarks", default="BENCHMARKS.md", help="file the result is appended to")
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to BENCHMARKS.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = run(args)
    print(f"{result['rows']} rows, batch {result['batch']}, max_new_tokens {result['max_new']}, {result['dtype']} "
          f"({platform.machine()}, {os.cpu_count()} CPUs)")
    for label, key in (("tailor (sorted batches)", "tailor"), ("transformers batched", "batched"),
                       ("per-row loop", "loop")):
        print(f"{label:24} {result[key + '_tokens']:>6} tokens in {result[key + '_seconds']:6.1f} s = "
              f"{result[key + '_tps']:.1f} tok/s")
    print(f"ratio tailor/batched: {result['ratio_batched']:.2f}x, tailor/loop: {result['ratio_loop']:.2f}x; output "
          f"mismatches under greedy vs the loop: tailor {len(result['mismatches'])}, batched "
          f"{len(result['batched_mismatches'])} of {result['rows']}")
    for i, a, b in result["examples"]:
        print(f"  row {i}: batched {a[:80]!r}\n         loop    {b[:80]!r}")
    if not args.no_record:
        record(result, Path(args.benchmarks))
        print(f"appended to {args.benchmarks}")
    return result


if __name__ == "__main__":
    main()
