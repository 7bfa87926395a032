"""`make bench`: training throughput of tailor's defaults vs plain trl tuned by hand and trl's defaults, same run.

    python -m bench.train [--model tiny|test|qwen2.5-0.5b|qwen2.5-7b|qwen3-8b] [--seq N] [--steps N]
                          [--warmup N] [--methods lora qlora] [--batch N] [--set key=value ...] [--no-record]

All rows train the same adapter (the recipe's peft section: r 16, alpha 32, all linear layers) for a fixed number
of steps on the same synthetic token rows: lengths from a seeded log-normal (median seq/8, sigma 1) clipped to
[64, seq], random token ids, the loss on the second half of each row (the "assistant" part).

- tailor: a recipe with tailor's defaults (plus `--set` overrides), trainer built by `train.run.build_trainer`,
  exactly as `make train` builds it (the synthetic rows are written as the run's prepared data). On a GPU its
  micro batch is the largest the memory planner says fits (`--batch` sets it instead).
- trl-tuned: plain trl (`from_pretrained`, peft `LoraConfig` with the same adapter, `SFTTrainer`) with the switches
  a competent user sets by hand, like for like with the tailor row: packing (trl's BFD, padding-free), gradient
  checkpointing as the tailor row (off by default), the same precision (`tailor.precision`: bf16/fp16 autocast, the
  same weights and NF4 compute dtype), optimizer, Liger choice, micro batch, grad accum and max_length, sdpa
  attention. What is left between the two is tailor's own: `compact_lm_head` on CPUs (trl compacts the LM head
  itself on GPUs, with Triton), shown in the settings column.
- trl-defaults: what a plain trl script gets without tuning: trl's default `SFTConfig` (no packing, no Liger,
  gradient checkpointing on, bf16 autocast, per-row padding, micro batch 8); only the output folder, max_steps,
  max_length = seq and the CPU switch are set.

Each row runs in its own process (peak memory per row, no kernel patch leaking into the next row). Reported:
trained tokens/s (non-padding input tokens, after the warmup steps), median step time, peak memory
(torch.cuda.max_memory_allocated on GPUs, with the memory planner's estimate beside it; peak RSS of the process on
CPU), MFU (FLOP count in bench/flops.py, over the GPU's bf16 peak from a table, or over this CPU's measured
matrix-product peak), and tailor/trl-tuned and tailor/trl-defaults. Models have random weights from
tailor/arch_configs/*.json (throughput does not depend on the weights), built once into .cache/bench-models/.
Results append to BENCHMARKS.md unless --no-record.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any, Callable, Mapping

from bench.flops import effective_length, flops_per_token, gpu_peak_flops, measure_matmul_peak, shape_from_config
from bench.record import add_to_section
from tailor.errors import TailorError
from tailor.runs import atomic_dir, atomic_write_json, atomic_write_text
from train.plan import arch_configs

BENCHMARKS = Path("BENCHMARKS.md")
SECTION = "Training throughput: tailor vs plain trl (`make bench`)"
INTRO = ("Same adapter, same synthetic rows. Rows: **tailor defaults** = the recipe defaults built by "
         "train.run.build_trainer; **trl tuned by hand** = plain trl SFTTrainer with packing (BFD, padding-free), "
         "no gradient checkpointing, the same precision, optimizer, micro batch, grad accum and max_length as the "
         "tailor row, sdpa (what tailor adds on top is its settings column's difference: compact_lm_head on CPUs); "
         "**trl defaults** = plain trl SFTTrainer with its default SFTConfig. tokens/s = non-padding input tokens "
         "after the warmup steps; MFU with the FLOP count of bench/flops.py; on GPUs the peak memory cell also gives "
         "the memory planner's error (docs/benchmarking.md).")
SIDES = ("tailor", "trl-tuned", "trl-defaults")
LABELS = {"tailor": "tailor defaults", "trl-tuned": "trl tuned by hand", "trl-defaults": "trl defaults"}
MEMORY_GOAL = 0.15  # the planner should be within 15% of the measured peak (docs/memory-planner.md)
TOKEN_ID_LIMIT = 151643  # ordinary BPE ids of the Qwen tokenizer: no special or pad token among the random rows

# A small Qwen2 for CPU runs: big enough that matrix products, not Python overhead, take the time; real vocabulary.
TINY_CONFIG: dict[str, Any] = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu", "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 151936, "max_position_embeddings": 32768,
    "tie_word_embeddings": True, "use_sliding_window": False, "bos_token_id": 151643, "eos_token_id": 151645,
    "torch_dtype": "bfloat16",
}


# ------------------------------------------------------------------------------------------------ models and data

def model_names() -> list[str]:
    return ["tiny", "test", *sorted(arch_configs())]


def bench_model_config(name: str) -> dict[str, Any]:
    """config.json contents of a bench model: the CPU `tiny` one or a shipped architecture config."""
    if name == "tiny":
        return dict(TINY_CONFIG)
    path = arch_configs().get(name)
    if path is None:
        raise TailorError(f"--model {name}: unknown; choose one of {', '.join(model_names())}.")
    return json.loads(path.read_text(encoding="utf-8"))


def tokenizer_family(config: dict[str, Any]) -> str:
    return "qwen3" if config["model_type"].startswith("qwen3") else "qwen2.5"


def ensure_bench_tokenizer(family: str) -> Path:
    """The real Qwen tokenizer (with chat template) of a model family, saved once into
    `.cache/bench-models/tokenizers/<family>` (about 8 MB: what a GPU machine needs carried)."""
    from tailor.runs import cache_dir

    target = cache_dir() / "bench-models" / "tokenizers" / family
    if (target / "tokenizer_config.json").is_file():
        return target
    import shutil

    from tests.tiny_models import ensure_tiny_model

    source = ensure_tiny_model(family)
    with atomic_dir(target) as tmp:
        for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
            if (source / name).is_file():
                shutil.copyfile(source / name, tmp / name)
    return target


def ensure_bench_model(name: str) -> Path:
    """A checkpoint folder with random weights (seeded, bf16 like the real checkpoints) and the real Qwen tokenizer,
    built once into `.cache/bench-models/<name>`; `test` is the tiny Qwen2.5 test checkpoint."""
    from tailor.runs import cache_dir
    from tests.tiny_models import ensure_tiny_model

    if name == "test":
        return ensure_tiny_model("qwen2.5")
    config_dict = bench_model_config(name)
    shape_from_config(config_dict)  # refuse what the FLOP count cannot describe before building anything
    target = cache_dir() / "bench-models" / name
    if (target / "config.json").is_file():
        return target
    import shutil

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = ensure_bench_tokenizer(tokenizer_family(config_dict))
    config = AutoConfig.for_model(**config_dict)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"building random-weight {name} checkpoint in {target} (once)", flush=True)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    with atomic_dir(target) as tmp:
        model.save_pretrained(tmp)
        for path in tokenizer.iterdir():
            shutil.copyfile(path, tmp / path.name)
    del model
    return target


def synthetic_lengths(rows: int, seq: int, seed: int = 0) -> list[int]:
    """Row lengths of a realistic SFT mix: log-normal, median seq/8, sigma 1, clipped to [64, seq]."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(mean=math.log(seq / 8), sigma=1.0, size=rows)
    return [int(n) for n in np.clip(lengths, min(64, seq), seq)]


