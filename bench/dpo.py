"""`make bench` (after the SFT rows): DPO training throughput of tailor's defaults vs plain trl tuned by hand.

    python -m bench.dpo [--model tiny|test|qwen2.5-0.5b|...] [--seq N] [--steps N] [--warmup N] [--batch N]
                        [--no-record]

Both rows train the same LoRA adapter (the recipe's peft section) with DPO for a fixed number of steps on the same
synthetic preference pairs: a prompt and two completions per pair, each of a seeded log-normal length (median
seq/16, sigma 1; the prompt clipped to [16, seq/2], each completion to [16, seq - prompt], so no side is
truncated), random token ids, each completion ending with the tokenizer's EOS. The ids are drawn from the
vocabulary's whole-word tokens (a space and ASCII letters) that tokenize back to themselves, so the same pairs
written as text tokenize back to exactly the same ids.

- tailor: a recipe with `training.method: dpo` and tailor's defaults (dpo section: beta 0.1, sigmoid loss), its
  trainer built by `train.run.build_trainer` exactly as `make train` builds it; the pairs are written as the run's
  prepared data (`prompt_ids`, `chosen_ids`, `rejected_ids` token columns in train.parquet, with a manifest, as
  bench/train.py installs its SFT rows), which tailor's DPOTrainer takes unchanged.
- trl-tuned: plain trl (`from_pretrained` with sdpa, peft `LoraConfig` with the same adapter, `DPOTrainer`) with
  the switches a competent user sets by hand, like for like with the tailor row (bench.train.tuned_switches): the
  same precision (bf16/fp16 autocast, weights dtype), optimizer, Liger choice, micro batch, grad accum, max_length,
  gradient checkpointing setting, and the same beta, loss type, label smoothing and seeds (so the same pairs in the
  same batches). It is given the pairs as **text** (prompt, chosen, rejected columns), as a trl script would be;
  trl tokenizes them while the trainer is built, before the timed steps (not counted), and the row checks that it
  got back exactly tailor's ids (`same tokens` in the output). What is left between the two is tailor's own:
  `compact_lm_head` on CPUs (trl compacts the LM head itself on GPUs, with Triton), shown in the settings column.

Each row runs in its own process (bench.train.run_isolated). Reported: tokens/s = the non-padding prompt +
completion tokens of both the chosen and the rejected sequences (the trainer's input tokens without padding) per
second over the steps after the warmup, the median step time, peak memory (the process's peak RSS on CPU,
torch.cuda.max_memory_allocated on GPUs) and tailor/trl-tuned. Results append to BENCHMARKS.md, in their own
section, unless --no-record.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

from bench import train as sft
from bench.record import add_to_section
from tailor.errors import TailorError

SECTION = "DPO training throughput: tailor vs plain trl (`make bench`, bench/dpo.py)"
INTRO = ("Compare like with like: the baseline gets the same switches a competent user would set. Same LoRA adapter, "
         "same synthetic preference pairs (seeded log-normal prompt and completion lengths, random whole-word token "
         "ids, each completion ending with EOS), DPO with tailor's defaults (beta 0.1, sigmoid loss). Rows: **tailor "
         "defaults** = a recipe with training.method dpo and tailor's defaults, trainer built by "
         "train.run.build_trainer from the pairs installed as the run's prepared token columns (prompt_ids, "
         "chosen_ids, rejected_ids); **trl tuned by hand** = plain trl DPOTrainer (from_pretrained, the same "
         "LoraConfig, sdpa) with the same precision, optimizer, micro batch, grad accum, max_length, beta, loss type "
         "and gradient checkpointing setting, given the same pairs as text, which trl tokenizes back to the same ids "
         "before the timed steps (what tailor adds on top is its settings column's difference: compact_lm_head on "
         "CPUs). tokens/s = non-padding prompt + completion tokens of the chosen and the rejected sequences after "
         "the warmup steps; peak memory = peak RSS of the row's process on CPU, torch.cuda.max_memory_allocated on "
         "GPUs.")
SIDES = ("tailor", "trl-tuned")
LABELS = {"tailor": "tailor defaults", "trl-tuned": "trl tuned by hand"}
# the tailor recipe (bench.train.bench_recipe_file) as a DPO run on preference data
DPO_OVERRIDES = ["name=bench-dpo", "training.method=dpo", "data.sources.0.format=preference"]
LENGTH_FLOOR = 16


# ------------------------------------------------------------------------------------------------ pairs

def pair_lengths(rows: int, seq: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) lengths: log-normal, median seq/16, sigma 1; the prompt clipped to
    [16, seq/2], each completion to [16, seq - prompt] (prompt + completion fits max_length: nothing truncated)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    draw = lambda: rng.lognormal(mean=math.log(seq / 16), sigma=1.0, size=rows)  # noqa: E731
    prompt = np.clip(draw(), LENGTH_FLOOR, seq // 2).astype(int)
    chosen = np.clip(draw(), LENGTH_FLOOR, seq - prompt).astype(int)
    rejected = np.clip(draw(), LENGTH_FLOOR, seq - prompt).astype(int)
    return [(int(p), int(c), int(r)) for p, c, r in zip(prompt, chosen, rejected)]


def word_tokens(tokenizer: Any) -> list[int]:
    """Ids of the whole-word tokens (a space, then two or more ASCII letters) that tokenize back to themselves:
    text made of them tokenizes to the same ids, whatever their order."""
    import re

    ids = range(min(len(tokenizer), sft.TOKEN_ID_LIMIT))
    candidates = [(i, " " + t[1:]) for i, t in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)))
                  if t and re.fullmatch(r"\u0120[A-Za-z]{2,}", t)]
    encoded = tokenizer([text for _, text in candidates], add_special_tokens=False)["input_ids"]
    return [i for (i, _), back in zip(candidates, encoded) if back == [i]]


def write_pairs(ids_path: Path, text_path: Path, lengths: list[tuple[int, int, int]], model_dir: Path,
                seed: int = 0) -> None:
    """The pairs as prepared token columns (prompt_ids, chosen_ids, rejected_ids: the tailor row's train.parquet)
    and as text (prompt, chosen, rejected: what the plain trl row is given); completions end with EOS."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab = np.array(word_tokens(tokenizer), dtype=np.int64)
    rng = np.random.default_rng(seed + 1)
    eos = tokenizer.eos_token_id
    ids: dict[str, list[list[int]]] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
    for prompt, chosen, rejected in lengths:
        ids["prompt_ids"].append(rng.choice(vocab, prompt).tolist())
        ids["chosen_ids"].append([*rng.choice(vocab, chosen - 1).tolist(), eos])
        ids["rejected_ids"].append([*rng.choice(vocab, rejected - 1).tolist(), eos])
    text = {name.removesuffix("_ids"): tokenizer.batch_decode(rows) for name, rows in ids.items()}
    ids_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(ids), ids_path)
    pq.write_table(pa.table(text), text_path)


