"""`make bench-eval`: generation throughput of tailor's batched eval vs a per-row `model.generate` loop.

    python -m eval.bench [--rows N] [--batch-size 25] [--max-new-tokens 64] [--model DIR] [--no-record]

Same model (the demo's real SmolLM2-135M-Instruct unless --model), same held-out prompts of the demo task (prepared
by the data stage into .cache/bench-eval/), same greedy settings and stop ids. Outputs are compared row by row
(mismatches reported: batched, left-padded fp32 math can flip a near-tie token). Appends to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path
from typing import Any

SECTION = "Eval generation: batched vs per-row generate (`make bench-eval`)"
INTRO = """Same model, held-out prompts of the demo task, greedy, same stop ids; tailor = `eval.generate` (sorted by length,
left-padded batches), loop = one `model.generate` per row. Ratio = tailor tokens/s / loop tokens/s (goal >= 4 on CPU).

| date | model | rows | batch | max new | tailor | loop | ratio | output mismatches |
|---|---|---|---|---|---|---|---|---|
"""


def load_prompts(recipe_file: str, rows: int, model: str | None, sets: list[str]) -> tuple[Any, list[str]]:
    """The recipe (demo by default) and its first `rows` held-out prompts, prepared (cached) by the data stage."""
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

    heldout = load_dataset("parquet", data_files=str(run_paths(recipe).heldout_data), split="train")
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from eval.generate import generate
    from tailor.models import load_model, load_tokenizer

    recipe, prompts = load_prompts(args.recipe, args.rows, args.model, args.set or [])
    settings = recipe.eval.model_copy(update={"batch_size": args.batch_size or recipe.eval.batch_size,
                                              "max_new_tokens": args.max_new_tokens or recipe.eval.max_new_tokens,
                                              "temperature": 0.0})
    tokenizer = load_tokenizer(recipe.model)
    model = load_model(recipe.model)
    per_row_loop(model, tokenizer, prompts[:1], settings.model_copy(update={"max_new_tokens": 2}))  # warm-up
    loop_texts, loop_tokens, loop_seconds = per_row_loop(model, tokenizer, prompts, settings)
    batched = generate(model, tokenizer, prompts, settings, desc="tailor")
    mismatches = [i for i, (a, b) in enumerate(zip(batched.texts, loop_texts)) if a != b]
    loop_speed = loop_tokens / loop_seconds
    return {"model": Path(recipe.model.name_or_path).name, "rows": len(prompts), "batch": settings.batch_size,
            "max_new": settings.max_new_tokens, "tailor_tps": batched.tokens_per_second,
            "tailor_seconds": batched.seconds, "tailor_tokens": sum(batched.new_tokens), "loop_tps": loop_speed,
            "loop_seconds": loop_seconds, "loop_tokens": loop_tokens,
            "ratio": batched.tokens_per_second / loop_speed if loop_speed else float("nan"),
            "mismatches": mismatches, "examples": [(i, batched.texts[i], loop_texts[i]) for i in mismatches[:3]]}


def record(result: dict[str, Any], path: Path) -> None:
    """One table row in the eval-generation section of BENCHMARKS.md."""
    from tailor.benchmarks import add_to_section

    row = (f"| {date.today().isoformat()} | {result['model']} | {result['rows']} | {result['batch']} | "
           f"{result['max_new']} | {result['tailor_tps']:.1f} tok/s | {result['loop_tps']:.1f} tok/s | "
           f"{result['ratio']:.2f} | {len(result['mismatches'])} of {result['rows']} |")
    add_to_section(path, SECTION, INTRO, [row], into_table=True)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    print(f"{result['rows']} rows, batch {result['batch']}, max_new_tokens {result['max_new']} "
          f"({platform.machine()}, {os.cpu_count()} CPUs)")
    print(f"tailor batched: {result['tailor_tokens']} tokens in {result['tailor_seconds']:.1f} s = "
          f"{result['tailor_tps']:.1f} tok/s")
    print(f"per-row loop:   {result['loop_tokens']} tokens in {result['loop_seconds']:.1f} s = "
          f"{result['loop_tps']:.1f} tok/s")
    print(f"ratio: {result['ratio']:.2f}x; output mismatches under greedy: {len(result['mismatches'])} of "
          f"{result['rows']}")
    for i, a, b in result["examples"]:
        print(f"  row {i}: batched {a[:80]!r}\n         loop    {b[:80]!r}")
    if not args.no_record:
        record(result, Path(args.benchmarks))
        print(f"appended to {args.benchmarks}")
    return result


if __name__ == "__main__":
    main()
