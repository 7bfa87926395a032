"""Load the models once and run every generating variant: answers (HF or vLLM) and held-out loss (HF).

Base and every adapter share one base model in memory (peft named adapters, switched per variant; the base runs
with the adapters disabled). A merged model folder (`--model DIR`) loads as its own model.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from eval.generate import Generations
from eval.variants import Variant
from tailor.schema import Recipe

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


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


def run_models(recipe: Recipe, variants: list[Variant], chat: list[dict], rows: list[dict],
               tokenizer: "PreTrainedTokenizerBase", backend: str = "hf") -> EngineOutput:
    """Generate on `chat` rows and compute the assistant-token loss on all `rows`, for each generating variant."""
    inputs = {"": SetInput(chat, rows, {v.name for v in variants})}
    return run_sets(recipe, variants, inputs, tokenizer, backend).sets[""]


def run_sets(recipe: Recipe, variants: list[Variant], inputs: dict[str, SetInput],
             tokenizer: "PreTrainedTokenizerBase", backend: str = "hf",
             retention: dict[str, list[dict]] | None = None) -> SetsOutput:
    """`run_models` for several eval sets with the models loaded once; with `retention`, also the per-row loss of
    base and tuned on each retention set (`eval.retention`)."""
    out = SetsOutput({name: EngineOutput(backend=backend) for name in inputs})
    todo = [v for v in variants if v.generates]
    if backend == "vllm":
        _vllm_generate(recipe, todo, inputs, out.sets)
    shared = [v for v in todo if v.kind in ("base", "adapter")]
    if shared:
        model = _shared_model(recipe, shared)
        for variant in shared:
            with _active(model, variant):
                _run_variant(model, tokenizer, variant, inputs, recipe, out, retention)
        del model
        gc.collect()
    for variant in (v for v in todo if v.kind == "model"):
        model = _merged_model(recipe, variant.source)
        _run_variant(model, tokenizer, variant, inputs, recipe, out, retention)
        del model
        gc.collect()
    return out


def _run_variant(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", variant: Variant,
                 inputs: dict[str, SetInput], recipe: Recipe, out: SetsOutput,
                 retention: dict[str, list[dict]] | None) -> None:
    import time

    from eval.loss import row_losses

    for name, item in inputs.items():
        if variant.name in item.variants:
            _run_one(model, tokenizer, variant, [row["prompt"] for row in item.chat], item.rows, recipe,
                     out.sets[name])
    if retention and variant.name in ("base", "tuned"):
        started = time.perf_counter()
        for name, rows in retention.items():
            out.retention.setdefault(name, {})[variant.name] = row_losses(model, rows, tokenizer.pad_token_id)
        out.retention_seconds[variant.name] = round(time.perf_counter() - started, 2)


def _run_one(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", variant: Variant, prompts: list[str],
             rows: list[dict], recipe: Recipe, out: EngineOutput) -> None:
    from eval.cost import gpus_used
    from eval.generate import generate
    from eval.loss import assistant_loss

    out.gpus = max(out.gpus, gpus_used(model))
    out.dtype = str(model.dtype).removeprefix("torch.")
    if variant.name not in out.generations:
        out.generations[variant.name] = generate(model, tokenizer, prompts, recipe.eval, desc=variant.name)
    out.losses[variant.name] = assistant_loss(model, rows, tokenizer.pad_token_id)


def _shared_model(recipe: Recipe, variants: list[Variant]) -> Any:
    from peft import PeftModel

    from tailor.models import load_model

    base = load_model(recipe.model, quantize_4bit=recipe.peft.method == "qlora", for_generation=True)
    adapters = [v for v in variants if v.kind == "adapter"]
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


def _merged_model(recipe: Recipe, folder: str) -> "PreTrainedModel":
    from tailor.models import load_model

    settings = recipe.model.model_copy(update={"name_or_path": folder, "gguf_file": None, "revision": None})
    return load_model(settings, for_generation=True)


def _vllm_generate(recipe: Recipe, variants: list[Variant], inputs: dict[str, SetInput],
                   outs: dict[str, EngineOutput]) -> None:
    """Every variant's answers on every set from vLLM: one engine for base + adapters, one per merged model folder."""
    import torch

    from eval.backends import VllmEngine
    from tailor.models import model_source

    shared = [v for v in variants if v.kind in ("base", "adapter")]
    groups = ([(model_source(recipe.model), shared)] if shared else []) + \
        [(v.source, [v]) for v in variants if v.kind == "model"]
    for path, group in groups:
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
