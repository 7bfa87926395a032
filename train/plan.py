"""`python -m train.plan RECIPE [key=value ...] --gpus N --gpu-mem 80 [--strategy ddp|fsdp|zero2|zero3]`.

Estimates per-device GPU memory of the recipe's training step (`train.memory`, `docs/memory-planner.md`) and the
largest micro batch that fits. The launcher calls `check_fits` before loading a model: it warns with fixes when the
estimate is over the usable memory and refuses only beyond `REFUSE_FACTOR`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from tailor.cli import recipe_parser, run_cli
from tailor.errors import TailorError
from tailor.schema import ModelSettings, Recipe
from train.memory import GiB, STRATEGIES, Arch, Estimate, LoraTarget, Setup, arch_from_config, estimate, \
    largest_micro_batch, usable_bytes

# Refuse only above this multiple of the usable memory (warn between 1x and it): the GPU terms of the estimate are
# not yet calibrated against measurements. Lower it once GPU runs record measured vs planned peaks.
REFUSE_FACTOR = 1.3


def arch_configs() -> dict[str, Path]:
    """The architecture configs shipped in the tailor package (`tailor/arch_configs/NAME.json`), by NAME."""
    folder = resources.files("tailor") / "arch_configs"
    return {p.name.removesuffix(".json"): Path(str(p)) for p in folder.iterdir() if p.name.endswith(".json")}


def arch_config_file(settings: ModelSettings, arch_file: str | Path | None = None) -> Path | None:
    """The config.json describing the model: --arch, a local folder's, or a shipped one for a known hub id."""
    if arch_file is not None:
        path = Path(arch_file)
        if not path.is_file():
            raise TailorError(f"--arch {arch_file}: file does not exist (give a model's config.json).")
        return path
    from tailor.models import looks_local, model_source

    if settings.gguf_file:
        return Path(model_source(settings)) / "config.json"
    if looks_local(settings.name_or_path):
        path = Path(settings.name_or_path).expanduser() / "config.json"
        if not path.is_file():
            raise TailorError(f"model.name_or_path: {path} does not exist; pass --arch CONFIG_JSON.")
        return path
    # a shipped config for a known hub id: Qwen/Qwen2.5-7B-Instruct -> qwen2.5-7b.json
    stem = re.sub(r"-(instruct|chat|base)$", "", settings.name_or_path.rsplit("/", 1)[-1].lower())
    return arch_configs().get(stem)


def load_config(settings: ModelSettings, arch_file: str | Path | None = None) -> Any:
    """A transformers config for the recipe's model, without network: shipped file, local folder or HF cache."""
    from transformers import AutoConfig

    path = arch_config_file(settings, arch_file)
    if path is not None:
        data = json.loads(path.read_text(encoding="utf-8"))
        model_type = data.pop("model_type", None)
        if model_type is None:
            raise TailorError(f"{path}: no model_type; is this a transformers config.json?")
        return AutoConfig.for_model(model_type, **data)
    try:
        return AutoConfig.from_pretrained(settings.name_or_path, revision=settings.revision, local_files_only=True,
                                          trust_remote_code=settings.trust_remote_code)
    except OSError:
        shipped = ", ".join(sorted(arch_configs()))
        raise TailorError(f"model.name_or_path: no architecture config for {settings.name_or_path} offline "
                          f"(shipped: {shipped}); pass --arch path/to/config.json.") from None


def build_arch(recipe: Recipe, arch_file: str | Path | None = None) -> tuple[Arch, int, tuple[LoraTarget, ...]]:
    """(arch, LoRA parameter count, LoRA targets), counted exactly on a meta-device model with peft itself."""
    import logging

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    from transformers.quantizers.base import get_keys_to_not_convert

    from train.config import lora_config

    config = load_config(recipe.model, arch_file)
    logging.getLogger("peft").setLevel(logging.ERROR)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                 trust_remote_code=recipe.model.trust_remote_code)
    keep = set(get_keys_to_not_convert(model))  # what bitsandbytes leaves unquantized (the LM head)
    embed = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings()
    tied = head is None or head.weight is model.get_input_embeddings().weight
    lm_head = 0 if tied else head.weight.numel()
    linear = sum(p.numel() for name, module in model.named_modules()
                 if type(module) is torch.nn.Linear and name not in keep and name.split(".")[-1] not in keep
                 for p in module.parameters(recurse=False))
    total = sum(p.numel() for p in model.parameters())
    moe_layers = tuple(i for i, layer in enumerate(model.model.layers)
                       if hasattr(getattr(layer, "mlp", None), "experts"))
    with torch.device("meta"):
        peft_model = get_peft_model(model, lora_config(recipe, model))
    lora_params = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    targets = []
    for name, module in peft_model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(module, "lora_A"):
            continue
        match = re.search(r"\.layers\.(\d+)\.", name)
        targets.append(LoraTarget(int(match.group(1)) if match else -1, name.rsplit(".", 1)[-1],
                                  getattr(base, "in_features", 0), getattr(base, "out_features", 0)))
    shape = arch_from_config(config.get_text_config())
    arch = replace(shape, params_embed=embed, params_lm_head=lm_head, params_linear=linear,
                   params_other=total - embed - lm_head - linear, moe_layers=moe_layers,
                   experts=shape.experts if moe_layers else 0)
    return arch, lora_params, tuple(targets)


