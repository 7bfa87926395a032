"""`make bench-data`: tailor's full prepare vs trl's own SFT dataset preparation, on the same generated rows.

    python -m bench.data [--rows 200000] [--procs 1 2] [--no-record]

tailor's prepare does everything the data stage does (read, map, PII redaction, exact and near-dup removal, split,
chat-template render with masks, contamination check, audit, write). trl's side is `SFTTrainer`'s dataset
preparation of the same conversations (chat template + tokenization, what a plain trl script runs), timed without
the model load. Both use the real Qwen tokenizer of the tiny Qwen2.5 checkpoint. Results append to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from datetime import date
from pathlib import Path

from bench.record import add_table_rows

SECTION = "Data preparation: tailor vs trl (`make bench-data`)"
TABLE = ["| date | rows | processes | tailor | trl | ratio |", "|---|---|---|---|---|---|"]
TOPICS = ["booking", "invoice", "refund", "room service", "parking", "late checkout", "spa", "breakfast", "wifi"]


def generate_rows(path: Path, rows: int, seed: int = 0) -> None:
    """Synthetic support chats of realistic, varied length; ~1% exact duplicates and ~1% with PII."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    with path.open("w", encoding="utf-8") as handle:
        previous = []
        for i in range(rows):
            if previous and rng.random() < 0.01:
                handle.write(rng.choice(previous))
                continue
            question = " ".join(rng.choice(words) for _ in range(rng.randint(5, 60)))
            answer = " ".join(rng.choice(words) for _ in range(rng.randint(5, 120)))
            if rng.random() < 0.01:
                question += f" reach me at guest{i}@example.com"
            row = {"messages": [{"role": "user", "content": f"About {rng.choice(TOPICS)} #{i}: {question}"},
                                {"role": "assistant", "content": answer}]}
            line = json.dumps(row) + "\n"
            previous = (previous + [line])[-100:]
            handle.write(line)


def time_tailor(data: Path, model: Path, out: Path, procs: int) -> tuple[float, int]:
    from data_prep.prepare import prepare
    from tailor.recipe import load_recipe

    recipe_file = out / f"bench-{procs}.yaml"
    recipe_file.write_text(json.dumps({
        "name": f"bench-{procs}", "output_dir": str((out / "runs").resolve()), "model": {"name_or_path": str(model)},
        "data": {"sources": [{"path": str(data.resolve())}], "num_proc": procs, "system_prompt": "You are a hotel assistant."},
        "training": {"max_length": 1024}, "tracking": {"mode": "disabled"}}))
    recipe = load_recipe(recipe_file)
    started = time.perf_counter()
    manifest = prepare(recipe, force=True)
    seconds = time.perf_counter() - started
    return seconds, manifest["tokens"]["train_total"] + manifest["tokens"]["heldout_total"]


def time_trl(data: Path, model: Path, out: Path, procs: int) -> tuple[float, int]:
    from datasets import disable_caching, load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model)
    llm = AutoModelForCausalLM.from_pretrained(model)
    disable_caching()  # else a second run reads trl's earlier result from the datasets cache
    started = time.perf_counter()
    dataset = load_dataset("json", data_files=str(data), split="train")
    args = SFTConfig(output_dir=str(out / "trl"), use_cpu=True, bf16=False, report_to=[], max_length=1024,
                     dataset_num_proc=procs if procs > 1 else None, gradient_checkpointing=False)
    trainer = SFTTrainer(model=llm, args=args, train_dataset=dataset, processing_class=tokenizer)
    seconds = time.perf_counter() - started
    return seconds, sum(len(ids) for ids in trainer.train_dataset["input_ids"])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.data", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-record", action="store_true", help="print only, do not append to BENCHMARKS.md")
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

    from tests.tiny_models import ensure_tiny_model

    model = ensure_tiny_model("qwen2.5")
    out = Path(".cache/bench-data")
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"chats-{args.rows}.jsonl"
    if not data.exists():
        generate_rows(data, args.rows)
    lines = []
    for procs in args.procs:
        t_seconds, t_tokens = time_tailor(data, model, out, procs)
        b_seconds, b_tokens = time_trl(data, model, out, procs)
        line = (f"| {date.today()} | {args.rows} | {procs} | {args.rows / t_seconds:,.0f} rows/s, "
                f"{t_tokens / t_seconds:,.0f} tok/s | {args.rows / b_seconds:,.0f} rows/s, "
                f"{b_tokens / b_seconds:,.0f} tok/s | {b_seconds / t_seconds:.2f} |")
        print(line, flush=True)
        lines.append(line)
    if not args.no_record:
        record(lines)


def record(lines: list[str]) -> None:
    """Table rows in the data-preparation section of BENCHMARKS.md."""
    intro = (f"Machine: {os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, Python "
             f"{platform.python_version()}. tailor = full prepare (read, PII, exact + near dedup, split, render "
             "with masks, contamination, audit, write); trl = SFTTrainer dataset preparation (template + "
             "tokenize). Ratio = trl time / tailor time (> 1: tailor faster).")
    add_table_rows(Path("BENCHMARKS.md"), SECTION, intro, TABLE, lines)


if __name__ == "__main__":
    main()