def write_rows(path: Path, lengths: list[int], seed: int = 0) -> None:
    """Random token rows as prepared data (input_ids, assistant_masks: the loss on the second half)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed + 1)
    ids = [rng.integers(0, TOKEN_ID_LIMIT, size=n, dtype=np.int64).tolist() for n in lengths]
    masks = [[0] * (n // 2) + [1] * (n - n // 2) for n in lengths]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"input_ids": ids, "assistant_masks": masks}), path)


def rows_needed(steps: int, batch: int, seq: int, mean_length: float) -> int:
    """Enough rows for `steps` full micro batches, padded or packed into seq-long sequences."""
    packed = math.ceil(1.3 * steps * batch * seq / mean_length)
    return max(2 * steps * batch, packed) + 8


# ------------------------------------------------------------------------------------------------ one row

def bench_recipe_file(workdir: Path, model_dir: Path, data: Path) -> Path:
    """A recipe with tailor's defaults, pointing at the bench model; data is written as prepared data later."""
    path = workdir / "bench-recipe.yaml"
    recipe = {"name": "bench", "output_dir": str(workdir / "runs"), "model": {"name_or_path": str(model_dir)},
              "data": {"sources": [{"path": str(data)}]}, "tracking": {"mode": "disabled"}}
    atomic_write_text(path, json.dumps(recipe, indent=2) + "\n")
    return path


def row_overrides(spec: dict[str, Any]) -> list[str]:
    """Settings every tailor row gets: the method, the step count, the sequence length, then the user's."""
    batch = [f"training.batch_size={spec['batch']}"] if spec.get("batch") else []
    return [f"name=bench-{spec['method']}", f"peft.method={spec['method']}",
            f"training.max_steps={spec['warmup'] + spec['steps']}", f"training.max_length={spec['seq']}",
            "training.warmup_ratio=0", *batch, *spec["overrides"]]


def tailor_recipe(spec: dict[str, Any], plan: bool = True) -> Any:
    """The tailor row's recipe; on a GPU without --batch (and `plan`), with the micro batch the memory planner
    chooses."""
    import torch

    from tailor.recipe import load_recipe

    recipe = load_recipe(spec["recipe"], row_overrides(spec))
    if plan and not spec.get("batch") and torch.cuda.is_available():
        batch = planned_micro_batch(recipe, torch.cuda.get_device_properties(0).total_memory / 2**30)
        recipe = load_recipe(spec["recipe"], [*row_overrides(spec), f"training.batch_size={batch}"])
    return recipe


def install_rows(recipe: Any, rows: Path) -> None:
    """Make the bench rows the recipe's prepared data (with a manifest whose data hash matches the recipe)."""
    import shutil

    from tailor.contract import data_hash
    from tailor.runs import run_paths

    paths = run_paths(recipe)
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(rows, paths.train_data)
    atomic_write_json(paths.manifest, {"data_hash": data_hash(recipe), "synthetic": True})


def tailor_trainer(spec: dict[str, Any], recipe: Any) -> Any:
    """tailor's trainer, built by train.run.build_trainer from a recipe whose prepared data are the bench rows."""
    from train.run import build_trainer

    install_rows(recipe, Path(spec["data"]))
    return build_trainer(recipe)[0]


