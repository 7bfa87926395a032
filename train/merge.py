"""`python -m train.merge RECIPE [key=value ...] [--adapter DIR] [--out DIR]`: merge the adapter into the base.

Loads the base unquantized (QLoRA too), merges the adapter and writes safetensors shards, the tokenizer and a model
card into `runs/<name>/merged/` atomically, after checking the reloaded folder's logits against base + adapter on
held-out prompts (QLoRA: also against the NF4 base + adapter, within the base's own NF4 gap). See docs/merge.md.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from tailor.cli import recipe_parser, run_cli
from tailor.errors import TailorError
from tailor.runs import RunPaths, atomic_dir, read_json, run_paths, update_record
from tailor.schema import Recipe

log = logging.getLogger(__name__)

# max |merged - reference| / max |reference| over the probe logits. fp32 merging only reorders sums (~1e-6);
# a bf16/fp16 merge rounds every merged weight to 8 (11) mantissa bits, a relative error up to 2^-9 per weight.
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2, "float16": 5e-3}
# QLoRA: the merged model may differ from NF4 base + adapter by at most this multiple of the base's own NF4 gap.
QUANT_GAP_FACTOR = 1.5
PROBES = 4
PROBE_TOKENS = 128


@dataclass
class Comparison:
    """One logits comparison on the probe prompts."""

    against: str
    max_abs_diff: float
    max_abs_reference: float
    relative: float
    tolerance: float
    top1_agreement: float
    passed: bool


def adapter_folder(paths: RunPaths, adapter: str | None) -> Path:
    """The adapter to merge; refuse a folder without one."""
    folder = Path(adapter) if adapter else paths.adapter_dir
    if not (folder / "adapter_config.json").is_file() or not any(folder.glob("adapter_model.*")):
        hint = ("train first: make train RECIPE=..." if adapter is None else
                "give a folder written by make train (adapter_config.json + adapter_model.safetensors)")
        raise TailorError(f"--adapter {folder}: no adapter there (adapter_config.json and adapter_model.safetensors "
                          f"missing); {hint}.")
    return folder


def probe_prompts(paths: RunPaths, tokenizer: Any) -> list[list[int]]:
    """Token ids of the first held-out rows, cut to PROBE_TOKENS; fixed chat texts when there are none."""
    import pyarrow.parquet as pq

    for file in [paths.heldout_data, *sorted((paths.data_dir / "eval").glob("*.parquet"))]:  # hash split, named sets
        if file.is_file():
            rows = pq.read_table(file, columns=["input_ids"]).column("input_ids").to_pylist()[:PROBES]
            if rows:
                return [list(ids)[:PROBE_TOKENS] for ids in rows]
    texts = ["Hello! Please summarise this in one sentence.", "What is 17 times 23?",
             "Write a JSON object with keys name and age.", "Translate 'good morning' into French."]
    return [tokenizer.apply_chat_template([{"role": "user", "content": t}], add_generation_prompt=True, tokenize=True,
                                          return_dict=False)[:PROBE_TOKENS] for t in texts]


def logits_of(model: Any, prompts: list[list[int]]) -> list[Any]:
    """fp32 logits of each prompt (one at a time: no padding, so nothing differs but the weights)."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        return [model(input_ids=torch.tensor([ids], device=device)).logits[0].float().cpu() for ids in prompts]


def compare(against: str, merged: list[Any], reference: list[Any], tolerance: float) -> Comparison:
    diff = max(float((m - r).abs().max()) for m, r in zip(merged, reference))
    scale = max(float(r.abs().max()) for r in reference)
    agree = [float((m.argmax(-1) == r.argmax(-1)).float().mean()) for m, r in zip(merged, reference)]
    relative = diff / max(scale, 1e-12)
    return Comparison(against, diff, scale, relative, tolerance, sum(agree) / len(agree), relative <= tolerance)


