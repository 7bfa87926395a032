"""The training entry point each Accelerate process runs: seed, data, tokenizer, model, trainer, train, save.

Run through `python -m train RECIPE` (which calls `accelerate launch`), or directly for one process:
`python -m train.run RECIPE [key=value ...]`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

from tailor.cli import recipe_parser, run_cli
from tailor.runs import atomic_dir, run_paths, update_record
from tailor.schema import Recipe

log = logging.getLogger(__name__)


def build_trainer(recipe: Recipe) -> tuple[Any, Any, dict[str, Any]]:
    """Seed, data, tokenizer, model, trainer: everything up to (not including) training. Returns
    (trainer, tokenizer, manifest)."""
    import torch
    from datasets import load_dataset
    from transformers import set_seed
    from trl import SFTTrainer

    from data_prep.prepare import check_prepared_data
    from tailor.models import load_model, load_tokenizer
    from train.config import lora_config, sft_config

    paths = run_paths(recipe)
    manifest = check_prepared_data(recipe, paths)
    set_seed(recipe.training.seed)
    dataset = load_dataset("parquet", data_files=str(paths.train_data), split="train")
    dataset = dataset.select_columns(["input_ids", "assistant_masks"])
    tokenizer = load_tokenizer(recipe.model)
    qlora = recipe.peft.method == "qlora"
    use_cpu = not torch.cuda.is_available()
    device_map = None
    if qlora and not use_cpu:
        from accelerate import PartialState

        device_map = {"": PartialState().local_process_index}
    model = load_model(recipe.model, quantize_4bit=qlora, device_map=device_map)
    report_to = ["wandb"] if recipe.tracking.mode != "disabled" else ["none"]
    trainer = SFTTrainer(
        model=model,
        args=sft_config(recipe, paths, use_cpu=use_cpu, bf16=_use_bf16(recipe, model), report_to=report_to),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(recipe),
    )
    return trainer, tokenizer, manifest


def train(recipe: Recipe) -> dict[str, Any]:
    """Fine-tune the adapter and save it (with tokenizer and resolved recipe) into the run folder."""
    from accelerate import PartialState

    from tailor.tracking import finish_stage, start_stage

    paths = run_paths(recipe)
    state = PartialState()
    trainer, tokenizer, manifest = build_trainer(recipe)
    run = start_stage(recipe, "train", {"data_hash": manifest["data_hash"]}) if state.is_main_process else None
    started = time.time()
    result = trainer.train()
    seconds = time.time() - started

    tokens_seen = _trained_tokens(trainer)
    metrics = {"train_loss": result.training_loss, "steps": result.global_step, "seconds": round(seconds, 1),
               "world_size": state.num_processes, "tokens_seen": tokens_seen,
               "tokens_per_second": round(tokens_seen / seconds, 1) if seconds else None,
               "loss_history": [h["loss"] for h in trainer.state.log_history if "loss" in h]}
    state.wait_for_everyone()
    if state.is_main_process:
        with atomic_dir(paths.adapter_dir) as tmp:
            trainer.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json"), indent=2) + "\n")
            (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        summary = {k: v for k, v in metrics.items() if k != "loss_history"}
        update_record(paths, "train", summary)
        finish_stage(run, summary)
        print(f"train: {metrics['steps']} steps, final mean loss {metrics['train_loss']:.4f}, "
              f"{metrics['tokens_per_second']} tokens/s, adapter saved to {paths.adapter_dir}")
    state.wait_for_everyone()
    return metrics


def _use_bf16(recipe: Recipe, model: Any) -> bool:
    import torch

    if recipe.training.mixed_precision == "auto":
        return model.dtype == torch.bfloat16
    return recipe.training.mixed_precision == "bf16"


def _trained_tokens(trainer: Any) -> int:
    """Input tokens the trainer consumed across processes (padding included, as trl counts them)."""
    return int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    train(recipe)


def main() -> None:
    run_cli(stage, recipe_parser("Fine-tune a LoRA/QLoRA adapter (one Accelerate process)."))


if __name__ == "__main__":
    main()