def planned_micro_batch(recipe: Any, gpu_mem_gib: float, gpus: int = 1) -> int:
    """The tailor row's micro batch on a GPU: the largest the memory planner says fits with the recipe's settings
    (packed max_length sequences, checkpointing as set), or the recipe's own when not even one sequence fits (the
    row then reports the out-of-memory error)."""
    from train.plan import make_plan

    return make_plan(recipe, gpus=gpus, gpu_mem_gb=gpu_mem_gib).max_micro_batch or recipe.training.batch_size


def trl_tuned_trainer(spec: dict[str, Any], recipe: Any) -> Any:
    """Plain trl tuned by hand, like for like with the tailor row's recipe: packing (BFD, padding-free), its
    gradient checkpointing (off by default), precision, weights and NF4 compute dtype, optimizer, Liger choice,
    micro batch, grad accum and max_length; sdpa attention. Not tailor's CPU LM-head compaction."""
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from train import lm_head

    lm_head.disable()  # trl's own LM-head rule, also after a tailor row in this process (--in-process)
    args = SFTConfig(output_dir=str(Path(spec["workdir"]) / "trl-tuned"), packing=True,
                     **tuned_switches(spec, recipe))
    return SFTTrainer(model=tuned_model(spec, recipe), args=args, train_dataset=bench_dataset(spec),
                      processing_class=AutoTokenizer.from_pretrained(spec["model_dir"]),
                      peft_config=tuned_lora(recipe))


def tuned_model(spec: dict[str, Any], recipe: Any) -> Any:
    """The model of a trl-tuned row: `from_pretrained` with sdpa and the tailor row's weights dtype (the precision's
    dtype on GPUs, float32 under autocast on CPUs) and NF4 compute dtype."""
    from tailor.models import resolve_dtype

    dtype = resolve_dtype(recipe.model)
    return trl_model(spec, {"bnb_4bit_compute_dtype": dtype, "bnb_4bit_quant_storage": dtype}, dtype=dtype,
                     attn_implementation="sdpa")


def tuned_switches(spec: dict[str, Any], recipe: Any) -> dict[str, Any]:
    """The trl config arguments (any method's: SFTConfig, DPOConfig) a competent user sets by hand to match the
    tailor row: its precision, optimizer, Liger choice, micro batch, grad accum, max_length and gradient
    checkpointing; warmup + steps steps, no saving, non-padding tokens counted."""
    import torch

    from tailor.choices import optimizer_name, use_liger
    from tailor.precision import resolve_precision

    t = recipe.training
    gpu = torch.cuda.is_available()
    precision = resolve_precision(t.mixed_precision).name  # what the tailor row trains in
    return dict(max_steps=spec["warmup"] + spec["steps"], max_length=t.max_length,
                per_device_train_batch_size=t.batch_size, gradient_accumulation_steps=t.grad_accum,
                gradient_checkpointing=t.gradient_checkpointing,
                gradient_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
                bf16=precision == "bf16", fp16=precision == "fp16", optim=optimizer_name(recipe, on_gpu=gpu),
                use_liger_kernel=use_liger(recipe, on_gpu=gpu), use_cpu=not gpu, report_to="none",
                save_strategy="no", include_num_input_tokens_seen="non_padding", disable_tqdm=True)


def tuned_lora(recipe: Any) -> Any:
    """The recipe's adapter as a plain peft LoraConfig."""
    from peft import LoraConfig

    peft = recipe.peft
    return LoraConfig(r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout, target_modules=peft.target_modules,
                      use_rslora=peft.use_rslora, use_dora=peft.use_dora, bias="none", task_type="CAUSAL_LM")


def trl_defaults_trainer(spec: dict[str, Any], recipe: Any) -> Any:
    """A plain trl script: from_pretrained, LoraConfig (same adapter), SFTTrainer with trl's default SFTConfig."""
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from train import lm_head

    lm_head.disable()  # trl's own LM-head rule, also after a tailor row in this process (--in-process)
    peft = recipe.peft
    gpu = torch.cuda.is_available()
    model = trl_model(spec, {"bnb_4bit_compute_dtype": torch.bfloat16})
    batch = {"per_device_train_batch_size": spec["batch"]} if spec.get("batch") else {}
    args = SFTConfig(output_dir=str(Path(spec["workdir"]) / "trl-defaults"), max_steps=spec["warmup"] + spec["steps"],
                     max_length=spec["seq"], use_cpu=not gpu, report_to="none", save_strategy="no",
                     include_num_input_tokens_seen="non_padding", disable_tqdm=True, **batch)
    lora = LoraConfig(r=peft.r, lora_alpha=peft.alpha, lora_dropout=peft.dropout,
                      target_modules=peft.target_modules, task_type="CAUSAL_LM")
    return SFTTrainer(model=model, args=args, train_dataset=bench_dataset(spec),
                      processing_class=AutoTokenizer.from_pretrained(spec["model_dir"]), peft_config=lora)