# ------------------------------------------------------------------------------------------------ one row

def trl_tuned_trainer(spec: dict[str, Any], recipe: Any) -> Any:
    """Plain trl DPOTrainer tuned by hand like the tailor row (bench.train.tuned_switches, the recipe's dpo
    settings and seeds), on the pairs as text: trl tokenizes them here, before training."""
    from datasets import load_dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from train import lm_head

    lm_head.disable()  # trl's own LM-head rule, also after a tailor row in this process (--in-process)
    dpo, seed = recipe.method_settings(), recipe.training.seed
    args = DPOConfig(output_dir=str(Path(spec["workdir"]) / "trl-tuned"), beta=dpo.beta, loss_type=[dpo.loss_type],
                     label_smoothing=dpo.label_smoothing, seed=seed, data_seed=seed,
                     **sft.tuned_switches(spec, recipe))
    return DPOTrainer(model=sft.tuned_model(spec, recipe), args=args,
                      train_dataset=load_dataset("parquet", data_files=spec["text"], split="train"),
                      processing_class=AutoTokenizer.from_pretrained(spec["model_dir"]),
                      peft_config=sft.tuned_lora(recipe))


# tailor: train.run.build_trainer on the pairs installed as the run's prepared data (spec["data"])
TRAINERS = {"tailor": sft.tailor_trainer, "trl-tuned": trl_tuned_trainer}


