"""The training entry point each Accelerate process runs: seed, data, tokenizer, model, trainer, train, save.

Run through `python -m train RECIPE` (`accelerate launch`), or for one process `python -m train.run RECIPE [k=v ...]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from tailor.cli import recipe_parser, run_cli
from tailor.errors import TailorError
from tailor.runs import RunPaths, atomic_dir, read_json, run_paths, update_record
from tailor.schema import Recipe
from train.trainers import COLUMNS


def build_trainer(recipe: Recipe, grad_accum: int | None = None, callbacks: list | None = None,
                  init_adapter: dict[str, Any] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Everything up to training: (trainer, tokenizer, data manifest with the chosen `precision` record and the
    `init_adapter` record added). `init_adapter`: the starting adapter's record when the caller has checked it
    already (`train.init_adapter.init_adapter_record`), else it is checked here."""
    import torch
    from datasets import load_dataset
    from transformers import set_seed

    from tailor.contract import check_prepared_data
    from tailor.models import load_model, load_tokenizer
    from tailor.precision import resolve_precision
    from train import lm_head
    from train.config import lora_config, trainer_config
    from train.init_adapter import init_adapter_record, load_adapter
    from train.trainers import trainer_class

    method = recipe.training.method
    paths = run_paths(recipe)
    lm_head.apply(recipe.training.compact_lm_head)
    manifest = check_prepared_data(recipe, paths)
    init = init_adapter if init_adapter is not None else init_adapter_record(recipe)
    method_args: dict[str, Any] = {}
    if method == "grpo":  # imports project rewards before any model loads; errors name the recipe line
        from train.rewards import reward_functions

        method_args["reward_funcs"] = reward_functions(recipe)[0]
    # under `python -m train` the launcher has already warned about a forced precision: say it once
    precision = resolve_precision(recipe.training.mixed_precision, warn=not os.environ.get("TAILOR_LAUNCHER"))
    set_seed(recipe.training.seed)
    dataset = load_dataset("parquet", data_files=str(paths.train_data), split="train").select_columns(COLUMNS[method])
    eval_dataset = _eval_slice(recipe, paths) if recipe.training.eval_steps else None
    tokenizer = load_tokenizer(recipe.model)
    if method == "grpo":
        dataset = _without_leading_bos(dataset, tokenizer)
    qlora = recipe.peft.method == "qlora"
    use_cpu = not torch.cuda.is_available()
    device_map = None
    if qlora and not use_cpu:
        from accelerate import PartialState

        device_map = {"": PartialState().local_process_index}
    model = load_model(recipe.model, quantize_4bit=qlora, device_map=device_map)
    if init is not None:
        model = load_adapter(model, init)  # trained on; DPO/KTO/GRPO keep a frozen copy as the reference
    report_to = [recipe.tracking.backend] if recipe.tracking.mode != "disabled" else ["none"]
    args = trainer_config(recipe, paths, use_cpu=use_cpu, precision=precision.name, report_to=report_to,
                          strategy=os.environ.get("TAILOR_STRATEGY", "single"), grad_accum=grad_accum)
    trainer = trainer_class(method)(
        model=model, args=args, train_dataset=dataset, eval_dataset=eval_dataset, processing_class=tokenizer,
        peft_config=None if init is not None else lora_config(recipe, model), callbacks=callbacks, **method_args)
    return trainer, tokenizer, {**manifest, "precision": precision.record(), "init_adapter": init}


def _without_leading_bos(dataset: Any, tokenizer: Any) -> Any:
    """GRPO prompts are rendered template text, which holds the BOS token where the template writes it (Llama,
    Gemma); trl tokenizes them with special tokens, so a tokenizer that adds BOS itself would double it. Eval
    tokenizes without special tokens; this keeps training on the same ids."""
    bos = tokenizer.bos_token
    if not bos or tokenizer("x")["input_ids"][:1] != [tokenizer.bos_token_id]:
        return dataset
    return dataset.map(lambda row: {"prompt": row["prompt"][len(bos):] if row["prompt"].startswith(bos)
                                    else row["prompt"]})


def _eval_slice(recipe: Recipe, paths: RunPaths) -> Any:
    """The fixed rows scored every training.eval_steps: the first eval_rows of the recipe's first eval set."""
    from datasets import load_dataset

    name = recipe.data.set_names()[0]
    dataset = load_dataset("parquet", data_files=str(paths.eval_set_data(name)), split="train")
    if len(dataset) == 0:
        raise TailorError(f"training.eval_steps: eval set {name!r} has no rows to score.")
    return dataset.select(range(min(recipe.training.eval_rows, len(dataset)))).select_columns(list(COLUMNS["sft"]))