def trl_model(spec: dict[str, Any], nf4: dict[str, Any], **kwargs: Any) -> Any:
    """`from_pretrained` of the bench model as a plain trl script loads it; QLoRA rows: NF4 with double quantization
    (`nf4`: the compute and storage dtypes), on GPU 0 when there is one."""
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if spec["method"] == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                           bnb_4bit_use_double_quant=True, **nf4)
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": 0}
    return AutoModelForCausalLM.from_pretrained(spec["model_dir"], **kwargs)


def bench_dataset(spec: dict[str, Any]) -> Any:
    from datasets import load_dataset

    return load_dataset("parquet", data_files=spec["data"], split="train")


TRAINERS = {"tailor": tailor_trainer, "trl-tuned": trl_tuned_trainer, "trl-defaults": trl_defaults_trainer}


def planned_memory(recipe: Any, side: str, gpu_mem_gib: float) -> dict[str, float] | None:
    """The memory planner's components (bytes) for a GPU row: the tailor row's recipe (trl-tuned: with packing, as
    it trains); None for trl-defaults, whose padded batches of 8 the recipe does not describe."""
    from train.plan import make_plan

    if side == "trl-defaults":
        return None
    if side == "trl-tuned":
        recipe = recipe.model_copy(update={"training": recipe.training.model_copy(update={"packing": True})})
    return dict(make_plan(recipe, gpus=1, gpu_mem_gb=gpu_mem_gib).estimate.components)


def compare_memory(components: Mapping[str, float], allocated: float, reserved: float) -> dict[str, float]:
    """The planner against the measured peaks. `torch.cuda.max_memory_allocated` sees neither the CUDA context nor
    NCCL's buffers nor the allocator's slack, so it is compared with the plan less those; `max_memory_reserved`
    (slack included) with the plan less the context and NCCL. Errors are planned / measured - 1 (> 0: the plan is
    above the measurement); `within_goal` is 1.0 when the allocated error is within MEMORY_GOAL."""
    total = float(sum(components.values()))
    outside = components.get("CUDA context", 0.0) + components.get("NCCL buffers", 0.0)
    slack = components.get("allocator fragmentation", 0.0)
    planned_allocated = total - outside - slack
    planned_reserved = total - outside
    error = planned_allocated / allocated - 1 if allocated else float("nan")
    return {"planned_total": total, "planned_allocated": planned_allocated, "measured_allocated": float(allocated),
            "error_allocated": error, "planned_reserved": planned_reserved, "measured_reserved": float(reserved),
            "error_reserved": planned_reserved / reserved - 1 if reserved else float("nan"),
            "within_goal": float(abs(error) <= MEMORY_GOAL)}


