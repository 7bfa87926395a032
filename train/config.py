"""Translate the recipe into peft and trl configuration objects (the only place that knows their field names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tailor.runs import RunPaths
from tailor.schema import Recipe

if TYPE_CHECKING:
    from peft import LoraConfig
    from trl import SFTConfig


def lora_config(recipe: Recipe) -> "LoraConfig":
    from peft import LoraConfig

    settings = recipe.peft
    return LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        use_rslora=settings.use_rslora,
        use_dora=settings.use_dora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def sft_config(recipe: Recipe, paths: RunPaths, use_cpu: bool, bf16: bool, report_to: list[str]) -> "SFTConfig":
    from trl import SFTConfig

    t = recipe.training
    return SFTConfig(
        output_dir=str(paths.checkpoints_dir),
        learning_rate=t.lr,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        max_length=t.max_length,
        packing=t.packing,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=t.optim,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        seed=t.seed,
        data_seed=t.seed,
        bf16=bf16,
        fp16=False,
        use_cpu=use_cpu,
        save_strategy="no",
        eval_strategy="no",
        report_to=report_to,
        run_name=f"{recipe.tracking.run_name or recipe.name}-train",
        dataset_num_proc=None,
        ddp_find_unused_parameters=False,
        include_num_input_tokens_seen="non_padding",
        disable_tqdm=False,
    )