def _eval_history(trainer: Any) -> dict[str, Any]:
    """Held-out losses logged during training, and the checkpoint kept with keep_best."""
    history = [{"step": h["step"], "loss": round(h["eval_loss"], 5), "seconds": h.get("eval_runtime")}
               for h in trainer.state.log_history if "eval_loss" in h]
    if not history:
        return {}
    out: dict[str, Any] = {"eval_loss_history": history,
                           "eval_seconds": round(sum(h["seconds"] or 0 for h in history), 1)}
    if trainer.args.load_best_model_at_end and trainer.state.best_model_checkpoint:
        out["best_checkpoint"] = Path(trainer.state.best_model_checkpoint).name
        out["best_eval_loss"] = trainer.state.best_metric
    return out


def train(recipe: Recipe) -> dict[str, Any]:
    """Fine-tune the adapter (resuming the latest complete checkpoint) and save it; metrics["preempted"] on a stop."""
    from accelerate import PartialState

    from tailor.contract import check_prepared_data
    from tailor.tracking import finish_stage, start_stage
    from train import checkpoints
    from train.callbacks import CheckpointMarker, Heartbeat, PreemptionStop
    from train.init_adapter import init_adapter_record

    import torch

    paths = run_paths(recipe)
    # as the trainer will (gloo across CPU processes), with the collective timeout that names a stalled rank
    state = PartialState(cpu=not torch.cuda.is_available(),
                         timeout=timedelta(seconds=recipe.training.collective_timeout_s))
    world = state.num_processes
    data_hash = check_prepared_data(recipe, paths)["data_hash"]
    init = init_adapter_record(recipe)  # before any model loads: refuses a wrong starting adapter
    key = checkpoints.training_key(recipe, data_hash, init)
    if _already_trained(paths, key, recipe):
        return read_json(paths.adapter_dir / "train_metrics.json")

    resume, grad_accum = _resume_point(recipe, paths, data_hash, world, state, init)
    launch_dir = paths.root / "launch"
    heartbeat = Heartbeat(launch_dir, state.process_index)
    stop = PreemptionStop(launch_dir / "STOP", heartbeat)
    marker = CheckpointMarker(lambda step: checkpoints.marker_info(recipe, data_hash, world, grad_accum, step, init))
    callbacks = [heartbeat, stop, marker]  # heartbeat first: its step-end beat precedes the sync
    trainer, tokenizer, manifest = build_trainer(recipe, grad_accum=grad_accum, callbacks=callbacks,
                                                 init_adapter=init)
    precision = manifest["precision"]
    if state.is_main_process:
        print(f"train: precision {precision['name']} ({precision['reason']})", flush=True)
    run = start_stage(recipe, "train", {"data_hash": data_hash, "resumed_from": resume and resume.path.name,
                                        "precision": precision, "method": recipe.training.method,
                                        "init_adapter": init}) if state.is_main_process else None
    started = time.time()
    result = trainer.train(resume_from_checkpoint=str(resume.path) if resume else None)
    seconds = time.time() - started

    tokens_seen = int(getattr(trainer.state, "num_input_tokens_seen", 0) or 0)  # across processes, padding too
    metrics = {"train_loss": result.training_loss, "steps": result.global_step, "seconds": round(seconds, 1),
               "world_size": world, "grad_accum": grad_accum,
               "global_batch": recipe.training.batch_size * grad_accum * world, "tokens_seen": tokens_seen,
               "tokens_per_second": round(tokens_seen / seconds, 1) if seconds else None,
               "resumed_from_step": resume.step if resume else None, "training_key": key,
               "strategy": os.environ.get("TAILOR_STRATEGY", "single"), "precision": precision,
               "method": recipe.training.method, "init_adapter": init,
               "loss_history": [h["loss"] for h in trainer.state.log_history if "loss" in h],
               **(method_curves(trainer.state.log_history) if recipe.training.method != "sft" else {}),
               **_eval_history(trainer)}
    if stop.stopped_at is not None:
        state.wait_for_everyone()
        if state.is_main_process:
            (launch_dir / "STOP").unlink(missing_ok=True)
            # launchers (accelerate, torchrun) turn exit codes into 1: the marker tells `python -m train` the truth
            (launch_dir / "PREEMPTED").write_text(f"{stop.stopped_at}\n")
            finish_stage(run, {"preempted_at_step": stop.stopped_at})
            print(f"train: stopped by {'signal' if stop.signalled else 'STOP file'} at step {stop.stopped_at}; "
                  f"checkpoint saved in {paths.checkpoints_dir}. Run `make train` again to resume.", flush=True)
        return {**metrics, "preempted": True}

    _save_adapter(trainer, tokenizer, recipe, metrics, paths, state)
    if state.is_main_process:
        summary = {k: v for k, v in metrics.items() if k not in ("loss_history", "curves")}
        update_record(paths, "train", summary)
        finish_stage(run, summary)
        final = metrics.get("final", {})
        speed = f"{metrics['tokens_per_second']} tokens/s" if metrics["tokens_per_second"] else \
            f"final reward {final['reward']}" if "reward" in final else f"final margin {final.get('rewards/margins')}"
        print(f"train: {metrics['steps']} steps, final mean loss {metrics['train_loss']:.4f}, {speed}, "
              f"adapter saved to {paths.adapter_dir}")
    state.wait_for_everyone()
    return metrics