def same_tokens(trainer: Any, ids_path: Path) -> bool:
    """Whether the trainer's dataset holds exactly the prepared pairs' token ids (trl re-tokenized the text)."""
    import pyarrow.parquet as pq

    columns = ("prompt_ids", "chosen_ids", "rejected_ids")
    prepared = pq.read_table(ids_path, columns=list(columns)).to_pydict()
    return all(list(trainer.train_dataset[name]) == prepared[name] for name in columns)


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one DPO trainer (tailor or trl-tuned), train warmup + steps, and measure (bench.train.timed_train)."""
    result: dict[str, Any] = {"side": spec["side"], "method": spec["method"]}
    recipe = sft.tailor_recipe(spec, plan=False)
    trainer = TRAINERS[spec["side"]](spec, recipe)
    args = trainer.args
    result["settings"] = {**sft.trainer_settings(trainer), "max_length": args.max_length, "beta": args.beta,
                          "loss_type": "+".join(args.loss_type)}
    result["dtype"] = sft.compute_dtype(trainer)
    result["same_tokens"] = same_tokens(trainer, Path(spec["data"]))
    sft.timed_train(trainer, spec, result)
    return result


# ------------------------------------------------------------------------------------------------ the whole run

# CPU: the small model, short pairs, few steps (the two rows in about a minute on 2 cores); GPU: Qwen2.5-0.5B at
# 2048 (not measured yet)
DEFAULTS = {False: {"model": "tiny", "seq": 256, "steps": 3, "warmup": 1},
            True: {"model": "qwen2.5-0.5b", "seq": 2048, "steps": 20, "warmup": 3}}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.dpo", description=__doc__.splitlines()[0])
    sft.add_run_args(parser, DEFAULTS, "max_length; prompt + completion fit in it")
    parser.add_argument("--batch", type=int, help="pairs per micro batch for both rows (default: tailor's, 4)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    parser.add_argument("--benchmarks", type=Path, default=sft.BENCHMARKS, metavar="FILE",
                        help="the file results are appended to (default BENCHMARKS.md)")
    parser.add_argument("--in-process", action="store_true", help="run the rows in this process (tests, "
                        "debugging; peak memory is then cumulative)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns one result dict per row (a worker process returns none)."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if args.worker:
        sft.worker(args.worker, run=run_row)
        return []
    try:
        return bench(args, argv if argv is not None else sys.argv[1:])
    except TailorError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def bench(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    import torch

    for key, value in DEFAULTS[torch.cuda.is_available()].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seq < 4 * LENGTH_FLOOR or args.steps < 1 or args.warmup < 0 or (args.batch is not None and args.batch < 1):
        raise TailorError(f"--seq must be at least {4 * LENGTH_FLOOR}, --steps and --batch at least 1, --warmup at "
                          "least 0.")
    model_dir = sft.ensure_bench_model(args.model)
    device = sft.device_name()
    with tempfile.TemporaryDirectory(prefix="tailor-bench-dpo-") as tmp:
        workdir = Path(tmp)
        data, text = workdir / "pairs.parquet", workdir / "pairs-text.parquet"
        spec = {"model_dir": str(model_dir), "recipe": str(sft.bench_recipe_file(workdir, model_dir, data)),
                "data": str(data), "text": str(text), "workdir": str(workdir), "method": "lora", "seq": args.seq,
                "steps": args.steps, "warmup": args.warmup, "batch": args.batch, "overrides": DPO_OVERRIDES}
        t = sft.tailor_recipe(spec, plan=False).training  # fails early on a bad setting
        lengths = pair_lengths((args.warmup + args.steps) * t.batch_size * t.grad_accum + 8, args.seq)
        write_pairs(data, text, lengths, model_dir)
        print(header(args, lengths, t.batch_size * t.grad_accum, device), flush=True)
        results = []
        for side in SIDES:
            row = {**spec, "side": side, "result": str(workdir / f"dpo-{side}.result.json")}
            result = run_row(row) if args.in_process else sft.run_isolated(row, workdir, module="bench.dpo")
            results.append(result)
            print(format_row(result), flush=True)
        print(format_ratio(results), flush=True)
    if not args.no_record:
        record(args, argv, device, lengths, results)
    return results


# ------------------------------------------------------------------------------------------------ reporting

def mean_lengths(lengths: list[tuple[int, int, int]]) -> str:
    means = [sum(part) / len(lengths) for part in zip(*lengths)]
    return "prompt {:.0f}, chosen {:.0f}, rejected {:.0f} tokens".format(*means)


def header(args: argparse.Namespace, lengths: list[tuple[int, int, int]], pairs_per_step: int, device: str) -> str:
    return (f"bench.dpo: model {args.model}, seq {args.seq}, {len(lengths)} pairs (mean {mean_lengths(lengths)}), "
            f"{pairs_per_step} pairs per step; {args.warmup} warmup + {args.steps} measured steps\n"
            f"device: {device}\n"
            f"rows: tailor = training.method dpo with tailor's defaults (build_trainer on the prepared pairs), "
            f"trl-tuned = plain trl DPOTrainer with the same switches, given the pairs as text\n"
            f"{'setup':10} {'pairs':>5} {'tok/step':>9} {'step s':>8} {'tokens/s':>10} {'peak mem':>9}  settings")


def format_row(result: dict[str, Any]) -> str:
    lead = f"{result['side']:10}"
    if "error" in result:
        return f"{lead} FAILED: {result['error']}"
    s = result["settings"]
    same = "" if result["same_tokens"] else "  WARNING: not the prepared pairs' tokens"
    return (f"{lead} {s['batch'] * s['grad_accum']:>5} {result['tokens_per_step']:>9,.0f} "
            f"{result['step_seconds']:>8.3f} {result['tokens_per_second']:>10,.1f} "
            f"{result['peak_memory'] / 2**30:>7.2f}GB  {result['dtype']}, {sft.settings_text(s)}{same}")


def ratio(results: list[dict[str, Any]]) -> float | None:
    """tailor's tokens/s over trl-tuned's; None when either row is missing or failed."""
    rows = {r["side"]: r for r in results if "error" not in r}
    if "tailor" in rows and "trl-tuned" in rows and rows["trl-tuned"]["tokens_per_second"]:
        return rows["tailor"]["tokens_per_second"] / rows["trl-tuned"]["tokens_per_second"]
    return None


def format_ratio(results: list[dict[str, Any]]) -> str:
    value = ratio(results)
    return "ratio tokens/s tailor/trl-tuned: " + (f"{value:.2f}x" if value is not None else "n/a")


def record(args: argparse.Namespace, argv: list[str], device: str, lengths: list[tuple[int, int, int]],
           results: list[dict[str, Any]]) -> None:
    """Append this run (device, versions, pairs, settings, date, command, one line per row) to its section of
    BENCHMARKS.md, atomically."""
    command = "python -m bench.dpo " + " ".join(shlex.quote(a) for a in argv)
    lines = [f"### {date.today()}: {args.model}, seq {args.seq}, {device}", "",
             f"Command: `{command.strip()}` ({args.warmup} warmup + {args.steps} measured steps per row; "
             f"{len(lengths)} pairs, mean {mean_lengths(lengths)}). Versions: {sft.versions()}.", "",
             "| setup | settings | pairs per step | tokens per step | tokens/s | step (s) | peak memory "
             "| tailor / trl tuned |",
             "|---|---|---|---|---|---|---|---|"]
    value = ratio(results)
    for r in results:
        label = LABELS[r["side"]]
        if "error" in r:
            lines.append(f"| {label} | | | | failed: {r['error'][:120]} | | | |")
            continue
        s = r["settings"]
        shown = "" if r["side"] != "tailor" or value is None else f"{value:.2f}x"
        lines.append(f"| {label} | {r['dtype']}, {sft.settings_text(s)} | {s['batch'] * s['grad_accum']} | "
                     f"{r['tokens_per_step']:,.0f} | {r['tokens_per_second']:,.0f} | {r['step_seconds']:.3f} | "
                     f"{r['peak_memory'] / 2**30:.2f} GB | {shown} |")
    add_to_section(args.benchmarks, SECTION, INTRO, lines)
    print(f"recorded in {args.benchmarks}")


if __name__ == "__main__":
    main()
