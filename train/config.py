"""Translate the recipe into peft and trl configuration objects (the only place that knows their field names)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tailor.choices import optimizer_name, use_liger
from tailor.runs import RunPaths
from tailor.schema import METHOD_SET_BY_TAILOR, NOT_SET_FOR, SFT_SET_BY_TAILOR, Recipe, trl_config_class

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


def trainer_config(recipe: Recipe, paths: RunPaths, use_cpu: bool, precision: str, report_to: list[str],
                   strategy: str = "single", grad_accum: int | None = None) -> "SFTConfig":
    """trl's config of the recipe's training.method (SFTConfig, DPOConfig, ...), with training.extra (checked
    against that config's fields at recipe load) passed last."""
    method = recipe.training.method
    kwargs = common_kwargs(recipe, paths, use_cpu, precision, report_to, strategy, grad_accum)
    kwargs = {k: v for k, v in kwargs.items() if method not in NOT_SET_FOR.get(k, ())}
    kwargs.update(method_kwargs(recipe, use_cpu))
    clash = sorted(set(kwargs) & set(recipe.training.extra))
    if clash:  # the schema refuses these; a recipe built around it must not override silently
        from tailor.errors import TailorError

        owners = {**SFT_SET_BY_TAILOR, **METHOD_SET_BY_TAILOR[method]}
        raise TailorError(f"training.extra sets {', '.join(clash)}, which tailor sets from its own keys: "
                          + "; ".join(f"{k}: {owners.get(k, 'training')}" for k in clash))
    return trl_config_class(method)(**kwargs, **recipe.training.extra)


def method_kwargs(recipe: Recipe, use_cpu: bool) -> dict[str, Any]:
    """The trl config fields of the method's own recipe section (every name is in METHOD_SET_BY_TAILOR)."""
    method, settings = recipe.training.method, recipe.method_settings()
    if method == "dpo":
        losses = settings.loss_type if isinstance(settings.loss_type, list) else [settings.loss_type]
        return {"beta": settings.beta, "loss_type": losses, "loss_weights": settings.loss_weights,
                "label_smoothing": settings.label_smoothing}
    if method == "orpo":
        return {"beta": settings.beta}
    if method == "kto":
        return {"beta": settings.beta, "desirable_weight": settings.desirable_weight,
                "undesirable_weight": settings.undesirable_weight}
    if method == "grpo":
        vllm = vllm_mode(recipe, use_cpu)
        return {"beta": settings.beta, "loss_type": settings.loss_type, "num_generations": settings.num_generations,
                "max_completion_length": settings.max_completion_length, "temperature": settings.temperature,
                "top_p": settings.top_p, "reward_weights": [r.weight for r in settings.rewards],
                "scale_rewards": settings.scale_rewards, "use_vllm": vllm is not None, "vllm_mode": vllm or "colocate",
                "vllm_server_base_url": settings.vllm_server_url, "log_completions": recipe.tracking.log_samples}
    return {}


def vllm_mode(recipe: Recipe, use_cpu: bool) -> str | None:
    """GRPO's generation engine (grpo.vllm): None = transformers generate; "colocate"/"server" = trl's vLLM modes.
    auto picks colocate on GPUs when vLLM is installed (as eval's backend does); a named mode without vLLM is an
    error."""
    import importlib.util

    choice = recipe.grpo.vllm
    installed = importlib.util.find_spec("vllm") is not None
    if choice == "off" or (choice == "auto" and (use_cpu or not installed)):
        return None
    if not installed or use_cpu:
        from tailor.errors import TailorError
        from tailor.recipe import origin

        raise TailorError(f"{origin(recipe, 'grpo.vllm')}: grpo.vllm: {choice} needs vLLM on a GPU machine ("
                          + ("vLLM is not installed" if not installed else "no GPU here") + "); use grpo.vllm: auto")
    return "colocate" if choice == "auto" else choice


def common_kwargs(recipe: Recipe, paths: RunPaths, use_cpu: bool, precision: str, report_to: list[str],
                  strategy: str = "single", grad_accum: int | None = None) -> dict[str, Any]:
    """The trl config arguments every method shares, set from the recipe (each name is in SFT_SET_BY_TAILOR)."""
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
