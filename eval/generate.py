"""Batched greedy (or sampled) generation: prompts sorted by length, left-padded, decoded without specials."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from tailor.schema import EvalSettings


def generate(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase", prompts: list[str],
             settings: "EvalSettings", desc: str = "generate") -> list[str]:
    """Answers for `prompts` (already rendered with the chat template), in the input order."""
    import torch

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    answers: list[str] = [""] * len(prompts)
    tokenizer.padding_side = "left"
    sampling = settings.temperature > 0
    kwargs = {"do_sample": sampling, "max_new_tokens": settings.max_new_tokens,
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": _stop_ids(model, tokenizer)}
    if sampling:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p)
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    model.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), settings.batch_size), desc=desc, unit="batch"):
            batch = order[start:start + settings.batch_size]
            encoded = tokenizer([prompts[i] for i in batch], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(model.device)
            output = model.generate(**encoded, **kwargs)
            new_tokens = output[:, encoded["input_ids"].shape[1]:]
            for index, text in zip(batch, tokenizer.batch_decode(new_tokens, skip_special_tokens=True)):
                answers[index] = text
    return answers


def _stop_ids(model: "PreTrainedModel", tokenizer: "PreTrainedTokenizerBase") -> list[int]:
    """End-of-turn ids: the tokenizer's eos plus the model's generation eos ids."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    return sorted(i for i in ids if i is not None)