CURVES = ("rewards/", "reward", "kl", "logps/", "logits/", "completions/", "frac_reward_zero_std", "entropy",
          "clip_ratio", "nll_loss", "log_odds", "sft_loss")  # trl's method signals, as logged


def method_curves(history: list[dict[str, Any]]) -> dict[str, Any]:
    """The method's own signals per logged step (DPO reward margins, GRPO rewards per function and their std, KL,
    completion lengths ...) as trl logs them to W&B, for the run record: {"curves": {name: [[step, value], ...]},
    "final": {name: last value}} (train() skips it for SFT)."""
    curves: dict[str, list] = {}
    for entry in history:
        for name, value in entry.items():
            if name.startswith(CURVES) and isinstance(value, (int, float)) and "step" in entry:
                curves.setdefault(name, []).append([entry["step"], round(float(value), 6)])
    if not curves:
        return {}
    return {"curves": curves, "final": {name: points[-1][1] for name, points in curves.items()}}


def _resume_point(recipe: Recipe, paths: RunPaths, data_hash: str, world: int, state: Any,
                  init: dict[str, Any] | None = None):
    """(checkpoint to resume or None, grad_accum to use). Rank 0 tidies the folder; everyone reads the same answer."""
    from train import checkpoints

    if state.is_main_process:
        if not recipe.training.resume:
            checkpoints.discard(paths)
        complete, incomplete = checkpoints.scan(paths)
        moved = checkpoints.set_aside_incomplete(incomplete)
        if moved:
            print(f"train: skipped incomplete checkpoint(s) {', '.join(moved)} (half-written; kept for inspection)",
                  flush=True)
    state.wait_for_everyone()
    complete, _ = checkpoints.scan(paths)
    resume = checkpoints.choose_resume(recipe, data_hash, world, complete, init)
    grad_accum = checkpoints.resume_accum(recipe, resume, world) if resume else recipe.training.grad_accum
    if resume and state.is_main_process:
        note = ""
        if grad_accum != recipe.training.grad_accum:
            note = (f" on {world} process(es) with grad_accum {grad_accum} (was {resume.info['world_size']} x "
                    f"accum {resume.info['grad_accum']}), same global batch {resume.info['global_batch']}")
        print(f"train: resuming from {resume.path} (step {resume.step}){note}", flush=True)
    return resume, grad_accum


def _already_trained(paths: RunPaths, key: str, recipe: Recipe) -> bool:
    """A finished adapter from the same settings and data: nothing to do (training.resume=false retrains)."""
    metrics = paths.adapter_dir / "train_metrics.json"
    if not (recipe.training.resume and metrics.is_file()):
        return False
    try:
        done = read_json(metrics).get("training_key") == key
    except ValueError:
        return False
    if done:
        print(f"train: {paths.adapter_dir} is already trained with these settings and data; nothing to do "
              "(ARGS=\"training.resume=false\" trains again).", flush=True)
    return done


def _save_adapter(trainer: Any, tokenizer: Any, recipe: Recipe, metrics: dict, paths: RunPaths, state: Any) -> None:
    """Every rank takes part (FSDP/ZeRO gather the adapter); rank 0 writes it whole, then renames into place."""
    staging = paths.root / ".adapter.staging"
    if state.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    state.wait_for_everyone()
    trainer.save_model(str(staging))
    state.wait_for_everyone()
    if state.is_main_process:
        # DPO/KTO/GRPO from an init adapter keep a frozen copy named "ref" (trl), which peft saves in ref/
        shutil.rmtree(staging / "ref", ignore_errors=True)
        with atomic_dir(paths.adapter_dir) as tmp:
            for item in staging.iterdir():
                shutil.move(str(item), tmp / item.name)
            tokenizer.save_pretrained(tmp)
            (tmp / "recipe.json").write_text(json.dumps(recipe.model_dump(mode="json"), indent=2) + "\n")
            (tmp / "train_metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        shutil.rmtree(staging, ignore_errors=True)


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    from train.checkpoints import PREEMPTED_EXIT_CODE

    if train(recipe).get("preempted") and not os.environ.get("TAILOR_LAUNCHER"):
        sys.exit(PREEMPTED_EXIT_CODE)  # under `python -m train` the PREEMPTED marker carries this instead


def main() -> None:
    run_cli(stage, recipe_parser("Fine-tune a LoRA/QLoRA adapter (one Accelerate process)."))


if __name__ == "__main__":
    main()
