"""Translate the recipe into peft and trl configuration objects (the only place that knows their field names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tailor.choices import optimizer_name, use_liger
from tailor.runs import RunPaths
from tailor.schema import SFT_SET_BY_TAILOR, Recipe

if TYPE_CHECKING:
    from peft import LoraConfig
    from trl import SFTConfig


def lora_config(recipe: Recipe, model: Any = None) -> "LoraConfig":
    """The adapter. With the model given, mixture-of-experts targets follow `peft.moe_experts` (frozen/targeted)."""
    from peft import LoraConfig

    from tailor.moe_lora import moe_lora_targets

    settings = recipe.peft
    targets = moe_lora_targets(settings, model) if model is not None else {"target_modules": settings.target_modules}
    return LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, **targets,
                      use_rslora=settings.use_rslora, use_dora=settings.use_dora, bias="none", task_type="CAUSAL_LM")


def sft_config(recipe: Recipe, paths: RunPaths, use_cpu: bool, precision: str, report_to: list[str],
               strategy: str = "single", grad_accum: int | None = None) -> "SFTConfig":
    """trl's SFTConfig for the recipe, with training.extra (checked against SFTConfig's fields at recipe load)."""
    from trl import SFTConfig

    kwargs = sft_kwargs(recipe, paths, use_cpu, precision, report_to, strategy, grad_accum)
    clash = sorted(set(kwargs) & set(recipe.training.extra))
    if clash:  # the schema refuses these (SFT_SET_BY_TAILOR); a recipe built around it must not override silently
        from tailor.errors import TailorError

        raise TailorError(f"training.extra sets {', '.join(clash)}, which tailor sets from its own keys: "
                          + "; ".join(f"{k}: {SFT_SET_BY_TAILOR.get(k, 'training')}" for k in clash))
    return SFTConfig(**kwargs, **recipe.training.extra)


def sft_kwargs(recipe: Recipe, paths: RunPaths, use_cpu: bool, precision: str, report_to: list[str],
               strategy: str = "single", grad_accum: int | None = None) -> dict[str, Any]:
    """The SFTConfig arguments tailor sets from the recipe (every name is in tailor.schema.SFT_SET_BY_TAILOR)."""
    t = recipe.training
    return dict(
        output_dir=str(paths.checkpoints_dir), learning_rate=t.lr, lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,
        num_train_epochs=t.epochs, max_steps=t.max_steps, per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=grad_accum or t.grad_accum, max_length=t.max_length, packing=t.packing,
        gradient_checkpointing=t.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        weight_decay=t.weight_decay, max_grad_norm=t.max_grad_norm,
        optim=optimizer_name(recipe, on_gpu=not use_cpu, strategy=strategy),
        use_liger_kernel=use_liger(recipe, on_gpu=not use_cpu), torch_compile=t.torch_compile,
        logging_steps=t.logging_steps, logging_first_step=True, seed=t.seed, data_seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",  # autocast with loss scaling; peft keeps the adapter weights in fp32
        use_cpu=use_cpu,
        save_strategy="steps", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        save_only_model=False,  # optimizer, scheduler, RNG and data position: an exact resume
        eval_strategy="steps" if t.eval_steps else "no", eval_steps=t.eval_steps,
        per_device_eval_batch_size=t.batch_size, prediction_loss_only=True, load_best_model_at_end=t.keep_best,
        metric_for_best_model="eval_loss" if t.keep_best else None, greater_is_better=False if t.keep_best else None,
        report_to=report_to, run_name=f"{recipe.tracking.run_name or recipe.name}-train", dataset_num_proc=None,
        ddp_find_unused_parameters=False, ddp_timeout=t.collective_timeout_s,
        include_num_input_tokens_seen="non_padding", disable_tqdm=False,
    )