def resolve_strategy(recipe: Recipe, strategy: str | None, gpus: int) -> str:
    """STRATEGY= wins over training.strategy; auto/single mean one replica per GPU (ddp arithmetic)."""
    chosen = strategy or recipe.training.strategy
    if chosen in ("auto", "single"):
        return "ddp"
    if chosen not in STRATEGIES:
        raise TailorError(f"--strategy {chosen}: unknown; choose one of ddp, fsdp, zero2, zero3.")
    return chosen


def recipe_setup(recipe: Recipe, gpus: int, strategy: str, lora_params: int, targets: tuple[LoraTarget, ...]) -> Setup:
    """The memory-relevant choices of a recipe on GPUs (dtype auto = bfloat16 there)."""
    from tailor.choices import optimizer_name

    t, p = recipe.training, recipe.peft
    weight_bytes = 4 if recipe.model.dtype == "float32" else 2
    act_bytes = 2 if (weight_bytes == 2 or t.mixed_precision != "fp32") else 4  # auto: bf16/fp16 on GPUs
    return Setup(method=p.method, weight_bytes=weight_bytes, act_bytes=act_bytes, lora_r=p.r, lora_dropout=p.dropout,
                 use_dora=p.use_dora, lora_params=lora_params, targets=targets, micro_batch=t.batch_size,
                 seq_len=t.max_length, gradient_checkpointing=t.gradient_checkpointing,
                 attn=recipe.model.attn_implementation, padding_free=t.padding_free,
                 optim=optimizer_name(recipe, on_gpu=True, strategy=strategy),
                 strategy=strategy, gpus=gpus)  # type: ignore[arg-type]


@dataclass
class Plan:
    """The estimate for the recipe as written, the largest micro batch, and the verdict."""

    recipe_name: str
    model: str
    arch: Arch
    gpus: int
    gpu_mem_gib: float
    estimate: Estimate
    max_micro_batch: int
    max_micro_batch_checkpointed: int

    @property
    def setup(self) -> Setup:
        return self.estimate.setup

    @property
    def capacity(self) -> float:
        return usable_bytes(self.gpu_mem_gib)

    @property
    def fits(self) -> bool:
        return self.estimate.total <= self.capacity

    def table(self) -> str:
        s, a = self.setup, self.arch
        lines = [f"memory plan: {self.recipe_name} ({self.model}, {a.params_total / 1e9:.2f}B params, "
                 f"{s.method}, r={s.lora_r}, {s.lora_params / 1e6:.1f}M adapter params)",
                 f"  {self.gpus} GPU(s) x {self.gpu_mem_gib:g} GiB, strategy {s.strategy}, optimizer {s.optim}, "
                 f"micro batch {s.micro_batch} x {s.seq_len} tokens, gradient checkpointing "
                 f"{'on' if s.gradient_checkpointing else 'off'}",
                 f"  {'component (per device)':<34}{'GiB':>9}"]
        lines += [f"  {name:<34}{value / GiB:>9.2f}" for name, value in self.estimate.components.items() if value]
        lines.append(f"  {'total':<34}{self.estimate.total / GiB:>9.2f}   of {self.capacity / GiB:.2f} usable "
                     f"({self.gpu_mem_gib:g} GiB less a 5% margin)")
        checkpointing = "with" if s.gradient_checkpointing else "without"
        lines += [f"  largest micro batch that fits: {self.max_micro_batch} ({checkpointing} gradient checkpointing)"
                  + ("" if s.gradient_checkpointing else f", {self.max_micro_batch_checkpointed} with it"),
                  f"verdict: {self.verdict()}"]
        return "\n".join(lines)

    def verdict(self) -> str:
        used = f"{self.estimate.total / GiB:.1f} of {self.capacity / GiB:.1f} GiB"
        if self.fits:
            return f"FITS ({used}); micro batch {self.setup.micro_batch}, up to {self.max_micro_batch}."
        return f"DOES NOT FIT ({used}). " + "; ".join(self.fixes())

    def fixes(self) -> list[str]:
        """Concrete changes that would make the recipe fit, best first."""
        s, out = self.setup, []
        if self.max_micro_batch >= 1:
            out.append(f"lower training.batch_size to {self.max_micro_batch} (raise training.grad_accum to keep the "
                       "global batch)")
        if not s.gradient_checkpointing and self.max_micro_batch_checkpointed >= 1:
            out.append(f"turn on training.gradient_checkpointing=true (micro batch up to "
                       f"{self.max_micro_batch_checkpointed})")
        if s.method == "lora":
            qlora = replace(s, method="qlora", optim="paged_adamw_8bit" if not s.deepspeed else s.optim)
            best = largest_micro_batch(self.arch, qlora, self.gpu_mem_gib)
            if best >= 1:
                out.append(f"use peft.method=qlora (4-bit base weights; micro batch up to {best})")
            elif largest_micro_batch(self.arch, replace(qlora, gradient_checkpointing=True), self.gpu_mem_gib):
                out.append("use peft.method=qlora with training.gradient_checkpointing=true")
        if s.strategy in ("ddp", "zero2") or s.gpus == 1:
            for gpus in (g for g in (2, 4, 8) if g > s.gpus):
                sharded = replace(s, strategy="fsdp", gpus=gpus)
                if largest_micro_batch(self.arch, sharded, self.gpu_mem_gib) >= min(1, s.micro_batch):
                    out.append(f"shard the weights over more GPUs: GPUS={gpus} STRATEGY=fsdp")
                    break
        if not out:
            out.append("use GPUs with more memory or a smaller model; not even one sequence of "
                       f"{s.seq_len} tokens fits (also try a lower training.max_length)")
        return out


