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


def run_models(recipe: Recipe, variants: list[Variant], chat: list[dict], rows: list[dict],
               tokenizer: "PreTrainedTokenizerBase", backend: str = "hf") -> EngineOutput:
    """Generate on `chat` rows and compute the assistant-token loss on all `rows`, for each generating variant."""
    out = EngineOutput(backend=backend)
    todo = [v for v in variants if v.generates]
    prompts = [row["prompt"] for row in chat]
    if out.backend == "vllm":
        _vllm_generate(recipe, todo, prompts, out)
    shared = [v for v in todo if v.kind in ("base", "adapter")]
    if shared:
        model = _shared_model(recipe, shared)
        for variant in shared:
            with _active(model, variant):
                _run_one(model, tokenizer, variant, prompts, rows, recipe, out)
        del model
        gc.collect()
    for variant in (v for v in todo if v.kind == "model"):
        model = _merged_model(recipe, variant.source)
        _run_one(model, tokenizer, variant, prompts, rows, recipe, out)
        del model
        gc.collect()
    return out


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


def _vllm_generate(recipe: Recipe, variants: list[Variant], prompts: list[str], out: EngineOutput) -> None:
    """Every variant's answers from vLLM: one engine for base + adapters, one per merged model folder."""
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
            out.generations[variant.name] = engine.generate(prompts, adapter)
        engine.close()
    out.gpus = torch.cuda.device_count()
