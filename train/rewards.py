"""GRPO rewards are eval's metrics: what is optimised is what is reported.

The recipe's ``grpo.rewards`` name built-in metrics (``tailor.metrics.all_metrics``: exact_match, json_valid,
json_field_accuracy, classification, regex_match, token_f1, ...) or project functions 'module.path:function' with
the signature of a custom metric, ``f(prediction, reference) -> float in [0, 1] | None``, imported only from inside
the project (``tailor.plugins``, the rule of custom metrics and filters). ``reward_functions(recipe)`` turns them
into trl reward functions and their weights::

    functions, weights = reward_functions(recipe)
    GRPOTrainer(..., reward_funcs=functions, args=GRPOConfig(..., reward_weights=weights))

trl calls each function as ``f(prompts=..., completions=..., completion_ids=..., **columns)`` with the batch's
dataset columns as keyword arguments, among them ``reference`` (the row's reference answer). Each completion is
scored exactly as eval scores a generated answer:

- its text: the string itself (plain-text prompts), or the content of the last assistant message (conversational
  prompts, where a completion is a list of messages);
- the answer after the reasoning block of thinking models (``eval.think_tags``, ``tailor.thinking``); a block that
  never closed leaves an empty answer, as in eval;
- scored against the row's ``reference`` with the options of the recipe's eval section (``eval.json_fields``,
  ``eval.regex``, ``eval.json_schema``; ``classification`` is per-row label accuracy).

A metric's None (the row does not apply, e.g. json_field_accuracy on a reference that is no JSON object) counts as
0.0: no reward, rather than trl's NaN that leaves the row out of that reward. Each function's ``__name__`` is the
reward's name (the metric, or the project function's name), so trl logs ``rewards/<name>/mean`` and ``/std``.

``check_rewards(recipe)`` imports every project function before any model loads and raises TailorError naming
where the reward was set (file:line), its key and why.
"""

from __future__ import annotations

from typing import Any, Callable

from tailor.errors import TailorError
from tailor.metrics import Metric, all_metrics, load_metric, metric_name, metric_options
from tailor.recipe import origin
from tailor.schema import Recipe
from tailor.thinking import split_thinking

Reward = Callable[..., list[float]]


def reward_functions(recipe: Recipe) -> tuple[list[Reward], list[float]]:
    """trl reward functions of the recipe's grpo.rewards, in order, and their weights (empty without a grpo
    section). Project functions are imported here: errors are TailorErrors naming file:line and key."""
    rewards = recipe.grpo.rewards if recipe.grpo is not None else []
    builtin = all_metrics()
    options = metric_options(recipe)
    functions: list[Reward] = []
    seen: dict[str, str] = {}
    for index, reward in enumerate(rewards):
        key = f"grpo.rewards.{index}.name"
        where = f"{origin(recipe, key)}: {key}"
        if reward.name in builtin:
            name, metric = reward.name, builtin[reward.name]
        else:
            name, metric = metric_name(reward.name), load_metric(reward.name, where)
        if name in seen:
            raise TailorError(f"{where}: reward {reward.name!r} is named {name!r} like {seen[name]}; trl logs each "
                              "reward by name (rewards/<name>/mean): give each reward once, or rename the function.")
        seen[name] = key
        functions.append(_reward(name, metric, options, recipe.eval.think_tags))
    return functions, [reward.weight for reward in rewards]


def check_rewards(recipe: Recipe) -> None:
    """Fail before any model loads when a reward cannot be used: a project module not found inside the project, a
    missing or non-callable function, two rewards with one name. The message names file:line, key and why."""
    reward_functions(recipe)


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """The generated text of a trl completion: a string, or the content of the last assistant message of a
    conversational completion (a content given as parts keeps its text parts)."""
    if isinstance(completion, str):
        return completion
    content = next((m.get("content") for m in reversed(completion) if m.get("role") == "assistant"), None)
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if part.get("type") == "text")
    return content or ""


def _reward(name: str, metric: Metric, options: dict[str, Any], think_tags: tuple[str, str] | None) -> Reward:
    def reward(completions: list, reference: list[str] | None = None, **_: Any) -> list[float]:
        if reference is None:
            raise TailorError(f"grpo reward {name}: the training rows have no `reference` column (the reference "
                              "answer each completion is scored against).")
        scores = []
        for completion, ref in zip(completions, reference, strict=True):
            value = metric(split_thinking(completion_text(completion), think_tags).answer, ref, **options)
            scores.append(0.0 if value is None else float(value))
        return scores

    reward.__name__ = reward.__qualname__ = name
    reward.__doc__ = f"GRPO reward {name}: the metric on the answer after the reasoning block, None counting 0."
    return reward
