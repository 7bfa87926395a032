"""Batched generation with transformers: prompts sorted by length, left-padded, decoded without specials.

Stop strings end a row once its *generated* text contains one (as vLLM does; transformers' `stop_strings` also
matches one straddling the end of the prompt), and every answer is cut at the first stop string.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tailor.schema import EvalSettings


@dataclass
class Generations:
    """Answers in input order, the generated token count of each (up to its end), and the wall time."""

    texts: list[str]
    new_tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0


def cut_at_stop(text: str, stop: list[str]) -> str:
    """`text` up to (not including) the earliest occurrence of any stop string."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def generation_kwargs(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase",
                      settings: "EvalSettings") -> dict:
    """Keyword arguments of `model.generate` for the recipe's decoding settings."""
    sampling = settings.temperature > 0
    kwargs = {"do_sample": sampling, "max_new_tokens": settings.max_new_tokens,
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": stop_ids(model, tokenizer)}
    if sampling:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k or 0)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def stop_criteria(tokenizer: "PreTrainedTokenizerBase", stop: list[str], prompt_length: int) -> Any:
    """A transformers StoppingCriteria: a row is done once the text it generated contains a stop string."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    window = 4 * max(len(s) for s in stop) + 4  # tokens enough to hold any stop string, even as single bytes

    class GeneratedTextStop(StoppingCriteria):
        def __call__(self, input_ids: "torch.LongTensor", scores: "torch.FloatTensor", **_) -> "torch.BoolTensor":
            tails = tokenizer.batch_decode(input_ids[:, prompt_length:][:, -window:], skip_special_tokens=True)
            return torch.tensor([any(s in t for s in stop) for t in tails], device=input_ids.device)

    return StoppingCriteriaList([GeneratedTextStop()])


def generate(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", prompts: list[str],
             settings: "EvalSettings", desc: str = "generate") -> Generations:
    """Answers for `prompts` (already rendered with the chat template), in the input order, with a progress bar."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    counts: list[int] = [0] * len(prompts)
    tokenizer.padding_side = "left"
    kwargs = generation_kwargs(model, tokenizer, settings)
    ends = set(kwargs["eos_token_id"]) | {tokenizer.pad_token_id}
    if settings.temperature > 0:
        torch.manual_seed(settings.seed)
    model.eval()
    started = time.perf_counter()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), settings.batch_size), desc=desc, unit="batch"):
            batch = order[start:start + settings.batch_size]
            encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(model.device)
            extra = {}
            if settings.stop:
                extra["stopping_criteria"] = stop_criteria(tokenizer, settings.stop, encoded["input_ids"].shape[1])
            output = model.generate(**encoded, **kwargs, **extra)
            new_tokens = output[:, encoded["input_ids"].shape[1]:]
            for index, ids, text in zip(batch, new_tokens.tolist(),
                                        tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                answers[index] = cut_at_stop(text, settings.stop)
                counts[index] = generated_length(ids, ends)
    return Generations(answers, counts, time.perf_counter() - started)


def generated_length(ids: list[int], ends: set[int]) -> int:
    """Tokens a row really generated: up to and including its first end token (padding after it not counted)."""
    return next((i + 1 for i, token in enumerate(ids) if token in ends), len(ids))


def stop_ids(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    """End-of-turn ids: the tokenizer's eos plus the model's generation eos ids."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = {tokenizer.eos_token_id, *([configured] if isinstance(configured, int) else configured or [])}
    return sorted(i for i in ids if i is not None)
