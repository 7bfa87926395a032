"""Load the models once and run every generating variant: answers (HF or vLLM) and held-out loss (HF).

Base and every adapter share one base model in memory (peft named adapters, switched per variant; the base runs
with the adapters disabled). A merged model folder (`--model DIR`) loads as its own model.
"""

from __future__ import annotations

import contextlib
import gc
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from eval.generate import Generations
from eval.variants import Variant
from tailor.schema import Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class EngineOutput:
    generations: dict[str, Generations] = field(default_factory=dict)
    losses: dict[str, dict[str, float]] = field(default_factory=dict)
    backend: str = "hf"
    gpus: int = 0
    dtype: str | None = None  # weights dtype of the transformers models that generated


@dataclass
class SetInput:
    """One eval set for the engine: rows to generate on (`chat`), rows for the loss, the variants that run on it."""

    chat: list[dict]
    rows: list[dict]
    variants: set[str]


@dataclass
class SetsOutput:
    sets: dict[str, EngineOutput]
    retention: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)  # set -> variant -> per row
    retention_seconds: dict[str, float] = field(default_factory=dict)  # per variant


def run_sets(recipe: Recipe, variants: list[Variant], inputs: dict[str, SetInput], tokenizer: "PreTrainedTokenizerBase",
             backend: str = "hf", retention: dict[str, list[dict]] | None = None) -> SetsOutput:
    """Answers on each set's `chat` rows and the assistant-token loss on all its `rows`, per generating variant,
    with the models loaded once; with `retention`, also base's and tuned's per-row loss on each retention set."""
    out = SetsOutput({name: EngineOutput(backend=backend) for name in inputs})
    todo = [v for v in variants if v.generates]
    if backend == "vllm":
        _vllm_generate(recipe, todo, inputs, out.sets)
    for group in _groups(todo):
        model = _load(recipe, group)
        for variant in group:
            with _active(model, variant):
                _run_variant(model, tokenizer, variant, inputs, recipe, out, retention)
        del model
        gc.collect()
    return out


def _groups(variants: list[Variant]) -> list[list[Variant]]:
    """Variants that share one loaded model: base and the adapters together, each merged model folder alone."""
    shared = [v for v in variants if v.kind in ("base", "adapter")]
    return ([shared] if shared else []) + [[v] for v in variants if v.kind == "model"]


def _run_variant(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", variant: Variant,
                 inputs: dict[str, SetInput], recipe: Recipe, out: SetsOutput,
                 retention: dict[str, list[dict]] | None) -> None:
    """Answers and loss of `variant` on every set it runs on, and (base, tuned) its per-row retention loss."""
    import time

    from eval.cost import gpus_used
    from eval.generate import generate
    from eval.loss import assistant_loss, row_losses

    for name, item in inputs.items():
        if variant.name in item.variants:
            set_out = out.sets[name]
            set_out.gpus = max(set_out.gpus, gpus_used(model))
            set_out.dtype = str(model.dtype).removeprefix("torch.")
            if variant.name not in set_out.generations:
                prompts = [row["prompt"] for row in item.chat]
                set_out.generations[variant.name] = generate(model, tokenizer, prompts, recipe.eval, desc=variant.name)
            set_out.losses[variant.name] = assistant_loss(model, item.rows, tokenizer.pad_token_id)
    if retention and variant.name in ("base", "tuned"):
        started = time.perf_counter()
        for name, rows in retention.items():
            out.retention.setdefault(name, {})[variant.name] = row_losses(model, rows, tokenizer.pad_token_id)
        out.retention_seconds[variant.name] = round(time.perf_counter() - started, 2)


def _load(recipe: Recipe, group: list[Variant]) -> Any:
    """A merged model folder alone, or the base model with the group's adapters as named peft adapters."""
    from peft import PeftModel

    from tailor.models import load_model

    if group[0].kind == "model":
        folder = {"name_or_path": group[0].source, "gguf_file": None, "revision": None}
        return load_model(recipe.model.model_copy(update=folder), for_generation=True)
    base = load_model(recipe.model, quantize_4bit=recipe.peft.method == "qlora", for_generation=True)
    adapters = [v for v in group if v.kind == "adapter"]
    if not adapters:
        return base
    model = PeftModel.from_pretrained(base, adapters[0].source, adapter_name=adapters[0].name)
    for variant in adapters[1:]:
        model.load_adapter(variant.source, adapter_name=variant.name)
    return model


@contextlib.contextmanager
def _active(model: Any, variant: Variant) -> Iterator[None]:
    """The base with every adapter off, or one named adapter on."""
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        yield
    elif variant.kind == "base":
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(variant.name)
        yield


def _vllm_generate(recipe: Recipe, variants: list[Variant], inputs: dict[str, SetInput],
                   outs: dict[str, EngineOutput]) -> None:
    """Every variant's answers on every set from vLLM: one engine for base + adapters, one per merged model folder."""
    import torch

    from eval.backends import VllmEngine
    from tailor.models import model_source

    for group in _groups(variants):
        path = group[0].source if group[0].kind == "model" else model_source(recipe.model)
        ranks = [json.loads((Path(v.source) / "adapter_config.json").read_text()).get("r", 8)
                 for v in group if v.kind == "adapter"]
        engine = VllmEngine(path, recipe.eval, max_lora_rank=max([8, *ranks]),
                            trust_remote_code=recipe.model.trust_remote_code)
        for variant in group:
            adapter = (variant.name, variant.source) if variant.kind == "adapter" else None
            for name, item in inputs.items():
                if variant.name in item.variants:
                    outs[name].generations[variant.name] = engine.generate([r["prompt"] for r in item.chat], adapter)
        engine.close()
    for out in outs.values():
        out.gpus = torch.cuda.device_count()
