"""Generation engines: transformers `generate` (always available) or vLLM (GPU machines with vllm installed).

vLLM serves base and adapters from one engine: the adapter as a `LoRARequest`, the base as no request. Under greedy
decoding both engines give the same answers up to numerical ties (kernels differ); the eval records which ran.
"""

from __future__ import annotations

import importlib.util
import time
from typing import TYPE_CHECKING

from eval.generate import Generations, cut_at_stop
from tailor.errors import TailorError

if TYPE_CHECKING:
    from tailor.schema import EvalSettings


def vllm_available() -> tuple[bool, str]:
    """(usable, why not)."""
    if importlib.util.find_spec("vllm") is None:
        return False, "vllm is not installed (pip install vllm, on a CUDA machine)"
    import torch

    if not torch.cuda.is_available():
        return False, "no CUDA GPU is visible"
    return True, ""


def resolve_backend(settings: "EvalSettings") -> str:
    """`auto` -> vllm when usable, else hf; `vllm` when unusable is an error that says why."""
    if settings.backend == "hf":
        return "hf"
    usable, why = vllm_available()
    if settings.backend == "vllm" and not usable:
        raise TailorError(f"eval.backend: vllm was asked for but {why}; use eval.backend=hf (or auto).")
    return "vllm" if usable else "hf"


class VllmEngine:
    """One vLLM engine on the base model; `generate(prompts, adapter)` runs base (adapter None) or base + LoRA."""

    def __init__(self, model_path: str, settings: "EvalSettings", max_lora_rank: int = 64,
                 trust_remote_code: bool = False) -> None:
        from vllm import LLM, SamplingParams

        self.settings = settings
        self.llm = LLM(model=model_path, enable_lora=True, max_lora_rank=max_lora_rank, seed=settings.seed,
                       trust_remote_code=trust_remote_code)
        self.params = SamplingParams(temperature=settings.temperature, top_p=settings.top_p,
                                     top_k=settings.top_k or -1, max_tokens=settings.max_new_tokens,
                                     stop=list(settings.stop) or None, seed=settings.seed)
        self._ids: dict[str, int] = {}

    def generate(self, prompts: list[str], adapter: tuple[str, str] | None = None) -> Generations:
        """`adapter`: (name, folder) of a peft LoRA adapter, or None for the base model."""
        from vllm.lora.request import LoRARequest

        request = None
        if adapter is not None:
            name, path = adapter
            request = LoRARequest(name, self._ids.setdefault(name, len(self._ids) + 1), path)
        started = time.perf_counter()
        outputs = self.llm.generate(prompts, self.params, lora_request=request)
        seconds = time.perf_counter() - started
        texts = [cut_at_stop(o.outputs[0].text, self.settings.stop) for o in outputs]
        return Generations(texts, [len(o.outputs[0].token_ids) for o in outputs], seconds)

    def close(self) -> None:
        """Free the GPU memory before the HF model loads (for the held-out loss)."""
        import gc

        import torch

        del self.llm
        gc.collect()
        torch.cuda.empty_cache()