def merge(recipe: Recipe, adapter: str | None = None, out: str | None = None,
          max_shard_size: str = "5GB") -> dict[str, Any]:
    """Merge, save, reload and check; returns the check record (also written to run.json and the model card)."""
    import torch
    from accelerate.utils.memory import clear_device_cache
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tailor.models import load_model, load_tokenizer, resolve_dtype

    paths = run_paths(recipe)
    folder = adapter_folder(paths, adapter)
    target = Path(out) if out else paths.merged_dir
    dtype = resolve_dtype(recipe.model)
    dtype_name = str(dtype).removeprefix("torch.")
    device_map = {"": 0} if torch.cuda.is_available() else None
    qlora = recipe.peft.method == "qlora"
    tokenizer = load_tokenizer(recipe.model, str(folder))
    prompts = probe_prompts(paths, tokenizer)

    log.info("loading the base (%s, unquantized) and the adapter %s", dtype_name, folder)
    base = load_model(recipe.model, device_map=device_map)
    model = PeftModel.from_pretrained(base, str(folder)).eval()
    reference = logits_of(model, prompts)
    extra: dict[str, Any] = {}
    if qlora:
        with model.disable_adapter():
            base_logits = logits_of(model, prompts)
    merged = model.merge_and_unload()

    checks: list[Comparison] = []
    with atomic_dir(target) as tmp:
        merged.save_pretrained(tmp, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(tmp)
        del merged, model, base
        clear_device_cache(garbage_collection=True)
        reloaded = AutoModelForCausalLM.from_pretrained(str(tmp), dtype=dtype, device_map=device_map).eval()
        merged_logits = logits_of(reloaded, prompts)
        del reloaded
        clear_device_cache(garbage_collection=True)
        checks.append(compare("base + adapter (unmerged, same dtype)", merged_logits, reference,
                              TOLERANCE.get(dtype_name, 2e-2)))
        if qlora:
            checks.append(_check_against_nf4(recipe, folder, prompts, merged_logits, base_logits, device_map))
            extra["note"] = ("QLoRA: merged into the original (unquantized) base weights; the NF4 comparison is "
                             "judged against the quantization gap of the base alone.")
        record = {"adapter": str(folder), "out": str(target), "dtype": dtype_name, "method": recipe.peft.method,
                  "probes": len(prompts), "probe_tokens": sum(len(p) for p in prompts),
                  "checks": [asdict(c) for c in checks], "passed": all(c.passed for c in checks), **extra}
        (tmp / "README.md").write_text(model_card(recipe, paths, folder, record), encoding="utf-8")
        (tmp / "merge_check.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if not record["passed"]:
            failed = next(c for c in checks if not c.passed)
            update_record(paths, "merge", record)
            raise TailorError(f"merge check failed: merged logits differ from {failed.against} by "
                              f"{failed.relative:.2e} of the largest logit (tolerance {failed.tolerance:.1e}); "
                              f"nothing was written to {target}. Is the adapter from this recipe's base model "
                              f"(model.name_or_path={recipe.model.name_or_path})?")
    update_record(paths, "merge", record)
    print(f"merge: {target} ({dtype_name}); " + "; ".join(
        f"vs {c.against}: max |diff| {c.max_abs_diff:.3g} = {c.relative:.2e} of max |logit| "
        f"(tolerance {c.tolerance:.1e}), top-1 agreement {c.top1_agreement:.3f}" for c in checks))
    return record


def _check_against_nf4(recipe: Recipe, folder: Path, prompts: list[list[int]], merged_logits: list[Any],
                       base_logits: list[Any], device_map: Any) -> Comparison:
    """Merged model vs the NF4 base + adapter that training optimised, within QUANT_GAP_FACTOR x the base's NF4 gap."""
    from accelerate.utils.memory import clear_device_cache
    from peft import PeftModel

    from tailor.models import load_model

    nf4 = load_model(recipe.model, quantize_4bit=True, device_map=device_map)
    nf4_model = PeftModel.from_pretrained(nf4, str(folder)).eval()
    with nf4_model.disable_adapter():
        nf4_base_logits = logits_of(nf4_model, prompts)
    trained = logits_of(nf4_model, prompts)
    del nf4_model, nf4
    clear_device_cache(garbage_collection=True)
    gap = compare("NF4 base vs original base", nf4_base_logits, base_logits, float("inf"))
    return compare("NF4 base + adapter (as trained)", merged_logits, trained,
                   max(QUANT_GAP_FACTOR * gap.relative, TOLERANCE["bfloat16"]))


def model_card(recipe: Recipe, paths: RunPaths, adapter: Path, record: dict[str, Any]) -> str:
    """README.md of the merged folder: what it is, the recipe, the data card, eval results and the merge check."""
    front = {"base_model": recipe.model.name_or_path, "library_name": "transformers",
             "tags": ["tailor", recipe.peft.method, "merged-adapter"]}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "", f"# {recipe.name} (merged)", "",
             f"{recipe.model.name_or_path} with the {recipe.peft.method.upper()} adapter `{adapter}` merged into its "
             f"weights ({record['dtype']}), made by tailor. Load it like any checkpoint: "
             "`AutoModelForCausalLM.from_pretrained(folder)`.", "", "## Merge check", "",
             "| compared with | max abs diff | relative | tolerance | top-1 agreement | result |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {c['against']} | {c['max_abs_diff']:.3g} | {c['relative']:.2e} | {c['tolerance']:.1e} | "
              f"{c['top1_agreement']:.3f} | {'pass' if c['passed'] else 'FAIL'} |" for c in record["checks"]]
    lines += ["", f"Logits on {record['probes']} held-out prompts ({record['probe_tokens']} tokens); relative = "
              "max abs diff / max abs logit of the reference.", ""]
    if record.get("note"):
        lines += [record["note"], ""]
    lines += _eval_section(paths) + _data_section(paths)
    recipe_yaml = yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
    lines += ["## Recipe", "", "```yaml", recipe_yaml.rstrip(), "```", ""]
    return "\n".join(lines)


def _eval_section(paths: RunPaths) -> list[str]:
    if not paths.results.is_file():
        return ["## Evaluation", "", "No eval results yet (make eval RECIPE=...).", ""]
    models = read_json(paths.results).get("models", {})
    names = list(models)
    metrics = sorted({k for m in models.values() for k, v in m.items() if isinstance(v, (int, float))})
    lines = ["## Evaluation (held-out rows)", "", "| metric | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    for metric in metrics:
        cells = [models[n].get(metric) for n in names]
        lines.append(f"| {metric} | " + " | ".join("" if v is None else f"{v:.4g}" for v in cells) + " |")
    return lines + [""]


def _data_section(paths: RunPaths) -> list[str]:
    markdown = paths.data_dir / "data_card.md"
    if markdown.is_file():
        text = markdown.read_text(encoding="utf-8").strip()
        text = "\n".join(("#" + line) if line.startswith("#") else line for line in text.splitlines())
        return ["## Training data", "", text, ""]
    card = paths.data_dir / "data_card.json"
    if card.is_file():
        data = read_json(card)
        return ["## Training data", "", "```json", json.dumps({k: data.get(k) for k in ("rows", "tokens")}, indent=2),
                "```", ""]
    return ["## Training data", "", "No data card found.", ""]


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    merge(recipe, adapter=args.adapter, out=args.out, max_shard_size=args.max_shard_size)


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser("Merge the adapter into the base model: safetensors shards, tokenizer, model card, check.")
    parser.add_argument("--adapter", default=None, help="adapter folder (default: runs/<name>/adapter)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/<name>/merged)")
    parser.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    run_cli(stage, parser, argv)


if __name__ == "__main__":
    main()
