"""Which eval sets a run scores, and their prepared rows.

The sets are `heldout` (the hash split of data.sources, when data.heldout_fraction is set) and the named
`data.eval_sets`, in that order. `EVAL_SETS=a,b` in the environment, else `eval.sets`, limits a run to some of them;
the first set evaluated is the default one, whose results also fill results.json's top-level keys.
"""

from __future__ import annotations

import os
from typing import Any

from tailor.errors import TailorError
from tailor.runs import RunPaths
from tailor.schema import Recipe

ENV = "EVAL_SETS"


def selected_sets(recipe: Recipe) -> list[str]:
    """The sets to evaluate, in the order asked for (default: every set of the recipe)."""
    names = recipe.data.set_names()
    env = os.environ.get(ENV, "").strip()
    wanted = [n.strip() for n in env.split(",") if n.strip()] if env else recipe.eval.sets
    if wanted is None:
        return names
    origin = f"{ENV}={env}" if env else "eval.sets"
    unknown = [n for n in wanted if n not in names]
    if unknown:
        raise TailorError(f"{origin}: {', '.join(repr(n) for n in unknown)} is not an eval set of this recipe "
                          f"(sets: {', '.join(names)}).")
    if not wanted:
        raise TailorError(f"{origin}: names no set (sets: {', '.join(names)}).")
    return list(dict.fromkeys(wanted))


def load_set(recipe: Recipe, paths: RunPaths, name: str) -> list[dict[str, Any]]:
    """The prepared rows of one set (the first eval.max_rows); an empty set is an error naming it."""
    from datasets import load_dataset

    file = paths.eval_set_data(name)
    if not file.is_file():
        raise TailorError(f"eval set {name}: {file} is missing: run `make data RECIPE=...` again.")
    rows = load_dataset("parquet", data_files=str(file), split="train").to_list()
    if not rows:
        hint = "raise data.heldout_fraction or add data" if name == "heldout" else "check its files"
        raise TailorError(f"eval set {name}: {file} has no rows: {hint}.")
    return rows[: recipe.eval.max_rows]