def make_step_timer(sync: Any) -> Any:
    """A callback that stamps the end of each optimizer step and the input tokens seen so far."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.stamps: list[tuple[float, int]] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            self.stamps = [(time.perf_counter(), int(state.num_input_tokens_seen or 0))]

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            sync()
            self.stamps.append((time.perf_counter(), int(state.num_input_tokens_seen or 0)))

    return StepTimer()


def trainer_settings(trainer: Any) -> dict[str, Any]:
    """The trainer facts that decide speed, read from the built trainer (not from what we asked for)."""
    args, model = trainer.args, trainer.model
    config = getattr(model, "config", None)
    settings = {"batch": args.per_device_train_batch_size, "grad_accum": args.gradient_accumulation_steps,
                "packing": bool(getattr(args, "packing", False)),
                "padding_free": bool(getattr(trainer, "padding_free", False)),
                "gradient_checkpointing": bool(args.gradient_checkpointing), "bf16": bool(args.bf16),
                "fp16": bool(args.fp16),
                "optim": str(getattr(args.optim, "value", args.optim)),
                "liger": bool(getattr(args, "use_liger_kernel", False)), "torch_compile": bool(args.torch_compile),
                "attn": getattr(config, "_attn_implementation", None),
                "compact_lm_head": _lm_head_compacts(model)}
    return settings


def _lm_head_compacts(model: Any) -> bool:
    """Whether trl's fused LM head projects only the trained positions on this model's device."""
    from trl.trainer import utils as trl_utils

    return bool(trl_utils._use_triton(next(model.parameters()).device))


def compute_dtype(trainer: Any) -> str:
    """bfloat16 (float16) when the matrix products run in it: autocast, weights or NF4 compute dtype; else float32."""
    import torch

    model = trainer.model
    quant = getattr(getattr(model, "config", None), "quantization_config", None)
    quant_dtype = quant.get("bnb_4bit_compute_dtype") if isinstance(quant, dict) else \
        getattr(quant, "bnb_4bit_compute_dtype", None)
    for name, flag in (("bfloat16", trainer.args.bf16), ("float16", trainer.args.fp16)):
        if flag or model.dtype == getattr(torch, name) or str(quant_dtype).endswith(name):
            return name
    return "float32"


def run_row(spec: dict[str, Any]) -> dict[str, Any]:
    """Build one trainer (tailor, trl-tuned or trl-defaults), train warmup + steps, and measure."""
    import torch

    result: dict[str, Any] = {"side": spec["side"], "method": spec["method"]}
    recipe = tailor_recipe(spec, plan=spec["side"] != "trl-defaults")
    trainer = TRAINERS[spec["side"]](spec, recipe)
    result["settings"] = trainer_settings(trainer)
    result["dtype"] = compute_dtype(trainer)
    if not timed_train(trainer, spec, result):
        return result
    if torch.cuda.is_available():
        try:
            components = planned_memory(recipe, spec["side"],
                                        torch.cuda.get_device_properties(0).total_memory / 2**30)
        except TailorError as err:  # the measurement stands without the plan
            components, result["memory_plan_error"] = None, str(err)
        if components:
            result["memory_plan"] = compare_memory(components, torch.cuda.max_memory_allocated(),
                                                   torch.cuda.max_memory_reserved())
    shape = shape_from_config(json.loads((Path(spec["model_dir"]) / "config.json").read_text()))
    peft = trainer.model.peft_config["default"]  # target_modules as peft resolved them (a set of names)
    targets = peft.target_modules if isinstance(peft.target_modules, str) else set(peft.target_modules)
    flops = flops_per_token(shape, peft.r, targets, spec["doc_length"], spec["loss_fraction"],
                            result["settings"]["gradient_checkpointing"])
    result["flops_per_token"] = flops.as_dict()
    peak = spec["peaks"].get(result["dtype"])
    result["mfu"] = result["tokens_per_second"] * flops.total / peak if peak else None
    return result


def timed_train(trainer: Any, spec: dict[str, Any], result: dict[str, Any]) -> bool:
    """Train warmup + steps optimizer steps (under torch.profiler with spec["profile"]) and add the measurements to
    `result`: loss, peak_memory (torch.cuda.max_memory_allocated on GPUs, the process's peak RSS on CPU), and over the
    steps after the warmup: steps_measured, step_seconds (median), tokens_per_step and tokens_per_second (the
    trainer's non-padding input tokens). Out of memory: result["error"], and False."""
    import resource

    import torch

    gpu = torch.cuda.is_available()
    timer = make_step_timer(torch.cuda.synchronize if gpu else (lambda: None))
    trainer.add_callback(timer)
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    try:
        if spec.get("profile"):
            output = profile_training(trainer, Path(spec["profile"]), f"{spec['side']}-{spec['method']}")
        else:
            output = trainer.train()
    except torch.OutOfMemoryError as err:
        result["error"] = f"out of memory: {str(err).splitlines()[0][:160]}"
        return False
    result["loss"] = float(output.training_loss)
    result["peak_memory"] = (torch.cuda.max_memory_allocated() if gpu
                             else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    stamps = timer.stamps
    warmup = min(spec["warmup"], len(stamps) - 2)
    steps = [b[0] - a[0] for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    tokens = [b[1] - a[1] for a, b in zip(stamps[warmup:], stamps[warmup + 1:])]
    result.update(steps_measured=len(steps), step_seconds=sorted(steps)[len(steps) // 2],
                  tokens_per_step=sum(tokens) / len(steps), tokens_per_second=sum(tokens) / sum(steps))
    return True


def profile_training(trainer: Any, folder: Path, label: str) -> Any:
    """Train under torch.profiler; writes the top operators (self time) to folder/<label>.txt."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities, record_shapes=False) as prof:
        output = trainer.train()
    sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
    folder.mkdir(parents=True, exist_ok=True)
    table = prof.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=60)
    atomic_write_text(folder / f"{label}.txt", table + "\n")
    return output


def worker(spec_file: Path, run: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
    """Child-process entry: run one row (`run`, default this bench's run_row), write its result JSON (errors
    included, so the parent can report them)."""
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    try:
        result = (run or run_row)(spec)
    except TailorError as err:
        result = {"side": spec["side"], "method": spec["method"], "error": str(err)}
    atomic_write_json(Path(spec["result"]), result)


def run_isolated(spec: dict[str, Any], workdir: Path, module: str = "bench.train") -> dict[str, Any]:
    """Run one row in a fresh Python process (`python -m <module> --worker SPEC`) and read back its result."""
    name = f"{spec['side']}-{spec['method']}"
    spec_file = workdir / f"{name}.spec.json"
    atomic_write_json(spec_file, spec)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    log = workdir / f"{name}.log"
    with log.open("w") as handle:
        code = subprocess.call([sys.executable, "-m", module, "--worker", str(spec_file)], stdout=handle,
                               stderr=subprocess.STDOUT, env=env)
    result_file = Path(spec["result"])
    if code or not result_file.is_file():
        tail = log.read_text(errors="replace").strip().splitlines()[-5:]
        return {"side": spec["side"], "method": spec["method"], "error": f"exit {code}: " + " | ".join(tail)[-600:]}
    return json.loads(result_file.read_text())


# ------------------------------------------------------------------------------------------------ the whole run

def device_name() -> str:
    """What the numbers are measured on, e.g. 'NVIDIA H100 80GB HBM3 (1 GPU)', 'CPU x86_64, 2 threads'."""
    import torch

    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (1 GPU)"
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def device_info() -> dict[str, Any]:
    """What the numbers were measured on, and the peak FLOP/s per compute dtype."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        measured = measure_matmul_peak("cuda", "bfloat16")
        spec = gpu_peak_flops(name)
        peak = spec or measured  # fp16 tensor cores run at the bf16 rate
        return {"device": device_name(), "peaks": {"bfloat16": peak, "float16": peak},
                "peak_note": (f"bf16 peak {spec / 1e12:.0f} TFLOP/s (data sheet)" if spec else
                              "bf16 peak: not in the table, measured") +
                             f"; measured 8192^3 bf16 matmul {measured / 1e12:.0f} TFLOP/s"}
    peaks = {dtype: measure_matmul_peak("cpu", dtype) for dtype in ("float32", "bfloat16")}
    return {"device": device_name(), "peaks": peaks,
            "peak_note": "measured 1024^3 matmul peak: " +
                         ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())}


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    parts = [f"python {platform.python_version()}"]
    for package in ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "liger-kernel"):
        try:
            parts.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            pass
    return ", ".join(parts)


# CPU: the small model, short rows, few steps (under a minute per row on 2 cores); GPU: the 7B at 4096
DEFAULTS = {False: {"model": "tiny", "seq": 384, "steps": 6, "warmup": 1},
            True: {"model": "qwen2.5-7b", "seq": 4096, "steps": 20, "warmup": 3}}


def add_run_args(parser: argparse.ArgumentParser, defaults: dict[bool, dict[str, Any]], seq_help: str) -> None:
    """--model, --seq, --steps and --warmup, their CPU and GPU defaults in the help (shared by the bench modules)."""
    cpu, gpu = defaults[False], defaults[True]
    parser.add_argument("--model", help=f"one of {', '.join(model_names())} (default: {cpu['model']} on CPU, "
                        f"{gpu['model']} on a GPU)")
    parser.add_argument("--seq", type=int, help=f"{seq_help} (CPU {cpu['seq']}, GPU {gpu['seq']})")
    parser.add_argument("--steps", type=int, help=f"measured optimizer steps per row (CPU {cpu['steps']}, "
                        f"GPU {gpu['steps']})")
    parser.add_argument("--warmup", type=int, help=f"steps run before measuring (CPU {cpu['warmup']}, "
                        f"GPU {gpu['warmup']})")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.train", description=__doc__.splitlines()[0])
    add_run_args(parser, DEFAULTS, "max_length; rows are drawn up to this length")
    parser.add_argument("--methods", nargs="+", choices=["lora", "qlora"], default=["lora", "qlora"])
    parser.add_argument("--sides", nargs="+", choices=[*SIDES, "baseline"], default=list(SIDES),
                        help="rows to run (default: all three; baseline = trl-defaults)")
    parser.add_argument("--batch", type=int, help="micro batch for every row (default: each side's own default)")
    parser.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for the tailor row, e.g. training.packing=false (the trl-tuned row "
                        "follows its micro batch, grad accum, max_length, checkpointing, precision and adapter)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to BENCHMARKS.md")
    parser.add_argument("--benchmarks", type=Path, default=BENCHMARKS, metavar="FILE",
                        help="the file results are appended to (default BENCHMARKS.md)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the device, settings and results "
                        "to FILE")
    parser.add_argument("--in-process", action="store_true", help="run the rows in this process (debugging; "
                        "peak memory is then cumulative)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="run under torch.profiler, write the top "
                        "operators of each row to DIR/<side>-<method>.txt")
    parser.add_argument("--tokenizers-only", action="store_true", help="save the Qwen2.5 and Qwen3 tokenizers "
                        "into .cache/bench-models/tokenizers (to carry to a GPU machine) and exit")
    parser.add_argument("--train-run", type=Path, metavar="DIR", help="write a run of the bench rows that "
                        "`python -m train` trains (tailor defaults, --set, --steps + --warmup steps, the planner's "
                        "micro batch for all visible GPUs) under DIR, its arguments to DIR/train-args.txt, and exit")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.sides = list(dict.fromkeys("trl-defaults" if s == "baseline" else s for s in args.sides))
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run the benchmark; returns one result dict per row (a worker process returns none)."""
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if args.worker:
        worker(args.worker)
        return []
    if args.tokenizers_only:
        for family in ("qwen2.5", "qwen3"):
            print(ensure_bench_tokenizer(family))
        return []
    try:
        if args.train_run:
            print(write_train_run(args, args.train_run))
            return []
        return bench(args, argv if argv is not None else sys.argv[1:])
    except TailorError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


def apply_defaults(args: argparse.Namespace, gpu: bool) -> None:
    for key, value in DEFAULTS[gpu].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.seq < 64 or args.steps < 1 or args.warmup < 0:
        raise TailorError("--seq must be at least 64, --steps at least 1, --warmup at least 0.")


def bench(args: argparse.Namespace, argv: list[str]) -> list[dict[str, Any]]:
    import torch

    from tailor.recipe import load_recipe

    gpu = torch.cuda.is_available()
    apply_defaults(args, gpu)
    model_dir = ensure_bench_model(args.model)
    info = device_info()
    with tempfile.TemporaryDirectory(prefix="tailor-bench-") as tmp:
        workdir = Path(tmp)
        data = workdir / "rows.parquet"
        recipe_file = bench_recipe_file(workdir, model_dir, data)
        base_spec = {"model_dir": str(model_dir), "recipe": str(recipe_file), "data": str(data),
                     "workdir": str(workdir), "seq": args.seq, "steps": args.steps, "warmup": args.warmup,
                     "batch": args.batch, "overrides": args.overrides, "peaks": info["peaks"],
                     "profile": str(args.profile.resolve()) if args.profile else None}
        recipe = load_recipe(recipe_file, row_overrides({**base_spec, "method": "lora"}))  # fail early on typos
        # enough rows for the largest micro batch (trl's default 8; the planner's on a GPU) at every step
        biggest_batch = max(args.batch or 0, recipe.training.batch_size, 16 if gpu else 8)
        lengths = bench_lengths((args.warmup + args.steps) * recipe.training.grad_accum, biggest_batch, args.seq)
        write_rows(data, lengths)
        base_spec["doc_length"] = effective_length(lengths)
        base_spec["loss_fraction"] = sum(n - n // 2 for n in lengths) / sum(lengths)
        print(header(args, model_dir, info, lengths, base_spec), flush=True)
        sides = runnable_sides(args.sides, gpu)
        results = []
        for method in args.methods:
            for side in sides:
                spec = {**base_spec, "side": side, "method": method,
                        "result": str(workdir / f"{side}-{method}.result.json")}
                result = run_row(spec) if args.in_process else run_isolated(spec, workdir)
                results.append(result)
                print(format_row(result), flush=True)
            print(format_ratio(results, method), flush=True)
    if args.json:
        atomic_write_json(args.json, {"model": args.model, "seq": args.seq, "steps": args.steps,
                                      "warmup": args.warmup, "device": info["device"], "peak_note": info["peak_note"],
                                      "versions": versions(), "results": results})
    if not args.no_record:
        record(args, argv, info, results)
    return results


def runnable_sides(sides: list[str], gpu: bool) -> list[str]:
    """The rows to run. trl's defaults autocast to bf16 on a CPU too: on one without native bf16 (AVX2-only) that
    row would take hours, so it is left out with a note saying why (tailor and trl-tuned run in fp32 there)."""
    if gpu or "trl-defaults" not in sides:
        return sides
    from tailor.precision import device_precision

    chosen = device_precision()
    if chosen.name == "bf16":
        return sides
    print(f"trl-defaults: not run: trl's default bf16 autocast on this CPU is measured {chosen.slowdown:g}x slower "
          f"than fp32 ({chosen.measured}); the other rows run in fp32.", flush=True)
    return [s for s in sides if s != "trl-defaults"]


def bench_lengths(steps: int, batch: int, seq: int) -> list[int]:
    """Row lengths for `steps` micro batches of `batch` sequences (padded or packed)."""
    probe = synthetic_lengths(4096, seq)
    return synthetic_lengths(rows_needed(steps, batch, seq, sum(probe) / len(probe)), seq)


def write_train_run(args: argparse.Namespace, folder: Path) -> Path:
    """A run of the bench rows for `python -m train` (the multi-GPU check): the bench recipe with tailor's defaults,
    `--set`, warmup + steps optimizer steps and, on GPUs, the largest micro batch the planner says fits on all the
    visible GPUs; the rows as its prepared data. Writes `folder/train-args.txt` (the recipe file and overrides for
    `python -m train`) and returns its path."""
    import torch

    from tailor.recipe import load_recipe

    gpus = torch.cuda.device_count()
    apply_defaults(args, gpus > 0)
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    data = folder / "rows.parquet"
    recipe_file = bench_recipe_file(folder, ensure_bench_model(args.model), data)
    spec = {"method": args.methods[0], "warmup": args.warmup, "steps": args.steps, "seq": args.seq,
            "batch": args.batch, "overrides": args.overrides}
    overrides = ["name=bench-train", *row_overrides(spec)[1:]]  # row_overrides starts with the row's name
    recipe = load_recipe(recipe_file, overrides)
    if gpus and not args.batch:
        batch = planned_micro_batch(recipe, torch.cuda.get_device_properties(0).total_memory / 2**30, gpus)
        overrides.append(f"training.batch_size={batch}")
        recipe = load_recipe(recipe_file, overrides)
    t = recipe.training
    write_rows(data, bench_lengths((args.warmup + args.steps) * t.grad_accum * max(gpus, 1), t.batch_size, args.seq))
    install_rows(recipe, data)
    target = folder / "train-args.txt"
    atomic_write_text(target, " ".join(shlex.quote(a) for a in [str(recipe_file), *overrides]) + "\n")
    return target


# ------------------------------------------------------------------------------------------------ reporting

def header(args: argparse.Namespace, model_dir: Path, info: dict[str, Any], lengths: list[int],
           spec: dict[str, Any]) -> str:
    shape = shape_from_config(json.loads((model_dir / "config.json").read_text()))
    mean = sum(lengths) / len(lengths)
    return (f"bench: model {args.model} ({shape.layers} layers, hidden {shape.hidden}, "
            f"{shape.layer_params / 1e6:,.1f}M layer + {shape.head_params / 1e6:,.1f}M head weights), "
            f"seq {args.seq}, rows: mean {mean:.0f} tokens, effective attention length {spec['doc_length']:.0f}, "
            f"loss on {spec['loss_fraction']:.0%}; {args.warmup} warmup + {args.steps} measured steps\n"
            f"device: {info['device']}; {info['peak_note']}\n"
            f"rows: tailor = tailor defaults, trl-tuned = trl tuned by hand (packing, no checkpointing, same "
            f"precision, optimizer and micro batch), trl-defaults = trl's default SFTConfig\n"
            f"{'method':7} {'setup':12} {'batch':>5} {'tok/step':>9} {'step s':>8} {'tokens/s':>10} "
            f"{'peak mem':>9} {'GFLOP/tok':>10} {'MFU':>6}  settings")


def format_row(result: dict[str, Any]) -> str:
    lead = f"{result['method']:7} {result['side']:12}"
    if "error" in result:
        return f"{lead} FAILED: {result['error']}"
    s = result["settings"]
    flags = settings_text(s)
    mfu = f"{result['mfu']:.1%}" if result.get("mfu") is not None else "n/a"
    line = (f"{lead} {s['batch']:>5} {result['tokens_per_step']:>9,.0f} {result['step_seconds']:>8.3f} "
            f"{result['tokens_per_second']:>10,.1f} {result['peak_memory'] / 2**30:>7.2f}GB "
            f"{result['flops_per_token']['total'] / 1e9:>10.3f} {mfu:>6}  {result['dtype']}, {flags}")
    plan = result.get("memory_plan")
    if plan:
        line += "\n" + " " * 8 + format_memory_plan(plan)
    return line


def format_memory_plan(plan: Mapping[str, float]) -> str:
    """One line: the planner's estimate against the measured peaks (GiB)."""
    gib = 2**30
    return (f"memory plan {plan['planned_total'] / gib:.2f} GiB: allocated {plan['planned_allocated'] / gib:.2f} "
            f"planned vs {plan['measured_allocated'] / gib:.2f} measured ({plan['error_allocated']:+.1%}), reserved "
            f"{plan['planned_reserved'] / gib:.2f} vs {plan['measured_reserved'] / gib:.2f} "
            f"({plan['error_reserved']:+.1%}); goal within {MEMORY_GOAL:.0%}: "
            f"{'yes' if plan['within_goal'] else 'NO'}")


def settings_text(settings: dict[str, Any]) -> str:
    """The switches that are on, e.g. 'packing, padding_free, optim=adamw_torch_fused, attn=sdpa'."""
    shown = []
    for key, value in settings.items():
        if key == "batch" or value is False or value is None or (key == "grad_accum" and value == 1):
            continue
        shown.append(key if value is True else f"{key}={value}")
    return ", ".join(shown)


def ratio(results: list[dict[str, Any]], method: str, against: str) -> float | None:
    """tailor's tokens/s over the `against` row's, for one method; None when either row is missing or failed."""
    rows = {r["side"]: r for r in results if r["method"] == method and "error" not in r}
    if "tailor" in rows and against in rows and rows[against]["tokens_per_second"]:
        return rows["tailor"]["tokens_per_second"] / rows[against]["tokens_per_second"]
    return None


def format_ratio(results: list[dict[str, Any]], method: str) -> str:
    """e.g. 'lora    ratio tokens/s tailor/trl-tuned: 1.31x, tailor/trl-defaults: 3.80x' (the rows that ran)."""
    ran = {r["side"] for r in results if r["method"] == method}
    parts = []
    for against in (side for side in SIDES[1:] if side in ran):
        value = ratio(results, method, against)
        parts.append(f"tailor/{against}: " + (f"{value:.2f}x" if value is not None else "n/a"))
    return f"{method:7} ratio tokens/s " + (", ".join(parts) or "n/a")


def record(args: argparse.Namespace, argv: list[str], info: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Append this run (device, versions, settings, date, command, one line per row) to BENCHMARKS.md, atomically."""
    command = "python -m bench.train " + " ".join(shlex.quote(a) for a in argv)
    lines = [f"### {date.today()}: {args.model}, seq {args.seq}, {info['device']}", "",
             f"Command: `{command}` ({args.warmup} warmup + {args.steps} measured steps per row). "
             f"{info['peak_note']}. Versions: {versions()}.", "",
             "| method | setup | settings | batch | tokens/s | step (s) | peak memory | MFU | tailor / trl tuned "
             "| tailor / trl defaults |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        label = LABELS.get(r["side"], r["side"])
        if "error" in r:
            lines.append(f"| {r['method']} | {label} | | | failed: {r['error'][:120]} | | | | | |")
            continue
        s = r["settings"]
        settings = f"{r['dtype']}, {settings_text(s)}"
        ratios = [ratio(results, r["method"], against) if r["side"] == "tailor" else None for against in SIDES[1:]]
        plan = r.get("memory_plan")
        memory = f"{r['peak_memory'] / 2**30:.2f} GB" + (f" (plan {plan['error_allocated']:+.0%})" if plan else "")
        lines.append(f"| {r['method']} | {label} | {settings} | {s['batch']} | {r['tokens_per_second']:,.0f} | "
                     f"{r['step_seconds']:.3f} | {memory} | "
                     f"{'' if r.get('mfu') is None else format(r['mfu'], '.1%')} | "
                     + " | ".join("" if v is None else f"{v:.2f}x" for v in ratios) + " |")
    add_to_section(args.benchmarks, SECTION, INTRO, lines)
    print(f"recorded in {args.benchmarks}")


if __name__ == "__main__":
    main()