def make_plan(recipe: Recipe, gpus: int, gpu_mem_gb: float, strategy: str | None = None,
              arch_file: str | Path | None = None) -> Plan:
    """The memory plan of a recipe on `gpus` GPUs of `gpu_mem_gb` GiB each."""
    if gpus < 1:
        raise TailorError(f"--gpus {gpus}: need at least one GPU.")
    if gpu_mem_gb <= 0:
        raise TailorError(f"--gpu-mem {gpu_mem_gb}: give the memory of one GPU in GiB, e.g. 80.")
    chosen = resolve_strategy(recipe, strategy, gpus)
    arch, lora_params, targets = build_arch(recipe, arch_file)
    setup = recipe_setup(recipe, gpus, chosen, lora_params, targets)
    return Plan(recipe.name, recipe.model.name_or_path, arch, gpus, gpu_mem_gb, estimate(arch, setup),
                largest_micro_batch(arch, setup, gpu_mem_gb),
                largest_micro_batch(arch, replace(setup, gradient_checkpointing=True), gpu_mem_gb))


def check_fits(recipe: Recipe, gpus: int, gpu_mem_gb: float | None = None, strategy: str | None = None,
               arch_file: str | Path | None = None) -> Plan:
    """The plan; warns over the usable memory, raises over `REFUSE_FACTOR` times it (gpu_mem_gb None: GPU 0's)."""
    if gpu_mem_gb is None:
        import torch

        if not torch.cuda.is_available():
            raise TailorError("check_fits: no GPU visible; pass gpu_mem_gb (GiB per GPU).")
        gpu_mem_gb = torch.cuda.get_device_properties(0).total_memory / GiB
    plan = make_plan(recipe, gpus, gpu_mem_gb, strategy, arch_file)
    if plan.fits:
        return plan
    s, ratio = plan.setup, plan.estimate.total / plan.capacity
    shortfall = (f"about {plan.estimate.total / GiB:.1f} GiB per device needed, {plan.capacity / GiB:.1f} GiB usable "
                 f"({ratio:.2f}x; {gpus} x {gpu_mem_gb:g} GiB, {s.strategy}, micro batch {s.micro_batch} x "
                 f"{s.seq_len} tokens)")
    fixes = "; or ".join(plan.fixes()) + f". Details: make plan RECIPE=... GPUS={gpus} GPU_MEM={gpu_mem_gb:g}."
    if ratio > REFUSE_FACTOR:
        raise TailorError(
            f"recipe {recipe.name} will not fit in GPU memory: {shortfall}, beyond the {REFUSE_FACTOR:g}x margin "
            f"allowed while the estimate is not validated on GPUs. Fix: {fixes} To launch anyway: --no-memory-check "
            "(or TAILOR_NO_MEMORY_CHECK=1).")
    print(f"warning: recipe {recipe.name} may not fit in GPU memory: {shortfall}. The estimate is not yet validated "
          f"on GPUs, so training starts (refused only above {REFUSE_FACTOR:g}x). If it runs out of memory: {fixes}",
          file=sys.stderr, flush=True)
    return plan


def stage(recipe: Recipe, args: argparse.Namespace) -> None:
    print(make_plan(recipe, args.gpus, args.gpu_mem, args.strategy, args.arch).table())


def main(argv: list[str] | None = None) -> None:
    parser = recipe_parser("Estimate per-device GPU memory and the largest micro batch for a recipe.")
    parser.add_argument("--gpus", type=int, default=int(os.environ.get("GPUS") or 1), help="GPUs (processes)")
    parser.add_argument("--gpu-mem", type=float, default=float(os.environ.get("GPU_MEM") or 80),
                        help="memory of one GPU in GiB (default 80)")
    parser.add_argument("--strategy", default=None, help="ddp | fsdp | zero2 | zero3 (default: training.strategy)")
    parser.add_argument("--arch", default=None, help="a model config.json to use instead of the recipe's model")
    run_cli(stage, parser, argv, lock=False)  # read-only: no run-folder lock


if __name__ == "__main__":
    main()
